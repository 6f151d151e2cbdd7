"""Converters from the public releases to the layouts in :data:`trainer.data.DATASET_LAYOUTS`.

Each converter is ``prepare_<dataset>(src, dst, *, workers=1, progress=True, **options)`` and
returns a ``{split: count}`` summary. All share the guarantees of
:mod:`trainer.data.convert.common`: resumable, atomic outputs, parallel over files, one
:class:`ConversionError` naming every bad input file.
"""

from __future__ import annotations

from collections.abc import Callable

from trainer.data.convert.cityscapes import prepare_cityscapes
from trainer.data.convert.coco_stuff import prepare_coco_stuff10k, prepare_coco_stuff164k
from trainer.data.convert.common import ConversionError
from trainer.data.convert.isaid import prepare_isaid
from trainer.data.convert.isprs import prepare_potsdam, prepare_vaihingen
from trainer.data.convert.loveda import prepare_loveda
from trainer.data.convert.pascal_context import prepare_pascal_context
from trainer.data.convert.pascal_voc import prepare_pascal_voc

#: Dataset (preset) name -> converter. ``pascal_context_59`` shares the 60-class files.
CONVERTERS: dict[str, Callable[..., dict[str, int]]] = {
    "cityscapes": prepare_cityscapes,
    "pascal_voc": prepare_pascal_voc,
    "pascal_context": prepare_pascal_context,
    "pascal_context_59": prepare_pascal_context,
    "coco_stuff10k": prepare_coco_stuff10k,
    "coco_stuff164k": prepare_coco_stuff164k,
    "potsdam": prepare_potsdam,
    "vaihingen": prepare_vaihingen,
    "isaid": prepare_isaid,
    "loveda": prepare_loveda,
}

__all__ = ["CONVERTERS", "ConversionError"]

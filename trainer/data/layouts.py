"""The table of dataset layouts by name, and the one function that builds a dataset from it.

Adding a layout: write its class (a :class:`~trainer.data.base.SegmentationDataset` subclass in
its own module) and add one line to :data:`DATASET_LAYOUTS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.data.ade20k import ADE20KDataset
from trainer.data.base import DatasetLayoutError, SegmentationDataset, Transform
from trainer.data.cityscapes import CityscapesDataset
from trainer.data.coco_stuff import (
    COCOStuff10k182Dataset,
    COCOStuff10kDataset,
    COCOStuff164kDataset,
)
from trainer.data.img_ann_dir import (
    ISAIDDataset,
    LoveDADataset,
    PotsdamDataset,
    VaihingenDataset,
)
from trainer.data.lip import LIPDataset
from trainer.data.pascal_context import PascalContextDataset
from trainer.data.pascal_voc import PascalVOCDataset

DATASET_LAYOUTS: dict[str, type[SegmentationDataset]] = {
    "cityscapes": CityscapesDataset,
    "ade20k": ADE20KDataset,
    "pascal_voc": PascalVOCDataset,
    "pascal_context": PascalContextDataset,
    "coco_stuff10k": COCOStuff10kDataset,
    "coco_stuff10k_182": COCOStuff10k182Dataset,
    "coco_stuff164k": COCOStuff164kDataset,
    "lip": LIPDataset,
    "loveda": LoveDADataset,
    "potsdam": PotsdamDataset,
    "vaihingen": VaihingenDataset,
    "isaid": ISAIDDataset,
}

__all__ = [
    "ADE20KDataset",
    "COCOStuff10k182Dataset",
    "COCOStuff10kDataset",
    "COCOStuff164kDataset",
    "CityscapesDataset",
    "ISAIDDataset",
    "LIPDataset",
    "LoveDADataset",
    "PascalContextDataset",
    "PascalVOCDataset",
    "PotsdamDataset",
    "VaihingenDataset",
    "DATASET_LAYOUTS",
    "DatasetLayoutError",
    "SegmentationDataset",
    "build_dataset",
]


def build_dataset(
    layout: str,
    root: str | Path,
    split: str,
    transform: Transform | None = None,
    **kw: Any,
) -> SegmentationDataset:
    """Build the dataset of ``split`` stored under ``root`` in the named layout.

    Args:
        layout: a key of :data:`DATASET_LAYOUTS` (``"cityscapes"``, ``"ade20k"``, ``"lip"``, ...).
        root, split, transform: passed to the dataset class.
        **kw: further constructor arguments (``reduce_zero_label``, ``ignore_index``).

    Raises:
        KeyError: unknown ``layout``; the message lists the known ones.
        DatasetLayoutError: the files do not match the layout.
    """
    try:
        cls = DATASET_LAYOUTS[layout]
    except KeyError:
        raise KeyError(
            f"unknown dataset layout {layout!r}; known layouts: {sorted(DATASET_LAYOUTS)}"
        ) from None
    return cls(root, split, transform=transform, **kw)

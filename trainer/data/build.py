"""A recipe's training and validation datasets.

Both builders read a resolved recipe (:func:`segctl.recipe.resolve` has filled the splits and
the training scale) and the dataset's :class:`~segctl.recipe.dataset_spec.DatasetSpec`; the
data root is the recipe's unless the job passes the local copy it staged (``root``).
"""

from __future__ import annotations

from pathlib import Path

from segctl.recipe import Recipe
from segctl.recipe.dataset_spec import DatasetSpec
from trainer.data.base import SegmentationDataset
from trainer.data.layouts import build_dataset
from trainer.data.order import AugmentedDataset
from trainer.data.transforms import eval_pipeline, train_pipeline

__all__ = ["build_train_dataset", "build_val_dataset"]


def build_train_dataset(recipe: Recipe, spec: DatasetSpec | None = None, *,
                        root: str | Path | None = None) -> AugmentedDataset:
    """The training split with the recipe's augmentations (:func:`train_pipeline`: mmseg's
    by default; ``data.ratio_sampling``, ``data.photometric`` and ``data.pad_order`` select
    United-Perception's variants).

    Items are uint8 (``normalize_on_device``): image ``uint8 (h, w, 3)``, label ``uint8``
    (int64 for wider label files) ``(h, w)``, ``valid_box`` ``int64 (4,)``; the engine
    normalises and fills the pad on the device with the dataset's mean and std
    (:func:`~trainer.data.transforms.to_device_batch`), giving the float path's tensors bit for
    bit.

    Args:
        recipe: a resolved recipe.
        spec: the dataset's facts; default :meth:`DatasetSpec.from_recipe`.
        root: the data root to read; default ``data.root``.
    """
    spec = spec or DatasetSpec.from_recipe(recipe)
    data = recipe.data
    base = build_dataset(
        spec.layout,
        data.root if root is None else root,
        data.train_split,
        reduce_zero_label=spec.reduce_zero_label,
        ignore_index=spec.ignore_index,
    )
    pipeline = train_pipeline(
        scale=tuple(data.train_scale),
        crop_size=tuple(data.crop_size),
        mean=spec.mean,
        std=spec.std,
        ratio_range=tuple(data.ratio_range),
        cat_max_ratio=data.cat_max_ratio,
        ignore_index=spec.ignore_index,
        keep_ratio=data.keep_ratio,
        pad_position=data.pad_position,
        ratio_sampling=data.ratio_sampling,
        photometric=data.photometric,
        pad_order=data.pad_order,
        flip_swap_pairs=data.flip_swap_pairs,
        rotation=(None if data.random_rotation is None
                  else (data.random_rotation.max_degrees, data.random_rotation.prob)),
        normalize_on_device=True,
    )
    return AugmentedDataset(base, pipeline)


def build_val_dataset(recipe: Recipe, spec: DatasetSpec | None = None, *,
                      root: str | Path | None = None) -> SegmentationDataset:
    """The validation split, normalised, at the original resolution (arguments as
    :func:`build_train_dataset`). It stays on the float path (:func:`eval_pipeline`, images
    float32 ``(3, H, W)``), which every consumer of the split reads: normalising a 2048x1024
    frame costs ~15-30 ms on one core, beside ~65 ms to decode its PNGs, and the evaluator
    does both in its loop, one image at a time, so prefetching would be the larger lever."""
    spec = spec or DatasetSpec.from_recipe(recipe)
    return build_dataset(
        spec.layout,
        recipe.data.root if root is None else root,
        recipe.data.val_split,
        transform=eval_pipeline(spec.mean, spec.std),
        reduce_zero_label=spec.reduce_zero_label,
        ignore_index=spec.ignore_index,
    )

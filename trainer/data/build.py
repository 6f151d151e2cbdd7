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
    )
    return AugmentedDataset(base, pipeline)


def build_val_dataset(recipe: Recipe, spec: DatasetSpec | None = None, *,
                      root: str | Path | None = None) -> SegmentationDataset:
    """The validation split, normalised, at the original resolution (arguments as
    :func:`build_train_dataset`)."""
    spec = spec or DatasetSpec.from_recipe(recipe)
    return build_dataset(
        spec.layout,
        recipe.data.root if root is None else root,
        recipe.data.val_split,
        transform=eval_pipeline(spec.mean, spec.std),
        reduce_zero_label=spec.reduce_zero_label,
        ignore_index=spec.ignore_index,
    )

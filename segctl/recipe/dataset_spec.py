"""The dataset facts a job reads, resolved once from a recipe.

:class:`DatasetSpec` gathers what the trainer needs to know about ``data.dataset`` (layout,
classes, palette, ignore index, zero-label reduction, normalisation) from its preset in
:mod:`segctl.recipe.datasets`, typed and frozen, so a training job looks the preset up once,
at its start, instead of on every step. The splits and scales a recipe may override stay in
the recipe, where :func:`segctl.recipe.resolve` has already filled them. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from segctl.recipe.datasets import DATASET_PRESETS, RGB, DatasetPreset
from segctl.recipe.schema import Recipe


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset fixes for training and evaluation (see :class:`DatasetPreset`).

    Attributes:
        name: the preset's name (``data.dataset``).
        layout: the on-disk layout (a key of ``trainer.data.DATASET_LAYOUTS``).
        classes: class names in train-id order.
        palette: one RGB colour per class.
        ignore_index: label value excluded from loss and metrics.
        reduce_zero_label: raw label 0 becomes ``ignore_index`` and k becomes k-1.
        mean, std: per-channel normalisation, RGB, on the 0..255 scale.
    """

    name: str
    layout: str
    classes: tuple[str, ...]
    palette: tuple[RGB, ...]
    ignore_index: int
    reduce_zero_label: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        """Number of classes (excluding the ignore index)."""
        return len(self.classes)

    @classmethod
    def from_preset(cls, preset: DatasetPreset) -> DatasetSpec:
        """The facts of ``preset``."""
        return cls(
            name=preset.name,
            layout=preset.layout,
            classes=tuple(preset.classes),
            palette=tuple(preset.palette),
            ignore_index=preset.ignore_index,
            reduce_zero_label=preset.reduce_zero_label,
            mean=tuple(preset.mean),
            std=tuple(preset.std),
        )

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> DatasetSpec:
        """The facts of the dataset ``recipe`` names (``data.dataset``)."""
        return cls.from_preset(DATASET_PRESETS[recipe.data.dataset])

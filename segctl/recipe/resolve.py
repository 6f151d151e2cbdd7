"""Preset resolution and run identity.

:func:`resolve` fills every field a recipe may leave to its presets; :func:`run_id` names a run
by a short hash of the resolved recipe's canonical JSON, leaving out keys that do not change
the trained weights, so re-submitting the same recipe finds the same run.

The hash covers only values that differ from the schema's defaults, so a new schema field
(whose default keeps the old behaviour) leaves every existing run id unchanged, and writing a
default out explicitly names the same run as leaving it out.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from segctl.recipe.datasets import DATASET_PRESETS, DatasetPreset
from segctl.recipe.schema import Recipe

#: Dotted keys left out of the run hash: they move or describe a run without changing what it
#: trains (paths, worker counts, cluster placement, tracking, documentation, evaluation-only
#: settings, which ``segctl eval`` may vary on a finished run).
NON_RESULT_KEYS: tuple[str, ...] = (
    "description",
    "data.root",
    "data.num_workers",
    "data.stage_to",
    "data.scratch_dir",
    "data.storage_options",
    "train.checkpoint_dir",
    "schedule.log_interval",
    "eval",
    "cluster",
    "tracking",
    "reference",
)


def dataset_preset(recipe: Recipe) -> DatasetPreset:
    """The :class:`DatasetPreset` a recipe names."""
    return DATASET_PRESETS[recipe.data.dataset]


def resolve(recipe: Recipe) -> Recipe:
    """Return a copy of ``recipe`` with every preset-dependent field filled.

    Fills ``data.train_split``, ``data.val_split``, ``data.train_scale``, ``eval.test_scale``
    from the dataset preset and ``tracking.experiment`` with the dataset name. Idempotent.
    """
    preset = dataset_preset(recipe)
    data = recipe.data.model_copy(
        update={
            "train_split": recipe.data.train_split or preset.train_split,
            "val_split": recipe.data.val_split or preset.val_split,
            "train_scale": recipe.data.train_scale or preset.train_scale,
        }
    )
    evaluation = recipe.eval.model_copy(
        update={"test_scale": recipe.eval.test_scale or preset.test_scale}
    )
    tracking = recipe.tracking.model_copy(
        update={"experiment": recipe.tracking.experiment or recipe.data.dataset}
    )
    return recipe.model_copy(update={"data": data, "eval": evaluation, "tracking": tracking})


def canonical_json(recipe: Recipe, exclude: tuple[str, ...] = (), *,
                   exclude_defaults: bool = False) -> str:
    """Sorted-key, compact JSON of ``recipe`` without the dotted ``exclude`` keys.

    With ``exclude_defaults``, values equal to the schema default are left out as well.
    """
    data = recipe.model_dump(mode="json", exclude_defaults=exclude_defaults)
    for key in exclude:
        *parents, last = key.split(".")
        target: Any = data
        for part in parents:
            target = target.get(part, {}) if isinstance(target, dict) else {}
        if isinstance(target, dict):
            target.pop(last, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def recipe_hash(recipe: Recipe) -> str:
    """SHA-256 (hex) of the resolved recipe's canonical JSON minus :data:`NON_RESULT_KEYS` and
    minus values equal to their schema defaults."""
    text = canonical_json(resolve(recipe), NON_RESULT_KEYS, exclude_defaults=True)
    return hashlib.sha256(text.encode()).hexdigest()


def run_id(recipe: Recipe) -> str:
    """``<recipe name>-<first 8 hex digits of recipe_hash>``."""
    return f"{recipe.name}-{recipe_hash(recipe)[:8]}"

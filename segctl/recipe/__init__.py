"""Recipes: the typed, closed schema of a run, its presets, loading and identity.

This package is the only part of :mod:`segctl` the trainer imports; it imports no torch.
"""

from segctl.recipe.datasets import DATASET_PRESETS, DatasetPreset
from segctl.recipe.errors import RecipeError, RecipeIssue
from segctl.recipe.loader import LoadedRecipe, load_recipe, parse_json_recipe
from segctl.recipe.models import MODEL_PRESETS, ModelPreset
from segctl.recipe.resolve import (
    NON_RESULT_KEYS,
    canonical_json,
    dataset_preset,
    recipe_hash,
    resolve,
    run_id,
)
from segctl.recipe.schema import MS_FLIP_RATIOS, Recipe

__all__ = [
    "DATASET_PRESETS",
    "MODEL_PRESETS",
    "MS_FLIP_RATIOS",
    "NON_RESULT_KEYS",
    "DatasetPreset",
    "LoadedRecipe",
    "ModelPreset",
    "Recipe",
    "RecipeError",
    "RecipeIssue",
    "canonical_json",
    "dataset_preset",
    "load_recipe",
    "parse_json_recipe",
    "recipe_hash",
    "resolve",
    "run_id",
]

"""Shared pieces of the recipe parity tests: each family's test encodes the values read from its
source configs (repository, commit and file cited beside every value) and compares them with the
resolved recipe and with the model built on PyTorch's meta device.

A family test declares its sources with :class:`Source`, lists its recipes with
:func:`recipes_matching`, and reads recipes and models through :func:`resolved` and
:func:`meta_model` (cached: 73 recipes, some with a billion parameters, build in seconds on the
meta device).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from segctl.recipe import load_recipe
from segctl.recipe.schema import Recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"


@dataclass(frozen=True)
class Source:
    """Where an expected value was read: a public repository at a commit, and a file in it."""

    repository: str
    commit: str
    path: str

    def __str__(self) -> str:
        return f"{self.repository}@{self.commit[:12]}:{self.path}"


def recipes_matching(pattern: str) -> list[str]:
    """Recipe paths under ``recipes/`` (relative, sorted) matching a glob, e.g.
    ``"*/fcn_hrnetv2_*.yaml"``."""
    return sorted(str(p.relative_to(RECIPES)) for p in RECIPES.glob(pattern))


@functools.lru_cache(maxsize=None)
def resolved(relative_path: str) -> Recipe:
    """The resolved recipe (presets filled) of ``recipes/<relative_path>``."""
    return load_recipe(RECIPES / relative_path).recipe


@functools.lru_cache(maxsize=8)
def meta_model(relative_path: str) -> nn.Module:
    """The recipe's segmentor built on the meta device (no memory, no init weights loaded)."""
    import torch

    from trainer.models.build import build_model

    with torch.device("meta"):
        return build_model(resolved(relative_path), load_init=False)


def dropout_probabilities(model: nn.Module, prefix: str = "") -> dict[str, float]:
    """``{module name: p}`` of every dropout module (Dropout, Dropout2d, ...) under ``prefix``
    (e.g. ``"decode_head"``) whose p is non-zero."""
    found = {}
    for name, module in model.named_modules():
        if name.startswith(prefix) and isinstance(module, nn.modules.dropout._DropoutNd):
            if module.p > 0:
                found[name] = module.p
    return found


def align_corners_values(model: nn.Module, prefix: str = "") -> dict[str, bool]:
    """``{module name: align_corners}`` of every module under ``prefix`` with that attribute."""
    return {
        name: bool(module.align_corners)
        for name, module in model.named_modules()
        if name.startswith(prefix) and hasattr(module, "align_corners")
    }

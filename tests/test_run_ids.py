"""Run identity is pinned: every recipe under ``recipes/`` keeps its run id.

A run id is ``<recipe name>-<hash8>`` over the canonical resolved recipe minus the keys that do
not change results (:func:`segctl.recipe.run_id`). If a change to the schema, a preset or the
hash moves an id, re-submitting an existing recipe no longer finds its run: it starts from
scratch in a new run directory and a new MLflow run. ``tests/golden/run_ids.txt`` lists every
recipe's id, so such a change is seen and accepted on purpose, never by accident.
"""

from __future__ import annotations

import os
from pathlib import Path

from segctl.recipe import load_recipe, run_id

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "run_ids.txt"


def current_run_ids() -> str:
    """``<recipe path relative to the repository> <run id>`` per recipe, sorted by path."""
    recipes = sorted((REPO / "recipes").rglob("*.yaml"))
    assert len(recipes) > 70, f"found only {len(recipes)} recipes under recipes/"
    lines = [f"{path.relative_to(REPO).as_posix()} {run_id(load_recipe(path).recipe)}"
             for path in recipes]
    return "\n".join(lines) + "\n"


def test_every_recipe_keeps_its_run_id():
    text = current_run_ids()
    if os.environ.get("SEGCTL_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    expected = GOLDEN.read_text() if GOLDEN.exists() else ""
    moved = sorted(set(text.splitlines()) ^ set(expected.splitlines()))
    assert text == expected, (
        f"run ids differ from {GOLDEN} ({len(moved)} lines: {moved[:6]}...). Re-submitting "
        "such a recipe would start a new run instead of resuming its old one. If the change "
        "is intended (a setting that changes results), accept it with: "
        f"SEGCTL_UPDATE_GOLDEN=1 python -m pytest tests/{Path(__file__).name}"
    )

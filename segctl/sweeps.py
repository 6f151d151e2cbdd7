"""Sweeps: a grid of recipe overrides expanded into runs submitted as one job array.

``--sweep optim.lr=6e-5,1e-4 --sweep train.seed=0,1`` gives four runs, each with its own run id,
run directory and MLflow run. On Slurm they form one job array; locally each is its own job.
Members that would share a run id (a repeated value, or a field the run id leaves out, such as
``description`` or ``eval.*``) are refused when the sweep is planned
(:func:`refuse_shared_runs`): they would train at once in one run directory.

Submitting a sweep again treats each member as ``segctl submit`` treats a single run: a member
that has finished training (unless ``--rerun``) or has a training job in progress is skipped
and named, and only the others are submitted, as one job array again
(:func:`segctl.submission.why_not_submitted`). The sweep keeps its id, which covers every
member, skipped or not.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from typing import Any

from segctl.recipe import RecipeError, RecipeIssue
from segctl.recipe.loader import Override


def split_values(text: str) -> list[str]:
    """Split ``a,b,[1, 2]`` on the commas outside brackets and quotes."""
    values, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return [v for v in values if v]


def expand_grid(sweeps: Sequence[str]) -> list[list[str]]:
    """The cartesian product of ``key=v1,v2`` specs as lists of ``key=value`` overrides
    (each an :class:`~segctl.recipe.loader.Override` naming its ``--sweep``, so a problem with
    a value is reported against the option, not the recipe file).

    Raises:
        RecipeError: a spec is malformed, repeats a key, or sweeps a ``cluster`` key (every
            member of a job array has the same placement).
    """
    axes: list[list[str]] = []
    seen: set[str] = set()
    issues = []
    for spec in sweeps:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        origin = f"--sweep {spec}"
        values = split_values(raw) if sep else []
        if not key or not values:
            issues.append(RecipeIssue(origin, None, "", "expected --sweep section.field=v1,v2,..."))
        elif key in seen:
            issues.append(RecipeIssue(origin, None, key, "swept twice: give all values in one --sweep"))
        elif key.split(".")[0] == "cluster":
            issues.append(RecipeIssue(origin, None, key, "cluster settings cannot vary within a sweep"))
        else:
            seen.add(key)
            axes.append([Override(f"{key}={value}", origin) for value in values])
    if issues:
        raise RecipeError(issues)
    return [list(combo) for combo in itertools.product(*axes)]


def sweep_id(name: str, run_ids: Sequence[str]) -> str:
    """``<recipe name>-sweep-<hash8 of the member run ids>``."""
    digest = hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:8]
    return f"{name}-sweep-{digest}"


def refuse_shared_runs(
    points: Sequence[Sequence[str]], recipes: Sequence[Any], run_ids: Sequence[str]
) -> None:
    """Refuse a sweep two of whose members resolve to the same run id.

    ``points`` are the members' overrides (:func:`expand_grid`), ``recipes`` their loaded
    recipes and ``run_ids`` their run ids, in the same order. Such members would train at once
    in one run directory and one MLflow run; the error names them (1-based, with their
    ``--sweep`` values) and says why for each swept field that differs between them: the
    values are equal once parsed (``1e-4`` and ``0.0001``), or the field does not count in the
    run id because it does not change results (``description``, ``eval.*``,
    ``data.num_workers``, ...).

    Raises:
        RecipeError: one issue per shared run id.
    """
    members: dict[str, list[int]] = {}
    for index, rid in enumerate(run_ids):
        members.setdefault(rid, []).append(index)
    issues = []
    for rid, indices in members.items():
        if len(indices) < 2:
            continue
        names = ", ".join(f"{i + 1} ({' '.join(points[i])})" for i in indices)
        reasons = [_why_same(key, [recipes[i] for i in indices])
                   for key in _differing_keys([points[i] for i in indices])]
        if not reasons:  # every override identical: a value given twice
            reasons = [f"{key} has the same value in each" for key in _keys(points[indices[0]])]
        issues.append(RecipeIssue(
            "--sweep", None, "",
            f"members {names} resolve to the same run id {rid}, so they would train at once in "
            f"one run directory: {'; '.join(reasons)}. Sweep distinct values of fields that "
            "change results (set the others once with --set)",
        ))
    if issues:
        raise RecipeError(issues)


def _keys(point: Sequence[str]) -> list[str]:
    return [override.partition("=")[0] for override in point]


def _differing_keys(points: Sequence[Sequence[str]]) -> list[str]:
    """Swept keys whose override text differs between ``points``."""
    return [key for position, key in enumerate(_keys(points[0]))
            if len({point[position] for point in points}) > 1]


def _why_same(key: str, recipes: Sequence[Any]) -> str:
    values = {json.dumps(_value(recipe, key), sort_keys=True, default=str) for recipe in recipes}
    if len(values) == 1:
        return f"{key} has the same value in each ({values.pop()})"
    return f"{key} does not count in the run id (it does not change results)"


def _value(recipe: Any, key: str) -> Any:
    """The value at dotted ``key`` of a recipe (None where the path is not there)."""
    value: Any = recipe.model_dump(mode="json")
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value

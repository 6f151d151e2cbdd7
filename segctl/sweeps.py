"""Sweeps: a grid of recipe overrides expanded into runs submitted as one job array.

``--sweep optim.lr=6e-5,1e-4 --sweep train.seed=0,1`` gives four runs, each with its own run id,
run directory and MLflow run. On Slurm they form one job array; locally each is its own job.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

from segctl.recipe import RecipeError, RecipeIssue


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
    """The cartesian product of ``key=v1,v2`` specs as lists of ``key=value`` overrides.

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
            axes.append([f"{key}={value}" for value in values])
    if issues:
        raise RecipeError(issues)
    return [list(combo) for combo in itertools.product(*axes)]


def sweep_id(name: str, run_ids: Sequence[str]) -> str:
    """``<recipe name>-sweep-<hash8 of the member run ids>``."""
    digest = hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:8]
    return f"{name}-sweep-{digest}"

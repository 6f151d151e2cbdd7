"""A run's overrides: how it differs from its recipe file, for people reading many runs of one
recipe (``segctl status``, ``segctl report``).

A run of ``recipes/quickstart.yaml --set optim.lr=0.01`` is ``quickstart-<hash8>``, another
run than ``quickstart`` itself, under the same recipe name. Its overrides are the fields that
count for the run id (everything but :data:`segctl.recipe.NON_RESULT_KEYS`) whose value differs
from the recipe file's, as ``a.b=value`` items (``optim.lr=0.01``), whether ``--set`` or
``--sweep`` set them. Placement, paths, worker counts and evaluation settings are left out:
they do not make another run, so a run id has one list.

Secrets never appear: values go through segctl's one redaction rule
(:func:`segctl.recipe.secrets.redact_secrets`, every storage option hidden) and the secret of
any URL's credentials, literal or a ``${VAR}`` reference, reads ``***``.

The control plane computes them when it registers a run (:func:`run_overrides`), keeps them in
the registry and in ``RUN_DIR/overrides.json`` (:func:`write_overrides`), from where the job
tags its MLflow run (``segctl.overrides``). This module imports only the standard library and
the recipe package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segctl.recipe.resolve import NON_RESULT_KEYS, resolve
from segctl.recipe.rundir import RunDir
from segctl.recipe.schema import Recipe
from segctl.recipe.secrets import REDACTED, _replace_url_secrets, redact_secrets

#: How long one value may be in :func:`shortened` before it is cut.
VALUE_CHARS = 32


def differences(base: Recipe, recipe: Recipe) -> list[str]:
    """``a.b=value`` for each result field (outside :data:`NON_RESULT_KEYS`) where ``recipe``
    differs from ``base``, in the schema's order, secrets hidden (see the module text)."""
    before, after = _shown_leaves(base), _shown_leaves(recipe)
    keys = list(after) + [k for k in before if k not in after]
    return [f"{key}={_text(after.get(key))}" for key in keys
            if _counts(key) and before.get(key, _MISSING) != after.get(key, _MISSING)]


def run_overrides(source: str | Path, recipe: Recipe) -> list[str] | None:
    """:func:`differences` between the recipe file ``source`` (loaded with no overrides) and
    ``recipe`` (that file with its overrides); None when the file cannot be loaded as it is
    (gone, or valid only with the overrides)."""
    from segctl.recipe.errors import RecipeError
    from segctl.recipe.loader import load_recipe

    try:
        base = load_recipe(source).recipe
    except (RecipeError, OSError, ValueError):
        return None
    return differences(base, resolve(recipe))


def write_overrides(run_dir: str | Path, items: Sequence[str]) -> bool:
    """Write ``RUN_DIR/overrides.json`` unless it exists (a run keeps its first list, as the
    registry does) or the run directory does not; returns whether it was written."""
    layout = RunDir(run_dir)
    if not layout.path.is_dir() or layout.overrides.exists():
        return False
    temporary = layout.overrides.with_name(f".{layout.OVERRIDES}.tmp")
    temporary.write_text(json.dumps(list(items)) + "\n", encoding="utf-8")
    temporary.replace(layout.overrides)
    return True


def read_overrides(run_dir: str | Path) -> list[str]:
    """The items of ``RUN_DIR/overrides.json``; ``[]`` when it is missing or unreadable."""
    try:
        items = json.loads(RunDir(run_dir).overrides.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(item) for item in items] if isinstance(items, list) else []


def shortened(items: Iterable[str], limit: int = 60) -> str:
    """``items`` on one line for a table cell: values longer than :data:`VALUE_CHARS` cut with
    ``…``, and as many items as fit in ``limit`` characters followed by ``(+N more)``; ``""``
    for none."""
    cut = [item if len(item) <= VALUE_CHARS + item.find("=") + 1
           else item[:VALUE_CHARS + item.find("=")] + "…" for item in items]
    shown: list[str] = []
    for i, item in enumerate(cut):
        rest = len(cut) - i - 1
        more = f" (+{rest} more)" if rest else ""
        if shown and len(" ".join([*shown, item]) + more) > limit:
            return " ".join(shown) + f" (+{len(cut) - i} more)"
        shown.append(item)
    return " ".join(shown)


# --- helpers ---------------------------------------------------------------------------------

_MISSING = object()


def _counts(key: str) -> bool:
    """Whether the dotted ``key`` is part of the run id (not under a :data:`NON_RESULT_KEYS`)."""
    return not any(key == k or key.startswith(k + ".") for k in NON_RESULT_KEYS)


def _shown_leaves(recipe: Recipe) -> dict[str, Any]:
    """The recipe's leaves (dotted key -> value; lists are values) as they may be shown."""
    flat: dict[str, Any] = {}
    _flatten(redact_secrets(recipe.model_dump(mode="json"), every_option=True), "", flat)
    return flat


def _flatten(data: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            _flatten(value, path + ".", out)
        else:
            out[path] = _hide_url_secrets(value)


def _hide_url_secrets(value: Any) -> Any:
    """``value`` with the secret of every URL's credentials as ``***``, references too (a
    literal secret and the reference it is moved to read the same)."""
    if isinstance(value, str):
        return _replace_url_secrets(value, lambda secret: REDACTED)
    if isinstance(value, list):
        return [_hide_url_secrets(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _hide_url_secrets(v) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

"""What every command shares: user-error handling (exit 2, no traceback), run lookup, tables."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status for bad input (recipes, arguments, unknown runs).
EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def user_errors(func: F) -> F:
    """Turn segctl's user-facing errors into a message on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from segctl.recipe import RecipeError
        from segctl.runs import RunDirError
        from segctl.submission import SubmitError

        try:
            return func(*args, **kwargs)
        except RecipeError as exc:
            typer.echo(exc.report(), err=True)
        except (UserError, SubmitError, RunDirError) as exc:
            typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def registry():
    """The job registry in ``$SEGCTL_HOME``."""
    from segctl.paths import segctl_home
    from segctl.registry import Registry

    return Registry(segctl_home())


def find_run(key: str):
    """The one registered run matching ``key`` (id, id prefix, or name).

    Raises:
        UserError: no run or several runs match.
    """
    matches = registry().find_runs(key)
    if not matches:
        raise UserError(f"no run matches {key!r}: see `segctl status` for the runs known here")
    if len(matches) > 1:
        ids = ", ".join(run.run_id for run in matches)
        raise UserError(f"{key!r} matches several runs ({ids}): give the full run id")
    return matches[0]


def looks_like_recipe(key: str) -> bool:
    """True if ``key`` names a YAML file (so it is a recipe, not a run id)."""
    return key.endswith((".yaml", ".yml")) or Path(key).is_file()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    """Print a plain left-aligned text table."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")

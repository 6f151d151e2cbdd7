"""Recipe errors that name the file, the line and the field, gathered into one report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Longest rendering of a user's value inside a message (a 50 MB string is not echoed back).
MAX_SHOWN_CHARS = 120
#: Most issues a report lists one by one (a file of 5,000 unknown keys is not echoed back).
MAX_REPORTED = 50


def short_repr(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said when longer.

    A huge value is not rendered whole: strings, lists and dicts are cut before ``repr``.
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 400:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, list | tuple | dict) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value):,} items"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@dataclass(frozen=True)
class RecipeIssue:
    """One problem found in a recipe.

    Attributes:
        origin: where the value came from: a file path, or ``--set a.b=c`` for an override.
        line: 1-based line in ``origin`` (None where there is none, e.g. an override).
        field: dotted field path, e.g. ``data.crop_size[0]`` ('' for the whole document).
        message: what is wrong and how to fix it.
    """

    origin: str
    line: int | None
    field: str
    message: str

    def render(self) -> str:
        """``file:line: field: message`` (the parts that are known)."""
        where = self.origin if self.line is None else f"{self.origin}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RecipeError(Exception):
    """A recipe (or its overrides) is invalid; carries every problem found, not only the first.

    Raised by :func:`segctl.recipe.load_recipe`; the CLI prints :meth:`report` and exits 2.
    """

    def __init__(self, issues: list[RecipeIssue]):
        if not issues:
            raise ValueError("RecipeError needs at least one issue")
        self.issues = list(dict.fromkeys(issues))  # the same problem (e.g. of sweep members) once
        super().__init__(self.report())

    def report(self) -> str:
        """The issues, one per line, with a count; past :data:`MAX_REPORTED` the rest are
        counted, not listed."""
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in recipe:"
        lines = [head, *("  " + issue.render() for issue in self.issues[:MAX_REPORTED])]
        if n > MAX_REPORTED:
            lines.append(f"  ... and {n - MAX_REPORTED:,} more")
        return "\n".join(lines)

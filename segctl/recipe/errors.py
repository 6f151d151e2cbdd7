"""Recipe errors that name the file, the line and the field, gathered into one report."""

from __future__ import annotations

from dataclasses import dataclass


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
        self.issues = list(issues)
        super().__init__(self.report())

    def report(self) -> str:
        """All issues, one per line, with a count."""
        n = len(self.issues)
        head = f"{n} problem{'s' if n != 1 else ''} in recipe:"
        return "\n".join([head, *("  " + issue.render() for issue in self.issues)])

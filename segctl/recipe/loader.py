"""Load a recipe: YAML (safe loader) → overrides → schema validation → preset resolution.

Every problem is gathered and raised at once as a :class:`RecipeError` whose issues carry the
file, the line and the field path, so a user fixes a recipe in one pass.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from segctl.recipe.errors import RecipeError, RecipeIssue
from segctl.recipe.resolve import resolve
from segctl.recipe.schema import Recipe

FieldPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated, resolved recipe and where each of its values came from.

    Attributes:
        recipe: the resolved recipe (every preset-dependent field filled).
        source: the recipe file, as given.
        origins: field path → (origin, line) for every key in the file and every override.
    """

    recipe: Recipe
    source: str
    origins: dict[FieldPath, tuple[str, int | None]] = field(default_factory=dict)

    def issue(self, path: str, message: str) -> RecipeIssue:
        """A :class:`RecipeIssue` for the dotted ``path``, located where that value was set."""
        origin, line = _locate(self.origins, _split_path(path), self.source)
        return RecipeIssue(origin, line, path, message)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> LoadedRecipe:
    """Read, override, validate and resolve a recipe file.

    Args:
        path: a YAML recipe file.
        overrides: ``a.b=c`` strings; ``c`` is parsed as YAML (``8``, ``[512, 512]``, ``true``)
            and typed by the schema.

    Returns:
        The :class:`LoadedRecipe`.

    Raises:
        RecipeError: the file is missing, unreadable or malformed, an override is malformed, or
            any field fails validation; all problems found are reported together.
    """
    recipe, origins = load_model_file(path, Recipe, overrides)
    return LoadedRecipe(recipe=resolve(recipe), source=str(path), origins=origins)


def load_model_file(
    path: str | Path, model: type[M], overrides: Sequence[str] = ()
) -> tuple[M, dict[FieldPath, tuple[str, int | None]]]:
    """Read a YAML file into the pydantic ``model``, with ``a.b=c`` overrides.

    Returns:
        The validated model and, for every key set, its (origin, line).

    Raises:
        RecipeError: every problem found, each with file, line and field.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([RecipeIssue(source, None, "", f"cannot read file: {exc}")]) from None
    data, origins, issues = _parse_yaml(text, source)
    if not issues:
        issues = _apply_overrides(data, origins, overrides)
    if issues:
        raise RecipeError(issues)
    try:
        return model.model_validate(data), origins
    except ValidationError as exc:
        raise RecipeError(_validation_issues(exc, origins, source, model)) from None


def override_recipe(recipe: Recipe, overrides: Sequence[str], source: str) -> Recipe:
    """``recipe`` with ``a.b=c`` overrides applied and validated (e.g. placement of a run).

    Raises:
        RecipeError: an override is malformed or invalid.
    """
    if not overrides:
        return recipe
    data = recipe.model_dump(mode="json")
    origins: dict[FieldPath, tuple[str, int | None]] = {}
    issues = _apply_overrides(data, origins, overrides)
    if issues:
        raise RecipeError(issues)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_validation_issues(exc, origins, source, Recipe)) from None


def parse_json_recipe(text: str) -> Recipe:
    """Validate a resolved recipe written as JSON (the run directory's ``recipe.json``).

    Raises:
        pydantic.ValidationError: the JSON does not match the schema.
    """
    return Recipe.model_validate(json.loads(text))


# --- YAML with line numbers -------------------------------------------------------------------


def _parse_yaml(
    text: str, source: str
) -> tuple[dict[str, Any], dict[FieldPath, tuple[str, int | None]], list[RecipeIssue]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            problem += f" ({context} that starts on line {context_mark.line + 1})"
        return {}, {}, [RecipeIssue(source, line, "", f"malformed YAML: {problem}")]
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return {}, {}, [RecipeIssue(source, 1, "", f"a recipe is a mapping of sections; this is {kind}")]
    origins: dict[FieldPath, tuple[str, int | None]] = {}
    issues: list[RecipeIssue] = []
    _record_lines(node, (), source, origins, issues)
    return data, origins, issues


def _record_lines(node, path: FieldPath, source: str, origins, issues) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            child = (*path, key)
            if key in seen:
                issues.append(
                    RecipeIssue(source, line, _join_path(child), "duplicate key: keep only one")
                )
            seen.add(key)
            origins[child] = (source, line)
            _record_lines(value_node, child, source, origins, issues)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            origins[(*path, index)] = (source, item.start_mark.line + 1)
            _record_lines(item, (*path, index), source, origins, issues)


# --- overrides --------------------------------------------------------------------------------


def _apply_overrides(
    data: dict[str, Any], origins: dict[FieldPath, tuple[str, int | None]], overrides: Iterable[str]
) -> list[RecipeIssue]:
    issues: list[RecipeIssue] = []
    for text in overrides:
        origin = f"--set {text}"
        key, sep, raw = text.partition("=")
        keys = [k.strip() for k in key.split(".")]
        if not sep or not all(keys):
            issues.append(RecipeIssue(origin, None, "", "expected --set section.field=value"))
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            issues.append(RecipeIssue(origin, None, key, f"value is not valid YAML: {exc}"))
            continue
        target = data
        for part in keys[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        target[keys[-1]] = value
        path = tuple(keys)
        for known in [p for p in origins if p[: len(path)] == path]:
            del origins[known]
        origins[path] = (origin, None)
    return issues


# --- pydantic errors → issues -----------------------------------------------------------------


def _validation_issues(
    exc: ValidationError,
    origins: dict[FieldPath, tuple[str, int | None]],
    source: str,
    model: type[BaseModel],
) -> list[RecipeIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        origin, line = _locate(origins, loc, source)
        issues.append(RecipeIssue(origin, line, _join_path(loc), _explain(error, loc, model)))
    return issues


def _explain(error: dict[str, Any], loc: FieldPath, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key. {hint}Allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return "required field is missing: add it"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in error and kind not in ("value_error", "model_type", "dict_type"):
        message += f" (got {error['input']!r})"
    return message


def _allowed_keys(model: type[BaseModel], loc: FieldPath) -> list[str]:
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def _locate(
    origins: dict[FieldPath, tuple[str, int | None]], loc: FieldPath, source: str
) -> tuple[str, int | None]:
    """The origin of the longest prefix of ``loc`` that was set somewhere (else the file)."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in origins:
            return origins[loc[:end]]
    return source, None


def _join_path(loc: FieldPath) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _split_path(path: str) -> FieldPath:
    parts: list[str | int] = []
    for piece in path.replace("]", "").split("."):
        name, *indices = piece.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices)
    return tuple(parts)

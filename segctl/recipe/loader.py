"""Load a recipe: YAML (safe loader) → overrides → schema validation → preset resolution.

Every problem is gathered and raised at once as a :class:`RecipeError` whose issues carry the
file, the line and the field path, so a user fixes a recipe in one pass.

Files and override values are read within limits (:mod:`segctl.recipe.safe_yaml`), so a hostile
file cannot hang or exhaust the machine that reads it: only regular files of at most 1 MiB are
opened, and nesting, aliases and what the aliases expand to are capped before anything is built.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from segctl.recipe import safe_yaml
from segctl.recipe.errors import RecipeError, RecipeIssue, short_repr
from segctl.recipe.resolve import resolve
from segctl.recipe.schema import Recipe

FieldPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

#: Largest magnitude of an integer in a recipe: a value must fit a signed 64-bit integer (what
#: torch, numpy and Slurm take).
MAX_INT = 2**63 - 1


class Override(str):
    """An ``a.b=c`` override that remembers the option it came from.

    A plain ``str`` override is reported as ``--set a.b=c``; a sweep member's override carries
    its ``--sweep a.b=v1,v2`` so an error names the option the user typed.
    """

    origin: str

    def __new__(cls, text: str, origin: str) -> Override:
        """``text`` (``a.b=c``) reported as coming from ``origin``."""
        override = super().__new__(cls, text)
        override.origin = origin
        return override


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
        RecipeError: every problem found, each with file, line and field; a file that is not
            a regular file, is over 1 MiB, is not UTF-8 or exceeds the YAML limits of
            :mod:`segctl.recipe.safe_yaml` is refused before it is parsed further.
    """
    source = str(path)
    try:
        text = safe_yaml.read_text(path)
    except safe_yaml.YamlProblem as exc:
        raise RecipeError([RecipeIssue(source, exc.line, "", exc.message)]) from None
    data, origins, issues = _parse_yaml(text, source)
    if not issues:
        issues = _apply_overrides(data, origins, overrides)
    if issues:
        raise RecipeError(issues)
    return _validate(model, data, origins, source), origins


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
    return _validate(Recipe, data, origins, source)


def parse_json_recipe(text: str) -> Recipe:
    """Validate a resolved recipe written as JSON (the run directory's ``recipe.json``).

    Raises:
        pydantic.ValidationError: the JSON does not match the schema.
    """
    return Recipe.model_validate(json.loads(text))


def _validate(
    model: type[M], data: dict[str, Any], origins: dict[FieldPath, tuple[str, int | None]],
    source: str,
) -> M:
    """``model`` validated from ``data``; every problem raised at once, an integer beyond 64
    bits reported as such (instead of the schema's message about the same field)."""
    huge = _huge_integers(data, origins, source)
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        named = {issue.field for issue in huge}
        issues = _validation_issues(exc, origins, source, model)
        issues = [issue for issue in issues if issue.field not in named]
        raise RecipeError([*huge, *issues]) from None
    if huge:
        raise RecipeError(huge)
    return validated


def _huge_integers(
    data: Any, origins: dict[FieldPath, tuple[str, int | None]], source: str
) -> list[RecipeIssue]:
    issues = []
    stack: list[tuple[FieldPath, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items() if isinstance(k, str | int))
        elif isinstance(value, list | tuple):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            origin, line = _locate(origins, path, source)
            issues.append(RecipeIssue(
                origin, line, _join_path(path),
                f"integer {short_repr(value)} does not fit in a signed 64-bit integer "
                f"(|value| <= {MAX_INT}): give a sane value",
            ))
    return sorted(issues, key=lambda i: (i.line or 0, i.field))


# --- YAML with line numbers -------------------------------------------------------------------


def _parse_yaml(
    text: str, source: str
) -> tuple[dict[str, Any], dict[FieldPath, tuple[str, int | None]], list[RecipeIssue]]:
    origins: dict[FieldPath, tuple[str, int | None]] = {}
    issues: list[RecipeIssue] = []
    try:
        _, data = safe_yaml.parse(
            text, inspect=lambda node: _record_lines(node, (), source, origins, issues)
        )
    except safe_yaml.YamlProblem as exc:
        return {}, {}, [RecipeIssue(source, exc.line, "", exc.message)]
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        return {}, {}, [RecipeIssue(source, 1, "", f"a recipe is a mapping of sections; this is {kind}")]
    return data, origins, issues


#: Tags of a mapping key that names a field: a plain string, or the merge key ``<<``.
_NAME_TAGS = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:merge")


def _not_a_name(key_node: yaml.Node) -> str | None:
    """Why a mapping key cannot name a field (None if it can)."""
    if not isinstance(key_node, yaml.ScalarNode):
        return "a key must be a field name, not a list or mapping"
    if key_node.tag not in _NAME_TAGS:
        kind = key_node.tag.rsplit(":", 1)[-1]
        return (
            f"key {short_repr(key_node.value)} is not a field name (YAML reads it as {kind}): "
            "field names are words"
        )
    return None


def _record_lines(node, path: FieldPath, source: str, origins, issues) -> None:
    """Record the line of every key and item under ``node`` (a graph that passed the limits of
    :func:`segctl.recipe.safe_yaml.parse`: its expansion is small and shallow)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            problem = _not_a_name(key_node)
            if problem:
                issues.append(RecipeIssue(source, line, _join_path(path), problem))
                continue
            key = key_node.value
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
        origin = _shorten(getattr(text, "origin", None) or f"--set {text}")
        option = origin.split(" ", 1)[0]
        key, sep, raw = text.partition("=")
        keys = [k.strip() for k in key.split(".")]
        if not sep or not all(keys):
            issues.append(RecipeIssue(origin, None, "", f"expected {option} section.field=value"))
            continue
        try:
            _, value = safe_yaml.parse(raw)
        except safe_yaml.YamlProblem as exc:
            issues.append(RecipeIssue(origin, None, key, f"value is not valid: {exc.message}"))
            continue
        target = data
        for depth, part in enumerate(keys[:-1], start=1):
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
                origins[tuple(keys[:depth])] = (origin, None)
            target = child
        target[keys[-1]] = value
        path = tuple(keys)
        for known in [p for p in origins if p[: len(path)] == path]:
            del origins[known]
        origins[path] = (origin, None)
    return issues


def _shorten(origin: str, limit: int = 200) -> str:
    """An override's origin as shown in messages: a long value is cut, its length said."""
    return origin if len(origin) <= limit else f"{origin[:limit]}... ({len(origin):,} characters)"


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
        key = str(loc[-1])
        hidden = sorted({f"U+{ord(c):04X}" for c in key if unicodedata.category(c) == "Cf"})
        if hidden:
            hint = f"it holds the invisible character {', '.join(hidden)}: retype it. " + hint
        return f"unknown key. {hint}Allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return "required field is missing: add it"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if "input" in error and kind not in ("value_error", "model_type", "dict_type"):
        message += f" (got {short_repr(error['input'])})"
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

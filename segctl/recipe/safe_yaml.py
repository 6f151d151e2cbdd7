"""Read and parse YAML from files nobody vetted, within limits.

A recipe or a site profile may come from anywhere; reading one must not hang or exhaust the
login node. So, before anything is built:

- only a regular file is opened (a FIFO would block forever, a link to ``/dev/zero`` would read
  until memory runs out), and at most :data:`MAX_FILE_BYTES` of it;
- bytes that are not UTF-8 are reported by line and column;
- the parser's events are counted as they are read (first by libyaml where PyYAML has it,
  which is fast, then by PyYAML's safe loader as it composes): nesting is capped at
  :data:`MAX_DEPTH` levels, alias references at :data:`MAX_ALIASES` and values at
  :data:`MAX_VALUES`, so the composer never recurses deep;
- the composed node graph is then measured as if its aliases were expanded (each shared node
  once, iteratively, so an alias bomb costs no more than its size) and refused beyond
  :data:`MAX_VALUES` values or :data:`MAX_DEPTH` levels; an alias that contains itself is
  refused. Only then are Python objects constructed.

Every refusal is a :class:`YamlProblem` with a 1-based line where one is known.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

#: Largest file read, in bytes (1 MiB; a recipe is a few kilobytes).
MAX_FILE_BYTES = 1 << 20
#: Deepest nesting of mappings and lists (a recipe nests 5 levels), aliases expanded.
MAX_DEPTH = 50
#: Most alias references (``*name``) in one document.
MAX_ALIASES = 1_000
#: Most values (keys, items and scalars) in one document once its aliases are expanded (a
#: recipe holds a few hundred; parsing this many takes a fraction of a second).
MAX_VALUES = 10_000
#: Most characters of an integer literal (far beyond 64 bits; Python refuses over 4,300).
MAX_INT_DIGITS = 1_000


class YamlProblem(Exception):
    """The file or text cannot be read as YAML within the limits.

    Attributes:
        line: 1-based line the problem is on (None where it has none, e.g. file size).
        message: what is wrong and how to fix it.
    """

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _refuse_special(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    target = f" -> {os.path.realpath(path)}" if os.path.islink(path) else ""
    raise YamlProblem(f"not a regular file: it is {_kind(mode)}{target}; give a YAML file")


def _too_big(size: int) -> YamlProblem:
    return YamlProblem(
        f"file is {size:,} bytes; a recipe or profile is at most 1 MiB ({MAX_FILE_BYTES:,} "
        "bytes): move large text out of it"
    )


def read_text(path: str | Path) -> str:
    """The UTF-8 text of the regular file ``path``, at most :data:`MAX_FILE_BYTES` bytes.

    The file's type is checked before it is opened and again on the open descriptor (opened
    non-blocking, so a FIFO swapped in between cannot block).

    Raises:
        YamlProblem: the file is missing or unreadable, not a regular file, larger than
            :data:`MAX_FILE_BYTES`, or not UTF-8 (with the line and column of the first bad
            byte).
    """
    path = Path(path)
    try:
        _refuse_special(path, os.stat(path).st_mode)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            _refuse_special(path, info.st_mode)
            if info.st_size > MAX_FILE_BYTES:
                raise _too_big(info.st_size)
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise YamlProblem(f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _too_big(len(raw))
    return decode(raw)


def decode(raw: bytes) -> str:
    """``raw`` as UTF-8 (a leading byte-order mark is kept; YAML skips it).

    Raises:
        YamlProblem: a byte is not UTF-8; names its line and column (1-based, in bytes).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise YamlProblem(
                "the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8",
                line=1,
            ) from None
        start = exc.start
        line = raw.count(b"\n", 0, start) + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise YamlProblem(
            f"byte 0x{raw[start]:02x} at column {column} is not UTF-8: save the file as UTF-8",
            line=line,
        ) from None


class _EventCount:
    """A document's parser events counted against the limits as they are read."""

    def __init__(self) -> None:
        self.depth = self.aliases = self.values = 0

    def add(self, event: yaml.Event) -> None:
        """Count ``event``.

        Raises:
            YamlProblem: more than :data:`MAX_DEPTH` levels, :data:`MAX_ALIASES` aliases or
                :data:`MAX_VALUES` values so far; with the event's line.
        """
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise YamlProblem(
                    f"more than {MAX_ALIASES:,} aliases (*name): write the values out", line
                )
        elif isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            self.values += 1
            if self.values > MAX_VALUES:
                raise YamlProblem(
                    f"more than {MAX_VALUES:,} values: far more than a recipe or profile holds",
                    line,
                )
            if isinstance(event, yaml.CollectionStartEvent):
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise YamlProblem(_too_deep(), line)
        elif isinstance(event, yaml.CollectionEndEvent):
            self.depth -= 1


def _too_deep() -> str:
    return f"values nested more than {MAX_DEPTH} levels deep: flatten the structure"


class _Loader(yaml.SafeLoader):
    """PyYAML's pure-Python safe loader, counting every event it reads against the limits
    (so the composer never recurses deeper than :data:`MAX_DEPTH`), with integers of sane
    length (:func:`_construct_int`). Pure Python for PyYAML's own error messages and marks."""

    def __init__(self, text: str):
        super().__init__(text)
        self._count = _EventCount()

    def get_event(self):  # noqa: D102 (PyYAML's hook: every event the composer reads)
        event = super().get_event()
        self._count.add(event)
        return event


def precheck(text: str) -> None:
    """Count ``text``'s events with libyaml (where PyYAML has it; tens of times faster than the
    pure-Python parser) and refuse it at once past a limit, before the full parse.

    A syntax error found here is left to the full parse, which reports it in PyYAML's words.

    Raises:
        YamlProblem: a limit of :class:`_EventCount` is exceeded, or libyaml's own nesting cap.
    """
    if not getattr(yaml, "__with_libyaml__", False):
        return
    loader = yaml.CSafeLoader(text)
    count = _EventCount()
    try:
        while not isinstance(event := loader.get_event(), yaml.StreamEndEvent):
            count.add(event)
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(getattr(exc, "problem", "")):
            mark = getattr(exc, "problem_mark", None)
            raise YamlProblem(_too_deep(), mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """PyYAML's integer, refused with its line beyond :data:`MAX_INT_DIGITS` digits (Python's
    ``int`` refuses over 4,300 digits with a ValueError that is not a YAML error)."""
    if len(node.value) > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(node.value):,} digits: give a sane value",
            node.start_mark,
        )
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node) -> None:
    """Refuse a composed document whose aliases expand beyond the limits or into themselves.

    Walks the node graph once, iteratively (no recursion, whatever the depth), each shared node
    once, computing the size and depth of its expansion.

    Raises:
        YamlProblem: more than :data:`MAX_VALUES` values or :data:`MAX_DEPTH` levels once
            expanded, or a value that contains itself through an alias.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if finished:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_VALUES:
                raise YamlProblem(
                    f"aliases expand to more than {MAX_VALUES:,} values (an alias bomb): write "
                    "the values out instead of nesting aliases",
                    line,
                )
            if depth[key] > MAX_DEPTH:
                raise YamlProblem(
                    f"aliases nest values more than {MAX_DEPTH} levels deep: flatten the "
                    "structure",
                    line,
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise YamlProblem(
                "a value contains itself through an alias (a recursive anchor): an alias may "
                "only refer to a value defined before it, outside it",
                line,
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> YamlProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        found = yaml.reader.Reader.NON_PRINTABLE.search(text)
        where = found.start() if found else 0
        return YamlProblem(
            f"malformed YAML: special characters are not allowed (U+{ord(text[where]):04X}): "
            "remove it",
            text.count("\n", 0, where) + 1 if found else None,
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        problem += f" ({context} that starts on line {context_mark.line + 1})"
    return YamlProblem(f"malformed YAML: {problem}", line)


def parse(
    text: str, inspect: Callable[[yaml.Node], None] | None = None
) -> tuple[yaml.Node | None, Any]:
    """Compose and construct one YAML document within the limits.

    Args:
        text: the YAML text (at most :data:`MAX_FILE_BYTES` characters).
        inspect: called with the composed node graph once it passed the limits and before
            anything is constructed (construction rewrites merge keys in place), e.g. to record
            the line of every key.

    Returns:
        The composed node graph (None for an empty document) and the constructed Python value
        (None for an empty document).

    Raises:
        YamlProblem: malformed YAML, more than one document, or a limit exceeded; with the line.
    """
    if len(text) > MAX_FILE_BYTES:
        raise YamlProblem(
            f"{len(text):,} characters of YAML; at most 1 MiB ({MAX_FILE_BYTES:,}) is read"
        )
    stray_bom = text.find("\ufeff", 1)
    if stray_bom > 0:
        raise YamlProblem(
            "an invisible byte-order mark (U+FEFF) in the middle of the text (column "
            f"{stray_bom - text.rfind(chr(10), 0, stray_bom)}): remove it",
            text.count("\n", 0, stray_bom) + 1,
        )
    loader = None
    try:
        precheck(text)
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None, None
        check_expansion(node)
        if inspect is not None:
            inspect(node)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text) from None
    except RecursionError:  # the limits above stop every nesting first; kept as a backstop
        raise YamlProblem(f"values nested too deeply: keep under {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()

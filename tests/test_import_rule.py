"""The dependency rule between the two planes, read from the imports of every module.

* ``trainer`` may import ``segctl.recipe`` and ``segctl.io`` and nothing else of ``segctl``
  (anywhere in a module, functions included).
* ``segctl`` imports torch, accelerate, mlflow, s3fs, submitit and trainer only inside
  functions (an ``if TYPE_CHECKING:`` block is fine); ``segctl/jobs.py``, which defines the
  submitted ``Checkpointable`` and is itself imported only when submitting, may import
  submitit at its top.
* ``segctl/io/`` imports nothing else of ``segctl``; ``segctl/recipe/`` imports nothing of
  ``segctl`` outside ``segctl.recipe``.
* No two modules import each other, directly or through others, at module level.

Every module under ``segctl/`` and ``trainer/`` is parsed with :mod:`ast` (``import``,
``from ... import`` and ``importlib.import_module("literal")``, relative imports resolved), so
an import hidden in a function or a ``try`` block is seen too. Each rule has a negative test
that feeds the checker a synthetic module and sees it flagged.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("segctl", "trainer")

#: Libraries (and the data plane) that ``segctl`` imports only inside functions.
HEAVY = ("torch", "accelerate", "mlflow", "s3fs", "submitit", "trainer")
#: Modules that may import one of ``HEAVY`` at their top: the module defining the submitted
#: ``Checkpointable`` (imported only when submitting) may import submitit.
HEAVY_AT_TOP_ALLOWED = {"segctl.jobs": {"submitit"}}
#: What ``trainer`` may import of ``segctl``.
TRAINER_MAY_IMPORT = ("segctl.recipe", "segctl.io")

RULE_TRAINER = "trainer may import segctl.recipe and segctl.io, nothing else of segctl"
RULE_HEAVY = ("segctl imports torch, accelerate, mlflow, s3fs, submitit and trainer only inside "
              "functions (segctl/jobs.py may import submitit at its top)")
RULE_IO = "segctl/io imports nothing else of segctl"
RULE_RECIPE = "segctl/recipe imports nothing of segctl outside segctl.recipe"


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is and whether it runs at import time."""

    target: str  # absolute dotted module name
    line: int
    text: str  # the statement as written (first line)
    top_level: bool  # runs when the module is imported (not inside a function)
    type_checking: bool  # inside an ``if TYPE_CHECKING:`` block


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(source: str, module: str, is_package: bool = False,
               modules: frozenset[str] = frozenset()) -> list[Import]:
    """Every import in ``source`` (the text of ``module``).

    ``from A import b`` counts as an import of ``A.b`` where ``A.b`` is one of ``modules``
    (a submodule), else of ``A``.
    """
    lines = source.splitlines()
    found: list[Import] = []

    def add(target: str, node: ast.AST, top: bool, checking: bool) -> None:
        text = lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""
        imp = Import(target, node.lineno, text, top, checking)
        if imp not in found:  # `from A import b, c` imports A once
            found.append(imp)

    def visit(node: ast.AST, top: bool, checking: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            top = False
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, top, checking)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base, node, top, checking)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("import_module", "__import__")))):
            add(node.args[0].value, node, top, checking)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, top, True)
            for child in node.orelse:
                visit(child, top, checking)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, top, checking)

    visit(ast.parse(source), True, False)
    return found


def violations(module: str, where: str, imports: list[Import]) -> list[str]:
    """``where:line: `statement` (target): rule`` for each import of ``module`` that breaks
    the dependency rule."""
    out = []
    for imp in imports:
        def broken(rule: str, imp: Import = imp) -> None:
            out.append(f"{where}:{imp.line}: `{imp.text}` ({imp.target}): {rule}")

        segctl_target = _within(imp.target, "segctl")
        if _within(module, "trainer"):
            if segctl_target and not any(_within(imp.target, p) for p in TRAINER_MAY_IMPORT):
                broken(RULE_TRAINER)
            continue
        if not _within(module, "segctl"):
            continue
        top = imp.target.split(".")[0]
        if (top in HEAVY and imp.top_level and not imp.type_checking
                and top not in HEAVY_AT_TOP_ALLOWED.get(module, ())):
            broken(RULE_HEAVY)
        if _within(module, "segctl.io") and segctl_target and not _within(imp.target, "segctl.io"):
            broken(RULE_IO)
        if (_within(module, "segctl.recipe") and segctl_target
                and not _within(imp.target, "segctl.recipe")):
            broken(RULE_RECIPE)
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing
    itself) in ``graph`` (module -> the modules it imports at its top), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(cycles)


def _source_tree() -> dict[str, tuple[Path, bool]]:
    """Every module of the two packages: dotted name -> (file, is a package)."""
    tree = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            tree[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return tree


def _all_imports() -> dict[str, tuple[str, list[Import]]]:
    tree = _source_tree()
    modules = frozenset(tree)
    return {
        module: (str(path.relative_to(REPO_ROOT)),
                 imports_of(path.read_text(encoding="utf-8"), module, is_package, modules))
        for module, (path, is_package) in tree.items()
    }


def _top_level_graph(imports: dict[str, tuple[str, list[Import]]]) -> dict[str, set[str]]:
    """module -> the modules of the two packages it imports when it is imported."""
    known = set(imports)
    graph: dict[str, set[str]] = {}
    for module, (_, found) in imports.items():
        edges = set()
        for imp in found:
            if not imp.top_level or imp.type_checking:
                continue
            target = imp.target
            while target and target not in known:  # `from pkg.mod import name` -> pkg.mod
                target = target.rpartition(".")[0]
            if target and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


# --- the tree --------------------------------------------------------------------------------


def test_every_module_keeps_the_dependency_rule():
    imports = _all_imports()
    assert "segctl.cli" in imports and "trainer.engine" in imports  # the walk found the tree
    found = [v for module, (where, imps) in sorted(imports.items())
             for v in violations(module, where, imps)]
    assert not found, ("imports that break the dependency rule (ARCHITECTURE.md, "
                       "'Dependency rule'):\n" + "\n".join(found))


def test_no_import_cycle_between_modules():
    cycles = import_cycles(_top_level_graph(_all_imports()))
    assert not cycles, ("modules that import each other at module level (directly or through "
                        "others); move the shared part into a module both import:\n"
                        + "\n".join(" <-> ".join(c) for c in cycles))


# --- the checker flags each kind of violation -------------------------------------------------


def _flagged(module: str, source: str, *, is_package: bool = False,
             modules: frozenset[str] = frozenset()) -> list[str]:
    return violations(module, "x.py", imports_of(source, module, is_package, modules))


def test_trainer_importing_other_segctl_modules_is_flagged():
    source = (
        "from segctl.recipe import Recipe\n"
        "from segctl.io.atomic import write_atomic\n"
        "def f():\n"
        "    from segctl.registry import Registry\n"
        "    import segctl.paths\n"
    )
    found = _flagged("trainer.engine", source)
    assert found == [
        f"x.py:4: `from segctl.registry import Registry` (segctl.registry): {RULE_TRAINER}",
        f"x.py:5: `import segctl.paths` (segctl.paths): {RULE_TRAINER}",
    ]
    assert _flagged("trainer.engine", "from segctl import runs\n",
                    modules=frozenset({"segctl.runs"})) == [
        f"x.py:1: `from segctl import runs` (segctl.runs): {RULE_TRAINER}"]
    assert _flagged("trainer.engine", "from segctl import recipe\n",
                    modules=frozenset({"segctl.recipe"})) == []


def test_segctl_importing_heavy_modules_at_module_level_is_flagged():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import torch.nn\n"
        "try:\n"
        "    import mlflow\n"
        "except ImportError:\n"
        "    mlflow = None\n"
        "from trainer.engine import train\n"
        "if TYPE_CHECKING:\n"
        "    import accelerate\n"
        "def f():\n"
        "    import s3fs\n"
        "    import importlib\n"
        "    return importlib.import_module('torch')\n"
        "class C:\n"
        "    import submitit\n"
    )
    lines = [v.split(":")[1] for v in _flagged("segctl.submission", source)]
    assert lines == ["2", "4", "7", "15"]
    assert all(v.endswith(RULE_HEAVY) for v in _flagged("segctl.submission", source))
    assert _flagged("segctl.jobs", "import submitit\n") == []
    assert len(_flagged("segctl.jobs", "import torch\n")) == 1
    assert len(_flagged("segctl.runs", "import importlib\nimportlib.import_module('torch')\n")) == 1


def test_segctl_io_importing_other_segctl_modules_is_flagged():
    source = "from . import manifest\nfrom ..recipe import Recipe\nimport segctl.paths\n"
    found = _flagged("segctl.io.copy", source, modules=frozenset({"segctl.io.manifest"}))
    assert found == [
        f"x.py:2: `from ..recipe import Recipe` (segctl.recipe): {RULE_IO}",
        f"x.py:3: `import segctl.paths` (segctl.paths): {RULE_IO}",
    ]


def test_segctl_recipe_importing_outside_recipe_is_flagged():
    source = (
        "from .fields import Section\n"
        "from segctl.recipe.errors import RecipeError\n"
        "def f():\n"
        "    from segctl.profiles import load_profile\n"
    )
    found = _flagged("segctl.recipe.schema", source)
    assert found == [
        f"x.py:4: `from segctl.profiles import load_profile` (segctl.profiles): {RULE_RECIPE}"]
    # the package's own __init__ resolves relative imports inside the package
    assert _flagged("segctl.recipe", "from .. import paths\n", is_package=True,
                    modules=frozenset({"segctl.paths"})) == [
        f"x.py:1: `from .. import paths` (segctl.paths): {RULE_RECIPE}"]


def test_import_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    sources = {"p.x": "from p.y import f\n", "p.y": "def g():\n    from p.x import h\n"}
    imports = {m: (m, imports_of(s, m, modules=frozenset(sources))) for m, s in sources.items()}
    assert import_cycles(_top_level_graph(imports)) == []  # an import inside a function is fine
    sources["p.y"] = "from p.x import h\n"
    imports = {m: (m, imports_of(s, m, modules=frozenset(sources))) for m, s in sources.items()}
    assert import_cycles(_top_level_graph(imports)) == [["p.x", "p.y"]]

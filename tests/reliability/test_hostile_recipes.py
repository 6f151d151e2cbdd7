"""Hostile recipes through the real CLI: every one is refused cleanly.

The corpus under ``broken_recipes/`` holds hand-made broken recipes; each begins with comment
lines saying what is wrong (first line), which text the error must contain (``# expect: ...``)
and, where the problem has no line (a missing top-level key), ``# line: none``. Files that cannot
be kept as plain files (a FIFO, a symlink to /dev/zero, one over 1 MiB, a large alias bomb,
50,000-deep nesting, UTF-16, an empty file) are made at run time.

For each, ``segctl recipes validate FILE`` and ``segctl submit FILE --dry-run`` must exit 2 with
a message that names the file (and a line where there is one) and the expected text, print no
traceback, answer within seconds and write nothing (no run directory, no registry, no store).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from tests.trainer_runs import recipe_yaml

CORPUS = Path(__file__).parent / "broken_recipes"
runner = CliRunner()

#: Seconds one in-process command may take (the answer must come at once, not after parsing a
#: bomb); generous for a loaded CI machine.
IN_PROCESS_LIMIT_S = 2.0
#: Seconds one command may take as a fresh process (interpreter start included).
SUBPROCESS_LIMIT_S = 8.0

BASE = recipe_yaml("hostile", "data/cityscapes")


def corpus_header(path: Path) -> dict[str, str]:
    """The leading comment lines of a corpus file: ``what``, ``expect`` and ``line``."""
    head = path.read_bytes()[:4096].removeprefix("\ufeff".encode())
    header: dict[str, str] = {}
    for raw in head.split(b"\n"):
        if not raw.startswith(b"# "):
            break
        text = raw[2:].decode("ascii", errors="replace")
        key, sep, value = text.partition(": ")
        if key in ("expect", "line") and sep:
            header[key] = value.strip()
        else:
            header.setdefault("what", text)
    return header


CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))


def test_corpus_is_large_and_every_file_says_what_it_must_give():
    assert len(CORPUS_FILES) >= 60
    for path in CORPUS_FILES:
        header = corpus_header(path)
        assert header.get("what") and header.get("expect"), f"{path.name}: header incomplete"


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _check_output(output: str, path: Path, expect: str, needs_line: bool) -> None:
    assert "Traceback" not in output, output
    assert str(path) in output, output
    if needs_line:
        assert re.search(re.escape(str(path)) + r":\d+", output), f"no line named:\n{output}"
    assert expect in output, f"expected {expect!r} in:\n{output}"


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.stem for p in CORPUS_FILES])
def test_broken_recipe_is_refused_cleanly(path, segctl_env):
    header = corpus_header(path)
    before = _tree(segctl_env)
    for args in (["recipes", "validate", str(path)], ["submit", str(path), "--dry-run"]):
        start = time.perf_counter()
        result = runner.invoke(app, args)
        elapsed = time.perf_counter() - start
        assert result.exit_code == 2, f"{args}: exit {result.exit_code}\n{result.output}"
        assert isinstance(result.exception, SystemExit | None), result.exception
        _check_output(result.output, path, header["expect"], header.get("line") != "none")
        assert elapsed < IN_PROCESS_LIMIT_S, f"{args} took {elapsed:.2f} s"
    assert _tree(segctl_env) == before, "a refused recipe wrote something"


# --- files that cannot be kept in the corpus ----------------------------------------------------


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.yaml"
    os.mkfifo(path)
    return path


def _dev_zero(folder: Path) -> Path:
    path = folder / "zero.yaml"
    path.symlink_to("/dev/zero")
    return path


def _over_one_mib(folder: Path) -> Path:
    path = folder / "big.yaml"
    path.write_text(BASE + "description: " + "x" * (1 << 20) + "\n")
    return path


def _alias_bomb(folder: Path) -> Path:
    """The 951-byte shape: nine levels of nine aliases, 9**9 values once expanded."""
    lines = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = folder / "bomb.yaml"
    path.write_text(BASE + "\n".join(lines) + "\n")
    return path


def _deep_nesting(folder: Path) -> Path:
    path = folder / "deep.yaml"
    path.write_text(BASE + "description: " + "[" * 50_000 + "]" * 50_000 + "\n")
    return path


def _utf16(folder: Path) -> Path:
    path = folder / "utf16.yaml"
    path.write_bytes(BASE.encode("utf-16"))
    return path


def _empty(folder: Path) -> Path:
    path = folder / "empty.yaml"
    path.write_bytes(b"")
    return path


RUNTIME_FILES = {
    "fifo": (_fifo, "named pipe"),
    "dev_zero_symlink": (_dev_zero, "character device"),
    "over_one_mib": (_over_one_mib, "at most 1 MiB"),
    "alias_bomb": (_alias_bomb, "aliases"),
    "deep_nesting_50000": (_deep_nesting, "nested"),
    "utf16": (_utf16, "UTF-16"),
    "empty": (_empty, "this is empty"),
}


@pytest.mark.parametrize("kind", sorted(RUNTIME_FILES))
def test_hostile_file_is_refused_at_once(kind, segctl_env):
    """A fresh ``segctl`` process: a hang (FIFO) or a runaway read (/dev/zero) fails the test
    through the timeout instead of hanging it."""
    folder = segctl_env / "hostile"
    folder.mkdir()
    make, expect = RUNTIME_FILES[kind]
    path = make(folder)
    before = _tree(segctl_env)
    for args in (["recipes", "validate", str(path)], ["submit", str(path), "--dry-run"]):
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "segctl", *args], capture_output=True, text=True,
                timeout=30, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"segctl {' '.join(args)} did not answer within 30 s")
        elapsed = time.perf_counter() - start
        output = proc.stdout + proc.stderr
        assert proc.returncode == 2, f"{args}: exit {proc.returncode}\n{output[-3000:]}"
        _check_output(output, path, expect, needs_line=kind in ("alias_bomb", "deep_nesting_50000"))
        assert elapsed < SUBPROCESS_LIMIT_S, f"{args} took {elapsed:.2f} s"
    assert _tree(segctl_env) == before, "a refused recipe wrote something"

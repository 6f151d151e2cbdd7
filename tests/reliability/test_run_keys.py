"""Run keys never act on everything by accident: empty and whitespace keys are refused, keys
are matched literally, a destructive command refuses a key that matches several runs unless
``--all``, and a key or profile name too long for any file name is a clear error.

Every command runs through the real Typer app against a real registry and real run
directories; after a refused command the directories are checked to still be there.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.registry import Registry, RunRecord
from tests.test_cli_submit import write_recipe

runner = CliRunner()

#: Longer than any file name (255 bytes) and any path (4096) on Linux.
LONG_KEY = "a" * 10_000
#: Commands that take one run key, with what they need besides it.
KEYED = [["status"], ["logs"], ["cancel"], ["forget"], ["forget", "--delete-dir"], ["eval"],
         ["sync"]]


def add_runs(env: Path, run_ids: list[str]) -> dict[str, Path]:
    """Register finished runs (one COMPLETED job each) with a directory holding a file."""
    registry = Registry(segctl_home())
    dirs = {}
    for run_id in run_ids:
        run_dir = env / "runs" / run_id
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "final.pt").write_bytes(b"weights")
        registry.add_run(RunRecord(run_id, run_id.rsplit("-", 1)[0], "h", str(run_dir),
                                   "x.yaml", time.time(), None))
        row = registry.begin_job(run_id, "train", "local", str(run_dir / "jobs"), None)
        registry.submitted(row, "1")
        registry.set_state(row, "COMPLETED")
        dirs[run_id] = run_dir
    return dirs


def refused(args: list[str], needle: str) -> str:
    """Run ``segctl ARGS``; assert exit 2 with ``needle`` in the message and no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args[:3], result.output[-2000:], result.exception)
    assert needle in result.output, result.output[-2000:]
    assert "Traceback" not in result.output
    return result.output


def all_there(dirs: dict[str, Path]) -> bool:
    return all((d / "checkpoints" / "final.pt").is_file() for d in dirs.values())


@pytest.mark.parametrize("key", ["", " ", "\t \n"])
def test_empty_or_blank_key_is_refused_by_every_command(segctl_env, key):
    dirs = add_runs(segctl_env, ["only-11111111"])  # one run: an empty prefix matched it
    for command in KEYED:
        refused([*command, key], "empty run key")
    refused(["forget", key, "--delete-dir", "--all"], "empty run key")
    refused(["status", "only-11111111", key], "empty run key")
    assert all_there(dirs)
    assert [r.run_id for r in Registry(segctl_home()).runs()] == ["only-11111111"]


@pytest.mark.parametrize("key", ["%", "_", "%1111", "o_ly", "only-1111111_", "only%"])
def test_like_wildcards_are_matched_literally(segctl_env, key):
    dirs = add_runs(segctl_env, ["only-11111111"])
    refused(["forget", key, "--delete-dir"], "no run matches")
    refused(["cancel", key], "no run matches")
    assert all_there(dirs)


def test_underscore_and_percent_in_a_key_match_themselves(segctl_env):
    dirs = add_runs(segctl_env, ["a_b-11111111", "axb-22222222", "c%d-33333333", "cd-44444444"])
    done = runner.invoke(app, ["forget", "a_", "--delete-dir"])
    assert done.exit_code == 0, done.output
    assert not dirs["a_b-11111111"].exists() and dirs["axb-22222222"].is_dir()
    done = runner.invoke(app, ["forget", "c%", "--delete-dir"])
    assert done.exit_code == 0, done.output
    assert not dirs["c%d-33333333"].exists() and dirs["cd-44444444"].is_dir()


def test_destructive_key_matching_several_runs_lists_them_and_needs_all(segctl_env):
    dirs = add_runs(segctl_env, ["twin-11111111", "twin-22222222", "other-33333333"])
    for command in (["forget", "twin", "--delete-dir"], ["forget", "twin"], ["cancel", "twin"],
                    ["forget", "t", "--delete-dir"]):
        output = refused(command, "matches 2 runs")
        assert "twin-11111111" in output and "twin-22222222" in output and "--all" in output
        assert "other-33333333" not in output
    assert all_there(dirs) and len(Registry(segctl_home()).runs()) == 3

    # the full ids always name one run each
    one = runner.invoke(app, ["forget", "twin-11111111", "--delete-dir"])
    assert one.exit_code == 0, one.output
    assert not dirs["twin-11111111"].exists() and dirs["twin-22222222"].is_dir()

    add_runs(segctl_env, ["twin-44444444"])
    cancelled = runner.invoke(app, ["cancel", "twin", "--all"])
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.output.count("nothing to cancel") == 2
    both = runner.invoke(app, ["forget", "twin", "--all", "--delete-dir"])
    assert both.exit_code == 0, both.output
    assert not dirs["twin-22222222"].exists()
    assert not (segctl_env / "runs" / "twin-44444444").exists()
    assert dirs["other-33333333"].is_dir()
    assert [r.run_id for r in Registry(segctl_home()).runs()] == ["other-33333333"]


def test_non_destructive_prefix_matching_several_runs_lists_them(segctl_env):
    # a shared recipe name picks the latest run for reading (tests/test_cli_runs.py); an id
    # prefix is not a name and is still refused with the runs it matches
    add_runs(segctl_env, ["twin-11111111", "twin-22222222"])
    output = refused(["logs", "twin-"], "matches 2 runs")
    assert "twin-11111111" in output and "twin-22222222" in output


@pytest.mark.parametrize("command", KEYED, ids=lambda c: " ".join(c))
def test_very_long_run_key_is_a_clear_error(segctl_env, command):
    dirs = add_runs(segctl_env, ["only-11111111"])
    output = refused([*command, LONG_KEY], "10000 characters")
    assert len(output) < 1000  # the key is not echoed whole
    assert all_there(dirs)


@pytest.mark.parametrize("name", [LONG_KEY, LONG_KEY + ".yaml", "x/" * 3000 + "p"])
@pytest.mark.parametrize("command", ["submit", "eval"])
def test_very_long_profile_name_is_a_clear_error(segctl_env, command, name):
    recipe = str(write_recipe(segctl_env, segctl_env))
    weights = segctl_env / "weights.pt"
    weights.write_bytes(b"")
    extra = ["--checkpoint", str(weights)] if command == "eval" else []
    output = refused([command, recipe, *extra, "--dry-run", "--profile", name], "profile")
    assert len(output) < 1000


def test_eval_of_a_run_whose_directory_lost_its_recipe_is_a_clear_error(segctl_env):
    dirs = add_runs(segctl_env, ["lost-0000abcd"])
    refused(["eval", "lost-0000abcd"], "recipe.json")
    assert all_there(dirs)

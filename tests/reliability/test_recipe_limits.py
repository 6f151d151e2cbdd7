"""Recipe input limits and offline checks: what a hostile or careless recipe cannot do.

YAML is read within limits (regular files of at most 1 MiB, nesting, aliases and their expansion
capped, checked before anything is built), the same for ``--set``/``--sweep`` values and site
profiles; what can be known offline about a recipe fails in ``segctl recipes validate`` with the
file, line and field; a ``--sweep`` problem names the ``--sweep`` once.
"""

from __future__ import annotations

import inspect
import os
import signal
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe import RecipeError, load_recipe
from segctl.recipe.loader import load_model_file
from segctl.recipe.model_options import MODEL_OPTIONS
from segctl.recipe.models import MODEL_PRESETS
from segctl.recipe.profile import SiteProfile
from segctl.recipe.schema import MAX_DESCRIPTION_CHARS, MAX_EXPERIMENT_CHARS
from tests.trainer_runs import recipe_yaml

runner = CliRunner()

GOOD = recipe_yaml("limits")
CROP_LINE, MAX_ITERS_LINE = 5, 9

#: The 951-byte alias bomb's shape: nine levels of nine aliases, 9**9 values once expanded.
BOMB = "a: &a [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
    f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    for prev, name in zip("abcdefgh", "bcdefghi")
)


def write(folder: Path, text: str | bytes, name: str = "r.yaml") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def refused(path: Path, overrides: Sequence[str] = ()) -> RecipeError:
    """The RecipeError of loading ``path``; fails if loading takes a second or more."""
    start = time.perf_counter()
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"refusing {path.name} took {elapsed:.2f} s"
    return info.value


@pytest.fixture
def alarm():
    """Fail a test that blocks (e.g. opening a FIFO) instead of hanging the suite."""

    def _timeout(signum, frame):
        raise TimeoutError("blocked for 10 s")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- YAML limits --------------------------------------------------------------------------------


def test_alias_bomb_is_refused_at_once_with_its_line(tmp_path):
    path = write(tmp_path, GOOD + BOMB)
    assert len(BOMB) < 1000
    (issue,) = refused(path).issues
    assert issue.origin == str(path) and "alias bomb" in issue.message
    assert issue.line is not None and issue.line > GOOD.count("\n")


def test_aliases_that_nest_deep_are_refused(tmp_path):
    """Each alias adds a level: 60 levels through aliases, though no line nests more than 2."""
    chain = "l0: &l0 [x]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}]\n" for i in range(1, 60))
    (issue,) = refused(write(tmp_path, GOOD + chain)).issues
    assert "levels deep" in issue.message


def test_fifty_thousand_levels_of_nesting_do_not_recurse(tmp_path):
    path = write(tmp_path, GOOD + "description: " + "[" * 50_000 + "]" * 50_000 + "\n")
    (issue,) = refused(path).issues
    assert "nested more than" in issue.message and issue.line == GOOD.count("\n") + 1


def test_value_that_contains_itself_is_refused(tmp_path):
    (issue,) = refused(write(tmp_path, GOOD + "eval:\n  scales: &s [1.0, *s]\n")).issues
    assert "contains itself" in issue.message


def test_file_over_one_mib_is_refused_before_it_is_parsed(tmp_path):
    path = write(tmp_path, GOOD + "description: " + "x" * (1 << 20) + "\n")
    (issue,) = refused(path).issues
    assert "at most 1 MiB" in issue.message and issue.origin == str(path)


def test_a_mebibyte_of_values_is_refused_at_once(tmp_path):
    """90,000 keys fit under 1 MiB; they are refused when counted, not parsed and validated."""
    keys = "".join(f"k{i}: {i}\n" for i in range(90_000))
    path = write(tmp_path, GOOD + keys[: (1 << 20) - len(GOOD) - 100])
    (issue,) = refused(path).issues
    assert "more than 10,000 values" in issue.message


def test_a_report_of_thousands_of_problems_stays_short(tmp_path):
    text = GOOD + "eval: {" + ", ".join(f"k{i}: 1" for i in range(3000)) + "}\n"
    error = refused(write(tmp_path, text))
    assert len(error.issues) == 3000
    report = error.report()
    assert report.count("\n") < 60 and "... and 2,950 more" in report


def test_fifo_and_dev_zero_are_refused_without_reading(tmp_path, alarm):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    assert "named pipe" in refused(fifo).issues[0].message
    message = refused(zero).issues[0].message
    assert "character device" in message and "/dev/zero" in message


def test_non_utf8_byte_names_its_line_and_column(tmp_path):
    path = write(tmp_path, GOOD.encode() + b"description: caf\xe9\n")
    (issue,) = refused(path).issues
    assert issue.line == GOOD.count("\n") + 1
    assert "byte 0xe9 at column 17 is not UTF-8" in issue.message


def test_huge_integer_literal_is_a_clean_error(tmp_path):
    """Python refuses ints over 4,300 digits with a ValueError that is not a YAML error."""
    text = GOOD.replace("batch_size: 2", "batch_size: " + "9" * 5000)
    (issue,) = refused(write(tmp_path, text)).issues
    assert issue.line == 13 and "5,000 digits" in issue.message


def test_anchors_and_merge_keys_within_limits_still_load(tmp_path):
    """An alias, and a merge key whose value the section overrides (not a duplicate key)."""
    text = GOOD.replace("crop_size: [512, 1024]", "crop_size: &crop [512, 1024]") + (
        "eval:\n  <<: &slide {mode: slide, stride: [256, 256]}\n  crop_size: *crop\n"
        "  stride: [128, 128]\n"
    )
    recipe = load_recipe(write(tmp_path, text)).recipe
    assert recipe.eval.crop_size == (512, 1024) and recipe.eval.stride == (128, 128)


def test_set_values_are_read_within_the_same_limits(tmp_path):
    path = write(tmp_path, GOOD)
    nested = "description=" + "[" * 50_000 + "]" * 50_000
    bomb = "description=[&a [" + ", ".join(["x"] * 9) + "], " + ", ".join(
        f"&{n} [" + ", ".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdefgh", "bcdefghi")
    ) + "]"
    deep, exploding = refused(path, [nested, bomb]).issues
    assert deep.origin.startswith("--set description=[[[") and "nested more than" in deep.message
    assert exploding.origin.startswith("--set description=[&a")
    assert "alias bomb" in exploding.message
    assert len(deep.render()) < 500, "the override's value is echoed whole"


def test_profile_file_is_read_within_the_same_limits(tmp_path, segctl_env, alarm):
    bomb = write(tmp_path, "partition: gpu\n" + BOMB, "site.yaml")
    with pytest.raises(RecipeError, match="alias bomb"):
        load_model_file(bomb, SiteProfile)
    recipe = write(tmp_path, GOOD)
    start = time.perf_counter()
    result = runner.invoke(app, ["submit", str(recipe), "--dry-run", "--profile", str(bomb)])
    assert time.perf_counter() - start < 2.0
    assert result.exit_code == 2 and f"{bomb}:" in result.output and "alias bomb" in result.output
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(RecipeError, match="named pipe"):
        load_model_file(fifo, SiteProfile)


def test_huge_values_are_not_echoed_back(tmp_path):
    text = GOOD.replace("name: limits", "name: " + "é" * 200_000)
    report = refused(write(tmp_path, text)).report()
    assert len(report) < 2000 and "200,000 characters" in report


# --- offline checks -----------------------------------------------------------------------------

OPTION = "model:\n  name: segformer_mit_b0\n  options:\n    dropout: 0.2\n"


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "needle"),
    [
        ("crop_size: [512, 1024]", "crop_size: [100000, 100000]", "data.crop_size", CROP_LINE,
         "at most 8192 pixels"),
        ("model:\n  name: segformer_mit_b0\n", OPTION, "model.options", 8,
         "did you mean 'dropout_ratio'"),
        ("  max_iters: 1000\n", "  max_iters: 1000\n  warmup_iters: 1500\n",
         "schedule.warmup_iters", 10, "longer than training"),
        ("max_iters: 1000", "max_iters: 2000000000", "schedule.max_iters", MAX_ITERS_LINE,
         "less than or equal to 1000000000"),
        ("  crop_size: [512, 1024]\n", "  crop_size: [512, 1024]\n  train_split: ../train\n",
         "data.train_split", 6, "not a split name"),
        ("  crop_size: [512, 1024]\n", "  crop_size: [512, 1024]\n  val_split: val/x\n",
         "data.val_split", 6, "not a split name"),
        ("train:\n", "tracking:\n  experiment: " + "e" * (MAX_EXPERIMENT_CHARS + 1) + "\ntrain:\n",
         "tracking.experiment", 13, "MLflow takes at most 500"),
        ("train:\n", "description: " + "d" * (MAX_DESCRIPTION_CHARS + 1) + "\ntrain:\n",
         "description", 12, "keep it under 10,000"),
        ("  batch_size: 2\n", "  batch_size: 2\n  seed: 99999999999999999999\n",
         "train.seed", 14, "64-bit"),
        ("train:\n", "optim:\n  betas: [.nan, 0.999]\ntrain:\n", "optim.betas[0]", 13,
         "finite number"),
    ],
    ids=["crop_size", "model_options", "warmup", "max_iters", "train_split", "val_split",
         "experiment", "description", "huge_int", "nan"],
)
def test_offline_check_names_file_line_and_field(tmp_path, old, new, field, line, needle):
    path = write(tmp_path, GOOD.replace(old, new))
    issues = refused(path).issues
    assert [(i.origin, i.line, i.field) for i in issues] == [(str(path), line, field)], issues
    assert needle in issues[0].message, issues[0].message
    assert issues[0].render().startswith(f"{path}:{line}: {field}: ")


def test_limits_at_the_boundary_are_accepted(tmp_path):
    text = GOOD.replace("crop_size: [512, 1024]", "crop_size: [8192, 8192]").replace(
        "  max_iters: 1000\n", "  max_iters: 1000\n  warmup_iters: 1000\n"
    ) + "tracking:\n  experiment: " + "e" * MAX_EXPERIMENT_CHARS + "\n"
    text += "description: " + "d" * MAX_DESCRIPTION_CHARS + "\n"
    recipe = load_recipe(write(tmp_path, text), ["data.train_split=train+val"]).recipe
    assert recipe.data.crop_size == (8192, 8192) and recipe.schedule.warmup_iters == 1000


def _option_type(hint):
    """A builder annotation as the option table writes it (``X | None`` -> X, sequences of
    ints -> ``list[int]``)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) in (list, tuple, typing.get_origin(Sequence[int])):
        return list[int] if typing.get_args(hint)[0] is int else hint
    return hint


def test_model_option_table_matches_the_trainer_builders():
    """The control plane's typed option table is what each builder's signature takes."""
    from trainer.models import MODEL_BUILDERS

    assert set(MODEL_OPTIONS) == set(MODEL_PRESETS) == set(MODEL_BUILDERS)
    for name, builder in MODEL_BUILDERS.items():
        func = getattr(builder, "func", builder)
        hints = typing.get_type_hints(func)
        params = inspect.signature(builder).parameters
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), name
        accepted = {
            key: _option_type(hints[key]) for key, p in params.items()
            if key != "num_classes" and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                    inspect.Parameter.POSITIONAL_OR_KEYWORD)
        }
        assert MODEL_OPTIONS[name] == accepted, name


# --- where an override's problem is reported ------------------------------------------------------


def test_sweep_of_an_unknown_key_names_the_sweep_once(tmp_path, segctl_env):
    path = write(tmp_path, GOOD)
    for spec, field in (("nosuch.x=1,2", "nosuch"), ("train.nosuch=1,2", "train.nosuch")):
        result = runner.invoke(app, ["submit", str(path), "--dry-run", "--sweep", spec])
        assert result.exit_code == 2, result.output
        problems = [line for line in result.output.splitlines() if line.startswith("  ")]
        assert problems == [problems[0]] and problems[0].startswith(f"  --sweep {spec}: {field}:")
        assert str(path) not in result.output and "1 problem in recipe" in result.output


def test_set_of_an_unknown_section_names_the_set(tmp_path):
    (issue,) = refused(write(tmp_path, GOOD), ["nosuch.x=1"]).issues
    assert (issue.origin, issue.field) == ("--set nosuch.x=1", "nosuch")

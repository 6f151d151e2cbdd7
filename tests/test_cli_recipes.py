"""``segctl recipes ...`` through the real Typer app, and every shipped recipe validated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def shipped_recipes() -> list[Path]:
    return sorted(p for p in (REPO / "recipes").rglob("*") if p.suffix in (".yaml", ".yml"))


def test_every_shipped_recipe_validates_recursively():
    files = shipped_recipes()
    assert files, "no recipes found under recipes/"
    for path in files:
        load_recipe(path)
    result = runner.invoke(app, ["recipes", "validate", str(REPO / "recipes")])
    assert result.exit_code == 0, result.output
    unique = {path.resolve() for path in files}  # an alias symlink counts once
    assert f"{len(unique)} valid, 0 invalid" in result.output


def test_every_shipped_recipe_starts_with_the_command_that_runs_it():
    for path in shipped_recipes():
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and "segctl submit" in first, f"{path}: {first!r}"


@pytest.mark.slow
def test_list_json_and_table(segctl_env):
    result = runner.invoke(app, ["recipes", "list", str(REPO / "recipes"), "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)
    quick = next(e for e in entries if e["name"] == "quickstart")
    assert quick["dataset"] == "cityscapes" and quick["backbone"] == "MiT-B0"
    table = runner.invoke(app, ["recipes", "list", str(REPO / "recipes")])
    assert "DATASET" in table.output and "recipes/quickstart.yaml" in table.output


def test_show_prints_resolved_recipe_with_run_id():
    result = runner.invoke(app, ["recipes", "show", str(REPO / "recipes/quickstart.yaml"), "--set", "train.seed=5"])
    assert result.exit_code == 0, result.output
    first, rest = result.output.split("\n", 1)
    assert first.startswith("# run id: quickstart-")
    shown = json.loads(rest)
    assert shown["train"]["seed"] == 5 and shown["eval"]["test_scale"] == [512, 256]


def test_schema_is_json():
    result = runner.invoke(app, ["recipes", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "Recipe"


def test_bad_recipe_exits_2_with_location_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  dataset: cityscapes\n  root: /d\n  crop_size: 5\n")
    result = runner.invoke(app, ["recipes", "validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:5: data.crop_size" in result.output
    assert "Traceback" not in result.output


def test_help_is_fast_and_imports_no_heavy_module():
    code = (
        "import sys, segctl.cli; heavy = {'torch', 'accelerate', 'mlflow', 's3fs', 'submitit'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_list_caches_parameter_counts_by_model_code(tmp_path, monkeypatch):
    """The first listing builds the models on the meta device and keeps the counts in
    $SEGCTL_HOME; the next answers from there without importing torch; a change to the model
    code (its fingerprint) counts again."""
    import os

    from segctl.model_params import CACHE_FILE, ParameterCounts, models_fingerprint

    home = tmp_path / "home"
    monkeypatch.setenv("SEGCTL_HOME", str(home))
    quick = str(REPO / "recipes" / "quickstart.yaml")
    first = runner.invoke(app, ["recipes", "list", quick, "--json"])
    assert first.exit_code == 0, first.output
    counted = json.loads(first.output)[0]["params"]
    cache = json.loads((home / CACHE_FILE).read_text())
    assert cache == {"fingerprint": models_fingerprint(),
                     "counts": {"segformer_mit_b0/19": counted}}

    code = (
        "import sys; from segctl.cli import main; sys.argv = ['segctl', 'recipes', 'list', "
        f"{quick!r}, '--json']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "SEGCTL_HOME": str(home)}, check=True)
    assert json.loads(warm.stdout)[0]["params"] == counted
    assert warm.stderr.strip().splitlines()[-1] == "False"  # answered without torch

    stale = ParameterCounts(home / CACHE_FILE, fingerprint="other-code")
    assert stale.counts == {}
    assert stale.get("segformer_mit_b0", 19) == counted and stale.computed == 1

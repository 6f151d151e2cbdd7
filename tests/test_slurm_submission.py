"""Slurm submission planning: placement options, profiles, the rendered sbatch script (golden
file) and the validation of every string that reaches Slurm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.cli.submit import SBATCH_MARKER
from segctl.executors import executor_parameters, render_sbatch
from segctl.profiles import load_profile
from segctl.recipe import RecipeError, load_recipe
from segctl.recipe.schema import ClusterConfig
from segctl.submission import plan_training

REPO = Path(__file__).resolve().parents[1]
HEADLINE = REPO / "recipes" / "internimage_h_ade20k.yaml"
GOLDEN = REPO / "tests" / "golden" / "sbatch_internimage_h_2x8.sh"
runner = CliRunner()


def test_headline_recipe_on_two_nodes_is_sixteen_gpu_tasks(segctl_env):
    result = runner.invoke(app, ["submit", str(HEADLINE), "--nodes", "2", "--cluster", "slurm", "--dry-run"])
    assert result.exit_code == 0, result.output
    plan_text, script = result.output.split(SBATCH_MARKER + "\n")
    plan = json.loads(plan_text)
    params = plan["parameters"]
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=8" in script
    assert "#SBATCH --gpus-per-node=8" in script and "#SBATCH --requeue" in script
    assert "#SBATCH --signal=USR2@120" in script
    assert not (segctl_env / "runs").exists()


def test_sbatch_script_matches_golden_file(monkeypatch):
    loaded = load_recipe(HEADLINE, ["cluster.nodes=2"])
    params = executor_parameters("slurm", loaded.recipe.cluster, "upernet_internimage_h-test")
    script = render_sbatch(params, Path("/shared/runs/upernet_internimage_h-test/jobs"), "/opt/venv/bin/python")
    if os.environ.get("SEGCTL_UPDATE_GOLDEN"):
        GOLDEN.write_text(script)
    expected = GOLDEN.read_text() if GOLDEN.exists() else ""
    assert script == expected, (
        f"the rendered sbatch script differs from {GOLDEN}. If the change is intended, accept it "
        f"with: SEGCTL_UPDATE_GOLDEN=1 python -m pytest {Path(__file__).name} -k golden"
    )


def test_placement_options_override_the_recipe_and_keep_the_run_id(segctl_env):
    base = plan_training(load_recipe(HEADLINE), executor="slurm")
    moved = runner.invoke(
        app,
        ["submit", str(HEADLINE), "--dry-run", "--cluster", "slurm", "--nodes", "4",
         "--gpus-per-node", "4", "--partition", "big", "--time", "90"],
    )
    assert moved.exit_code == 0, moved.output
    plan = json.loads(moved.output.split(SBATCH_MARKER)[0])
    assert plan["run_id"] == base.run_id
    params = plan["parameters"]
    assert (params["nodes"], params["ntasks_per_node"], params["partition"], params["time"]) == (4, 4, "big", 90)


def test_cpu_only_placement_uses_cpu_processes_per_node():
    cluster = ClusterConfig(nodes=2, gpus_per_node=0, cpu_processes_per_node=3)
    params = executor_parameters("slurm", cluster, "x")
    assert params["ntasks_per_node"] == 3 and "gpus_per_node" not in params


def test_profile_supplies_site_settings(segctl_env, monkeypatch):
    monkeypatch.setenv("SEGCTL_PROFILES_DIR", str(REPO / "slurm" / "profiles"))
    profile = load_profile("example-gpu-site")
    params = executor_parameters("slurm", ClusterConfig(), "x", profile)
    assert params["partition"] == "gpu" and params["account"] == "my-project"
    assert params["time"] == 2880 and params["setup"][0] == "module load cuda/12.4"
    assert params["additional_parameters"] == {"requeue": True, "exclusive": True, "mail-type": "END,FAIL"}
    # the recipe's own partition and time limit win over the profile's
    mine = executor_parameters("slurm", ClusterConfig(partition="mine", timeout_min=5), "x", profile)
    assert (mine["partition"], mine["time"]) == ("mine", 5)
    monkeypatch.setenv("SEGCTL_PROFILE", "dev")
    assert load_profile(None).partition == "dev"


def test_unknown_and_invalid_profiles_exit_2(segctl_env, tmp_path, monkeypatch):
    result = runner.invoke(app, ["submit", str(HEADLINE), "--dry-run", "--profile", "nowhere"])
    assert result.exit_code == 2 and "no profile 'nowhere'" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: gpu\nsbatch:\n  time: 5\nsetup:\n  - \"echo a\\nrm -rf /\"\n")
    result = runner.invoke(app, ["submit", str(HEADLINE), "--dry-run", "--profile", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2: sbatch" in result.output and "set by segctl" in result.output
    assert f"{bad}:4: setup" in result.output and "without control characters" in result.output


@pytest.mark.parametrize("value", ["a'; touch /tmp/x", "a\nb", "gpu $(reboot)"])
def test_unsafe_slurm_strings_are_rejected(segctl_env, value):
    with pytest.raises(RecipeError, match="partition may use only"):
        load_recipe(HEADLINE, [f"cluster.partition={json.dumps(value)}"])
    result = runner.invoke(app, ["submit", str(HEADLINE), "--dry-run", "--partition", value])
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["a'; touch /tmp/x", "a\nb", "../escape"])
def test_unsafe_recipe_names_are_rejected(tmp_path, name):
    text = HEADLINE.read_text().replace(
        "name: upernet_internimage_h_896x896_160k_ade20k", f"name: {json.dumps(name)}"
    )
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match="name must start with a letter or digit"):
        load_recipe(path)


def test_sbatch_script_quotes_an_unsafe_runs_directory(tmp_path):
    folder = tmp_path / "a'; touch TOUCHED; echo '" / "jobs"
    script = render_sbatch(executor_parameters("slurm", ClusterConfig(), "x"), folder, "/usr/bin/python3")
    import subprocess

    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    for line in script.splitlines():
        if "TOUCHED" in line and not line.startswith("#SBATCH"):
            assert "'\"'\"'" in line  # the quote inside the path is escaped by shlex.quote

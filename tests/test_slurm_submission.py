"""Slurm submission planning: placement options, profiles, the rendered sbatch script (golden
file) and the validation of every string that reaches Slurm."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.cli.common import SBATCH_MARKER
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


def test_submitit_sbatch_renderer_still_takes_and_writes_what_segctl_relies_on(tmp_path):
    """render_sbatch is the one caller of a private submitit function (submitit has no public
    way to render a script without an executor); this fails naming submitit's version and the
    function when its signature or what it writes for segctl's parameters changes."""
    import dataclasses
    import inspect

    import submitit
    from submitit.slurm import slurm

    from segctl.executors import SUBMITIT_SBATCH_RENDERER, SlurmParams

    where = (f"submitit {submitit.__version__} changed {SUBMITIT_SBATCH_RENDERER}, which "
             "segctl.executors.render_sbatch (its one caller) relies on")
    renderer = getattr(slurm, SUBMITIT_SBATCH_RENDERER.rsplit(".", 1)[1], None)
    assert renderer is not None, f"{where}: it is gone; adapt render_sbatch"
    accepted = set(inspect.signature(renderer).parameters)
    missing = {"command", "folder", *(f.name for f in dataclasses.fields(SlurmParams))} - accepted
    assert not missing, f"{where}: it no longer takes {sorted(missing)}; adapt render_sbatch"
    params = SlurmParams(
        job_name="j", nodes=2, ntasks_per_node=4, cpus_per_task=3, time=90, gpus_per_node=4,
        mem="1024MB", partition="p", account="a", qos="q", constraint="c",
        setup=("echo setup",), additional_parameters={"requeue": True},
    )
    folder = tmp_path / "jobs"
    lines = render_sbatch(params, folder, "/usr/bin/python3").splitlines()
    expected = [
        "#SBATCH --account=a", "#SBATCH --constraint=c", "#SBATCH --cpus-per-task=3",
        f"#SBATCH --error={folder}/%j_0_log.err", "#SBATCH --gpus-per-node=4",
        "#SBATCH --job-name=j", "#SBATCH --mem=1024MB", "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4", f"#SBATCH --output={folder}/%j_0_log.out",
        "#SBATCH --partition=p", "#SBATCH --qos=q", "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120", "#SBATCH --time=90", "echo setup",
        "export SUBMITIT_EXECUTOR=slurm",
        f"srun --unbuffered --output {folder}/%j_%t_log.out --error {folder}/%j_%t_log.err "
        f"/usr/bin/python3 -u -m submitit.core._submit {folder}",
    ]
    lost = [line for line in expected if line not in lines]
    assert not lost, f"{where}: the script no longer holds {lost}; adapt render_sbatch"

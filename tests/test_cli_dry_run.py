"""``segctl submit --dry-run`` lists in its notes what a submit would refuse or warn about, on
the local executor and on Slurm (rendered, no cluster needed), for one run and for a sweep;
the submit itself still refuses (exit 2, naming the field and the fix)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from segctl.cli import app
from segctl.cli.common import SBATCH_MARKER
from tests.test_cli_submit import write_recipe

runner = CliRunner()

REFUSED = "submit would refuse: "
LOCAL = ["--cluster", "local"]
SLURM_2_NODES = ["--cluster", "slurm", "--nodes", "2", "--gpus-per-node", "0"]


def dry_run(recipe: Path, *args: str) -> tuple[dict, str | None]:
    """The plan of ``segctl submit RECIPE --dry-run ARGS`` (exit 0) and its sbatch script."""
    result = runner.invoke(app, ["submit", str(recipe), "--dry-run", *args])
    assert result.exit_code == 0, result.output
    plan, _, script = result.stdout.partition(SBATCH_MARKER + "\n")
    return json.loads(plan), script or None


def notes_with(plan: dict, needle: str) -> list[str]:
    return [note for note in plan["notes"] if needle in note]


def nothing_created(env: Path) -> bool:
    return not (env / "runs").exists() and not (env / "home").exists() \
        and not (env / "mlflow.db").exists()


def with_storage_options(recipe: Path, variable: str) -> Path:
    """``recipe`` whose ``data`` section gains storage options referring to ``$variable``."""
    text = recipe.read_text()
    recipe.write_text(text.replace(
        "  num_workers:", f"  storage_options:\n    secret: ${{{variable}}}\n  num_workers:", 1))
    return recipe


def test_a_missing_dataset_root_is_listed_and_a_submit_refuses_it(segctl_env):
    recipe = write_recipe(segctl_env, segctl_env / "no-such-dataset")
    for placement in (LOCAL, SLURM_2_NODES):
        plan, script = dry_run(recipe, *placement)
        (note,) = notes_with(plan, "data.root")
        assert note.startswith(f"{REFUSED}{recipe}:5: data.root: dataset folder "
                               f"{segctl_env / 'no-such-dataset'} does not exist: point data.root")
        assert (script is not None) == (placement is SLURM_2_NODES)
    assert nothing_created(segctl_env)

    refused = runner.invoke(app, ["submit", str(recipe), *LOCAL])
    assert refused.exit_code == 2
    assert f"{recipe}:5: data.root: dataset folder" in refused.output
    assert not (segctl_env / "runs").exists()


def test_an_unreachable_dataset_root_is_listed_not_a_traceback(segctl_env):
    """A root the file system cannot look at (here a name too long for it; on a cluster, a
    folder without permission) is a refusal with the field, not a crash."""
    root = segctl_env / ("d" * 300) / "cityscapes"
    recipe = write_recipe(segctl_env, root)
    plan, _ = dry_run(recipe, *LOCAL)
    (note,) = notes_with(plan, "data.root")
    assert f"{recipe}:5: data.root: dataset folder {root} cannot be reached" in note
    refused = runner.invoke(app, ["submit", str(recipe), *LOCAL])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert f"{recipe}:5: data.root: dataset folder" in refused.output


def test_unset_secret_variables_are_listed_unless_the_profile_sets_them(segctl_env,
                                                                          monkeypatch):
    monkeypatch.delenv("DRY_RUN_S3_SECRET", raising=False)
    recipe = with_storage_options(write_recipe(segctl_env, segctl_env / "data"),
                                  "DRY_RUN_S3_SECRET")
    needle = "data.storage_options.secret refers to $DRY_RUN_S3_SECRET, which is not set here"
    for placement in (LOCAL, SLURM_2_NODES):
        plan, _ = dry_run(recipe, *placement)
        (note,) = notes_with(plan, "DRY_RUN_S3_SECRET")
        assert note.startswith(REFUSED + needle) and "export it" in note

    # on Slurm a setup line of the site profile provides it: a submit would not refuse
    profile = segctl_env / "site.yaml"
    profile.write_text("setup:\n  - export DRY_RUN_S3_SECRET=$(cat ~/.s3secret)\n")
    plan, _ = dry_run(recipe, *SLURM_2_NODES, "--profile", str(profile))
    assert notes_with(plan, "DRY_RUN_S3_SECRET") == []
    # exported here: nothing to say either
    monkeypatch.setenv("DRY_RUN_S3_SECRET", "s")
    plan, _ = dry_run(recipe, *LOCAL)
    assert notes_with(plan, "DRY_RUN_S3_SECRET") == []
    assert nothing_created(segctl_env)


def test_a_submit_refuses_an_unset_secret_variable(segctl_env, cityscapes_frame_root,
                                                   monkeypatch):
    monkeypatch.delenv("DRY_RUN_S3_SECRET", raising=False)
    recipe = with_storage_options(write_recipe(segctl_env, cityscapes_frame_root),
                                  "DRY_RUN_S3_SECRET")
    plan, _ = dry_run(recipe, *LOCAL)
    assert [note.startswith(REFUSED) for note in plan["notes"]] == [True]  # the dataset is fine
    refused = runner.invoke(app, ["submit", str(recipe), *LOCAL])
    assert refused.exit_code == 2, refused.output
    assert "data.storage_options.secret ($DRY_RUN_S3_SECRET)" in refused.output
    assert "export them" in refused.output


def test_a_multi_node_slurm_job_is_warned_off_an_embedded_tracking_store(segctl_env):
    recipe = write_recipe(segctl_env, segctl_env / "data")
    plan, script = dry_run(recipe, *SLURM_2_NODES)
    assert plan["tracking_uri"].startswith("sqlite:///")
    (note,) = notes_with(plan, "tracking.uri")
    assert f"tracking.uri is an embedded SQLite store ({plan['tracking_uri']})" in note
    assert "spans 2 nodes" in note and "MLflow server" in note
    assert "tracking.uri: http://" in note and "MLFLOW_TRACKING_URI=http://" in note
    assert script is not None and "#SBATCH --nodes=2" in script

    # one node, the local executor, or an MLflow server: no such warning
    for args in (["--cluster", "slurm", "--nodes", "1"], [*LOCAL, "--nodes", "2"],
                 [*SLURM_2_NODES, "--set", "tracking.uri=http://mlflow.example:5000"]):
        plan, _ = dry_run(recipe, *args)
        assert notes_with(plan, "tracking.uri is") == [], args
    assert nothing_created(segctl_env)


def test_the_sweep_plan_lists_what_a_submit_would_refuse_for_each_member(segctl_env,
                                                                           monkeypatch):
    monkeypatch.delenv("DRY_RUN_S3_SECRET", raising=False)
    recipe = with_storage_options(write_recipe(segctl_env, segctl_env / "no-such-dataset"),
                                  "DRY_RUN_S3_SECRET")
    plan, _ = dry_run(recipe, *SLURM_2_NODES, "--sweep", "train.seed=0,1")
    assert plan["sweep"].startswith("frame-sweep-") and plan["skipped"] == []
    assert len(plan["runs"]) == 2
    for run in plan["runs"]:
        assert len(notes_with(run, f"{REFUSED}{recipe}:5: data.root: dataset folder")) == 1
        assert len(notes_with(run, f"{REFUSED}data.storage_options.secret refers to")) == 1
        assert len(notes_with(run, "tracking.uri is an embedded SQLite store")) == 1
    assert nothing_created(segctl_env)


def test_a_refused_pretraining_choice_still_prints_the_plan_then_exits_2(segctl_env):
    """A recipe that reproduces a published result without weights can never be submitted as
    given (it takes --from-scratch): the dry-run prints the plan with every note, then fails."""
    recipe = write_recipe(segctl_env, segctl_env / "no-such-dataset")
    recipe.write_text(recipe.read_text() + "reference:\n  miou_ss: 75.0\n  source: a table\n")
    result = runner.invoke(app, ["submit", str(recipe), "--dry-run", *LOCAL])
    assert result.exit_code == 2, result.output
    plan = json.loads(result.stdout)
    assert len(notes_with(plan, f"{REFUSED}recipe frame reproduces a published result")) == 1
    assert len(notes_with(plan, "data.root: dataset folder")) == 1
    assert "--from-scratch" in result.stderr and "Traceback" not in result.output
    assert nothing_created(segctl_env)

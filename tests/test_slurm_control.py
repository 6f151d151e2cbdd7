"""The control plane against the real development Slurm cluster (slurm/dev-cluster.sh): a
sweep as one job array, multi-node evaluation equal to a single process, and an unsafe runs
directory that must not run anything it should not."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from tests.test_cli_submit import write_recipe
from tests.waiting import wait_until

runner = CliRunner()
pytestmark = pytest.mark.slow

ON_DEV = ["--cluster", "slurm", "--partition", "dev", "--gpus-per-node", "0", "--time", "10"]


@pytest.fixture
def synthetic_root(tmp_path_factory) -> Path:
    from trainer.data.synthetic import make_synthetic_cityscapes

    return make_synthetic_cityscapes(
        tmp_path_factory.mktemp("synth"), n_train=2, n_val=4, size=(64, 128), seed=1
    )


def test_sweep_is_one_job_array(slurm_cluster, segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    result = runner.invoke(
        app,
        ["submit", str(recipe), *ON_DEV, "--sweep", "train.seed=0,1", "--set", "schedule.max_iters=2", "--wait"],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert {r["state"] for r in rows} == {"COMPLETED"}
    arrays = {r["job_id"].split("_")[0] for r in rows}
    assert len(arrays) == 1, rows  # one array, one element per run
    assert sorted(r["job_id"].split("_")[1] for r in rows) == ["0", "1"]
    assert all(r["nodes"] for r in rows)


def test_two_node_evaluation_equals_one_process(slurm_cluster, segctl_env, synthetic_root):
    recipe = write_recipe(segctl_env, synthetic_root)
    trained = runner.invoke(
        app, ["submit", str(recipe), "--cluster", "local", "--set", "schedule.max_iters=2",
              "--set", "eval.test_scale=[128, 64]", "--wait"]
    )
    assert trained.exit_code == 0, trained.output
    (run,) = json.loads(runner.invoke(app, ["status", "--json"]).output)
    single = runner.invoke(app, ["eval", run["run_id"], "--single-scale", "--cluster", "local", "--wait"])
    assert single.exit_code == 0, single.output
    double = runner.invoke(
        app, ["eval", run["run_id"], "--single-scale", *ON_DEV, "--nodes", "2", "--wait"]
    )
    assert double.exit_code == 0, double.output
    results = sorted((segctl_env / "runs" / run["run_id"] / "eval").glob("*.json"))
    assert len(results) == 2
    one, two = (json.loads(p.read_text()) for p in results)
    assert one["per_class"] == two["per_class"]
    assert one["metrics"] == two["metrics"]


def test_unsafe_runs_directory_runs_nothing_unintended(slurm_cluster, segctl_env, cityscapes_frame_root, monkeypatch):
    marker = Path("/tmp") / f"segctl-injection-{uuid.uuid4().hex}"
    runs = segctl_env / f"runs a'; touch {marker}; echo '"
    monkeypatch.setenv("SEGCTL_RUNS_DIR", str(runs))
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    result = runner.invoke(app, ["submit", str(recipe), *ON_DEV, "--set", "schedule.max_iters=1", "--wait"])
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    (run,) = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert run["state"] == "COMPLETED" and Path(run["run_dir"]).parent == runs
    monkeypatch.setenv("SEGCTL_RUNS_DIR", str(segctl_env / "runs\ntouch x"))
    refused = runner.invoke(app, ["submit", str(recipe), *ON_DEV])
    assert refused.exit_code == 2 and "without newlines" in refused.output


def test_cancel_on_slurm_and_status_without_mlflow(slurm_cluster, segctl_env, cityscapes_frame_root, monkeypatch):
    import time

    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    submitted = runner.invoke(app, ["submit", str(recipe), *ON_DEV, "--set", "schedule.max_iters=100000"])
    assert submitted.exit_code == 0, submitted.output
    (run,) = json.loads(runner.invoke(app, ["status", "--json"]).output)
    # whatever sacct has caught up with so far (nothing yet: SUBMITTED), the job is not over
    from segctl.status import ACTIVE_STATES

    assert run["executor"] == "slurm" and run["state"] in ACTIVE_STATES, run
    # status never contacts MLflow: an unreachable tracking server changes nothing
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    started = time.perf_counter()
    table = runner.invoke(app, ["status"])
    assert table.exit_code == 0 and run["run_id"] in table.output
    assert time.perf_counter() - started < 10
    cancelled = runner.invoke(app, ["cancel", run["run_id"]])
    assert cancelled.exit_code == 0 and "cancelled train job" in cancelled.output
    from segctl.executors import slurm_statuses

    job_id = run["job_id"]

    def accounted() -> str:  # a job slurmdbd has not recorded yet is not in sacct at all
        status = slurm_statuses([job_id]).get(job_id)
        return status.state if status else "not in sacct yet"

    wait_until(accounted, lambda s: s == "CANCELLED",
               timeout_s=60, what=f"Slurm to report job {job_id} CANCELLED", interval_s=1.0)
    (row,) = json.loads(runner.invoke(app, ["status", "--json"]).output)
    state = row["state"]
    assert state == "CANCELLED"
    assert slurm_statuses([row["job_id"]])[row["job_id"]].state == "CANCELLED"

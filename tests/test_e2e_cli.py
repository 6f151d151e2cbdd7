"""End to end through the CLI on the real Cityscapes frame: submit, status, MLflow, eval.

A real submitit local job trains a few iterations; the embedded MLflow store is read back with
MLflow's own client.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from tests.test_cli_submit import write_recipe

runner = CliRunner()


@pytest.mark.slow
def test_submit_status_mlflow_and_eval(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    submitted = runner.invoke(app, ["submit", str(recipe), "--wait", "--cluster", "local"])
    assert submitted.exit_code == 0, submitted.output
    assert "COMPLETED" in submitted.output

    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    (run,) = json.loads(status.output)
    assert run["state"] == "COMPLETED"
    assert run["iteration"] == run["max_iters"] == 4
    assert run["run_id"].startswith("frame-") and run["miou"] is not None
    table = runner.invoke(app, ["status"])
    assert run["run_id"] in table.output and "COMPLETED" in table.output

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{segctl_env / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cityscapes")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["data.crop_size"] == "[128, 256]"
    assert mlflow_run.data.params["model.name"] == "segformer_mit_b0"
    assert "mIoU" in mlflow_run.data.metrics and "loss" in mlflow_run.data.metrics
    assert mlflow_run.data.tags["segctl.run_id"] == run["run_id"]

    evaluated = runner.invoke(app, ["eval", run["run_id"], "--ms-flip", "--wait", "--cluster", "local"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "road" in evaluated.output and "bicycle" in evaluated.output
    assert "mIoU" in evaluated.output and "ms_flip" in evaluated.output
    # it names the checkpoint it scored and where the results are; its last line is its own
    run_dir = segctl_env / "runs" / run["run_id"]
    label = re.search(r"^submitted evaluation (\S+) of ", evaluated.output, re.M).group(1)
    assert f"checkpoint: {run_dir / 'checkpoints' / 'final.pt'}\n" in evaluated.output
    assert f"table: {run_dir / 'eval' / label}.txt\n" in evaluated.output
    assert (run_dir / "eval" / f"{label}.txt").is_file()
    assert evaluated.output.rstrip().splitlines()[-1].startswith(
        f"evaluation {label} of {run['run_id']}: COMPLETED (mIoU ")

    logs = runner.invoke(app, ["logs", run["run_id"]])
    assert logs.exit_code == 0 and "stdout" in logs.output

    resubmitted = runner.invoke(app, ["submit", str(recipe), "--dry-run"])
    assert json.loads(resubmitted.output)["run_id"] == run["run_id"]

"""Tracking against a real MLflow server on 127.0.0.1: a training run's full record, an outage
in the middle of a run (nothing lost), and a run whose dataset lives on a moto S3 server.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from segctl.cli import app
from tests.servers import aws_env, mlflow_server, moto_server  # noqa: F401  (fixtures)
from tests.trainer_runs import make_run_dir, one_frame_cityscapes, small_recipe
from trainer.entry import run_evaluation, run_training
from trainer.tracking import BUFFER_FILE, RUN_ID_FILE

SECRET = "S3CR3T-tracking-7d2e"
runner = CliRunner()


@pytest.fixture(autouse=True)
def quick_http(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_training_run_logs_everything_to_the_server(real_data, tmp_path, mlflow_server, capfd):
    root = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "data")
    recipe = small_recipe(
        root, mlflow_server.url,
        data={"crop_size": [64, 128], "storage_options": {"secret": SECRET}},
        schedule={"max_iters": 4, "log_interval": 1, "val_interval": 2},
        reference={"miou_ss": 76.2, "miou_ms_flip": 78.1, "source": "SegFormer table 1"},
    )
    run_dir = make_run_dir(tmp_path / "run", recipe)
    result = run_training(run_dir)
    assert result["finished"]
    run_evaluation(run_dir)

    client = MlflowClient(mlflow_server.url)
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["model.name"] == "segformer_mit_b0" and params["schedule.max_iters"] == "4"
    assert params["data.storage_options.secret"] == "***"
    assert params["reference.miou_ss"] == "76.2"
    assert _steps(client, run_id, "loss") == [1, 2, 3, 4]
    assert _steps(client, run_id, "mIoU") == [2, 4]
    assert "IoU.road" in metrics and "eval/ss/mIoU" in metrics
    assert metrics["iterations_done"] == 4 and "gpu_hours" in metrics
    for tag in ("segctl.run_id", "segctl.recipe_hash", "segctl.nodes", "segctl.gpus",
                "segctl.version", "segctl.job_id", "segctl.final_checkpoint"):
        assert tag in tags, tag
    assert tags["segctl.git_commit"]  # this checkout is a git work tree
    artifacts = _artifacts(client, run_id)
    for expected in ("recipe.json", "plots/learning_curve.png",
                     "plots/per_class_iou_iter_0000002.png", "tables/iter_0000004.txt",
                     "eval/final-ss.txt"):
        assert expected in artifacts, (expected, artifacts)
    overlays = [a for a in artifacts if a.startswith("overlays/")]
    assert overlays and all(a.endswith(".png") for a in overlays)
    local = client.download_artifacts(run_id, "plots/learning_curve.png", str(tmp_path))
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    recipe_artifact = open(client.download_artifacts(run_id, "recipe.json", str(tmp_path))).read()
    assert json.loads(recipe_artifact)["data"]["storage_options"] == {"secret": "***"}

    # the secret is nowhere: params, tags, artifacts, logs, the server's log
    captured = capfd.readouterr()
    everything = json.dumps([params, tags]) + recipe_artifact + captured.out + captured.err
    everything += mlflow_server.log_text() + (run_dir / "progress.json").read_text()
    assert SECRET not in everything
    assert not (run_dir / BUFFER_FILE).exists()


def test_outage_mid_run_loses_nothing(real_data, tmp_path, mlflow_server):
    root = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "data")
    max_iters = 10
    recipe = small_recipe(
        root, mlflow_server.url, name="outage",
        data={"crop_size": [64, 128]},
        schedule={"max_iters": max_iters, "log_interval": 1, "val_interval": 5,
                  "checkpoint_interval": 5},
    )
    run_dir = make_run_dir(tmp_path / "run", recipe)
    events: list[str] = []

    def outage() -> None:  # the server goes away at iteration 2, comes back at iteration 6
        progress = run_dir / "progress.json"
        while True:
            try:
                iteration = json.loads(progress.read_text()).get("iteration") or 0
            except (OSError, ValueError):
                iteration = 0
            if iteration >= 2 and "down" not in events:
                mlflow_server.stop(hard=True)
                events.append("down")
            if iteration >= 6 or (run_dir / "checkpoints" / "final.pt").exists():
                break
            time.sleep(0.05)
        mlflow_server.start()
        events.append("up")

    killer = threading.Thread(target=outage)
    killer.start()
    started = time.perf_counter()
    result = run_training(run_dir)
    seconds = time.perf_counter() - started
    killer.join(timeout=180)
    assert events == ["down", "up"]
    assert result["finished"] and result["iteration"] == max_iters  # training went on
    assert seconds < 120

    synced = runner.invoke(app, ["sync", str(run_dir)])
    assert synced.exit_code == 0, synced.output
    assert not (run_dir / BUFFER_FILE).exists()
    client = MlflowClient(mlflow_server.url)
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    assert _steps(client, run_id, "loss") == list(range(1, max_iters + 1))  # every step
    assert _steps(client, run_id, "lr") == list(range(1, max_iters + 1))
    assert _steps(client, run_id, "mIoU") == [5, 10]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "plots/learning_curve.png" in _artifacts(client, run_id)
    again = runner.invoke(app, ["sync", str(run_dir)])
    assert "nothing to sync" in again.output

    report = runner.invoke(app, ["report", "--format", "json", "--tracking-uri", mlflow_server.url])
    assert report.exit_code == 0, report.output
    row = next(r for r in json.loads(report.output) if r["recipe"] == "outage")
    assert (row["iterations_done"], row["iterations_planned"]) == (max_iters, max_iters)
    assert row["reproduced_ss"] is not None and row["mlflow_run_id"] == run_id


@pytest.mark.slow
def test_s3_data_root_end_to_end(real_data, tmp_path, moto_server, mlflow_server, segctl_env,
                                 monkeypatch):
    fs = moto_server.filesystem()
    fs.mkdir("frames")
    local = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "upload")
    fs.put(str(local) + "/", "frames/cityscapes/", recursive=True)
    scratch = tmp_path / "scratch"
    recipe_file = segctl_env / "s3frame.yaml"
    recipe_file.write_text(f"""\
# segctl submit {recipe_file} --cluster local --wait
name: s3frame
data:
  dataset: cityscapes
  root: s3://frames/cityscapes
  stage_to: node-local
  scratch_dir: {scratch}
  storage_options:
    endpoint_url: {moto_server.url}
    secret: {SECRET}
    key: testing-key-id
  crop_size: [64, 128]
  train_scale: [256, 128]
  num_workers: 0
model:
  name: segformer_mit_b0
schedule:
  max_iters: 2
  warmup_iters: 0
  val_interval: 2
  checkpoint_interval: 2
  log_interval: 1
train:
  batch_size: 1
  checkpoint_dir: s3://frames/checkpoints/s3frame
eval:
  test_scale: [256, 128]
tracking:
  uri: {mlflow_server.url}
""")
    dry = runner.invoke(app, ["submit", str(recipe_file), "--dry-run", "--cluster", "local"])
    assert dry.exit_code == 0, dry.output
    submitted = runner.invoke(app, ["submit", str(recipe_file), "--cluster", "local", "--wait"])
    assert submitted.exit_code == 0, submitted.output
    assert "COMPLETED" in submitted.output
    status = runner.invoke(app, ["status", "--json"])
    (run,) = json.loads(status.output)
    assert run["state"] == "COMPLETED" and run["iteration"] == 2
    staged = list(scratch.glob("segctl-data/cityscapes-*"))
    assert len(staged) == 1 and (staged[0] / ".segctl-manifest.json").is_file()
    assert (staged[0] / "leftImg8bit" / "val" / "frankfurt").is_dir()
    assert fs.exists("frames/checkpoints/s3frame/final.pt")  # mirrored atomically
    assert not [p for p in fs.find("frames/checkpoints") if p.endswith(".tmp")]

    client = MlflowClient(mlflow_server.url)
    mlflow_run = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`segctl.run_id` = '{run['run_id']}'",
    )[0]
    assert mlflow_run.data.params["data.root"] == "s3://frames/cityscapes"
    assert mlflow_run.data.tags["segctl.final_checkpoint"] == "s3://frames/checkpoints/s3frame/final.pt"
    logs = runner.invoke(app, ["logs", run["run_id"]])
    sbatch_plan = runner.invoke(app, ["submit", str(recipe_file), "--dry-run", "--cluster", "slurm"])
    everything = dry.output + submitted.output + status.output + logs.output + sbatch_plan.output
    everything += json.dumps(mlflow_run.data.params) + json.dumps(mlflow_run.data.tags)
    everything += mlflow_server.log_text()
    assert SECRET not in everything

"""Tracking against a real MLflow server on 127.0.0.1: a training run's full record, an outage
in the middle of a run (nothing lost), system metrics (through an outage, and switched off), and
a run whose dataset lives on a moto S3 server.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from segctl.cli import app
from tests.servers import aws_env, mlflow_server, moto_server  # noqa: F401  (fixtures)
from tests.trainer_runs import frame_job_yaml, make_run_dir, one_frame_cityscapes, small_recipe
from tests.waiting import wait_until
from trainer.entry import run_evaluation, run_training
from trainer.tracking import BUFFER_FILE, RUN_ID_FILE, SYSTEM_METRICS_ENV, Tracker

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


def _system_keys(client: MlflowClient, run_id: str) -> list[str]:
    return sorted(k for k in client.get_run(run_id).data.metrics if k.startswith("system/"))


class _Records(logging.Handler):
    """Collects the records of one logger (MLflow's loggers do not propagate to the root)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> _Records:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


def test_training_run_logs_everything_to_the_server(real_data, tmp_path, mlflow_server, capfd):
    root = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "data")
    recipe = small_recipe(
        root, mlflow_server.url,
        data={"crop_size": [64, 128], "storage_options": {"secret": SECRET}},
        schedule={"max_iters": 4, "log_interval": 1, "val_interval": 2},
        reference={"miou_ss": 76.2, "miou_ms_flip": 78.1, "source": "SegFormer table 1"},
        tracking={"system_metrics_interval_s": 0.2},
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
    assert "system/cpu_utilization_percentage" in metrics  # MLflow's monitor, every 0.2 s
    assert "system/system_memory_usage_megabytes" in metrics
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
        tracking={"system_metrics_interval_s": 0.2},  # the monitor meets the outage too
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
    with _Records("mlflow.system_metrics") as monitor_log:
        result = run_training(run_dir)
    seconds = time.perf_counter() - started
    killer.join(timeout=180)
    failures = [m for m in monitor_log.messages(logging.WARNING) if m.startswith("Failed to")]
    assert len(failures) <= 1, failures  # the monitor gives up once, quietly
    assert not monitor_log.messages(logging.ERROR)  # nor an error when it is stopped in the outage
    assert events == ["down", "up"]
    assert result["finished"] and result["iteration"] == max_iters  # training went on
    # Training did not hang on the server through the outage (~20 s on a quiet machine). The
    # bound is loose on purpose: a loaded 2-core machine took up to 3.5 minutes.
    assert seconds < 600, f"training took {seconds:.0f} s through the outage: it waited on MLflow"

    synced = runner.invoke(app, ["sync", str(run_dir)])
    assert synced.exit_code == 0, synced.output
    assert not (run_dir / BUFFER_FILE).exists()
    # the images the outage held back were delivered: their files are gone
    assert not [p for p in (run_dir / "tracking-buffer").rglob("*") if p.is_file()]
    client = MlflowClient(mlflow_server.url)
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    assert _steps(client, run_id, "loss") == list(range(1, max_iters + 1))  # every step
    assert _steps(client, run_id, "lr") == list(range(1, max_iters + 1))
    assert _steps(client, run_id, "mIoU") == [5, 10]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "plots/learning_curve.png" in _artifacts(client, run_id)
    assert "system/cpu_utilization_percentage" in run.data.metrics  # sampled before the outage
    again = runner.invoke(app, ["sync", str(run_dir)])
    assert "nothing to sync" in again.output

    report = runner.invoke(app, ["report", "--format", "json", "--tracking-uri", mlflow_server.url])
    assert report.exit_code == 0, report.output
    row = next(r for r in json.loads(report.output) if r["recipe"] == "outage")
    assert (row["iterations_done"], row["iterations_planned"]) == (max_iters, max_iters)
    assert row["reproduced_ss"] is not None and row["mlflow_run_id"] == run_id


def test_system_metrics_stop_quietly_in_an_outage_and_start_again(tmp_path, mlflow_server):
    """MLflow's monitor samples every 0.2 s; when the server dies it ends after one warning
    while the tracker buffers; once the server answers, the tracker's next delivery starts a
    new monitor whose steps continue the old ones."""
    recipe = small_recipe(tmp_path, mlflow_server.url, name="sysmetrics",
                          tracking={"system_metrics_interval_s": 0.2})
    client = MlflowClient(mlflow_server.url)
    key = "system/cpu_utilization_percentage"
    with _Records("mlflow.system_metrics") as monitor_log:
        tracker = Tracker.for_recipe(tmp_path / "run", recipe, cooldown_s=0.5)
        try:
            tracker.log_metrics({"loss": 1.0}, step=1)
            wait_until(lambda: client.get_metric_history(tracker.run_id, key), timeout_s=20,
                       what="system metrics before the outage", interval_s=0.2)

            mlflow_server.stop(hard=True)
            tracker.log_metrics({"loss": 0.9}, step=2)  # buffered

            def monitor_failures() -> list[str]:
                return [m for m in monitor_log.messages(logging.WARNING) if "Failed to" in m]

            # the monitor meets the dead server: one warning, then it ends
            wait_until(monitor_failures, timeout_s=30, what="the monitor's warning about the "
                       "dead server", interval_s=0.1)
            tracker.log_metrics({"loss": 0.8}, step=3)  # buffered
            time.sleep(1.0)
            failures = [m for m in monitor_log.messages(logging.WARNING) if "Failed to" in m]
            assert len(failures) == 1, failures

            mlflow_server.start()
            time.sleep(0.6)  # past the tracker's cool-down
            restarted = int(time.time() * 1000)
            tracker.log_metrics({"loss": 0.7}, step=4)  # replays the buffer, starts a monitor
            wait_until(lambda: [m for m in client.get_metric_history(tracker.run_id, key)
                                if m.timestamp >= restarted], timeout_s=30,
                       what="system metrics sampled after the outage", interval_s=0.2)
        finally:
            tracker.close()
    assert tracker.pending() == 0
    assert _steps(client, tracker.run_id, "loss") == [1, 2, 3, 4]
    history = sorted(client.get_metric_history(tracker.run_id, key), key=lambda m: m.timestamp)
    assert [m for m in history if m.timestamp >= restarted]  # sampled again after the outage
    steps = [m.step for m in history]
    assert steps == sorted(set(steps))  # the new monitor continues the step count
    started = [m for m in monitor_log.messages() if m.startswith("Started monitoring")]
    assert len(started) == 2
    failures = [m for m in monitor_log.messages(logging.WARNING) if "Failed to" in m]
    assert len(failures) == 1, failures
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_closing_in_an_outage_stops_the_monitor_without_an_error(tmp_path, mlflow_server):
    """A job that ends while the server is away: the tracker buffers, the monitor's last
    samples are dropped, and MLflow's 'Error terminating' line is not shown."""
    recipe = small_recipe(tmp_path, mlflow_server.url, name="sysclose",
                          tracking={"system_metrics_interval_s": 0.2})
    with _Records("mlflow.system_metrics") as monitor_log:
        tracker = Tracker.for_recipe(tmp_path / "run", recipe, cooldown_s=60)
        try:
            tracker.log_metrics({"loss": 1.0}, step=1)
            time.sleep(1.0)  # samples taken, some waiting in the monitor's batch
            mlflow_server.stop(hard=True)
            tracker.log_metrics({"loss": 0.9}, step=2)  # fails: buffered, tracking paused
        finally:
            started = time.monotonic()
            tracker.close()
            closed_s = time.monotonic() - started
            mlflow_server.start()  # the module's later tests need it
    assert closed_s < 30
    assert tracker.pending() >= 1  # left for segctl sync
    assert not monitor_log.messages(logging.ERROR), monitor_log.messages(logging.ERROR)
    # the tracker's own state is untouched: MLflow's monitor logs at its usual level again
    assert logging.getLogger("mlflow.system_metrics.system_metrics_monitor").level == logging.NOTSET


def test_system_metrics_switched_off_log_none(tmp_path, mlflow_server, monkeypatch):
    """``tracking.system_metrics: false``, or MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false over a
    recipe that wants them: no system/* metric at all."""
    client = MlflowClient(mlflow_server.url)
    off = small_recipe(tmp_path, mlflow_server.url, name="sysoff",
                       tracking={"system_metrics": False, "system_metrics_interval_s": 0.1})
    on = small_recipe(tmp_path, mlflow_server.url, name="syson",
                      tracking={"system_metrics_interval_s": 0.1})
    monkeypatch.delenv(SYSTEM_METRICS_ENV, raising=False)
    runs = []
    settle_s = 0.8  # how long a run stays open: twice what the control took to log a sample
    # the control first: it measures how long a monitor takes to log on this machine now
    for recipe, env in ((on, None), (off, None), (on, "false")):
        if env is not None:
            monkeypatch.setenv(SYSTEM_METRICS_ENV, env)
        else:
            monkeypatch.delenv(SYSTEM_METRICS_ENV, raising=False)
        tracker = Tracker.for_recipe(tmp_path / f"run-{len(runs)}", recipe)
        opened = time.monotonic()
        tracker.log_metrics({"loss": 1.0}, step=1)
        if not runs:
            wait_until(lambda: _system_keys(client, tracker.run_id), timeout_s=30,
                       what="the control run's first system metrics", interval_s=0.1)
            settle_s = max(settle_s, 2 * (time.monotonic() - opened))
        else:
            time.sleep(settle_s)
        tracker.close()
        runs.append(tracker.run_id)
    assert "system/cpu_utilization_percentage" in _system_keys(client, runs[0])  # the control
    assert _system_keys(client, runs[1]) == []
    assert _system_keys(client, runs[2]) == []


@pytest.mark.slow
def test_s3_data_root_end_to_end(real_data, tmp_path, moto_server, mlflow_server, segctl_env,
                                 monkeypatch):
    fs = moto_server.filesystem()
    fs.mkdir("frames")
    local = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "upload")
    fs.put(str(local) + "/", "frames/cityscapes/", recursive=True)
    scratch = tmp_path / "scratch"
    recipe_file = segctl_env / "s3frame.yaml"
    recipe_file.write_text(frame_job_yaml(
        "s3frame", "s3://frames/cityscapes",
        command=f"segctl submit {recipe_file} --cluster local --wait", data=f"""\
  stage_to: node-local
  scratch_dir: {scratch}
  storage_options:
    endpoint_url: {moto_server.url}
    secret: {SECRET}
    key: testing-key-id
""", train="  checkpoint_dir: s3://frames/checkpoints/s3frame\n",
        tail=f"tracking:\n  uri: {mlflow_server.url}\n"))
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

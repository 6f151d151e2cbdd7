"""MLflow tracking against an embedded SQLite store, and with an unreachable server."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.trainer_runs import make_run_dir, one_frame_cityscapes, small_recipe
from trainer.entry import run_training
from trainer.tracking import (
    BUFFER_FILE,
    RUN_ID_FILE,
    SYSTEM_METRICS_ENV,
    Tracker,
    flatten_params,
    recipe_params,
    run_tags,
    sanitize_name,
    system_metrics_enabled,
    tracking_uri,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable(monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return f"http://127.0.0.1:{_closed_port()}"


def test_flatten_and_sanitize():
    flat = flatten_params({"data": {"crop_size": [128, 256], "root": "x", "n": None}, "a": 1.5})
    assert flat == {"data.crop_size": "[128, 256]", "data.root": "x", "data.n": "None", "a": "1.5"}
    assert sanitize_name("IoU.traffic light") == "IoU.traffic light"
    assert sanitize_name("IoU.chest of drawers(1)") == "IoU.chest of drawers_1_"
    assert sanitize_name("eval//ss/../x") == "eval/ss/x"


def test_tracking_uri_fallbacks(tmp_path, monkeypatch):
    recipe = small_recipe(tmp_path, "sqlite:///a.db")
    assert tracking_uri(recipe) == "sqlite:///a.db"
    bare = recipe.model_copy(update={"tracking": recipe.tracking.model_copy(update={"uri": None})})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert tracking_uri(bare) == "http://example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(bare) == "sqlite:///mlflow.db"


@pytest.mark.slow
def test_tracker_logs_and_resumes_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = small_recipe(tmp_path / "data", uri)
    run_dir = tmp_path / "run"
    tracker = Tracker.for_recipe(run_dir, recipe)
    assert tracker.run_id is not None
    assert (run_dir / RUN_ID_FILE).read_text().strip() == tracker.run_id
    tracker.set_tags(run_tags(recipe, executor="local", job_id="123"))
    tracker.log_params(recipe_params(recipe))
    tracker.log_metrics({"loss": 2.0, "lr": 1e-3}, step=10)
    tracker.log_metrics({"mIoU": 50.0, "IoU.traffic light": 40.0, "IoU.wall": float("nan")},
                        step=10)
    tracker.log_text("the table", "tables/iter_0000010.txt")
    tracker.close("KILLED")

    again = Tracker.for_recipe(run_dir, recipe)
    assert again.run_id == tracker.run_id
    again.log_metrics({"loss": 1.0}, step=20)
    again.close()

    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "trainer-tests"
    assert run.data.params["data.crop_size"] == "[128, 256]"
    assert run.data.params["schedule.max_iters"] == "12"
    assert run.data.params["model.name"] == "segformer_mit_b0"
    assert run.data.tags["segctl.executor"] == "local"
    assert run.data.tags["segctl.job_id"] == "123"
    assert run.data.tags["segctl.run_id"].startswith("trainer-test-")
    assert len(run.data.tags["segctl.recipe_hash"]) == 64
    assert "segctl.version" in run.data.tags
    history = [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "loss")]
    assert sorted(history) == [(10, 2.0), (20, 1.0)]
    assert run.data.metrics["IoU.traffic light"] == 40.0
    assert "IoU.wall" not in run.data.metrics  # NaN is left out
    artifacts = [a.path for a in client.list_artifacts(tracker.run_id, "tables")]
    assert artifacts == ["tables/iter_0000010.txt"]
    # artifacts of the embedded store live beside the database, not in the current directory
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_disabled_tracker_does_nothing(tmp_path):
    tracker = Tracker(tmp_path, uri="sqlite:///never.db", experiment="x", enabled=False)
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.close()
    assert tracker.run_id is None and not (tmp_path / RUN_ID_FILE).exists()
    assert not Path("never.db").exists()


def test_unreachable_server_never_raises(tmp_path, unreachable, caplog):
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="trainer.tracking"):
        tracker = Tracker(tmp_path, uri=unreachable, experiment="x", cooldown_s=0.0)
        tracker.log_params({"a": "1"})
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.set_tags({"t": "v"})
        tracker.log_text("x", "x.txt")
        tracker.close("FAILED")
    assert tracker.run_id is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6  # one per failed call, close included (it tries once more)
    buffered = [json.loads(line)["op"] for line in (tmp_path / BUFFER_FILE).read_text().splitlines()]
    assert buffered == ["params", "metrics", "tags", "text", "status"]  # kept for segctl sync
    assert time.perf_counter() - started < 60


@pytest.mark.slow
def test_training_proceeds_with_tracking_down(real_data, tmp_path, unreachable):
    root = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "data")
    recipe = small_recipe(
        root, unreachable,
        data={"crop_size": [64, 128]}, schedule={"max_iters": 2, "log_interval": 1},
    )
    run_dir = make_run_dir(tmp_path / "run", recipe)
    result = run_training(run_dir)
    assert result["finished"] and result["metrics"] is not None
    assert (run_dir / "checkpoints" / "final.pt").is_file()
    assert not (run_dir / RUN_ID_FILE).exists()


def test_ensure_store_creates_a_missing_sqlite_store_once(tmp_path):
    from mlflow.tracking import MlflowClient

    from trainer.tracking import ensure_store

    db = tmp_path / "fresh.db"
    uri = f"sqlite:///{db}"
    ensure_store(uri)
    assert db.is_file()
    names = [e.name for e in MlflowClient(tracking_uri=uri).search_experiments()]
    assert "Default" in names
    modified = db.stat().st_mtime_ns
    ensure_store(uri)  # existing store: untouched
    assert db.stat().st_mtime_ns == modified
    ensure_store("http://127.0.0.1:9")  # other URIs: nothing happens, nothing is contacted


def test_system_metrics_switch_follows_the_environment_over_the_recipe(tmp_path, monkeypatch):
    on = small_recipe(tmp_path, "sqlite:///a.db")
    off = small_recipe(tmp_path, "sqlite:///a.db", tracking={"system_metrics": False})
    assert on.tracking.system_metrics and on.tracking.system_metrics_interval_s == 10.0
    monkeypatch.delenv(SYSTEM_METRICS_ENV, raising=False)
    assert system_metrics_enabled(on) and not system_metrics_enabled(off)
    monkeypatch.setenv(SYSTEM_METRICS_ENV, "false")
    assert not system_metrics_enabled(on)
    monkeypatch.setenv(SYSTEM_METRICS_ENV, "true")
    assert system_metrics_enabled(off)
    with pytest.raises(ValueError):
        small_recipe(tmp_path, "sqlite:///a.db", tracking={"system_metrics_interval_s": 0})


@pytest.mark.slow
def test_training_goes_on_without_psutil(tmp_path):
    """Where psutil cannot be imported the tracker warns once and logs everything else."""
    import subprocess
    import sys

    script = f"""
import logging, sys
sys.modules["psutil"] = None  # import psutil now raises ImportError
logging.basicConfig(level=logging.WARNING)
from mlflow import MlflowClient
from trainer.tracking import Tracker
uri = "sqlite:///{tmp_path / 'mlflow.db'}"
tracker = Tracker("{tmp_path / 'run'}", uri=uri, experiment="x", system_metrics=True,
                  system_metrics_interval_s=0.1)
for step in range(1, 4):
    tracker.log_metrics({{"loss": 1.0 / step}}, step=step)
tracker.close()
print(sorted(MlflowClient(uri).get_run(tracker.run_id).data.metrics))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['loss']"
    assert out.stderr.count("system metrics not logged") == 1, out.stderr


class _LateView(MlflowClient):
    """A real client whose first experiment look-up predates another job's creation of it:
    what a job sees when the jobs of a sweep start together."""

    def __init__(self, uri: str) -> None:
        super().__init__(tracking_uri=uri)
        self.lookups = 0

    def get_experiment_by_name(self, name):
        self.lookups += 1
        return None if self.lookups == 1 else super().get_experiment_by_name(name)


def test_jobs_racing_to_create_the_experiment_share_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = small_recipe(tmp_path / "data", uri)
    first = Tracker.for_recipe(tmp_path / "a", recipe, system_metrics=False)
    late = Tracker.for_recipe(tmp_path / "b", recipe, system_metrics=False,
                              client_factory=_LateView)
    assert late.run_id is not None and late.run_id != first.run_id  # not paused by the race
    assert (tmp_path / "b" / RUN_ID_FILE).read_text().strip() == late.run_id
    client = MlflowClient(uri)
    experiments = {client.get_run(t.run_id).info.experiment_id for t in (first, late)}
    assert len(experiments) == 1
    first.close()
    late.close()


# --- images wait in RUN_DIR/tracking-buffer/ only until they are delivered --------------------

def _store_away(tmp_path: Path) -> tuple[str, Path]:
    """An embedded store that cannot be opened (a file stands where its folder should be, as
    where a shared file system is not mounted): its URI, and the file to remove to end the
    outage."""
    blocker = tmp_path / "store"
    blocker.write_text("not a folder")
    return f"sqlite:///{blocker / 'mlflow.db'}", blocker


def _waiting_images(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "tracking-buffer").rglob("*") if p.is_file())


def _chart(value: float) -> bytes:
    from trainer.visuals import per_class_iou_chart

    return per_class_iou_chart({"road": value, "sky": 50.0}, f"chart {value}")


def _delivered(uri: str, run_id: str, artifact: str, tmp_path: Path) -> bytes:
    return Path(MlflowClient(uri).download_artifacts(run_id, artifact, str(tmp_path))).read_bytes()


@pytest.mark.slow
def test_images_leave_the_buffer_folder_once_the_job_delivers_them(tmp_path):
    """An image logged while the store is away waits in tracking-buffer/; the job's next call
    after the store is back replays it, and its file goes; an image delivered at once never
    stays."""
    uri, blocker = _store_away(tmp_path)
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir, uri=uri, experiment="x", cooldown_s=0.0)
    tracker.log_metrics({"loss": 1.0}, step=1)
    first, second = _chart(10.0), _chart(20.0)
    tracker.log_image(first, "plots/first.png")
    assert tracker.run_id is None and tracker.pending() == 2
    assert [p.read_bytes() for p in _waiting_images(run_dir)] == [first]
    blocker.unlink()  # the store is back
    tracker.log_image(second, "plots/second.png")  # replays the buffer, then delivers this
    assert tracker.run_id is not None and tracker.pending() == 0
    assert _waiting_images(run_dir) == []
    assert not any((run_dir / "tracking-buffer").iterdir())  # no empty folders left either
    # the delivered images are kept with the journal, for a rebuild of a lost run
    kept = sorted(p.read_bytes() for p in (run_dir / "tracking-journal").rglob("*.png"))
    assert kept == sorted([first, second])
    tracker.close()
    assert _delivered(uri, tracker.run_id, "plots/first.png", tmp_path / "a") == first
    assert _delivered(uri, tracker.run_id, "plots/second.png", tmp_path / "b") == second


@pytest.mark.slow
def test_segctl_sync_empties_the_buffer_folder(segctl_env, tmp_path):
    """A job whose store was away for its whole life leaves its images in tracking-buffer/;
    ``segctl sync`` delivers them and removes their files."""
    from typer.testing import CliRunner

    from segctl.cli import app

    uri, blocker = _store_away(tmp_path)
    recipe = small_recipe(tmp_path / "data", uri, tracking={"system_metrics": False})
    run_dir = make_run_dir(tmp_path / "run", recipe)
    job = Tracker.for_recipe(run_dir, recipe, cooldown_s=0.0)
    job.log_metrics({"loss": 1.0}, step=1)
    charts = {f"plots/chart_{k}.png": _chart(10.0 * k) for k in (1, 2, 3)}
    for artifact, png in charts.items():
        job.log_image(png, artifact)
    job.close("FINISHED")
    assert len(_waiting_images(run_dir)) == 3
    blocker.unlink()

    synced = CliRunner().invoke(app, ["sync", str(run_dir)])
    assert synced.exit_code == 0, synced.output
    assert "delivered" in synced.output
    assert not (run_dir / BUFFER_FILE).exists()
    assert _waiting_images(run_dir) == []
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    for k, (artifact, png) in enumerate(charts.items()):
        assert _delivered(uri, run_id, artifact, tmp_path / str(k)) == png
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"

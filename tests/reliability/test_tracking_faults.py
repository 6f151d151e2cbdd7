"""Tracking store faults: the embedded MLflow store deleted while a run logs.

Every record a run logs stays in ``RUN_DIR/tracking-journal.jsonl``, so when the MLflow run is
gone (its store deleted), the job's next start or ``segctl sync`` rebuilds the whole run into a
new MLflow run and tags it. The jobs here are real processes logging to a real SQLite store:
MLflow keeps the database of a URI open per process, so the store is deleted underneath a
process that holds it, as it would be in life.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.tracking_store import sqlite_path, sqlite_uri
from segctl.paths import default_tracking_uri
from tests.trainer_runs import make_run_dir, one_frame_cityscapes, small_recipe
from trainer.tracking import (
    BUFFER_FILE,
    JOURNAL_FILE,
    REBUILT_TAG,
    RUN_ID_FILE,
    Tracker,
)

REPO = Path(__file__).resolve().parents[2]
SEGCTL = str(Path(sys.executable).with_name("segctl"))
runner = CliRunner()


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _python(script: str, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_sync_rebuilds_a_run_whose_store_was_deleted_mid_run(real_data, tmp_path):
    """A training job logs to the embedded store; the store is deleted at iteration 3 while
    the job goes on; ``segctl sync`` puts every point (before and after) into a new run."""
    root = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "data")
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    max_iters = 10
    recipe = small_recipe(
        root, uri, name="storelost", data={"crop_size": [64, 128]},
        schedule={"max_iters": max_iters, "log_interval": 1, "val_interval": 5,
                  "checkpoint_interval": 100},
        tracking={"system_metrics": False},
    )
    run_dir = make_run_dir(tmp_path / "run", recipe)
    db.parent.mkdir()  # the job creates the store (this process must not open it first)
    log = open(tmp_path / "job.log", "wb")
    job = subprocess.Popen(
        [sys.executable, "-c",
         f"from trainer.entry import run_training; run_training({str(run_dir)!r})"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )
    deleted_at = None
    deadline = time.monotonic() + 240
    try:
        while job.poll() is None and time.monotonic() < deadline:
            try:
                iteration = json.loads((run_dir / "progress.json").read_text())["iteration"]
            except (OSError, ValueError, KeyError):
                iteration = 0
            if iteration >= 3 and deleted_at is None:
                db.unlink()
                deleted_at = iteration
            time.sleep(0.02)
        job.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if job.poll() is None:
            job.kill()
        log.close()
    assert job.returncode == 0, (tmp_path / "job.log").read_text()[-3000:]
    assert deleted_at is not None and deleted_at < max_iters
    lost = (run_dir / RUN_ID_FILE).read_text().strip()
    assert (run_dir / BUFFER_FILE).is_file()  # what came after the deletion waits for sync

    synced = subprocess.run([SEGCTL, "sync", str(run_dir)], capture_output=True, text=True,
                            timeout=180, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert "rebuilt" in synced.stdout and lost in synced.stdout

    client = MlflowClient(uri)
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    assert run_id != lost
    run = client.get_run(run_id)
    assert _steps(client, run_id, "loss") == list(range(1, max_iters + 1))  # every point
    assert _steps(client, run_id, "lr") == list(range(1, max_iters + 1))
    assert _steps(client, run_id, "mIoU") == [5, 10]
    assert run.data.params["schedule.max_iters"] == str(max_iters)
    assert run.data.tags["segctl.run_id"] == f"storelost-{run.data.tags['segctl.recipe_hash'][:8]}"
    assert run.data.tags[REBUILT_TAG] == lost
    assert run.data.metrics["iterations_done"] == max_iters
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"recipe.json", "tables"} <= artifacts
    # the charts the lost run had received come back from tracking-journal/
    charts = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"plots/per_class_iou_iter_0000005.png", "plots/per_class_iou_iter_0000010.png"} \
        <= charts, charts
    assert not (run_dir / BUFFER_FILE).exists()
    again = subprocess.run([SEGCTL, "sync", str(run_dir)], capture_output=True, text=True,
                           timeout=180, cwd=tmp_path)
    assert "nothing to sync" in again.stdout  # the rebuilt run is found as it is


_PHASE = """
import sys
from trainer.tracking import Tracker
tracker = Tracker(sys.argv[1], uri=sys.argv[2], experiment="faults", cooldown_s=0.0)
first, last, status = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if first == 1:
    tracker.log_params({"schedule.max_iters": str(last)})
    tracker.set_tags({"segctl.run_id": "faults-00000000"})
    tracker.log_text("first table", "tables/iter_0000001.txt")
for step in range(first, last + 1):
    tracker.log_metrics({"loss": 1.0 / step}, step=step)
tracker.close(status)
print(tracker.run_id)
"""


def _phase(run_dir: Path, uri: str, first: int, last: int, status: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _PHASE, str(run_dir), uri, str(first), str(last), status],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_requeued_job_rebuilds_a_run_lost_between_its_phases(tmp_path):
    """The job is preempted, the store deleted, the job requeued: its tracker finds the run
    gone and rebuilds it before logging on, so nothing is left for sync."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    run_dir = tmp_path / "run"
    lost = _phase(run_dir, uri, 1, 5, "KILLED")
    db.unlink()
    rebuilt = _phase(run_dir, uri, 6, 9, "FINISHED")
    assert rebuilt != lost and not (run_dir / BUFFER_FILE).exists()
    client = MlflowClient(uri)
    run = client.get_run(rebuilt)
    assert _steps(client, rebuilt, "loss") == list(range(1, 10))
    assert run.data.params == {"schedule.max_iters": "5"}
    assert run.data.tags[REBUILT_TAG] == lost
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(rebuilt, "tables")] == ["tables/iter_0000001.txt"]


@pytest.mark.slow
def test_a_full_journal_says_the_rebuild_is_incomplete(tmp_path):
    """Past ``journal_max_bytes`` records are no longer journaled; a rebuild then keeps what
    the journal holds and tags the run ``segctl.journal_complete=false``."""
    run_dir = tmp_path / "run"
    first = Tracker(run_dir, uri=f"sqlite:///{tmp_path / 'a.db'}", experiment="faults",
                    cooldown_s=0.0, journal_max_bytes=600)
    for step in range(1, 21):
        first.log_metrics({"loss": 1.0 / step}, step=step)
    first.close()
    journal = (run_dir / JOURNAL_FILE).read_text().splitlines()
    assert 1 < len(journal) < 21 and json.loads(journal[-1]) == {"op": "journal-full"}
    kept = len(journal) - 1

    # the run's store moved: the old run is not in the new one, which gets the rebuild
    moved = Tracker(run_dir, uri=f"sqlite:///{tmp_path / 'b.db'}", experiment="faults",
                    cooldown_s=0.0, reopen=False)
    assert moved.run_id != first.run_id and moved.rebuilt == kept
    client = MlflowClient(f"sqlite:///{tmp_path / 'b.db'}")
    run = client.get_run(moved.run_id)
    assert _steps(client, moved.run_id, "loss") == list(range(1, kept + 1))
    assert run.data.tags["segctl.journal_complete"] == "false"
    assert run.data.tags[REBUILT_TAG] == first.run_id
    assert os.path.getsize(run_dir / JOURNAL_FILE) <= 600 + len('{"op": "journal-full"}\n')


@pytest.mark.parametrize("folder", ["w?mode=ro#frag", "a%20b"])
@pytest.mark.slow
def test_the_embedded_store_stays_in_a_working_directory_named_like_a_url(tmp_path, monkeypatch,
                                                                          folder):
    """``?`` starts a query and ``%`` an escape in a ``sqlite:///`` URI: the default store of
    such a working directory is still ``./mlflow.db`` there (with its artifacts beside it)."""
    work = tmp_path / folder
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SEGCTL_HOME", str(tmp_path / "home"))
    uri = default_tracking_uri()
    assert sqlite_path(uri) == work / "mlflow.db"
    assert sqlite_uri(work / "mlflow.db") == uri

    reported = runner.invoke(app, ["report", "--format", "json"])  # creates the store
    assert reported.exit_code == 0, reported.output
    assert json.loads(reported.stdout) == []
    tracker = Tracker(tmp_path / "run", uri=uri, experiment="x", cooldown_s=0.0)
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_text("a table", "tables/t.txt")
    tracker.close()
    assert tracker.run_id is not None and tracker.pending() == 0
    assert (work / "mlflow.db").is_file()
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.artifact_uri.startswith((work / "mlartifacts").as_uri())
    assert (work / "mlartifacts").is_dir()
    databases = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".txt",)
                 and p.parent == tmp_path]
    assert databases == []  # nothing like tmp_path/"w" (the query cut off) was created
    assert [p for p in tmp_path.rglob("mlflow.db")] == [work / "mlflow.db"]

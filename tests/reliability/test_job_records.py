"""Local job state from the job's JSON exit record and its controller's pid; private folders;
``segctl submit`` returning at once when its output is captured.

Every job here is a real submitit local job started by segctl; a job that would run long is
cancelled (or killed) by the test and waited for, with a bound.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.registry import Registry
from tests.test_cli_submit import write_recipe
from tests.waiting import wait_until

runner = CliRunner()

#: Seconds a job may take to end after a cancel, a kill or its last iteration.
END_BOUND_S = 120
#: Seconds ``segctl submit`` (recipe checks, a few-frame data check, submission) may take.
SUBMIT_BOUND_S = 120
#: Iterations that keep a job busy far longer than any bound here.
LONG = "schedule.max_iters=1000000"


def controller_gone(job_id: str) -> bool:
    """True when the local job's controller process (pid ``job_id``) has ended."""
    try:
        return psutil.Process(int(job_id)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def status_rows() -> list[dict]:
    """``segctl status --json`` through the CLI."""
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def stop_local_jobs() -> None:
    """Cancel every registered live local job, wait for its controller to end (bounded), and
    kill what is left of it (its processes were started by this test)."""
    runner.invoke(app, ["cancel", *[run.run_id for run in Registry(segctl_home()).runs()]])
    for job in Registry(segctl_home()).jobs():
        if job.executor != "local" or not job.job_id:
            continue
        deadline = time.monotonic() + END_BOUND_S
        while not controller_gone(job.job_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not controller_gone(job.job_id):
            kill_tree(int(job.job_id))


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        processes = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.slow
def test_completed_local_job_is_known_from_its_exit_record(segctl_env, cityscapes_frame_root):
    from segctl.executors import exit_record_path

    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    result = runner.invoke(app, ["submit", str(recipe), "--wait", "--cluster", "local"])
    assert result.exit_code == 0, result.output
    (run,) = status_rows()
    assert run["state"] == "COMPLETED"
    run_dir = Path(run["run_dir"])
    jobs = run_dir / "jobs"
    assert mode(run_dir) == mode(jobs) == "0o700"

    record = json.loads(exit_record_path(jobs, run["job_id"]).read_text())
    assert record["outcome"] == "success" and record["job_id"] == run["job_id"]
    assert record["task"] == 0 and record["kind"] == "train"
    assert record["started_at"] <= record["ended_at"] <= time.time()

    # the state is learnt from that record alone: submitit's pickles are not needed
    for pickled in jobs.glob("*.pkl"):
        pickled.unlink()
    registry = Registry(segctl_home())
    row = registry.begin_job(run["run_id"], "train", "local", str(jobs), None)
    registry.submitted(row, run["job_id"])
    (again,) = status_rows()
    assert again["state"] == "COMPLETED" and again["reason"] is None


@pytest.mark.slow
def test_failed_local_job_gives_its_exception_as_reason(segctl_env):
    from segctl.executors import exit_record_path, job_statuses, make_executor
    from segctl.jobs import TrainJob
    from segctl.runs import create_jobs_folder

    run_dir = segctl_env / "runs" / "missing-00000000"  # no recipe.json: the job must fail
    folder = create_jobs_folder(run_dir)
    executor = make_executor("local", folder, {"timeout_min": 10, "tasks_per_node": 1})
    job = executor.submit(TrainJob(), str(run_dir))
    wait_until(lambda: controller_gone(job.job_id), timeout_s=END_BOUND_S,
               what="the failing job's end")

    status = job_statuses([("local", str(folder), job.job_id)])[job.job_id]
    assert status.state == "FAILED"
    assert status.reason.startswith("FileNotFoundError: ") and "recipe.json" in status.reason
    assert "\n" not in status.reason
    record = json.loads(exit_record_path(folder, job.job_id).read_text())
    assert record["outcome"] == "failed" and record["error_type"] == "FileNotFoundError"


@pytest.mark.slow
def test_killed_local_job_is_failed_once_its_controller_is_gone(segctl_env, cityscapes_frame_root):
    from segctl.executors import exit_record_path

    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    try:
        result = runner.invoke(app, ["submit", str(recipe), "--cluster", "local", "--set", LONG])
        assert result.exit_code == 0, result.output
        (run,) = status_rows()
        progress = Path(run["run_dir"]) / "progress.json"
        wait_until(progress.exists, timeout_s=SUBMIT_BOUND_S, what="the first progress.json")
        assert status_rows()[0]["state"] == "RUNNING"
        kill_tree(int(run["job_id"]))
        wait_until(lambda: controller_gone(run["job_id"]), timeout_s=END_BOUND_S,
                   what="the killed job's end")
        (after,) = status_rows()
        assert after["state"] == "FAILED"
        assert "without an exit record" in after["reason"]
        assert not exit_record_path(Path(run["run_dir"]) / "jobs", run["job_id"]).exists()
    finally:
        stop_local_jobs()


@pytest.mark.slow
def test_submit_returns_at_once_when_its_output_is_a_pipe(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    command = [sys.executable, "-m", "segctl", "submit", str(recipe), "--cluster", "local",
               "--set", LONG]
    try:
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=SUBMIT_BOUND_S,
                                  env=os.environ.copy(), check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"segctl submit held the pipe past {SUBMIT_BOUND_S} s: its job "
                        "inherited the caller's stdout/stderr")
        assert done.returncode == 0, done.stderr
        assert "submitted frame-" in done.stdout
        took = time.monotonic() - started
        (run,) = status_rows()
        assert run["state"] in ("SUBMITTED", "RUNNING"), f"{run} after {took:.0f} s"
        assert not controller_gone(run["job_id"])
        cancelled = runner.invoke(app, ["cancel", run["run_id"]])
        assert cancelled.exit_code == 0, cancelled.output
        wait_until(lambda: controller_gone(run["job_id"]), timeout_s=END_BOUND_S,
                   what="the cancelled job's end")
    finally:
        stop_local_jobs()
    assert status_rows()[0]["state"] == "CANCELLED"


@pytest.mark.slow
def test_sweep_job_folder_and_member_runs_are_private(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    try:
        result = runner.invoke(app, ["submit", str(recipe), "--cluster", "local", "--set", LONG,
                                     "--sweep", "train.seed=0,1"])
        assert result.exit_code == 0, result.output
        (sweep_folder,) = (segctl_env / "runs" / "sweeps").iterdir()
        assert mode(sweep_folder) == "0o700"
        rows = status_rows()
        assert len(rows) == 2
        for row in rows:
            assert mode(Path(row["run_dir"])) == "0o700"
    finally:
        stop_local_jobs()


def test_planted_or_damaged_exit_records_are_read_safely(tmp_path):
    from segctl.executors import exit_record_path, local_status

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid whose process has ended: no live controller
    job_id = str(gone.pid)
    record = exit_record_path(tmp_path, job_id)

    assert local_status(tmp_path, job_id).state == "FAILED"  # no record, no controller
    os.mkfifo(record)  # a FIFO would block a reader that opened it plainly
    started = time.monotonic()
    status = local_status(tmp_path, job_id)
    assert time.monotonic() - started < 5
    assert status.state == "FAILED" and "unreadable exit record" in status.reason
    record.unlink()
    for damaged in (b"\x80\x04K\x01.", b"[1, 2]", b'{"outcome": "maybe"}', b"{" * 100_000):
        record.write_bytes(damaged)
        status = local_status(tmp_path, job_id)
        assert status.state == "FAILED" and "unreadable exit record" in status.reason, damaged
    record.write_text(json.dumps({"outcome": "failed", "error_type": "ValueError",
                                  "error": "bad\nvalue"}))
    assert local_status(tmp_path, job_id).reason == "ValueError: bad value"
    record.write_text(json.dumps({"outcome": "success"}))
    assert local_status(tmp_path, job_id).state == "COMPLETED"


def test_exit_record_hides_url_credentials(tmp_path, monkeypatch):
    """A job that fails over a URL with credentials records the error without the secret."""
    from segctl.executors import exit_record_path, local_status
    from segctl.jobs import exit_record

    environment = {"SUBMITIT_FOLDER": str(tmp_path), "SUBMITIT_EXECUTOR": "local",
                   "SUBMITIT_LOCAL_JOB_ID": "4242", "SUBMITIT_LOCAL_GLOBAL_RANK": "0",
                   "SUBMITIT_LOCAL_LOCAL_RANK": "0", "SUBMITIT_LOCAL_NODEID": "0",
                   "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_NNODES": "1"}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError):
        with exit_record("train"):
            raise RuntimeError("cannot open https://reader:hunter2@127.0.0.1/w.pth")
    text = exit_record_path(tmp_path, "4242").read_text()
    assert "hunter2" not in text and "https://reader:***@127.0.0.1/w.pth" in text
    status = local_status(tmp_path, "4242")
    assert status.state == "FAILED" and "reader:***@" in status.reason

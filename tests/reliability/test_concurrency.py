"""Several segctl processes at once: a new embedded MLflow store created once, job states that
only move forward, and sweep members that could not share a run.

The processes here are real: ``.venv/bin/segctl`` subprocesses started together, and forked
writers and a ``status`` reader on one ``registry.db``.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.registry import Registry
from segctl.status import TERMINAL_STATES
from tests.reliability.test_job_records import stop_local_jobs
from tests.test_cli_submit import write_recipe

runner = CliRunner()

SEGCTL = str(Path(sys.executable).with_name("segctl"))
#: Processes started together against a store that does not exist yet.
TOGETHER = 8
#: Seconds all of them may take together (each imports MLflow; submits also torch).
TOGETHER_BOUND_S = 240
#: Iterations that keep a job busy far longer than the test (it is cancelled).
LONG = "schedule.max_iters=1000000"


def run_together(commands: list[list[str]], cwd: Path, bound_s: float) -> list[tuple[int, str]]:
    """Start every command at once, then wait for all of them (``bound_s`` in all); returns
    ``(exit status, stdout + stderr)`` per command. Output goes to files, so a job that keeps
    a descriptor open cannot hold a pipe."""
    logs = [cwd / f"together-{i}.log" for i in range(len(commands))]
    handles = [log.open("w") for log in logs]
    processes = [
        subprocess.Popen(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
        for command, handle in zip(commands, handles)
    ]
    deadline = time.monotonic() + bound_s
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"{len(commands)} concurrent `{' '.join(commands[0][1:3])}` did not end "
                    f"within {bound_s} s")
    finally:
        for handle in handles:
            handle.close()
    return [(p.returncode, log.read_text(errors="replace")) for p, log in zip(processes, logs)]


def failures(results: list[tuple[int, str]]) -> str:
    """The last lines of every run that did not exit 0."""
    return "\n---\n".join(f"exit {code}: " + "\n".join(out.splitlines()[-4:])
                          for code, out in results if code != 0)


# --- the embedded MLflow store is created once --------------------------------------------------


@pytest.mark.slow
def test_eight_first_reports_create_one_store(segctl_env):
    store = segctl_env / "mlflow.db"
    assert not store.exists()
    results = run_together([[SEGCTL, "report"]] * TOGETHER, segctl_env, TOGETHER_BOUND_S)
    assert all(code == 0 for code, _ in results), failures(results)
    assert all("no segctl runs found" in out for _, out in results)
    assert store.is_file()


@pytest.mark.slow
def test_eight_first_submits_create_one_store(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    assert not (segctl_env / "mlflow.db").exists()
    commands = [[SEGCTL, "submit", str(recipe), "--cluster", "local", "--set", LONG,
                 "--set", f"train.seed={seed}"] for seed in range(TOGETHER)]
    try:
        results = run_together(commands, segctl_env, TOGETHER_BOUND_S)
        assert all(code == 0 for code, _ in results), failures(results)
        runs = Registry(segctl_home()).runs()
        assert len(runs) == TOGETHER
        assert len([j for j in Registry(segctl_home()).jobs() if j.job_id]) == TOGETHER
    finally:
        stop_local_jobs()
    report = runner.invoke(app, ["report", "--format", "json"])
    assert report.exit_code == 0, report.output


# --- state updates are compare-and-set ----------------------------------------------------------

ROWS = 3200
WRITERS = 16
FINAL = ("COMPLETED", "FAILED", "CANCELLED")


def _finish_rows(home: Path, rows: list[int], start) -> None:
    """A writer: record a terminal state for each of ``rows`` as soon as all have started."""
    registry = Registry(home)
    start.wait()
    for row in rows:
        registry.set_state(row, FINAL[row % len(FINAL)])


def _status_loop(home: Path, start, stop) -> None:
    """A reader doing what `segctl status` does, pass after pass, until one full pass after
    ``stop``: every pass reads the job rows, asks the executor (which still sees the job
    running) and records what it saw."""
    from segctl.status import summaries

    registry = Registry(home)
    runs = registry.runs()
    start.wait()
    while True:
        last = stop.is_set()
        summaries(registry, runs)
        if last:
            return


def _seed_registry(home: Path, folder: Path, job_id: str) -> None:
    """``ROWS`` runs with one SUBMITTED local job each (one transaction: setup only)."""
    Registry(home)
    now = time.time()
    with sqlite3.connect(home / "registry.db") as db:
        db.executemany(
            "INSERT INTO runs (run_id, name, recipe_hash, run_dir, source, created_at) "
            "VALUES (?, ?, 'h', ?, 'x.yaml', ?)",
            [(f"r{i:04d}-00000000", f"r{i:04d}", str(folder.parent / f"r{i:04d}"), now + i)
             for i in range(1, ROWS + 1)],
        )
        db.executemany(
            "INSERT INTO jobs (id, run_id, kind, executor, job_id, folder, state, submitted_at) "
            "VALUES (?, ?, 'train', 'local', ?, ?, 'SUBMITTED', ?)",
            [(i, f"r{i:04d}-00000000", job_id, str(folder), now) for i in range(1, ROWS + 1)],
        )


@pytest.fixture
def fast_dir(tmp_path):
    """A folder in memory (``/dev/shm``) where there is one, else ``tmp_path``.

    A commit to ``registry.db`` on this machine's disk waits ~15 ms for fsync, so thousands of
    them take minutes; in memory the same SQLite locking orders the same updates in seconds.
    """
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="segctl-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_status_never_overwrites_a_terminal_state_with_a_stale_one(fast_dir):
    home, folder = fast_dir / "home", fast_dir / "jobs"
    folder.mkdir()
    # a live process that segctl recognises as a local job's controller: every job it is asked
    # about is RUNNING, a stale answer once a writer has recorded the job's end
    controller = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "submitit.local._local"]
    )
    try:
        _seed_registry(home, folder, str(controller.pid))
        context = multiprocessing.get_context("fork")
        start, stop = context.Barrier(WRITERS + 1), context.Event()
        writers = [context.Process(target=_finish_rows,
                                   args=(home, list(range(1 + w, ROWS + 1, WRITERS)), start))
                   for w in range(WRITERS)]
        reader = context.Process(target=_status_loop, args=(home, start, stop))
        began = time.monotonic()
        for process in (*writers, reader):
            process.start()
        for process in writers:
            process.join(timeout=120)
        stop.set()
        reader.join(timeout=120)
        took = time.monotonic() - began
        assert all(p.exitcode == 0 for p in (*writers, reader)), "a writer or the reader failed"
    finally:
        controller.kill()
        controller.wait()
    jobs = Registry(home).jobs()
    assert len(jobs) == ROWS
    wrong = [(job.id, job.state) for job in jobs if job.state != FINAL[job.id % len(FINAL)]]
    assert not wrong, (f"{len(wrong)} of {ROWS} rows lost their terminal state to a stale read "
                       f"(first: {wrong[:5]}; {took:.1f} s)")
    assert all(job.finished_at is not None for job in jobs)


def test_set_state_is_compare_and_set(tmp_path):
    registry = Registry(tmp_path)
    row = registry.begin_job("r-00000000", "train", "local", str(tmp_path), None)
    registry.submitted(row, "123")
    assert registry.set_state(row, "RUNNING", expected="SUBMITTED") is True
    assert registry.set_state(row, "PENDING", expected="SUBMITTED") is False  # read is stale
    assert registry.jobs()[0].state == "RUNNING"
    assert registry.set_state(row, "COMPLETED", expected="RUNNING") is True
    for stale in ("RUNNING", "PENDING", "REQUEUED"):
        assert registry.set_state(row, stale) is False  # never out of a terminal state
        assert registry.set_state(row, stale, expected="COMPLETED") is False
    (job,) = registry.jobs()
    assert job.state == "COMPLETED" and job.finished_at is not None
    assert "COMPLETED" in TERMINAL_STATES


# --- sweep members that would share a run ------------------------------------------------------


@pytest.mark.parametrize(
    ("sweep", "needle"),
    [
        ("optim.lr=1e-4,1e-4", "the same value"),
        ("optim.lr=1e-4,0.0001", "the same value"),
        ("description=first,second", "description does not count in the run id"),
        ("data.num_workers=0,2", "data.num_workers does not count in the run id"),
        ("eval.ms_flip=false,true", "eval.ms_flip does not count in the run id"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_sweep_members_with_one_run_id_are_refused_before_anything(segctl_env, sweep, needle,
                                                                    dry_run):
    recipe = write_recipe(segctl_env, segctl_env / "no-dataset-needed")
    key, _, values = sweep.partition("=")
    first, second = values.split(",")
    result = runner.invoke(app, ["submit", str(recipe), "--cluster", "local", "--sweep", sweep,
                                 *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"--sweep: members 1 ({key}={first}), 2 ({key}={second})" in result.output
    assert "same run" in result.output and needle in result.output
    assert not (segctl_env / "runs").exists()
    assert not (segctl_env / "home").exists()
    assert not (segctl_env / "mlflow.db").exists()


def test_sweep_names_colliding_members_in_a_grid(segctl_env):
    recipe = write_recipe(segctl_env, segctl_env / "no-dataset-needed")
    result = runner.invoke(app, ["submit", str(recipe), "--dry-run", "--sweep", "train.seed=0,1",
                                 "--sweep", "description=a,b"])
    assert result.exit_code == 2, result.output
    assert result.output.count("same run") == 2  # one line per run id shared (seed 0, seed 1)
    assert "train.seed=0 description=a" in result.output
    assert "train.seed=1 description=b" in result.output


def test_sweep_of_distinct_runs_still_plans(segctl_env):
    recipe = write_recipe(segctl_env, segctl_env / "no-dataset-needed")
    result = runner.invoke(app, ["submit", str(recipe), "--dry-run",
                                 "--sweep", "optim.lr=1e-4,2e-4", "--sweep", "train.seed=0,1"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert len({run["run_id"] for run in plan["runs"]}) == 4

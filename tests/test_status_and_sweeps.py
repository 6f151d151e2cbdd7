"""Status (batched scheduler states, requeues, nodes, reasons), cancel, logs and sweeps."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.executors import parse_sacct
from segctl.io.home import segctl_home
from segctl.recipe import RecipeError
from segctl.registry import Registry
from segctl.sweeps import expand_grid, split_values
from tests.test_cli_submit import write_recipe
from tests.waiting import wait_until

runner = CliRunner()

SACCT = """\
101|REQUEUED|n1|None
101|PREEMPTED|n2|None
101|RUNNING|n[1-2]|None
102|CANCELLED by 0|n1|None
103|PENDING|None assigned|Priority
104_3|COMPLETED|n2|None
105|FAILED|n1|None|9:0|0:9
106|FAILED|n2|None|1:0|0:0
107|FAILED|n2|NonZeroExitCode|1:0|0:0
"""


def test_parse_sacct_counts_requeues_and_keeps_the_current_row():
    statuses = parse_sacct(SACCT)
    assert statuses["101"].state == "RUNNING" and statuses["101"].requeues == 2
    assert statuses["101"].nodes == "n[1-2]"
    assert statuses["102"].state == "CANCELLED" and statuses["102"].requeues == 0
    assert statuses["103"].nodes is None and statuses["103"].reason == "Priority"
    assert statuses["104_3"].state == "COMPLETED"
    assert statuses["104_3"].reason is None and statuses["101"].reason is None


def test_parse_sacct_gives_a_failed_job_a_reason_from_its_exit_codes():
    statuses = parse_sacct(SACCT)
    assert statuses["105"].reason == "a task was killed by signal 9 (SIGKILL)"
    assert statuses["106"].reason == "exit code 1"
    assert statuses["107"].reason == "NonZeroExitCode"


def test_split_values_respects_brackets_and_quotes():
    assert split_values("6e-5,1e-4") == ["6e-5", "1e-4"]
    assert split_values("[512, 512],[256, 256]") == ["[512, 512]", "[256, 256]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]


def test_expand_grid_is_the_cartesian_product():
    grid = expand_grid(["optim.lr=1,2", "train.seed=0,1,2"])
    assert len(grid) == 6
    assert grid[0] == ["optim.lr=1", "train.seed=0"] and grid[-1] == ["optim.lr=2", "train.seed=2"]
    for bad, needle in (
        (["optim.lr"], "expected --sweep"),
        (["train.seed=0", "train.seed=1"], "swept twice"),
        (["cluster.nodes=1,2"], "cannot vary"),
    ):
        with pytest.raises(RecipeError, match=needle):
            expand_grid(bad)


@pytest.mark.slow
def test_status_of_many_runs_in_one_pass(segctl_env):
    registry = Registry(segctl_home())
    from segctl.registry import RunRecord

    for i in range(200):
        run_dir = segctl_env / "runs" / f"r{i:03d}-00000000"
        run_dir.mkdir(parents=True)
        (run_dir / "progress.json").write_text(
            json.dumps({"iteration": i, "max_iters": 200, "loss": 1.0 / (i + 1), "miou": 50.0})
        )
        registry.add_run(RunRecord(f"r{i:03d}-00000000", f"r{i:03d}", "h", str(run_dir), "x.yaml", time.time(), "sw" if i % 2 else None))
        row = registry.begin_job(f"r{i:03d}-00000000", "train", "local", str(run_dir / "jobs"), None)
        registry.submitted(row, str(10_000_000 + i))
        registry.set_state(row, "COMPLETED")
    result = runner.invoke(app, ["status", "--json"])
    rows = json.loads(result.output)
    assert len(rows) == 200 and all(r["state"] == "COMPLETED" for r in rows)
    assert rows[7]["iteration"] == 7 and rows[7]["sweep"] == "sw"
    table = runner.invoke(app, ["status"]).output
    assert table.splitlines()[0].split()[:2] == ["SWEEP", "RUN"]
    assert len(table.splitlines()) == 201


@pytest.mark.slow
def test_cancel_stops_a_local_job_and_only_that(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    submitted = runner.invoke(
        app, ["submit", str(recipe), "--cluster", "local", "--set", "schedule.max_iters=100000"]
    )
    assert submitted.exit_code == 0, submitted.output
    (run,) = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert run["state"] in ("SUBMITTED", "RUNNING")
    again = runner.invoke(app, ["submit", str(recipe), "--cluster", "local", "--set", "schedule.max_iters=100000"])
    assert again.exit_code == 0, again.output  # the job in progress is the run's job: no second
    assert "has a training job in progress" in again.output and "nothing submitted" in again.output
    assert [job.job_id for job in Registry(segctl_home()).jobs()] == [run["job_id"]]
    cancelled = runner.invoke(app, ["cancel", run["run_id"]])
    assert cancelled.exit_code == 0 and "cancelled train job" in cancelled.output
    from segctl.executors import _local_controller_alive

    wait_until(lambda: not _local_controller_alive(run["job_id"]), timeout_s=60,
               what=f"the local job {run['job_id']}'s controller to end")
    assert not _local_controller_alive(run["job_id"])
    (after,) = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert after["state"] == "CANCELLED"
    assert "nothing to cancel" in runner.invoke(app, ["cancel", run["run_id"]]).output


@pytest.mark.slow
def test_sweep_runs_each_point_as_its_own_run(segctl_env, cityscapes_frame_root):
    recipe = write_recipe(segctl_env, cityscapes_frame_root)
    result = runner.invoke(
        app,
        ["submit", str(recipe), "--cluster", "local", "--sweep", "train.seed=0,1", "--set", "schedule.max_iters=2", "--wait"],
    )
    assert result.exit_code == 0, result.output
    assert "submitted sweep frame-sweep-" in result.output
    rows = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert len(rows) == 2 and len({r["run_id"] for r in rows}) == 2
    assert {r["state"] for r in rows} == {"COMPLETED"}
    assert rows[0]["sweep"] == rows[1]["sweep"] and rows[0]["sweep"].startswith("frame-sweep-")
    for row in rows:
        assert (segctl_env / "runs" / row["run_id"] / "checkpoints" / "final.pt").is_file()
        logs = runner.invoke(app, ["logs", row["run_id"], "--follow"])
        assert logs.exit_code == 0 and logs.output


def test_forget_drops_finished_runs_and_refuses_live_ones(segctl_env):
    import subprocess
    import sys

    from segctl.registry import RunRecord

    # a live local job: a process that status recognises as a submitit local controller
    controller = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "submitit.local._local"]
    )
    try:
        registry = Registry(segctl_home())
        for name, job_id in (("done", "1"), ("busy", str(controller.pid)), ("gone", "1")):
            run_dir = segctl_env / "runs" / f"{name}-00000000"
            (run_dir / "jobs").mkdir(parents=True)
            registry.add_run(RunRecord(f"{name}-00000000", name, "h", str(run_dir), "x.yaml",
                                       time.time(), None))
            row = registry.begin_job(f"{name}-00000000", "train", "local", str(run_dir / "jobs"),
                                     None)
            registry.submitted(row, job_id)
            registry.set_state(row, "COMPLETED" if name == "done" else "RUNNING")
        refused = runner.invoke(app, ["forget", "busy", "done"])
        assert refused.exit_code == 2 and "segctl cancel busy-00000000" in refused.output
        assert {r.name for r in registry.runs()} == {"done", "busy", "gone"}  # nothing changed

        kept = runner.invoke(app, ["forget", "done"])
        assert kept.exit_code == 0 and "forgotten (1 job record(s))" in kept.output
        assert (segctl_env / "runs" / "done-00000000").is_dir()
        # "gone" was recorded RUNNING, but its controller is not alive: status finds it FAILED
        deleted = runner.invoke(app, ["forget", "gone", "--delete-dir"])
        assert deleted.exit_code == 0, deleted.output
        assert not (segctl_env / "runs" / "gone-00000000").exists()
        assert [r.name for r in registry.runs()] == ["busy"]
        assert {j.run_id for j in registry.jobs()} == {"busy-00000000"}
        assert runner.invoke(app, ["forget", "nosuch"]).exit_code == 2
    finally:
        controller.kill()
        controller.wait()


def test_a_failed_slurm_jobs_bare_exit_status_is_asked_again_for_a_while():
    """sacct may record a job's end before the step a signal killed: a reason read from the
    exit status alone (``exit code 9``) is asked again for REASON_SETTLE_S seconds, only for
    Slurm jobs, and never a reason that already names the cause."""
    import time
    from dataclasses import replace

    from segctl.registry import JobRecord
    from segctl.status import REASON_SETTLE_S, _reason_may_settle

    now = time.time()
    failed = JobRecord(id=1, run_id="r", kind="train", executor="slurm", job_id="7", folder="f",
                       state="FAILED", submitted_at=now - 60, finished_at=now - 5,
                       label=None, reason="exit code 9")
    assert _reason_may_settle(failed)
    assert not _reason_may_settle(replace(failed, finished_at=now - REASON_SETTLE_S - 1))
    assert not _reason_may_settle(replace(failed, executor="local"))
    assert not _reason_may_settle(
        replace(failed, reason="a task was killed by signal 9 (SIGKILL)"))
    assert not _reason_may_settle(replace(failed, state="COMPLETED", reason=None))

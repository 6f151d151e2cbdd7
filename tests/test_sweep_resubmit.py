"""A sweep submitted again treats each member as `segctl submit` treats a single run: a member
that has finished training is skipped unless --rerun, a member whose training job is in
progress gets no second job (with --wait, the sweep waits for it), and only the rest are
submitted (one job array on Slurm). Real local jobs of four iterations."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.home import segctl_home
from segctl.registry import Registry
from tests.test_cli_submit import _hold, _release, write_recipe

runner = CliRunner()

SWEEP = ["--cluster", "local", "--sweep", "train.seed=0,1"]


def submit(*args: str):
    return runner.invoke(app, ["submit", *args])


def jobs_by_run() -> dict[str, list]:
    jobs: dict[str, list] = {}
    for job in Registry(segctl_home()).jobs():
        jobs.setdefault(job.run_id, []).append(job)
    return jobs


@pytest.mark.slow  # trains two runs of four iterations, then validates both again
def test_a_sweep_skips_members_that_have_finished_training_unless_rerun(segctl_env,
                                                                        cityscapes_frame_root):
    recipe = str(write_recipe(segctl_env, cityscapes_frame_root))
    first = submit(recipe, "--cluster", "local", "--set", "train.seed=0", "--wait")
    assert first.exit_code == 0, first.output
    (done,) = Registry(segctl_home()).runs()

    # the sweep skips the finished member, says so, and submits the other one
    sweep = submit(recipe, *SWEEP, "--wait")
    assert sweep.exit_code == 0, sweep.output
    assert f"{done.run_id} has finished training (iteration 4/4, mIoU " in sweep.output
    assert "); skipped." in sweep.output and "--rerun" in sweep.output
    assert "runs (local), 1 skipped" in sweep.output
    jobs = jobs_by_run()
    (other,) = set(jobs) - {done.run_id}
    assert [len(jobs[done.run_id]), len(jobs[other])] == [1, 1]
    assert f"  {other}  job {jobs[other][0].job_id}" in sweep.output
    assert jobs[other][0].state == "COMPLETED"

    # every member finished: nothing submitted, exit 0, nothing changed
    again = submit(recipe, *SWEEP, "--wait")
    assert again.exit_code == 0, again.output
    assert again.output.count("has finished training (iteration 4/4") == 2
    assert "nothing submitted" in again.output and "submitted sweep" not in again.output
    assert sum(len(j) for j in jobs_by_run().values()) == 2

    # the plan says so too; with --rerun it skips nothing
    planned = json.loads(submit(recipe, *SWEEP, "--dry-run").stdout)
    assert sorted(planned["skipped"]) == sorted([done.run_id, other])
    for run in planned["runs"]:
        assert any(f"{run['run_id']} has finished training" in note
                   and "nothing would be submitted without --rerun" in note
                   for note in run["notes"]), run["notes"]
    assert json.loads(submit(recipe, *SWEEP, "--dry-run", "--rerun").stdout)["skipped"] == []

    # --rerun submits both members, whose jobs validate the final weights again
    rerun = submit(recipe, *SWEEP, "--rerun", "--wait")
    assert rerun.exit_code == 0, rerun.output
    assert "2 runs (local)" in rerun.output and "skipped" not in rerun.output
    jobs = jobs_by_run()
    assert {run: [j.state for j in jobs[run]] for run in jobs} == {
        done.run_id: ["COMPLETED", "COMPLETED"], other: ["COMPLETED", "COMPLETED"]}


@pytest.mark.slow  # trains two runs of four iterations as local jobs
def test_a_sweep_gives_no_second_job_to_a_member_whose_job_is_in_progress(
        segctl_env, cityscapes_frame_root):
    recipe = str(write_recipe(segctl_env, cityscapes_frame_root))
    first = submit(recipe, "--cluster", "local", "--set", "train.seed=1")
    assert first.exit_code == 0, first.output
    (job,) = Registry(segctl_home()).jobs()
    held = _hold(int(job.job_id))  # in progress, whatever the machine's speed
    try:
        planned = submit(recipe, *SWEEP, "--dry-run")
        sweep = submit(recipe, *SWEEP)
    finally:
        _release(held)
    in_progress = f"{job.run_id} has a training job in progress (local job {job.job_id}, RUNNING)"
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert plan["skipped"] == [job.run_id]
    (member,) = [run for run in plan["runs"] if run["run_id"] == job.run_id]
    assert f"{in_progress}: nothing would be submitted" in member["notes"][-1]

    assert sweep.exit_code == 0, sweep.output
    assert f"{in_progress}; skipped." in sweep.output
    assert "1 runs (local), 1 skipped" in sweep.output
    jobs = jobs_by_run()
    assert len(jobs) == 2 and [len(j) for j in jobs.values()] == [1, 1]

    # again, with --wait: nothing new is submitted and the sweep waits for both jobs
    waited = submit(recipe, *SWEEP, "--wait")
    assert waited.exit_code == 0, waited.output
    assert "nothing submitted" in waited.output and "submitted sweep" not in waited.output
    jobs = jobs_by_run()
    assert [[j.state for j in run_jobs] for run_jobs in jobs.values()] == [["COMPLETED"]] * 2

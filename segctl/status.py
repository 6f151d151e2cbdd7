"""Job states: the one vocabulary, refreshing them from the schedulers, waiting for a job, and
the per-run status summaries that ``segctl status`` renders.

The registry stores a job's state as text; :class:`JobState` names the states segctl writes or
reads, and :data:`TERMINAL_STATES` / :data:`ACTIVE_STATES` group them. Both are the one
definition: the registry (:mod:`segctl.registry`), submission, ``status``, ``logs``, ``cancel``
and ``forget`` all use them. A ``JobState`` compares equal to its text, so rows written by any
segctl read the same.

Live state comes from the executors (:func:`segctl.executors.job_statuses`: one ``sacct`` call
for all Slurm jobs, a local job's JSON exit record); progress from each run's
``progress.json``. Nothing here contacts MLflow, so status answers while the tracking server is
down. This module imports only the standard library at its top (the registry imports it).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segctl.registry import JobRecord, Registry, RunRecord


class JobState(enum.StrEnum):
    """The states of a job, in Slurm's vocabulary plus segctl's own submission markers.

    ``SUBMITTING`` is the marker written before the executor is called, ``SUBMITTED`` the state
    once the job id is recorded; the others are what the executors report (local jobs use
    ``RUNNING``, ``COMPLETED`` and ``FAILED``; Slurm may report states not listed here, which
    are kept as its text). ``UNKNOWN``: the scheduler has no record of the job. ``NO_JOB``
    (``NO JOB``) is shown for a run without any job.
    """

    SUBMITTING = "SUBMITTING"
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    REQUEUED = "REQUEUED"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"
    NO_JOB = "NO JOB"


#: Job states after which nothing changes any more.
TERMINAL_STATES = frozenset({
    JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT,
    JobState.OUT_OF_MEMORY, JobState.NODE_FAIL, JobState.PREEMPTED,
})

#: States in which a job may still be running or start again (what ``cancel`` stops and
#: ``forget`` refuses to drop). ``UNKNOWN`` and Slurm states not named here are neither active
#: nor terminal.
ACTIVE_STATES = frozenset({
    JobState.PENDING, JobState.RUNNING, JobState.REQUEUED, JobState.SUBMITTED,
    JobState.SUBMITTING, JobState.SUSPENDED, JobState.CONFIGURING,
})


def refresh_states(registry: Registry, jobs: list[JobRecord]) -> dict[int, str]:
    """Ask the executors about every unfinished job of ``jobs`` at once (one sacct call for
    all Slurm jobs), record what changed, and return row id → state. Terminal states are never
    asked again, except a Slurm job's FAILED reason read from its exit status alone, for
    :data:`REASON_SETTLE_S` seconds; an unreachable scheduler leaves the recorded states as
    they were.

    Each change is recorded only if the row still holds the state read in ``jobs``
    (:meth:`Registry.set_state` with ``expected``): where another process recorded something
    meanwhile (a job's end, a cancel), that state is kept and returned instead."""
    from segctl.executors import job_statuses

    states = {job.id: job.state for job in jobs}
    active = [job for job in jobs if job.job_id and
              (job.state not in TERMINAL_STATES or _reason_may_settle(job))]
    if not active:
        return states
    try:
        statuses = job_statuses([(j.executor, j.folder, j.job_id) for j in active])
    except RuntimeError:
        return states
    for job in active:
        status = statuses.get(job.job_id)
        if status is None:
            continue
        changed = (status.state, status.nodes, status.requeues, status.reason) != (
            job.state, job.nodes, job.requeues, job.reason
        )
        if changed and not registry.set_state(job.id, status.state, status.nodes,
                                              status.requeues, status.reason, expected=job.state):
            current = registry.job(job.id)
            states[job.id] = current.state if current else job.state
            continue
        states[job.id] = status.state
    return states


#: Seconds after a Slurm job was seen FAILED during which a reason read from its exit status
#: alone (``exit code N``) is asked again: sacct may record the job's end before the step
#: whose task a signal killed (``DerivedExitCode`` ``0:9``), so a first look can read the batch
#: script's status where the signal is the cause.
REASON_SETTLE_S = 120.0


def _reason_may_settle(job: JobRecord) -> bool:
    """Whether a FAILED Slurm job's reason may still change (see :data:`REASON_SETTLE_S`)."""
    return (job.executor == "slurm" and job.state == JobState.FAILED
            and (job.reason or "").startswith("exit code")
            and job.finished_at is not None and time.time() - job.finished_at < REASON_SETTLE_S)


def refresh_state(registry: Registry, job: JobRecord) -> str:
    """:func:`refresh_states` for one job; returns its state."""
    return refresh_states(registry, [job])[job.id]


def live_jobs(registry: Registry, jobs: Iterable[JobRecord]) -> list[tuple[JobRecord, str]]:
    """``(job, state)`` for each of ``jobs`` with a job id whose refreshed state
    (:func:`refresh_states`) is in :data:`ACTIVE_STATES`, oldest first."""
    with_id = [job for job in jobs if job.job_id]
    states = refresh_states(registry, with_id)
    return [(job, states[job.id]) for job in with_id if states[job.id] in ACTIVE_STATES]


def wait(
    registry: Registry,
    row: int,
    poll_s: float = 2.0,
    on_poll: Callable[[str], None] | None = None,
) -> str:
    """Block until the job of registry row ``row`` reaches a terminal state; returns that
    state.

    ``on_poll(state)`` is called after every poll (every ``poll_s`` seconds) before that.

    Raises:
        LookupError: the row left the registry meanwhile (``segctl forget``).
    """
    while True:
        job = registry.job(row)
        if job is None:
            raise LookupError(f"job row {row} is no longer in the registry")
        state = refresh_state(registry, job)
        if state in TERMINAL_STATES:
            return state
        if on_poll is not None:
            on_poll(state)
        time.sleep(poll_s)


def summaries(registry: Registry, runs: list[RunRecord]) -> list[dict[str, Any]]:
    """One status dict per run (see :func:`run_summary`), with one batched state query."""
    wanted = {run.run_id for run in runs}
    jobs = [job for job in registry.jobs() if job.run_id in wanted]
    latest_train: dict[str, JobRecord] = {}
    latest_any: dict[str, JobRecord] = {}
    for job in jobs:  # oldest first: the last one seen wins
        latest_any[job.run_id] = job
        if job.kind == "train":
            latest_train[job.run_id] = job
    latest = {rid: latest_train.get(rid) or latest_any.get(rid) for rid in wanted}
    states = refresh_states(registry, [job for job in latest.values() if job is not None])
    fresh = {job.id: job for job in registry.jobs() if job.id in states}
    return [run_summary(run, fresh.get(getattr(latest[run.run_id], "id", None))) for run in runs]


def run_summary(run: RunRecord, job: JobRecord | None) -> dict[str, Any]:
    """Status fields of one run from its latest (training) job and ``progress.json``;
    ``overrides`` are how the run differs from its recipe file (``a.b=value`` items, secrets
    hidden: :mod:`segctl.recipe.overrides`), ``[]`` for none; ``published`` its mIoU beside
    the published curve's at the same point (``41.20 (published 43.00 at 80k)``, ending in
    ``, behind`` while the run is behind it; None without a comparison), ``fell_behind``
    whether it ever was; ``eta_seconds`` comes from the run's own measured seconds per
    iteration."""
    from segctl.recipe.published_curve import describe_progress
    from segctl.recipe.rundir import RunDir

    progress = RunDir(run.run_dir).read_progress()
    elapsed = None
    if job is not None:
        end = job.finished_at or (
            time.time() if job.state in ACTIVE_STATES else progress.get("updated_at")
        )
        elapsed = max(0.0, (end or time.time()) - job.submitted_at)
    reason = progress.get("reason") or (job.reason if job else None)
    return {
        "run_id": run.run_id,
        "recipe": run.source,
        "sweep": run.sweep,
        "overrides": list(run.overrides),
        "state": job.state if job else JobState.NO_JOB,
        "job_id": job.job_id if job else None,
        "executor": job.executor if job else None,
        "nodes": job.nodes if job else None,
        "requeues": job.requeues if job else 0,
        "reason": reason,
        "phase": progress.get("phase"),
        "iteration": progress.get("iteration"),
        "max_iters": progress.get("max_iters"),
        "loss": progress.get("loss"),
        "miou": progress.get("miou"),
        "published": describe_progress(progress),
        "fell_behind": progress.get("fell_behind"),
        "eta_seconds": progress.get("eta_seconds"),
        "elapsed_seconds": elapsed,
        "run_dir": run.run_dir,
    }

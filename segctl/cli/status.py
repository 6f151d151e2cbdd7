"""``segctl status``, ``segctl logs``, ``segctl cancel`` and ``segctl forget``: what runs exist,
how far they are, what they printed, stopping them, and dropping them from the registry.

Status reads the registry, asks the schedulers about unfinished jobs in one batch (one sacct
call for all Slurm jobs) and reads each run's ``progress.json``; it never contacts MLflow, so it
answers while the tracking server is down.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import (
    UserError,
    find_run,
    print_table,
    registry,
    select_runs,
    user_errors,
)

#: States in which a job may still be running or start again.
_LIVE = ("PENDING", "RUNNING", "REQUEUED", "SUBMITTED", "SUBMITTING", "SUSPENDED", "CONFIGURING")


def summaries(reg, runs) -> list[dict]:
    """One status dict per run (see :func:`run_summary`), with one batched state query."""
    from segctl.submission import refresh_states

    wanted = {run.run_id for run in runs}
    jobs = [job for job in reg.jobs() if job.run_id in wanted]
    latest_train: dict[str, object] = {}
    latest_any: dict[str, object] = {}
    for job in jobs:  # oldest first: the last one seen wins
        latest_any[job.run_id] = job
        if job.kind == "train":
            latest_train[job.run_id] = job
    latest = {rid: latest_train.get(rid) or latest_any.get(rid) for rid in wanted}
    states = refresh_states(reg, [job for job in latest.values() if job is not None])
    fresh = {job.id: job for job in reg.jobs() if job.id in states}
    return [run_summary(run, fresh.get(getattr(latest[run.run_id], "id", None))) for run in runs]


def run_summary(run, job) -> dict:
    """Status fields of one run from its latest (training) job and ``progress.json``."""
    from segctl.runs import read_progress

    progress = read_progress(Path(run.run_dir))
    elapsed = None
    if job is not None:
        end = job.finished_at or (time.time() if job.state in _LIVE else progress.get("updated_at"))
        elapsed = max(0.0, (end or time.time()) - job.submitted_at)
    reason = progress.get("reason") or (job.reason if job else None)
    return {
        "run_id": run.run_id,
        "recipe": run.source,
        "sweep": run.sweep,
        "state": job.state if job else "NO JOB",
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
        "eta_seconds": progress.get("eta_seconds"),
        "elapsed_seconds": elapsed,
        "run_dir": run.run_dir,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _number(value, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def _render(rows: list[dict]) -> None:
    if not rows:
        typer.echo("no runs yet: `segctl submit RECIPE` starts one")
        return
    rows = sorted(rows, key=lambda s: (s["sweep"] or "", s["run_id"]))
    table = []
    for s in rows:
        it = f"{s['iteration']}/{s['max_iters']}" if s["iteration"] is not None else "-"
        state = s["state"] + (f" ({s['reason']})" if s["reason"] and s["state"] not in _LIVE else "")
        table.append(
            (
                s["sweep"] or "-", s["run_id"], state, it, _number(s["loss"], "{:.4f}"),
                _number(s["miou"], "{:.2f}"), s["requeues"] or "-", s["nodes"] or "-",
                _duration(s["elapsed_seconds"]),
            )
        )
    headers = ("SWEEP", "RUN", "STATE", "ITER", "LOSS", "mIoU", "REQUEUES", "NODES", "ELAPSED")
    if not any(s["sweep"] for s in rows):
        headers, table = headers[1:], [row[1:] for row in table]
    print_table(headers, table)


@user_errors
def status(
    runs: Annotated[list[str] | None, typer.Argument(help="Run ids, id prefixes or names.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    watch: Annotated[
        float | None, typer.Option("--watch", help="Redraw every this many seconds until Ctrl-C.")
    ] = None,
) -> None:
    """Show runs: state, iteration, loss, latest mIoU, requeues, nodes, elapsed time."""
    reg = registry()
    while True:
        selected = [find_run(key) for key in runs] if runs else reg.runs()
        rows = summaries(reg, selected)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            if watch:
                typer.echo("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S"))
            _render(rows)
        if not watch or all(row["state"] not in _LIVE for row in rows):
            return
        time.sleep(watch)


@user_errors
def logs(
    run: Annotated[str, typer.Argument(help="Run id, id prefix or name.")],
    kind: Annotated[str, typer.Option("--kind", help="train or eval.")] = "train",
    rank: Annotated[int, typer.Option("--rank", help="Task (rank) whose log to print.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print the stdout and stderr of a run's latest job (one rank's)."""
    from segctl.executors import job_log_paths
    from segctl.submission import refresh_state

    record = find_run(run)
    reg = registry()
    jobs = [j for j in reg.jobs(record.run_id) if j.kind == kind and j.job_id]
    if not jobs:
        raise UserError(f"run {record.run_id} has no {kind} job")
    job = jobs[-1]
    stdout, stderr = job_log_paths(job.folder, job.job_id, rank)
    if not follow:
        for label, path in (("stdout", stdout), ("stderr", stderr)):
            typer.echo(f"==> {path} ({label}) <==")
            typer.echo(path.read_text(errors="replace") if path.exists() else "(not written yet)")
        return
    offsets = {stdout: 0, stderr: 0}
    while True:
        for path in offsets:
            if path.exists():
                with path.open("rb") as handle:
                    handle.seek(offsets[path])
                    chunk = handle.read()
                offsets[path] += len(chunk)
                if chunk:
                    typer.echo(chunk.decode(errors="replace"), nl=False)
        if refresh_state(reg, job) not in _LIVE:
            return
        job = next(j for j in reg.jobs(record.run_id) if j.id == job.id)
        time.sleep(1.0)


#: ``--all`` of the destructive commands: act on every run a key matches.
AllMatches = Annotated[
    bool,
    typer.Option("--all", help="Act on every run a key matches (a shared name, an id prefix); "
                 "without it such a key is refused and its runs listed."),
]


@user_errors
def cancel(
    runs: Annotated[list[str], typer.Argument(help="Run ids, id prefixes or names.")],
    all_matches: AllMatches = False,
) -> None:
    """Cancel the unfinished jobs of the given runs (and only those).

    A key that matches several runs is refused (they are listed) unless --all is given.
    """
    from segctl.executors import cancel_job
    from segctl.submission import refresh_states

    reg = registry()
    records = select_runs(runs, all_matches, "cancel")
    for record in records:
        jobs = [j for j in reg.jobs(record.run_id) if j.job_id]
        states = refresh_states(reg, jobs)
        live = [j for j in jobs if states[j.id] in _LIVE]
        if not live:
            typer.echo(f"{record.run_id}: nothing to cancel")
            continue
        for job in live:
            cancel_job(job.executor, job.folder, job.job_id)
            if reg.set_state(job.id, "CANCELLED", expected=states[job.id]):
                typer.echo(f"{record.run_id}: cancelled {job.kind} job {job.job_id}")
            else:  # it ended (or was cancelled) meanwhile: that state stays
                ended = reg.job(job.id)
                typer.echo(f"{record.run_id}: {job.kind} job {job.job_id} is already "
                           f"{ended.state if ended else 'gone'}")


@user_errors
def forget(
    runs: Annotated[list[str], typer.Argument(help="Run ids, id prefixes or names.")],
    delete_dir: Annotated[
        bool, typer.Option("--delete-dir", help="Also delete each run's directory (checkpoints too).")
    ] = False,
    all_matches: AllMatches = False,
) -> None:
    """Remove runs from the registry, so `segctl status` no longer lists them.

    Refuses (exit 2, nothing changed) while any named run has an unfinished job: cancel it
    first; and a key that matches several runs, listing them, unless --all is given. The run
    directory stays unless ``--delete-dir`` is given; MLflow records are never touched, so
    `segctl report` still sees the run.
    """
    import shutil

    from segctl.submission import refresh_states

    reg = registry()
    records = select_runs(runs, all_matches, "forget")
    busy = []
    for record in records:
        jobs = [j for j in reg.jobs(record.run_id) if j.job_id]
        if any(state in _LIVE for state in refresh_states(reg, jobs).values()):
            busy.append(record.run_id)
    if busy:
        raise UserError(
            f"{', '.join(busy)} still has unfinished jobs; stop them first with "
            f"`segctl cancel {' '.join(busy)}`"
        )
    for record in records:
        deleted = reg.forget_run(record.run_id)
        message = f"{record.run_id}: forgotten ({deleted} job record(s))"
        run_dir = Path(record.run_dir)
        if delete_dir and run_dir.is_dir():
            shutil.rmtree(run_dir)
            message += f", deleted {run_dir}"
        elif run_dir.is_dir():
            message += f"; {run_dir} kept"
        typer.echo(message)

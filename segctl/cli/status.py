"""``segctl status``, ``segctl logs``, ``segctl cancel`` and ``segctl forget``: what runs exist,
how far they are, what they printed, stopping them, and dropping them from the registry.

Status reads the registry, asks the schedulers about unfinished jobs in one batch (one sacct
call for all Slurm jobs) and reads each run's ``progress.json``; it never contacts MLflow, so it
answers while the tracking server is down. The summaries and the job-state vocabulary live in
:mod:`segctl.status`; this module renders them and carries out the commands.
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
    matching_runs,
    print_table,
    registry,
    select_runs,
    shown,
    user_errors,
)
from segctl.status import (
    ACTIVE_STATES,
    JobState,
    live_jobs,
    refresh_state,
    refresh_states,
    summaries,
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _number(value, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def _render(rows: list[dict]) -> None:
    from segctl.recipe.overrides import shortened

    if not rows:
        typer.echo("no runs yet: `segctl submit RECIPE` starts one")
        return
    rows = sorted(rows, key=lambda s: (s["sweep"] or "", s["run_id"]))
    table = []
    for s in rows:
        it = f"{s['iteration']}/{s['max_iters']}" if s["iteration"] is not None else "-"
        ended = s["state"] not in ACTIVE_STATES
        state = s["state"] + (f" ({s['reason']})" if s["reason"] and ended else "")
        table.append(
            (
                s["sweep"] or "-", s["run_id"], state, it, _number(s["loss"], "{:.4f}"),
                s.get("published") or _number(s["miou"], "{:.2f}"), s["requeues"] or "-",
                s["nodes"] or "-", _duration(s["elapsed_seconds"]),
                _duration(s["eta_seconds"]) if s["state"] in ACTIVE_STATES else "-",
            )
        )
    headers = ("SWEEP", "RUN", "STATE", "ITER", "LOSS", "mIoU", "REQUEUES", "NODES", "ELAPSED",
               "ETA")
    if any(s["overrides"] for s in rows):  # a column only where some run is a variant
        headers += ("OVERRIDES",)
        table = [(*row, shortened(s["overrides"]) or "-") for row, s in zip(table, rows)]
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
    """Show runs: state, iteration, loss, latest mIoU, requeues, nodes, elapsed time, and how
    each differs from its recipe file (OVERRIDES, where any does).

    A recipe name shows every run of that name (the recipe and its --set variants); an id
    prefix every run it starts.
    """
    from segctl.recipe.secrets import redact_secrets

    reg = registry()
    while True:
        selected = _every_match(runs) if runs else reg.runs()
        # reasons and paths as shown anywhere: credentials of URLs hidden
        rows = [redact_secrets(row) for row in summaries(reg, selected)]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            if watch:
                typer.echo("\x1b[2J\x1b[H" + time.strftime("%H:%M:%S"))
            _render(rows)
        if not watch or all(row["state"] not in ACTIVE_STATES for row in rows):
            return
        time.sleep(watch)


def _every_match(keys: list[str]) -> list:
    """Every run each key names (all runs of a name, all runs an id prefix starts), each once,
    in the order of the keys."""
    selected: dict[str, object] = {}
    for key in keys:
        selected.update((run.run_id, run) for run in matching_runs(key))
    return list(selected.values())


#: How many runs ``segctl logs`` without a run lists.
RECENT_RUNS = 20


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "-"


def _recent_runs() -> None:
    """The runs active last (latest job first): id, name, state and kind and submission time
    of the latest job, then how to pick one."""
    reg = registry()
    runs = reg.runs()
    if not runs:
        typer.echo("no runs yet: `segctl submit RECIPE` starts one")
        return
    latest: dict[str, object] = {}
    for job in reg.jobs():  # oldest first: the last one seen wins
        latest[job.run_id] = job
    when = reg.last_activity([run.run_id for run in runs])
    runs = sorted(runs, key=lambda r: (when.get(r.run_id, r.created_at), r.run_id),
                  reverse=True)[:RECENT_RUNS]
    states = refresh_states(reg, [latest[r.run_id] for r in runs if r.run_id in latest])
    table = []
    for run in runs:
        job = latest.get(run.run_id)
        state = states.get(job.id, job.state) if job else JobState.NO_JOB
        table.append((run.run_id, run.name, state, job.kind if job else "-",
                      _when(job.submitted_at) if job else "-"))
    print_table(("RUN", "NAME", "STATE", "LATEST JOB", "SUBMITTED"), table)
    total = len(reg.runs())
    if total > len(runs):
        typer.echo(f"({len(runs)} of {total} runs, latest first; `segctl status` lists all)")
    typer.echo("`segctl logs RUN` prints the latest job of RUN (a run id, a unique prefix, or a "
               "recipe name for its latest run); --kind train|eval picks the kind of job.")


@user_errors
def logs(
    run: Annotated[
        str | None, typer.Argument(help="Run id, id prefix or name (its latest run); none "
                                   "lists recent runs.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="train or eval (default: whichever job of the "
                                 "run was submitted last).")
    ] = None,
    rank: Annotated[int, typer.Option("--rank", help="Task (rank) whose log to print.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
) -> None:
    """Print the stdout and stderr of a run's latest job (one rank's): training or evaluation,
    whichever was submitted last, or the latest of --kind. Without RUN, list recent runs.

    A recipe name shared by several runs (a recipe and its --set variants) means the one
    active last; stderr says which.
    """
    from segctl.executors import job_log_paths

    if kind not in (None, "train", "eval"):
        raise UserError(f"--kind must be train or eval, got {shown(kind)}")
    if run is None:
        _recent_runs()
        return
    record = find_run(run, latest=True)
    reg = registry()
    jobs = [j for j in reg.jobs(record.run_id) if (kind is None or j.kind == kind) and j.job_id]
    if not jobs:
        raise UserError(f"run {record.run_id} has no {kind + ' ' if kind else ''}job")
    job = jobs[-1]
    what = "training" if job.kind == "train" else f"evaluation ({job.label})" if job.label \
        else "evaluation"
    other = "eval" if job.kind == "train" else "train"
    typer.echo(f"{record.run_id}: {what} job {job.job_id}, submitted {_when(job.submitted_at)}"
               + ("" if kind else f" (the latest; --kind {other} for the latest {other} job)"),
               err=True)
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
        if refresh_state(reg, job) not in ACTIVE_STATES:
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

    reg = registry()
    records = select_runs(runs, all_matches, "cancel")
    for record in records:
        live = live_jobs(reg, reg.jobs(record.run_id))
        if not live:
            typer.echo(f"{record.run_id}: nothing to cancel")
            continue
        for job, state in live:
            cancel_job(job.executor, job.folder, job.job_id)
            if reg.set_state(job.id, JobState.CANCELLED, expected=state):
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

    reg = registry()
    records = select_runs(runs, all_matches, "forget")
    busy = [record.run_id for record in records if live_jobs(reg, reg.jobs(record.run_id))]
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

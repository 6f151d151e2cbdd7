"""``segctl status`` and ``segctl logs``: what runs exist, how far they are, what they printed.

Reads only the registry, the executor's job states and each run's ``progress.json``: it never
contacts MLflow, so it answers while the tracking server is down.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import find_run, print_table, registry, user_errors


def run_summary(run, jobs) -> dict:
    """Status fields of one run: latest training job state, progress, elapsed seconds."""
    from segctl.runs import read_progress
    from segctl.submission import refresh_state

    reg = registry()
    train_jobs = [j for j in jobs if j.kind == "train"]
    latest = train_jobs[-1] if train_jobs else (jobs[-1] if jobs else None)
    state = refresh_state(reg, latest) if latest else "NO JOB"
    progress = read_progress(Path(run.run_dir))
    elapsed = None
    if latest:
        end = latest.finished_at or (time.time() if state not in ("COMPLETED", "FAILED") else None)
        # the registry records finish times when it first sees them; fall back to progress
        end = end or progress.get("updated_at") or time.time()
        elapsed = max(0.0, end - latest.submitted_at)
    return {
        "run_id": run.run_id,
        "recipe": run.source,
        "state": state,
        "job_id": latest.job_id if latest else None,
        "executor": latest.executor if latest else None,
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


@user_errors
def status(
    runs: Annotated[list[str] | None, typer.Argument(help="Run ids, id prefixes or names.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Show runs: state, iteration, loss, latest mIoU, elapsed time."""
    reg = registry()
    selected = [find_run(key) for key in runs] if runs else reg.runs()
    summaries = [run_summary(run, reg.jobs(run.run_id)) for run in selected]
    if as_json:
        typer.echo(json.dumps(summaries, indent=2))
        return
    if not summaries:
        typer.echo("no runs yet: `segctl submit RECIPE` starts one")
        return
    rows = []
    for s in summaries:
        it = f"{s['iteration']}/{s['max_iters']}" if s["iteration"] is not None else "-"
        loss = f"{s['loss']:.4f}" if isinstance(s["loss"], (int, float)) else "-"
        miou = f"{s['miou']:.2f}" if isinstance(s["miou"], (int, float)) else "-"
        rows.append((s["run_id"], s["state"], it, loss, miou, _duration(s["elapsed_seconds"]), s["recipe"]))
    print_table(("RUN", "STATE", "ITER", "LOSS", "mIoU", "ELAPSED", "RECIPE"), rows)


@user_errors
def logs(
    run: Annotated[str, typer.Argument(help="Run id, id prefix or name.")],
    kind: Annotated[str, typer.Option("--kind", help="train or eval.")] = "train",
    rank: Annotated[int, typer.Option("--rank", help="Task (rank) whose log to print.")] = 0,
) -> None:
    """Print the stdout and stderr of a run's latest job."""
    from segctl.cli.common import UserError
    from segctl.executors import job_log_paths

    record = find_run(run)
    jobs = [j for j in registry().jobs(record.run_id) if j.kind == kind and j.job_id]
    if not jobs:
        raise UserError(f"run {record.run_id} has no {kind} job")
    job = jobs[-1]
    for label, path in zip(("stdout", "stderr"), job_log_paths(job.folder, job.job_id, rank)):
        typer.echo(f"==> {path} ({label}) <==")
        typer.echo(path.read_text(errors="replace") if path.exists() else "(not written yet)")

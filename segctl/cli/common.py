"""What every command shares: user-error handling (exit 2, no traceback), run lookup, tables,
and the printing, submitting and waiting that `segctl submit` and `segctl eval` have in common."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status for bad input (recipes, arguments, unknown runs).
EXIT_USAGE = 2
#: Exit status after Ctrl-C stopped a wait (128 + SIGINT, as a shell reports it); the job runs on.
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def user_errors(func: F) -> F:
    """Turn segctl's user-facing errors into a message on stderr and exit status 2.

    A name too long for the file system (``ENAMETOOLONG``, e.g. a 10,000-character argument
    that is tried as a path) is bad input too: it is reported without a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from segctl.recipe import RecipeError
        from segctl.runs import RunDirError
        from segctl.submission import SubmitError
        from segctl.io.tracking_store import TrackingStoreError

        try:
            return func(*args, **kwargs)
        except RecipeError as exc:
            typer.echo(exc.report(), err=True)
        except (UserError, SubmitError, RunDirError, TrackingStoreError) as exc:
            typer.echo(f"error: {exc}", err=True)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            typer.echo(f"error: name too long for the file system: {shown(str(exc.filename))}",
                       err=True)
        raise typer.Exit(EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def registry():
    """The job registry in ``$SEGCTL_HOME``."""
    from segctl.io.home import segctl_home
    from segctl.registry import Registry

    return Registry(segctl_home())


#: A run key longer than this (in UTF-8 bytes) cannot name a run: run ids name directories.
MAX_RUN_KEY_BYTES = 255


def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters with its length if longer."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_run_key(key: str) -> str:
    """``key`` if it can name a run (id, id prefix or name); returned unchanged, matched
    literally.

    Raises:
        UserError: the key is empty or only whitespace (it would match every run), or longer
            than any run id can be (:data:`MAX_RUN_KEY_BYTES`).
    """
    if not key.strip():
        raise UserError(
            f"empty run key {key!r}: give a run id, id prefix or name (see `segctl status`)"
        )
    if len(key.encode("utf-8", "surrogateescape")) > MAX_RUN_KEY_BYTES:
        raise UserError(
            f"run key {shown(key)} is longer than any run id ({MAX_RUN_KEY_BYTES} bytes at "
            "most): give a run id, id prefix or name (see `segctl status`)"
        )
    return key


def matching_runs(key: str) -> list:
    """The registered runs ``key`` names (see :meth:`segctl.registry.Registry.find_runs`).

    Raises:
        UserError: the key is not a valid run key (:func:`check_run_key`) or matches no run.
    """
    matches = registry().find_runs(check_run_key(key))
    if not matches:
        raise UserError(f"no run matches {shown(key)}: see `segctl status` for the runs known here")
    return matches


def _listing(runs) -> str:
    return "\n".join(f"  {run.run_id}  {run.run_dir}" for run in runs)


def find_run(key: str, *, latest: bool = False):
    """The one registered run matching ``key`` (id, recipe name, or id prefix; matched
    literally, see :meth:`segctl.registry.Registry.find_runs`).

    With ``latest`` (commands that read one run: ``logs``, ``eval``), a recipe name shared by
    several runs (a recipe and its ``--set`` variants) names the one active last (latest job,
    else latest registration: :meth:`segctl.registry.Registry.last_activity`), and stderr
    says which and lists the others. An id prefix is not a name: one matching several runs is
    refused either way.

    Raises:
        UserError: the key is empty, whitespace or too long, or no run matches, or several
            runs match (listed) a prefix, or a name without ``latest``.
    """
    matches = matching_runs(key)
    if len(matches) == 1:
        return matches[0]
    if latest and all(run.name == key for run in matches):
        when = registry().last_activity([run.run_id for run in matches])
        ordered = sorted(matches, key=lambda run: (when.get(run.run_id, run.created_at),
                                                   run.created_at, run.run_id), reverse=True)
        others = [run.run_id for run in ordered[1:]]
        more = f", and {len(others) - 5} more" if len(others) > 5 else ""
        typer.echo(f"{key} matches {len(matches)} runs; using the latest, {ordered[0].run_id} "
                   f"(others: {', '.join(others[:5])}{more})", err=True)
        return ordered[0]
    hint = ("give the full run id" if latest or not all(run.name == key for run in matches)
            else "give the full run id (this command does not pick the latest run of a name)")
    raise UserError(f"{shown(key)} matches {len(matches)} runs:\n{_listing(matches)}\n{hint}")


def select_runs(keys: Sequence[str], all_matches: bool, action: str) -> list:
    """The runs a destructive command (``action``: cancel, forget) acts on, each once.

    A key that matches several runs (a shared name, a short prefix) is refused with the list
    of them, unless ``all_matches`` (``--all``); a full run id always names one run.

    Raises:
        UserError: a key is invalid or matches nothing, or matches several runs without
            ``all_matches``. Nothing has been done then.
    """
    selected: dict[str, Any] = {}
    for key in keys:
        matches = matching_runs(key)
        if len(matches) > 1 and not all_matches:
            raise UserError(
                f"{shown(key)} matches {len(matches)} runs:\n{_listing(matches)}\n"
                f"nothing done: give the full run ids, or add --all to {action} all of them"
            )
        selected.update((run.run_id, run) for run in matches)
    return list(selected.values())


def run_dir_of(key: str) -> Path:
    """The run directory ``key`` names: a directory path as given, else the directory of the
    one run the key names (:func:`find_run`).

    Raises:
        UserError: the key is empty or whitespace (never the current directory), or names no
            directory and no single run.
    """
    if not key.strip():
        check_run_key(key)  # raises: an empty key never means the current directory
    try:
        if Path(key).is_dir():
            return Path(key)
    except (OSError, ValueError):  # too long for a path, or a NUL byte: not a directory
        pass
    return Path(find_run(key).run_dir)


def looks_like_recipe(key: str) -> bool:
    """True if ``key`` names a YAML file (so it is a recipe, not a run id)."""
    if key.endswith((".yaml", ".yml")):
        return True
    try:
        return Path(key).is_file()
    except (OSError, ValueError):  # too long for a path, or a NUL byte: not a file
        return False


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    """Print a plain left-aligned text table."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


# --- submitting and waiting: shared by `segctl submit` and `segctl eval` ----------------------

#: Line that separates the JSON plan from the sbatch script in ``--dry-run`` output.
SBATCH_MARKER = "# ---- sbatch script ----"


def print_plan(plan) -> None:
    """The plan as JSON (weights sizes asked of the source where not cached: nothing is
    downloaded), then (for Slurm) the sbatch script after a marker line."""
    import json

    typer.echo(json.dumps(plan.to_dict(probe_sizes=True), indent=2))
    script = plan.sbatch_script()
    if script is not None:
        typer.echo(SBATCH_MARKER)
        typer.echo(script)


def print_notes(plan) -> None:
    """The plan's warnings, on stderr (``--dry-run`` shows them in the JSON)."""
    for note in plan.notes:
        typer.echo(f"warning: {note}", err=True)


def print_weights(lines: list[str]) -> None:
    """What :func:`segctl.submission.apply` fetched and checked, one line per file, on stderr."""
    for line in lines:
        typer.echo(f"weights: {line}", err=True)


def submit_plan(plan):
    """Print the plan's warnings, carry it out (:func:`segctl.submission.apply`) and print the
    weights files fetched and checked for it; returns the
    :class:`~segctl.submission.SubmittedJob`."""
    from segctl.submission import apply

    print_notes(plan)
    submitted = apply(plan, registry())
    print_weights(submitted.weights)
    return submitted


def attach_to_running_job(plan, wait: bool) -> bool:
    """If the plan's run has a job of the plan's kind in progress (for an evaluation, one of
    the same label), say so and submit nothing; with ``wait``, wait for that job as if it had
    just been submitted (:func:`finish`: exit 1 unless it COMPLETED). Returns whether there was
    one."""
    from segctl.submission import SubmittedJob, job_in_progress

    running = job_in_progress(plan, registry())
    if running is None:
        return False
    job, state = running
    what = "a training job" if plan.kind == "train" else f"an evaluation ({plan.label})"
    typer.echo(f"{plan.run_id} has {what} in progress ({job.executor} job {job.job_id}, "
               f"{state}); nothing submitted.")
    if not wait:
        typer.echo(f"  `segctl status {plan.run_id}`, `segctl logs {plan.run_id} --follow`, or "
                   "the same command with --wait to wait for it.")
        return True
    typer.echo("  waiting for it")
    finish(SubmittedJob(row=job.id, job_id=job.job_id, plan=plan, handle=None))
    return True


def finish(submitted) -> None:
    """Wait for a submitted job; exit 1 (with the reason and the log's last lines) unless it
    COMPLETED. The last line is the job's state; for a completed training job with its final
    iteration and mIoU (``<run>: COMPLETED (iteration 300/300, mIoU 67.44)``); a completed
    evaluation prints nothing here (``segctl eval`` reports it after its table). Ctrl-C stops
    the waiting only (exit :data:`EXIT_INTERRUPTED`): the job runs on (a local job has a
    session of its own, see :mod:`segctl.local_session`), and the message says how to follow
    or cancel it.

    The state comes from :func:`segctl.status.wait` (sacct, or a local job's JSON exit
    record and controller pid); nothing of the job is unpickled.
    """
    from segctl.executors import job_log_paths
    from segctl.recipe.rundir import RunDir
    from segctl.runs import finished_training
    from segctl.status import JobState, wait

    reg = registry()
    try:
        state = wait(reg, submitted.row, on_poll=_progress_printer(submitted))
    except KeyboardInterrupt:
        run = submitted.plan.run_id
        what = "is still running" if submitted.plan.kind == "train" else \
            f"is still being evaluated ({submitted.plan.label})"
        typer.echo(f"\nstopped waiting; {run} {what}: `segctl status {run}`, "
                   f"`segctl logs {run} --follow`, `segctl cancel {run}`", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if submitted.plan.kind == "eval" and state == JobState.COMPLETED:
        return  # `segctl eval` reports a completed evaluation itself: its table, then its state
    row = reg.job(submitted.row)
    reason = f" ({row.reason})" if row is not None and row.reason else ""
    if submitted.plan.kind == "train" and state == JobState.COMPLETED:
        # the final evaluation ends after the last progress line the poll may have shown
        summary = finished_training(submitted.plan.run_dir)
        reason = f" ({summary})" if summary else reason
    typer.echo(f"{submitted.plan.run_id}: {state}{reason}")
    if state != JobState.COMPLETED:
        folder = row.folder if row is not None else str(RunDir(submitted.plan.run_dir).jobs)
        _, stderr = job_log_paths(folder, submitted.job_id)
        if stderr.exists():
            tail = stderr.read_text(errors="replace").splitlines()[-20:]
            typer.echo("\n".join(tail), err=True)
        raise typer.Exit(1)


def _progress_printer(submitted):
    """An ``on_poll`` callback printing a line whenever a training job's iteration moves."""
    from segctl.recipe.rundir import RunDir

    last: dict = {}
    run_dir = RunDir(submitted.plan.run_dir)

    def show(state: str) -> None:
        if submitted.plan.kind != "train":
            return
        progress = run_dir.read_progress()
        iteration = progress.get("iteration")
        if iteration is None or iteration == last.get("iteration"):
            return
        last.update(progress)
        parts = [f"iter {iteration}/{progress.get('max_iters')}"]
        for key, fmt in (("loss", "loss {:.4f}"), ("lr", "lr {:.2e}"), ("miou", "mIoU {:.2f}")):
            if isinstance(progress.get(key), (int, float)):
                parts.append(fmt.format(progress[key]))
        if isinstance(progress.get("eta_seconds"), (int, float)):
            parts.append(f"eta {int(progress['eta_seconds'])} s")
        typer.echo("  " + "  ".join(parts))

    return show

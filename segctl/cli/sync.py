"""``segctl sync``: deliver a run's buffered tracking records to MLflow (the work is
:func:`segctl.tracking_query.sync_run`; this module says what it did)."""

from __future__ import annotations

from typing import Annotated

import typer

from segctl.cli.common import UserError, run_dir_of, user_errors


@user_errors
def sync(
    run: Annotated[str, typer.Argument(help="Run id (or prefix, or name), or a run directory.")],
) -> None:
    """Replay RUN_DIR/tracking-buffer.jsonl (what a tracking outage held back) into MLflow.

    Records keep their original steps and timestamps; delivered records leave the buffer, so
    running it twice sends nothing twice. When the run's MLflow run is gone (its store deleted
    or replaced), the whole run is rebuilt into a new MLflow run from
    RUN_DIR/tracking-journal.jsonl, tagged segctl.rebuilt_from_journal.
    """
    from segctl.tracking_query import SyncError, sync_run

    try:
        done = sync_run(run_dir_of(run))
    except SyncError as exc:
        raise UserError(str(exc)) from None
    if done.nothing:
        typer.echo(f"{done.run}: nothing to sync")
        return
    if done.rebuilt is not None:
        typer.echo(f"{done.run}: MLflow run {done.lost_run_id} was not found at {done.uri}; "
                   f"rebuilt {done.rebuilt} records from {done.journal} into MLflow "
                   f"run {done.mlflow_run_id}")
    if done.sent or done.rebuilt is None:
        typer.echo(f"{done.run}: delivered {done.sent} buffered records to {done.uri} "
                   f"(MLflow run {done.mlflow_run_id})")

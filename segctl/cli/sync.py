"""``segctl sync``: deliver a run's buffered tracking records to MLflow."""

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
    from segctl.recipe import parse_json_recipe
    from segctl.recipe.secrets import (
        MissingSecretError, fill_url_references, redact_url_credentials,
    )
    from trainer.tracking import Tracker

    run_dir = run_dir_of(run)
    try:
        recipe = parse_json_recipe((run_dir / "recipe.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run directory (no recipe.json)") from None
    if recipe.tracking.uri:  # credentials of the tracking URI travel as ${VAR} references
        try:
            uri = fill_url_references(recipe.tracking.uri)
        except MissingSecretError as exc:
            raise UserError(f"tracking.uri of {run_dir.name}: {exc}") from None
        recipe = recipe.model_copy(update={"tracking": recipe.tracking.model_copy(
            update={"uri": uri})})
    tracker = Tracker.for_recipe(run_dir, recipe, cooldown_s=0.0, reopen=False,
                                 system_metrics=False)
    if tracker.run_id is not None and not tracker.pending() and tracker.rebuilt is None:
        typer.echo(f"{run_dir.name}: nothing to sync")
        return
    try:
        sent = tracker.flush()
    except Exception as exc:
        raise UserError(
            f"MLflow at {redact_url_credentials(tracker.uri)} not reachable "
            f"({type(exc).__name__}); {tracker.pending()} records still buffered in "
            f"{tracker.buffer_path}"
        ) from None
    if tracker.run_id is None:
        typer.echo(f"{run_dir.name}: nothing to sync")
        return
    _learned(tracker.uri, tracker.run_id, tracker.lost_run_id)
    where = redact_url_credentials(tracker.uri)
    if tracker.rebuilt is not None:
        typer.echo(f"{run_dir.name}: MLflow run {tracker.lost_run_id} was not found at {where}; "
                   f"rebuilt {tracker.rebuilt} records from {tracker.journal_path} into MLflow "
                   f"run {tracker.run_id}")
    if sent or tracker.rebuilt is None:
        typer.echo(f"{run_dir.name}: delivered {sent} buffered records to {where} "
                   f"(MLflow run {tracker.run_id})")


def _learned(uri: str, run_id: str, lost: str | None) -> None:
    """Tell the report index that ``run_id`` changed (and ``lost`` is gone), so the next
    ``segctl report`` reads them again; an index that cannot be opened is left alone."""
    from segctl.report_index import ReportIndex

    try:
        with ReportIndex.open() as index:
            index.mark_stale(uri, [run_id] + ([lost] if lost else []))
    except OSError:
        pass

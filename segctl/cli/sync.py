"""``segctl sync``: deliver a run's buffered tracking records to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import UserError, find_run, user_errors


@user_errors
def sync(
    run: Annotated[str, typer.Argument(help="Run id (or prefix, or name), or a run directory.")],
) -> None:
    """Replay RUN_DIR/tracking-buffer.jsonl (what a tracking outage held back) into MLflow.

    Records keep their original steps and timestamps; delivered records leave the buffer, so
    running it twice sends nothing twice.
    """
    from segctl.recipe import parse_json_recipe
    from trainer.tracking import Tracker

    run_dir = Path(run) if Path(run).is_dir() else Path(find_run(run).run_dir)
    try:
        recipe = parse_json_recipe((run_dir / "recipe.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run directory (no recipe.json)") from None
    tracker = Tracker.for_recipe(run_dir, recipe, cooldown_s=0.0, reopen=False,
                                 system_metrics=False)
    waiting = tracker.pending()
    if not waiting:
        typer.echo(f"{run_dir.name}: nothing to sync")
        return
    try:
        sent = tracker.flush()
    except Exception as exc:
        raise UserError(
            f"MLflow at {tracker.uri} not reachable ({type(exc).__name__}); "
            f"{tracker.pending()} records still buffered in {tracker.buffer_path}"
        ) from None
    typer.echo(f"{run_dir.name}: delivered {sent} buffered records to {tracker.uri} "
               f"(MLflow run {tracker.run_id})")

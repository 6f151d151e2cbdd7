"""``segctl eval``: score a run's (or any) checkpoint on the validation split, as a job."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import UserError, find_run, looks_like_recipe, registry, user_errors
from segctl.cli.placement import (
    Cluster,
    GpusPerNode,
    Nodes,
    Partition,
    Profile,
    TimeLimit,
    load_profile_or_fail,
    placement_overrides,
)
from segctl.cli.submit import finish, print_notes, print_plan


@user_errors
def evaluate(
    target: Annotated[str, typer.Argument(help="Run id (or prefix, or name), or a recipe file.")],
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", help="Weights to score: a path or fsspec URL (default: the run's final)."),
    ] = None,
    ms_flip: Annotated[
        bool | None,
        typer.Option("--ms-flip/--single-scale", help="Multi-scale + flip (default: the recipe's eval.ms_flip)."),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field (recipe targets only).")
    ] = None,
    output_format: Annotated[
        str,
        typer.Option("--format", help="metrics (score the split), or cityscapes-submission "
                     "(labelId PNGs zipped into RUN_DIR/eval/LABEL-cityscapes-submission.zip, "
                     "no scoring; the test split, else the validation split)."),
    ] = "metrics",
    wait: Annotated[bool, typer.Option("--wait", help="Block, then print the per-class table.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; submit nothing.")] = False,
    nodes: Nodes = None,
    gpus_per_node: GpusPerNode = None,
    partition: Partition = None,
    time_min: TimeLimit = None,
    profile: Profile = None,
    cluster: Cluster = None,
) -> None:
    """Evaluate a run (or a recipe with --checkpoint) as a job of its own.

    The per-class table is printed in the job log, logged to MLflow and written to
    RUN_DIR/eval/LABEL.txt; with --wait it is printed here too.
    """
    from segctl.runs import create_run_dir, read_recipe
    from segctl.submission import apply, plan_evaluation, with_placement

    placement = placement_overrides(nodes, gpus_per_node, partition, time_min, cluster)
    if looks_like_recipe(target):
        run_dir, recipe, source = _from_recipe(Path(target), [*(overrides or []), *placement], checkpoint)
    else:
        if overrides:
            raise UserError("--set applies to recipe targets only; a run's recipe is fixed")
        record = find_run(target)
        run_dir, source = Path(record.run_dir), record.source
        recipe = with_placement(read_recipe(run_dir), placement, source)
        if checkpoint is None and not (run_dir / "checkpoints").is_dir():
            raise UserError(f"run {record.run_id} has no checkpoints yet: pass --checkpoint")
    plan = plan_evaluation(
        run_dir, recipe, source, checkpoint, ms_flip, profile=load_profile_or_fail(profile)
    )
    if output_format not in ("metrics", "cityscapes-submission"):
        raise UserError(f"--format must be metrics or cityscapes-submission, got {output_format!r}")
    if output_format != "metrics":
        plan = dataclasses.replace(plan, args=(*plan.args, output_format))
    if dry_run:
        print_plan(plan)
        return
    if not run_dir.exists():
        create_run_dir(run_dir, plan.recipe)
    print_notes(plan)
    submitted = apply(plan, registry())
    typer.echo(f"submitted evaluation {plan.label} of {plan.run_id} ({plan.executor} job {submitted.job_id})")
    if wait:
        finish(submitted)
        if output_format != "metrics":
            typer.echo(f"submission: {run_dir / 'eval' / f'{plan.label}-{output_format}.zip'}")
            return
        table = run_dir / "eval" / f"{plan.label}.txt"
        typer.echo(table.read_text() if table.exists() else f"(no table at {table})")


def _from_recipe(path: Path, overrides: list[str], checkpoint: str | None):
    from segctl.paths import runs_dir
    from segctl.recipe import load_recipe, run_id

    loaded = load_recipe(path, overrides)
    rid = run_id(loaded.recipe)
    run_dir = runs_dir() / rid
    if checkpoint is None and not (run_dir / "checkpoints").is_dir():
        raise UserError(
            f"recipe {path} has no trained run here ({run_dir} has no checkpoints): "
            "pass --checkpoint PATH_OR_URL"
        )
    return run_dir, loaded.recipe, str(path)

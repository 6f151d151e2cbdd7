"""``segctl eval``: score a run's (or any) checkpoint on the validation split, as a job."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from segctl.cli.common import (
    UserError,
    attach_to_running_job,
    find_run,
    finish,
    looks_like_recipe,
    print_plan,
    submit_plan,
    user_errors,
)
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

if TYPE_CHECKING:  # segctl.recipe loads pydantic: kept out of `segctl --help`
    from segctl.recipe.eval_request import OutputFormat


@user_errors
def evaluate(
    target: Annotated[
        str, typer.Argument(help="Run id (or prefix, or name: its latest run), or a recipe file.")
    ],
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
    published: Annotated[
        bool,
        typer.Option("--published", help="Score the recipe's published trained model "
                     "(reference.checkpoint, fetched into the weights cache) on your dataset: "
                     "checks the data and the evaluation settings in minutes."),
    ] = False,
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="metrics (score the split), or cityscapes-submission "
                     "(labelId PNGs zipped into RUN_DIR/eval/LABEL-cityscapes-submission.zip, "
                     "no scoring; the test split, else the validation split). Default: "
                     "cityscapes-submission where the published figure is a test-server "
                     "score (reference.split: test), else metrics."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block, then print the per-class table.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; submit nothing.")] = False,
    nodes: Nodes = None,
    gpus_per_node: GpusPerNode = None,
    partition: Partition = None,
    time_min: TimeLimit = None,
    profile: Profile = None,
    cluster: Cluster = None,
) -> None:
    """Evaluate a run (or a recipe with --checkpoint or --published) as a job of its own.

    The per-class table is printed in the job log, logged to MLflow and written to
    RUN_DIR/eval/LABEL.txt; with --wait it is printed here too, with --published beside the
    published figure.
    """
    from segctl.recipe.rundir import RunDir
    from segctl.runs import create_run_dir, read_recipe
    from segctl.submission import plan_evaluation, with_placement

    placement = placement_overrides(nodes, gpus_per_node, partition, time_min, cluster)
    if published and checkpoint is not None:
        raise UserError("--published scores reference.checkpoint: drop --checkpoint")
    if looks_like_recipe(target):
        run_dir, recipe, source, checkpoint = _from_recipe(
            Path(target), [*(overrides or []), *placement], checkpoint, published
        )
    else:
        if overrides:
            raise UserError("--set applies to recipe targets only; a run's recipe is fixed")
        record = find_run(target, latest=True)  # a shared recipe name: its latest run
        run_dir, source = Path(record.run_dir), record.source
        try:
            stored = read_recipe(run_dir)
        except FileNotFoundError:
            raise UserError(
                f"run {record.run_id} has no {RunDir(run_dir).recipe}: its run directory was "
                "moved or deleted; `segctl forget` it, or evaluate its recipe file instead"
            ) from None
        recipe = with_placement(stored, placement, source)
        if published:
            checkpoint = _reference_checkpoint(recipe, f"run {record.run_id}")
        if checkpoint is None and not RunDir(run_dir).checkpoints.is_dir():
            raise UserError(f"run {record.run_id} has no checkpoints yet: pass --checkpoint")
    fmt = _output_format(output_format or default_format(recipe))
    plan = plan_evaluation(
        run_dir, recipe, source, checkpoint, ms_flip, profile=load_profile_or_fail(profile),
        output_format=fmt, published=published,
    )
    if dry_run:
        print_plan(plan)
        return
    if not attach_to_running_job(plan, wait):
        if not run_dir.exists():
            create_run_dir(run_dir, plan.recipe)
        submitted = submit_plan(plan)
        typer.echo(f"submitted evaluation {plan.label} of {plan.run_id} ({plan.executor} job "
                   f"{submitted.job_id})")
        if wait:
            finish(submitted)
    if wait:
        report_evaluation(plan, recipe, fmt, published)


def report_evaluation(plan, recipe, fmt: OutputFormat, published: bool) -> None:
    """After a completed evaluation job: its table (and, with ``published``, the published
    figure beside the measured one), the checkpoint it scored and where its results are; the
    last line is the evaluation's own state, ``evaluation LABEL of RUN: COMPLETED (mIoU X)``.
    A Cityscapes submission names its zip file instead of a table. URL credentials are never
    shown."""
    import json

    from segctl.recipe.rundir import RunDir
    from segctl.recipe.secrets import redact_url_credentials

    run_dir = RunDir(plan.run_dir)
    what = f"evaluation {plan.label} of {plan.run_id}: COMPLETED"
    if fmt.value != "metrics":
        submission = run_dir.eval_file(plan.label, f"-{fmt}.zip")
        typer.echo(f"submission: {submission}")
        typer.echo(f"{what} (labelId PNGs for the evaluation server)")
        return
    table, result_json = run_dir.eval_file(plan.label, ".txt"), run_dir.eval_file(plan.label, ".json")
    typer.echo(table.read_text() if table.exists() else f"(no table at {table})")
    if published:
        typer.echo(published_comparison(recipe, result_json))
    try:
        result = json.loads(result_json.read_text())
    except (OSError, ValueError):
        typer.echo(f"{what} (no readable result at {result_json})")
        return
    iteration = result.get("iteration")
    at = f" (iteration {iteration})" if iteration is not None else ""
    typer.echo(f"checkpoint: {redact_url_credentials(str(result.get('checkpoint')))}{at}")
    typer.echo(f"table: {table}\nresult: {result_json}")
    miou = (result.get("metrics") or {}).get("mIoU")
    typer.echo(f"{what} (mIoU {'n/a' if miou is None else f'{miou:.2f}'})")


def _output_format(value: str) -> OutputFormat:
    from segctl.recipe.eval_request import OutputFormat

    try:
        return OutputFormat(value)
    except ValueError:
        raise UserError(
            f"--format must be metrics or cityscapes-submission, got {value!r}"
        ) from None


def default_format(recipe) -> str:
    """``cityscapes-submission`` for a Cityscapes recipe whose published figures are test-server
    scores (``reference.split: test``): only the server can score it; else ``metrics``."""
    from segctl.recipe.datasets import DATASET_PRESETS

    reference = recipe.reference
    if (reference is not None and reference.split == "test"
            and DATASET_PRESETS[recipe.data.dataset].layout == "cityscapes"):
        return "cityscapes-submission"
    return "metrics"


def _reference_checkpoint(recipe, what: str) -> str:
    reference = recipe.reference
    if reference is None or not reference.checkpoint:
        raise UserError(
            f"{what} names no published trained model: --published needs reference.checkpoint "
            "(the URL of the released weights) in the recipe"
        )
    return reference.checkpoint


def published_comparison(recipe, result_json: Path) -> str:
    """One line: the published mIoU of the evaluated mode beside the measured one.

    A test-server figure (``reference.split: test``) is shown as such and not compared with the
    measured score, which comes from the validation split.
    """
    import json

    if not result_json.exists():
        return f"(no result at {result_json})"
    result = json.loads(result_json.read_text())
    mode = result["mode"]
    measured = result["metrics"]["mIoU"]
    reference = recipe.reference
    published = reference.miou_ms_flip if mode == "ms_flip" else reference.miou_ss
    label = "ms+flip" if mode == "ms_flip" else "single-scale"
    shown = "n/a" if measured is None else f"{measured:.2f}"
    if published is None:
        return f"published checkpoint, {label}: measured mIoU {shown}; no published {label} figure"
    if reference.split != "val":
        return (f"published checkpoint, {label}: measured mIoU {shown} on "
                f"{recipe.data.val_split or 'the validation split'}; published {published:.2f} is "
                f"a {reference.split}-server figure, not comparable")
    delta = "" if measured is None else f" ({measured - published:+.2f})"
    return f"published checkpoint, {label}: published mIoU {published:.2f}, measured {shown}{delta}"


def _from_recipe(path: Path, overrides: list[str], checkpoint: str | None, published: bool):
    """``(run_dir, recipe, source, checkpoint)`` for a recipe target; with ``published`` the
    checkpoint is the recipe's ``reference.checkpoint``."""
    from segctl.paths import runs_dir
    from segctl.recipe import load_recipe, run_id
    from segctl.recipe.rundir import RunDir

    loaded = load_recipe(path, overrides)
    if published:
        checkpoint = _reference_checkpoint(loaded.recipe, f"recipe {path}")
    rid = run_id(loaded.recipe)
    run_dir = runs_dir() / rid
    if checkpoint is None and not RunDir(run_dir).checkpoints.is_dir():
        raise UserError(
            f"recipe {path} has no trained run here ({run_dir} has no checkpoints): "
            "pass --checkpoint PATH_OR_URL, or --published for reference.checkpoint"
        )
    return run_dir, loaded.recipe, str(path), checkpoint

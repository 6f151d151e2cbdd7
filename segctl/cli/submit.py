"""``segctl submit``: train a recipe as a job (local executor by default, Slurm where found)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import (
    UserError,
    attach_to_running_job,
    finish,
    print_notes,
    print_plan,
    print_weights,
    registry,
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


@user_errors
def submit(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: section.field=value.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the job ends.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; submit nothing.")] = False,
    nodes: Nodes = None,
    gpus_per_node: GpusPerNode = None,
    partition: Partition = None,
    time_min: TimeLimit = None,
    profile: Profile = None,
    cluster: Cluster = None,
    sweeps: Annotated[
        list[str] | None,
        typer.Option("--sweep", help="Sweep a field: section.field=v1,v2 (repeat for a grid)."),
    ] = None,
    from_scratch: Annotated[
        bool,
        typer.Option("--from-scratch", help="Train without pretrained weights a recipe that "
                     "reproduces a published result (refused otherwise)."),
    ] = False,
    rerun: Annotated[
        bool,
        typer.Option("--rerun", help="Submit a job for a run that has finished training: it "
                     "loads the final checkpoint and validates it again."),
    ] = False,
    scale_lr: Annotated[
        str,
        typer.Option("--scale-lr", help="On fewer GPUs than the recipe's cluster: none (keep "
                     "the published global batch by gradient accumulation) or linear (keep "
                     "accumulation, scale the learning rate and warm-up by the batch ratio)."),
    ] = "none",
) -> None:
    """Validate RECIPE, create its run directory and submit its training job.

    Re-submitting the same recipe finds the same run (same id) and resumes it; a run that has
    finished training is left as it is and nothing is submitted (exit 0) unless --rerun is
    given (`segctl eval` evaluates it again); a run whose training job is in progress gets no
    second job. A sweep skips such members the same way and submits the rest. On Slurm the job
    has one task per GPU on each node; --dry-run prints the plan and the sbatch script, with
    notes listing what a submit would warn about or refuse ("submit would refuse: ...": a
    missing dataset, an unset ${VAR}) and exits 0; a recipe it could never submit as given
    (invalid, or a reference without weights and without --from-scratch) exits 2.
    Pretrained weights named by URL are fetched into the weights cache first (see `segctl
    weights`); the job reads them from there. A recipe with a reference and no
    model.init_checkpoint is refused unless --from-scratch is given.
    """
    from segctl.recipe import RecipeError, load_recipe
    from segctl.runs import finished_training
    from segctl.submission import plan_training, preflight

    if scale_lr not in ("none", "linear"):
        raise UserError(f"--scale-lr must be none or linear, got {scale_lr!r}")
    placement = placement_overrides(nodes, gpus_per_node, partition, time_min, cluster)
    site = load_profile_or_fail(profile)
    # the recipe's own placement: the published global batch is kept on the processes given
    published = load_recipe(recipe, overrides or []).recipe.cluster if placement else None
    if sweeps:
        submit_sweep(recipe, [*(overrides or []), *placement], sweeps, site, dry_run, wait,
                     from_scratch, rerun, published=published, scale_lr=scale_lr)
        return
    loaded = load_recipe(recipe, [*(overrides or []), *placement])
    plan = plan_training(loaded, profile=site, published_cluster=published, scale_lr=scale_lr)
    plan, refused = _pretraining(plan, from_scratch, dry_run)
    if dry_run:
        _print_dry_run(loaded, plan, rerun)
        if refused is not None:
            raise refused
        return
    finished = None if rerun else finished_training(plan.run_dir)
    if attach_to_running_job(plan, wait):
        return
    if finished is not None:
        typer.echo(f"{plan.run_id} has finished training ({finished}); nothing submitted.\n"
                   f"  `segctl status {plan.run_id}` shows it, `segctl eval {plan.run_id}` "
                   "evaluates it again, --rerun re-validates it in a new job.")
        return
    issues = preflight(loaded, plan.recipe)
    if issues:
        raise RecipeError(issues)
    submitted = submit_plan(plan)
    typer.echo(f"submitted {plan.run_id} ({plan.executor} job {submitted.job_id})")
    typer.echo(f"  run dir: {plan.run_dir}")
    if wait:
        finish(submitted)


def _pretraining(plan, from_scratch: bool, dry_run: bool):
    """``(plan with the notes of check_pretraining, refusal or None)``: a submit raises the
    refusal at once; a dry-run lists it in the plan's notes first and raises it after."""
    from segctl.submission import REFUSED, SubmitError, check_pretraining

    try:
        notes = check_pretraining(plan.recipe, from_scratch)
        return replace(plan, notes=[*plan.notes, *notes]), None
    except SubmitError as exc:
        if not dry_run:
            raise
        return replace(plan, notes=[*plan.notes, f"{REFUSED}{exc}"]), exc


def _existing_registry():
    """The job registry if there is one yet (a dry-run creates nothing), else None."""
    from segctl.io.home import segctl_home
    from segctl.registry import Registry

    home = segctl_home()
    return Registry(home) if (home / "registry.db").is_file() else None


def _dry_run_notes(loaded, plan, why, datasets: dict | None = None) -> list[str]:
    """The notes a dry-run adds to ``plan``'s: why nothing would be submitted (``why``, from
    :func:`segctl.submission.why_not_submitted`: a job in progress, a finished run), else
    everything a submit would refuse (``datasets``: see :func:`segctl.submission.refusals`)."""
    from segctl.submission import refusals

    if why is None:
        return refusals(loaded, plan, datasets)
    hint = "" if why.job is not None else " without --rerun"
    return [f"{plan.run_id} {why.reason}: nothing would be submitted{hint}"]


def _print_dry_run(loaded, plan, rerun: bool) -> None:
    from segctl.submission import why_not_submitted

    why = why_not_submitted(plan, _existing_registry(), rerun)
    print_plan(replace(plan, notes=[*plan.notes, *_dry_run_notes(loaded, plan, why)]))


def submit_sweep(recipe: Path, overrides: list[str], sweeps: list[str], site, dry_run: bool,
                 wait: bool, from_scratch: bool = False, rerun: bool = False, *,
                 published=None, scale_lr: str = "none") -> None:
    """Expand the sweep grid, check every member, and submit the members that need a job as
    one job array: a member whose training job is in progress, or that has finished training
    (unless ``rerun``), is skipped as a single run would be, and said so. ``published`` and
    ``scale_lr``: see :func:`segctl.submission.plan_training`."""
    from segctl.recipe import RecipeError, load_recipe
    from segctl.submission import (
        SubmittedJob, apply_sweep, dataset_key, plan_training, preflight_remembered,
        why_not_submitted,
    )
    from segctl.sweeps import expand_grid, refuse_shared_runs, sweep_id

    issues, plans, loaded_members = [], [], []
    grid = expand_grid(sweeps)
    for point in grid:
        try:
            loaded = load_recipe(recipe, [*overrides, *point])
        except RecipeError as exc:
            issues.extend(exc.issues)
            continue
        loaded_members.append(loaded)
        plans.append(plan_training(loaded, profile=site, published_cluster=published,
                                   scale_lr=scale_lr))
    if issues:
        raise RecipeError(issues)
    refuse_shared_runs(grid, [m.recipe for m in loaded_members], [p.run_id for p in plans])
    checked = [_pretraining(p, from_scratch, dry_run) for p in plans]
    plans = [plan for plan, _ in checked]
    refused = next((exc for _, exc in checked if exc is not None), None)
    # the sweep's identity is its whole grid, whichever members this submission skips
    sweep = sweep_id(plans[0].recipe.name, [p.run_id for p in plans])
    reg = _existing_registry()
    whys = [why_not_submitted(plan, reg, rerun) for plan in plans]
    if dry_run:
        datasets: dict = {}  # members usually share their dataset: check it once
        runs = [p.to_dict() | {"notes": [*p.notes, *_dry_run_notes(m, p, why, datasets)]}
                for m, p, why in zip(loaded_members, plans, whys)]
        skipped = [p.run_id for p, why in zip(plans, whys) if why is not None]
        typer.echo(json.dumps({"sweep": sweep, "runs": runs, "skipped": skipped}, indent=2))
        if refused is not None:
            raise refused
        return
    members, attached, finished = [], [], 0
    for loaded, plan, why in zip(loaded_members, plans, whys):
        if why is None:
            members.append((loaded, plan))
            continue
        typer.echo(f"{plan.run_id} {why.reason}; skipped.")
        if why.job is None:
            finished += 1
        else:  # like a single run: with --wait, wait for that job
            attached.append(SubmittedJob(row=why.job.id, job_id=why.job.job_id, plan=plan,
                                         handle=None))
    if finished:
        typer.echo("  --rerun submits the finished members again (re-validating their final "
                   "weights); `segctl eval RUN` evaluates one again.")
    if not members:
        typer.echo(f"nothing submitted: every member of sweep {sweep} has finished training "
                   "or has a training job in progress.")
        if wait and attached:
            typer.echo("  waiting for the jobs in progress")
        _wait_for_all(attached if wait else [])
        return
    checked_data = set()
    for loaded, plan in members:
        key = dataset_key(plan.recipe)
        if key not in checked_data:  # members usually share their dataset: check it once
            checked_data.add(key)
            issues.extend(preflight_remembered(loaded, plan.recipe))
    if issues:
        raise RecipeError(issues)
    to_submit = [plan for _, plan in members]
    for plan in to_submit:
        print_notes(plan)
    submitted = apply_sweep(to_submit, registry(), sweep)
    print_weights([line for job in submitted for line in job.weights])
    skipped = len(plans) - len(submitted)
    typer.echo(f"submitted sweep {sweep}: {len(submitted)} runs ({to_submit[0].executor})"
               + (f", {skipped} skipped" if skipped else ""))
    for job in submitted:
        typer.echo(f"  {job.plan.run_id}  job {job.job_id}")
    _wait_for_all([*submitted, *attached] if wait else [])


def _wait_for_all(jobs) -> None:
    """Wait for each job (:func:`finish`); exit 1 if any did not complete."""
    failed = 0
    for job in jobs:
        try:
            finish(job)
        except typer.Exit:
            failed += 1
    if failed:
        raise typer.Exit(1)

"""``segctl submit``: train a recipe as a job (local executor by default, Slurm where found)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import (
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
) -> None:
    """Validate RECIPE, create its run directory and submit its training job.

    Re-submitting the same recipe finds the same run (same id) and resumes it; a run that has
    finished training is left as it is and nothing is submitted (exit 0) unless --rerun is
    given (`segctl eval` evaluates it again). On Slurm the job
    has one task per GPU on each node; --dry-run prints the plan and the sbatch script.
    Pretrained weights named by URL are fetched into the weights cache first (see `segctl
    weights`); the job reads them from there. A recipe with a reference and no
    model.init_checkpoint is refused unless --from-scratch is given.
    """
    from segctl.recipe import RecipeError, load_recipe
    from segctl.runs import finished_training
    from segctl.submission import check_pretraining, plan_training, preflight

    placement = placement_overrides(nodes, gpus_per_node, partition, time_min, cluster)
    site = load_profile_or_fail(profile)
    if sweeps:
        submit_sweep(recipe, [*(overrides or []), *placement], sweeps, site, dry_run, wait,
                     from_scratch)
        return
    loaded = load_recipe(recipe, [*(overrides or []), *placement])
    plan = plan_training(loaded, profile=site)
    plan = replace(plan, notes=[*plan.notes, *check_pretraining(plan.recipe, from_scratch)])
    finished = None if rerun else finished_training(plan.run_dir)
    if finished is not None:
        plan = replace(plan, notes=[*plan.notes, f"{plan.run_id} has finished training "
                                    f"({finished}): nothing would be submitted without --rerun"])
    if dry_run:
        print_plan(plan)
        return
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


def submit_sweep(recipe: Path, overrides: list[str], sweeps: list[str], site, dry_run: bool,
                 wait: bool, from_scratch: bool = False) -> None:
    """Expand the sweep grid, check every member, and submit them as one job array."""
    from segctl.recipe import RecipeError, load_recipe
    from segctl.submission import apply_sweep, check_pretraining, plan_training, preflight
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
        plans.append(plan_training(loaded, profile=site))
    if issues:
        raise RecipeError(issues)
    refuse_shared_runs(grid, [m.recipe for m in loaded_members], [p.run_id for p in plans])
    plans = [replace(p, notes=[*p.notes, *check_pretraining(p.recipe, from_scratch)])
             for p in plans]
    sweep = sweep_id(plans[0].recipe.name, [p.run_id for p in plans])
    if dry_run:
        typer.echo(json.dumps({"sweep": sweep, "runs": [p.to_dict() for p in plans]}, indent=2))
        return
    checked = set()
    for loaded, plan in zip(loaded_members, plans):
        data = plan.recipe.data
        key = (data.dataset, data.root, data.train_split, data.val_split)
        if key not in checked:  # members usually share their dataset: check it once
            checked.add(key)
            issues.extend(preflight(loaded, plan.recipe))
    if issues:
        raise RecipeError(issues)
    for plan in plans:
        print_notes(plan)
    submitted = apply_sweep(plans, registry(), sweep)
    print_weights([line for job in submitted for line in job.weights])
    typer.echo(f"submitted sweep {sweep}: {len(submitted)} runs ({plans[0].executor})")
    for job in submitted:
        typer.echo(f"  {job.plan.run_id}  job {job.job_id}")
    if wait:
        failed = 0
        for job in submitted:
            try:
                finish(job)
            except typer.Exit:
                failed += 1
        if failed:
            raise typer.Exit(1)

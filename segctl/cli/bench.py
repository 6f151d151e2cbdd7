"""``segctl bench``: time real training steps of a recipe here, and keep the figure for plans."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segctl.cli.common import UserError, print_table, user_errors


@user_errors
def bench(
    recipe_file: Annotated[Path, typer.Argument(help="A recipe file.", metavar="RECIPE")],
    iters: Annotated[int, typer.Option("--iters", help="Timed training iterations.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed iterations first.")] = 2,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field (a.b=c).")
    ] = None,
) -> None:
    """Time real training steps of RECIPE on this machine (its model, optimizer, loss,
    precision, crop and per-GPU batch; random weights and images, nothing downloaded) and keep
    seconds per iteration and peak memory in $SEGCTL_HOME/bench.json. Later plans of runs
    with the same step (`segctl submit --dry-run`) estimate wall time and GPU-hours from it.
    """
    from segctl import cost
    from segctl.io.home import segctl_home
    from segctl.recipe import load_recipe

    if iters < 1 or warmup < 0:
        raise UserError(f"--iters must be at least 1 and --warmup at least 0, got {iters} "
                        f"and {warmup}")
    recipe = load_recipe(recipe_file, overrides or []).recipe
    from trainer.step_timing import time_training_steps

    typer.echo(f"timing {warmup} + {iters} training iterations of {recipe.name} "
               f"({recipe.model.name}, crop {recipe.data.crop_size[0]}x"
               f"{recipe.data.crop_size[1]}, batch {recipe.train.batch_size}) ...", err=True)
    timing = time_training_steps(recipe, iters=iters, warmup=warmup)
    measurement = cost.Measurement(
        step_key=cost.step_key(recipe), recipe=recipe.name, device=timing.device,
        gpu_memory_gib=timing.gpu_memory_gib, seconds_per_iter=timing.seconds_per_iter,
        peak_memory_gib=timing.peak_memory_gib, precision=timing.precision,
        batch=timing.batch, crop=timing.crop, iters=timing.iters, threads=timing.threads,
        measured_at=cost.now_utc(),
    )
    path = cost.record_measurement(segctl_home(), measurement)
    memory = "peak GiB" + ("" if timing.device.startswith("cuda") else " (process RSS)")
    print_table(
        ["recipe", "device", "precision", "batch", "crop", "s/iter", memory, "threads"],
        [[recipe.name, timing.device, timing.precision, timing.batch,
          f"{timing.crop[0]}x{timing.crop[1]}", f"{timing.seconds_per_iter:.4f}",
          f"{timing.peak_memory_gib:.2f}", timing.threads]],
    )
    if timing.gpu_memory_gib is not None and timing.peak_memory_gib > timing.gpu_memory_gib:
        typer.echo(f"warning: peak memory exceeds the GPU's {timing.gpu_memory_gib:.0f} GiB",
                   err=True)
    typer.echo(f"kept in {path} (step {measurement.step_key})")

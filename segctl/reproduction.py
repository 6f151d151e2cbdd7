"""How a planned training run stands against the published one it reproduces: its batch on
the processes it gets (:mod:`segctl.batch_plan`), what it will cost (:mod:`segctl.cost`) and
the published curve it will be compared with (:mod:`segctl.recipe.published_curve`).

Pure planning: nothing here submits, downloads or imports torch; the published log is read
from the weights cache only when it is there already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segctl import batch_plan, cost
from segctl.executors import ExecutorParams, LocalParams
from segctl.io.weights_cache import is_remote, local_path, lookup
from segctl.recipe import Recipe
from segctl.recipe.published_curve import CurveFormatError, PublishedCurve, parse_log
from segctl.recipe.schema import ClusterConfig


def published_processes(cluster: ClusterConfig) -> int:
    """Processes of the recipe's own placement: one per GPU, or ``cpu_processes_per_node``
    per node on a CPU placement."""
    return cluster.nodes * (cluster.gpus_per_node or cluster.cpu_processes_per_node)


def process_count(parameters: ExecutorParams) -> int:
    """Processes a job with ``parameters`` runs: one for the local executor, ``nodes x
    ntasks_per_node`` on Slurm."""
    if isinstance(parameters, LocalParams):
        return parameters.tasks_per_node
    return parameters.nodes * parameters.ntasks_per_node


def gpu_count(parameters: ExecutorParams) -> int:
    """GPUs a job with ``parameters`` computes on (0 on CPUs)."""
    if isinstance(parameters, LocalParams):
        return parameters.gpus_per_node
    return parameters.nodes * (parameters.gpus_per_node or 0)


def uses_batchnorm(recipe: Recipe) -> bool:
    """Whether the recipe's model normalises with BatchNorm/SyncBN. Every model of the zoo
    does, at least in its decode head (SegFormer's fusion ConvModule, UPerHead, FCN, OCR,
    ASPP heads and the HRNet/ResNet backbones), so this is True for all of them today."""
    return True


def adapt_batch(recipe: Recipe, parameters: ExecutorParams, published: ClusterConfig,
                scale_lr: batch_plan.ScaleLr = "none") -> tuple[Recipe, batch_plan.BatchPlan]:
    """The recipe as it will train on ``parameters``' processes, and its batch plan
    (:func:`segctl.batch_plan.plan_batch`): ``train.grad_accum_steps`` raised to keep the
    published global batch of ``published`` (the recipe's own placement), or, with
    ``scale_lr="linear"``, ``optim.lr`` and ``schedule.warmup_iters`` scaled. A changed field
    changes the run id, as any other change of the recipe does.

    Raises:
        segctl.batch_plan.BatchPlanError: the published global batch cannot be kept (the
            message lists the choices).
    """
    plan = batch_plan.plan_batch(
        processes=process_count(parameters), published_processes=published_processes(published),
        batch_size=recipe.train.batch_size, grad_accum_steps=recipe.train.grad_accum_steps,
        lr=recipe.optim.lr, warmup_iters=recipe.schedule.warmup_iters,
        max_iters=recipe.schedule.max_iters, has_batchnorm=uses_batchnorm(recipe),
        scale_lr=scale_lr,
    )
    if not plan.overrides:
        return recipe, plan
    return recipe.model_copy(update={
        "train": recipe.train.model_copy(update={"grad_accum_steps": plan.grad_accum_steps}),
        "optim": recipe.optim.model_copy(update={"lr": plan.lr}),
        "schedule": recipe.schedule.model_copy(update={"warmup_iters": plan.warmup_iters}),
    }), plan


def cached_curve(recipe: Recipe, weights_dir: Path) -> PublishedCurve | None:
    """The recipe's published curve (``reference.log``) if it is in the weights cache (or a
    local file); None otherwise, or where it cannot be read. Nothing is downloaded."""
    source = recipe.reference.log if recipe.reference is not None else None
    if not source:
        return None
    try:
        if is_remote(source):
            entry = lookup(source, weights_dir)
            if entry is None:
                return None
            path = entry.path
        else:
            path = local_path(source)
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        return parse_log(text, source=source, val_interval=recipe.schedule.val_interval)
    except (OSError, CurveFormatError):
        return None


def curve_summary(recipe: Recipe, curve: PublishedCurve | None) -> dict[str, Any] | None:
    """What the plan says of the published curve the run will be compared with."""
    source = recipe.reference.log if recipe.reference is not None else None
    if not source:
        return None
    if curve is None:
        return {"source": source, "cached": False,
                "note": "fetched when the run is submitted (`segctl weights fetch RECIPE` "
                        "fetches it now)"}
    return {"source": source, "cached": True, "training_lines": len(curve.train),
            "evaluations": len(curve.val), "last_iteration": curve.last_iteration,
            "final_miou": curve.final_miou, "seconds_per_iter": curve.seconds_per_iter(),
            "compared": ("learning rate, loss and mIoU"
                         if recipe.schedule.max_iters == curve.last_iteration
                         else "loss and mIoU (not the published schedule)")}


def estimate_cost(recipe: Recipe, parameters: ExecutorParams, plan: batch_plan.BatchPlan,
                  curve: PublishedCurve | None, home: Path,
                  local_device: str | None = None) -> cost.Estimate | None:
    """The run's expected cost (:func:`segctl.cost.estimate`) from the measurements kept in
    ``home`` and the published curve's step time."""
    if isinstance(parameters, LocalParams) and local_device is None:
        local_device = "cpu" if parameters.gpus_per_node == 0 else None
    return cost.estimate(
        key=cost.step_key(recipe), max_iters=recipe.schedule.max_iters,
        grad_accum_steps=plan.grad_accum_steps, gpus=gpu_count(parameters),
        local_device=local_device, measurements=cost.read_measurements(home),
        published_seconds_per_iter=curve.seconds_per_iter() if curve is not None else None,
        published_grad_accum_steps=plan.published_grad_accum_steps,
    )


def estimate_summary(estimate: cost.Estimate | None) -> dict[str, Any]:
    """The estimate as the plan shows it (without a basis: how to get one)."""
    if estimate is None:
        return {"note": "no basis for an estimate yet: `segctl bench RECIPE` on the target "
                        "GPU measures the step, or the published log (reference.log, fetched "
                        "by `segctl weights fetch RECIPE`) gives the source's seconds per "
                        "iteration"}
    return {"seconds_per_iter": round(estimate.seconds_per_iter, 4),
            "wall_time": cost.duration_text(estimate.wall_seconds),
            "wall_seconds": round(estimate.wall_seconds, 1),
            "gpu_hours": round(estimate.gpu_hours, 1), "basis": estimate.basis,
            "warnings": list(estimate.warnings)}


def fetch_published_log(recipe: Recipe, cache: Path, *, storage_options: dict | None = None,
                        progress: bool = False) -> str | None:
    """Fetch the recipe's published training log (``reference.log``, a URL) into the weights
    cache, where the job reads it, and check that it parses; returns a line for the user, or
    None where the recipe names no remote log.

    Raises:
        segctl.io.weights_cache.WeightsError: the log cannot be fetched (see
            :func:`segctl.weights.fetch`), or is not a training log that
            :func:`~segctl.recipe.published_curve.parse_log` reads.
    """
    from segctl.io.weights_cache import WeightsError
    from segctl.weights import fetch, human_size

    source = recipe.reference.log if recipe.reference is not None else None
    if not source or not is_remote(source):
        return None
    result = fetch(source, cache, storage_options=storage_options, progress=progress)
    try:
        curve = parse_log(Path(result.entry.path).read_text(encoding="utf-8", errors="replace"),
                          source=source, val_interval=recipe.schedule.val_interval)
    except CurveFormatError as exc:
        raise WeightsError(f"reference.log {source}: {exc}") from None
    how = "downloaded" if result.downloaded else "cached"
    final = f", final mIoU {curve.final_miou:.2f}" if curve.final_miou is not None else ""
    return (f"reference.log: {result.entry.file_name} ({human_size(result.entry.size)}, {how}): "
            f"{len(curve.train)} training lines to iteration {curve.last_iteration}, "
            f"{len(curve.val)} evaluations{final}")

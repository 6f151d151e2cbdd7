"""Job entry points: train a run directory, or evaluate one of its checkpoints.

Both read ``RUN_DIR/recipe.json`` (the resolved recipe the control plane wrote), work the same
in-process and inside a submitit task, and destroy the process group before returning.

Run directory files:

- read: ``recipe.json``; ``checkpoints/iter_*.pt`` (resume); ``checkpoints/final.pt``
  (evaluation); ``mlflow_run_id`` (continue the MLflow run).
- written: ``progress.json`` (rank 0, atomically), ``checkpoints/iter_{N:07d}.pt`` (last 2
  kept), ``checkpoints/final.pt``, ``mlflow_run_id``, ``eval/<name>.json``, ``eval/<name>.txt``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from segctl.recipe import Recipe, dataset_preset, parse_json_recipe
from trainer import checkpoint as ckpt
from trainer.distributed import (
    build_accelerator,
    export_submitit_env,
    job_info,
    teardown,
)
from trainer.engine import (
    build_model,
    build_val_dataset,
    evaluate,
    inference_settings,
    reference_for,
    train,
)
from trainer.metrics import format_metrics_table
from trainer.models.weights import load_segmentor_weights
from trainer.atomic import atomic_write, atomic_write_json
from trainer.preemption import StopSignal
from trainer.progress import Progress
from trainer.tracking import (
    Tracker, metrics_in_percent, prediction_overlays, recipe_params, run_tags,
)
# segctl.staging uses only the standard library and fsspec: the job stages its own inputs
from segctl.staging import mirror_job_checkpoints, stage_job_inputs

log = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"
EVAL_DIR = "eval"


def read_recipe(run_dir: str | Path) -> Recipe:
    """Parse ``RUN_DIR/recipe.json``.

    Raises:
        FileNotFoundError: the run directory has no ``recipe.json``.
        pydantic.ValidationError: it does not match the schema.
    """
    return parse_json_recipe((Path(run_dir) / RECIPE_FILE).read_text(encoding="utf-8"))


def _ensure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def run_training(run_dir: str | Path, stop_after: int | None = None) -> dict[str, Any]:
    """Train the run in ``run_dir`` to ``schedule.max_iters``, resuming from its latest checkpoint.

    Args:
        run_dir: a run directory holding ``recipe.json``.
        stop_after: stop after this many iterations (absolute, not counted from the resume
            point), checkpointing first, so a later call continues exactly; None trains to the
            end. Used for preemption and tests.

    Returns:
        ``{"iteration", "max_iters", "finished", "loss", "metrics", "seconds_per_iter"}``:
        ``metrics`` is the last evaluation as ``{"aAcc", "mIoU", "mAcc", "IoU.<class>",
        "Acc.<class>"}`` in percent (None if none ran), ``loss`` the last logged training loss.

    Inside a submitit job the preemption signal stops training after the current iteration
    with a checkpoint, then submitit requeues the job (:mod:`trainer.preemption`): rank 0 does
    not return (``SystemExit``), other ranks return the unfinished result.

    Raises:
        Whatever building or training raises; ``progress.json`` then says ``"failed"`` with a
        ``reason`` and the MLflow run is marked FAILED. When submitit refuses to requeue (more
        time-outs than ``cluster.max_requeues``) its ``UncompletedJobError``, with the reason
        ``"requeue limit (N) reached after time limit"``.
    """
    _ensure_logging()
    run_dir = Path(run_dir)
    recipe = read_recipe(run_dir)
    stop_signal = StopSignal.install()  # submitit's requeue handler runs later, at a safe point
    export_submitit_env()
    accelerator = build_accelerator(recipe.train.precision)
    main = accelerator.is_main_process
    progress = Progress(run_dir, recipe.schedule.max_iters, enabled=main)
    tracker = Tracker.for_recipe(run_dir, recipe, enabled=main)
    status = "FAILED"
    try:
        progress.write()
        info = job_info()
        tracker.set_tags(run_tags(recipe, executor=info.executor, job_id=info.job_id))
        tracker.log_params(recipe_params(recipe))
        recipe = stage_job_inputs(recipe, run_dir)  # remote data root -> local copy
        result = train(
            recipe, run_dir, accelerator=accelerator, tracker=tracker, progress=progress,
            stop_after=stop_after, stop_signal=stop_signal,
        )
        status = "FINISHED" if result.finished else "KILLED"
    except BaseException as exc:
        stop_signal.uninstall()
        progress.update(phase="failed", reason=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        mirror_job_checkpoints(recipe, run_dir, enabled=main)
        tracker.close(status)
        teardown(accelerator, wait=status != "FAILED")
    if stop_signal.stopped:
        _requeue(stop_signal, progress, tracker, recipe.cluster.max_requeues)
    stop_signal.uninstall()
    return result.to_dict()


def _requeue(stop_signal: StopSignal, progress: Progress, tracker: Tracker,
             max_requeues: int) -> None:
    """Hand the stopped job to submitit to requeue; record why when it will not."""
    from submitit.core.utils import UncompletedJobError

    try:
        stop_signal.hand_over()  # rank 0: scontrol requeue, then SystemExit
    except UncompletedJobError as exc:
        reason = StopSignal.failure_reason(exc, max_requeues)
        log.error("job not requeued: %s", reason)
        progress.update(phase="failed", reason=reason)
        tracker.close("FAILED")
        raise


def resolve_checkpoint(run_dir: Path, checkpoint: str | None) -> str:
    """The checkpoint to evaluate: the given path or URL (a bare name is looked up in
    ``RUN_DIR/checkpoints``), else ``final.pt``, else the latest ``iter_*.pt``.

    Raises:
        FileNotFoundError: nothing to evaluate.
    """
    if checkpoint is not None:
        if "://" in checkpoint or Path(checkpoint).exists():
            return checkpoint
        inside = ckpt.checkpoint_dir(run_dir) / checkpoint
        if inside.exists():
            return str(inside)
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (nor {inside})")
    final = ckpt.final_path(run_dir)
    if final.is_file():
        return str(final)
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to evaluate (no final.pt, no iter_*.pt)")
    return str(latest)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_evaluation(
    run_dir: str | Path,
    checkpoint: str | None = None,
    ms_flip: bool | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint of the run on the validation split and record the result.

    Args:
        run_dir: a run directory holding ``recipe.json``.
        checkpoint: a path, an fsspec URL, or a file name in ``RUN_DIR/checkpoints``; default
            ``final.pt``, else the latest ``iter_*.pt``.
        ms_flip: multi-scale (``eval.scales``) + flip; None takes ``eval.ms_flip``.
        name: output name; default ``"<checkpoint stem>-<ss|ms_flip>"`` (e.g. ``final-ss``).

    Writes (rank 0) ``RUN_DIR/eval/<name>.json``: ``name``, ``mode`` (``"ss"`` or
    ``"ms_flip"``), ``checkpoint``, ``iteration`` (of a training checkpoint, else None),
    ``settings`` (the :class:`~trainer.evaluate.InferenceSettings`), ``seconds`` (wall time of
    the evaluation), ``metrics`` (aAcc, mIoU, mAcc in percent), ``per_class`` (class ->
    ``{"iou", "acc"}`` in percent, None where undefined) and ``reference``; and
    ``RUN_DIR/eval/<name>.txt``, the table of :func:`~trainer.metrics.format_metrics_table`
    with the published mIoU of the mode, also printed to stdout. Metrics go to the run's MLflow
    run as ``eval/<mode>/<metric>`` at the checkpoint's iteration.

    Returns:
        The dict written to the JSON file.

    Raises:
        FileNotFoundError: no checkpoint; ValueError: the checkpoint does not fit the model.
    """
    _ensure_logging()
    run_dir = Path(run_dir)
    recipe = stage_job_inputs(read_recipe(run_dir), run_dir)  # data and remote checkpoints
    ms_flip = recipe.eval.ms_flip if ms_flip is None else ms_flip
    mode = "ms_flip" if ms_flip else "ss"
    export_submitit_env()
    accelerator = build_accelerator(recipe.train.precision)
    tracker = None
    failed = True
    try:
        source = resolve_checkpoint(run_dir, checkpoint)
        state = ckpt.load_model_weights(source)
        iteration = state.get("iteration") if isinstance(state, dict) else None
        model = build_model(recipe, load_init=False)
        load_segmentor_weights(model, state, strict=True)
        model.to(accelerator.device)
        name = name or f"{Path(source).stem}-{mode}"

        started = time.perf_counter()
        val_set = build_val_dataset(recipe)
        metrics = evaluate(model, val_set, recipe, accelerator, ms_flip=ms_flip)
        seconds = time.perf_counter() - started

        classes = list(dataset_preset(recipe).classes)
        reference = reference_for(recipe, ms_flip)
        table = format_metrics_table(metrics, classes, reference)
        step = int(iteration) if iteration is not None else recipe.schedule.max_iters
        result = {
            "name": name,
            "mode": mode,
            "checkpoint": source,
            "iteration": iteration,
            "settings": asdict(inference_settings(recipe, ms_flip)),
            "seconds": seconds,
            "metrics": {
                k: _finite_or_none(getattr(metrics, k) * 100.0) for k in ("aAcc", "mIoU", "mAcc")
            },
            "per_class": {
                c: {"iou": _finite_or_none(i * 100.0), "acc": _finite_or_none(a * 100.0)}
                for c, i, a in zip(classes, metrics.per_class_iou, metrics.per_class_acc)
            },
            "reference": reference,
        }
        if accelerator.is_main_process:
            out = run_dir / EVAL_DIR
            atomic_write_json(out / f"{name}.json", result)
            atomic_write(out / f"{name}.txt", lambda h: h.write((table + "\n").encode("utf-8")))
            print(table, flush=True)
            tracker = Tracker.for_recipe(run_dir, recipe)
            tracker.log_metrics(
                metrics_in_percent(metrics.to_dict(classes), prefix=f"eval/{mode}/"), step=step
            )
            tracker.log_text(table, f"eval/{name}.txt")
            tracker.log_overlays(prediction_overlays(model, val_set, recipe, accelerator.device), step)
        failed = False
        return result
    finally:
        if tracker is not None:
            tracker.close("FINISHED")
        teardown(accelerator, wait=not failed)

"""Job entry points: train a run directory, or evaluate one of its checkpoints.

Both read ``RUN_DIR/recipe.json`` (the resolved recipe the control plane wrote), work the same
in-process and inside a submitit task, and destroy the process group before returning.

Run directory files:

- read: ``recipe.json``; ``checkpoints/iter_*.pt`` (resume); ``checkpoints/final.pt``
  (evaluation); ``mlflow_run_id`` (continue the MLflow run).
- written: ``progress.json`` (rank 0, atomically), ``checkpoints/iter_{N:07d}.pt`` (last 2
  kept), ``checkpoints/final.pt`` (with EMA: the averaged weights, and ``final_raw.pt``),
  ``mlflow_run_id``, ``eval/<name>.json``, ``eval/<name>.txt``,
  ``eval/<name>-cityscapes-submission.zip`` (output format ``cityscapes-submission``).

One recipe is in flight: the run directory's. The job's local copies (the staged data root, the
cached ``model.init_checkpoint``) go to :func:`trainer.engine.train` as arguments, and an
epoch-based schedule (``schedule.max_epochs``) is turned into iterations once, at the start of
``train`` (:func:`trainer.data.order.resolve_schedule`, from the training split's size and the
world size); ``max_iters`` (with ``max_epochs``) is recorded in ``progress.json`` and the
MLflow params.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from segctl.io.atomic import atomic_write, atomic_write_json
from segctl.io.weights_cache import cached_path, default_weights_dir, is_remote
from segctl.recipe import Recipe, parse_json_recipe, tracking_names
from segctl.recipe import run_id as recipe_run_id
from segctl.recipe.dataset_spec import DatasetSpec
from segctl.recipe.eval_request import EvalRequest, OutputFormat
from segctl.recipe.rundir import RunDir
from segctl.recipe.secrets import redact_logs, resolve_secrets
from trainer import checkpoint as ckpt
from trainer.distributed import (
    build_accelerator,
    export_submitit_env,
    job_info,
    teardown,
)
from trainer.data.build import build_val_dataset
from trainer.engine import train
from trainer.evaluate import (
    InferenceSettings, evaluate, predict_probs, reference_for, segmentor_logits,
)
from trainer.models.build import build_model
from trainer.metrics import format_metrics_table
from trainer.models.converters.pretrained import load_pretrained
from trainer import cityscapes_export
from trainer.preemption import StopSignal
from trainer.progress import Progress
from trainer.published_guard import load_curve, published_history
from trainer.tracking import (
    Tracker,
    devices_in_use,
    metrics_in_percent,
    recipe_params,
    run_tags,
)
from trainer.visuals import learning_curve_png, prediction_overlays
from trainer.checkpoint_sync import checkpoint_uploader, mirror_job_checkpoints
from trainer.stage_in import stage_job_inputs, with_cached_weights

log = logging.getLogger(__name__)



def read_recipe(run_dir: str | Path) -> Recipe:
    """Parse ``RUN_DIR/recipe.json`` and fill its ``${VAR}`` storage options from this
    process's environment (:func:`segctl.recipe.secrets.resolve_secrets`: secrets travel in the
    job's environment, never in the run directory). The result stays in this process.

    Raises:
        FileNotFoundError: the run directory has no ``recipe.json``.
        pydantic.ValidationError: it does not match the schema.
        segctl.recipe.secrets.MissingSecretError: a referenced variable is not set.
    """
    recipe = parse_json_recipe(RunDir(run_dir).recipe.read_text(encoding="utf-8"))
    return resolve_secrets(recipe)


def _ensure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    redact_logs("", "submitit")  # no URL's credentials in the job's log lines


def run_training(run_dir: str | Path, stop_after: int | None = None, *,
                 weights_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the run in ``run_dir`` to ``schedule.max_iters``, resuming from its newest usable
    checkpoint (a damaged newer one is named in the log and ``progress.json``, set aside, and
    the previous one used: :func:`trainer.engine.resume`).

    Args:
        run_dir: a run directory holding ``recipe.json``.
        stop_after: stop after this many iterations (absolute, not counted from the resume
            point), checkpointing first, so a later call continues exactly; None trains to the
            end. Used for preemption and tests.
        weights_dir: the weights cache (:mod:`segctl.weights`) holding ``model.init_checkpoint``
            when it is a URL; default ``$SEGCTL_HOME/weights``. Nothing is downloaded: a URL
            missing from the cache fails the job at once (``NotCachedError`` naming the file),
            before any data is staged.

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
        ``"requeue limit (N) reached after time limit"``. A full disk while a checkpoint is
        written: :class:`trainer.checkpoint.DiskFullError`, whose message is the reason
        (``"No space left on device (<path>, <bytes> bytes needed)"``); the earlier
        checkpoints stay. Checkpoints none of which is usable:
        :class:`trainer.checkpoint.CorruptCheckpointError` naming them (``progress.json``
        keeps its iteration). An ``init_checkpoint`` holding more than tensors, or not a
        PyTorch file: :class:`segctl.io.weights_cache.UnloadableWeightsError` naming it.
    """
    _ensure_logging()
    run_dir = Path(run_dir)
    recipe = read_recipe(run_dir)
    stop_signal = StopSignal.install()  # submitit's requeue handler runs later, at a safe point
    export_submitit_env()
    accelerator = build_accelerator(recipe.train.precision, recipe.train.tf32)
    main = accelerator.is_main_process
    progress = Progress(run_dir, recipe.schedule.max_iters or 0, enabled=main)
    devices = devices_in_use(accelerator)  # (GPUs, CPU cores): 0 GPUs on CPUs
    tracker = Tracker.for_recipe(run_dir, recipe, enabled=main, devices=devices)
    status = "FAILED"
    uploader = curve = None
    try:
        progress.write()
        info = job_info()
        tracker.set_tags(run_tags(recipe, executor=info.executor, job_id=info.job_id,
                                  gpus=devices[0], run_dir=run_dir))
        # init_checkpoint URL -> its cached file (for this process; MLflow params keep the URL)
        init_weights = with_cached_weights(
            recipe, weights_dir or default_weights_dir()).model.init_checkpoint
        data_root = stage_job_inputs(recipe, run_dir).data.root  # remote root -> local copy
        # the published training curve, from the weights cache (jobs never download)
        curve = load_curve(recipe, weights_dir or default_weights_dir())
        # each checkpoint goes to train.checkpoint_dir (rank 0, background) once written
        uploader = checkpoint_uploader(recipe, run_dir, enabled=main)
        result = train(
            recipe, run_dir, accelerator=accelerator, tracker=tracker, progress=progress,
            data_root=data_root, init_weights=init_weights,
            stop_after=stop_after, stop_signal=stop_signal,
            on_saved=uploader.submit if uploader is not None else None, curve=curve,
        )
        status = "FINISHED" if result.finished else "KILLED"
    except BaseException as exc:
        stop_signal.uninstall()
        # a full disk reads "No space left on device (<path>, <bytes> bytes needed)"
        reason = (str(exc) if isinstance(exc, ckpt.DiskFullError)
                  else f"{type(exc).__name__}: {exc}")
        progress.update(phase="failed", reason=reason)
        raise
    finally:
        if uploader is not None:  # drained before the end-of-job catch-up and any requeue
            uploader.close()
        mirror_job_checkpoints(recipe, run_dir, enabled=main)
        tracker.close(status, images={
            tracking_names.LEARNING_CURVE_ARTIFACT: learning_curve_png(
                tracker.history, recipe_run_id(recipe), published_history(curve))})
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


def _write_cityscapes_submission(model, recipe: Recipe, accelerator,
                                 settings: InferenceSettings, name: str, source: str, iteration,
                                 run_dir: Path) -> dict[str, Any]:
    """Predict the split's images (sharded over the ranks) with ``settings`` and zip their
    labelId PNGs (:mod:`trainer.cityscapes_export`); see :func:`run_evaluation`."""
    import numpy as np
    import torch

    from trainer.data.io import read_image
    from trainer.distributed import autocast_dtype

    spec = DatasetSpec.from_recipe(recipe)
    if spec.layout != "cityscapes":
        raise ValueError(
            f"cityscapes-submission needs a Cityscapes recipe, not dataset {recipe.data.dataset!r}"
        )
    split = "test"
    if not (Path(recipe.data.root) / "leftImg8bit" / "test").is_dir():
        split = recipe.data.val_split  # filled by resolve()
        log.warning("%s has no leftImg8bit/test: writing the %s split instead",
                    recipe.data.root, split)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    model.eval()

    def predict(path: Path):
        image = (read_image(path).astype(np.float32) - mean) / std
        tensor = torch.from_numpy(image.transpose(2, 0, 1).copy()).unsqueeze(0)
        probs = predict_probs(
            segmentor_logits(model, settings), tensor.to(accelerator.device), settings,
            num_classes=spec.num_classes, autocast_dtype=autocast_dtype(accelerator),
            align_corners=bool(getattr(model, "align_corners", False)),
        )
        return probs.argmax(dim=1)[0]

    images = cityscapes_export.list_cityscapes_images(recipe.data.root, split)
    zip_path = RunDir(run_dir).eval_file(name, f"-{OutputFormat.CITYSCAPES_SUBMISSION}.zip")
    started = time.perf_counter()
    cityscapes_export.write_submission(
        images, predict, zip_path, rank=accelerator.process_index,
        world_size=accelerator.num_processes, barrier=accelerator.wait_for_everyone,
    )
    if accelerator.is_main_process:
        log.info("wrote %d labelId PNGs of split %s to %s", len(images), split, zip_path)
    return {
        "name": name,
        "format": OutputFormat.CITYSCAPES_SUBMISSION.value,
        "checkpoint": source,
        "iteration": iteration,
        "split": split,
        "settings": asdict(settings),
        "seconds": time.perf_counter() - started,
        "images": len(images),
        "zip": str(zip_path),
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run_evaluation(
    run_dir: str | Path,
    request: EvalRequest | None = None,
    *,
    weights_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint of the run on the validation split and record the result.

    The inference settings are built once from the recipe and the request
    (:meth:`~trainer.evaluate.InferenceSettings.from_recipe`) and used for the scores or the
    Cityscapes export; the prediction overlays logged beside the scores use the recipe's
    single-scale settings.

    With output format ``cityscapes-submission`` (Cityscapes recipes) nothing is scored:
    every image of the ``test`` split (``ROOT/leftImg8bit/test``; where the root has none, the
    recipe's validation split, with a warning) is predicted with the same settings and written
    as a labelId PNG into ``RUN_DIR/eval/<name>-cityscapes-submission.zip``
    (:mod:`trainer.cityscapes_export`); the returned dict then has ``format``, ``zip``,
    ``images`` instead of the metrics.

    Args:
        run_dir: a run directory holding ``recipe.json``.
        request: what to evaluate (:class:`~segctl.recipe.eval_request.EvalRequest`):
            ``checkpoint``, a path, an fsspec URL, or a file name in ``RUN_DIR/checkpoints``,
            default ``final.pt``, else the latest ``iter_*.pt`` (its EMA weights when it has
            them), in any format :func:`~trainer.models.converters.pretrained.load_pretrained`
            reads that holds a full segmentor (mmseg 0.x/1.x, official HRNet, official NVlabs
            SegFormer for the ``segformer_official_mit_*`` models); ``ms_flip``, multi-scale
            (``eval.scales``) + flip; ``label``, the output name, default
            ``"<checkpoint stem>-<ss|ms_flip>"`` (e.g. ``final-ss``); ``output_format``,
            ``metrics`` or ``cityscapes-submission``; ``published``, the checkpoint is the
            recipe's ``reference.checkpoint`` (``segctl eval --published``): its metrics go to
            MLflow as ``published/<mode>/<metric>``, apart from the run's own
            ``eval/<mode>/...``, and the JSON has ``"published": true``. None: the default
            checkpoint with the recipe's ``eval.ms_flip``, scored.
        weights_dir: the weights cache (:mod:`segctl.weights`) holding ``checkpoint`` when it is
            a URL (other than ``file://``); default ``$SEGCTL_HOME/weights``. Nothing is
            downloaded: a URL missing from the cache fails at once (``NotCachedError``).

    Writes (rank 0) ``RUN_DIR/eval/<name>.json``: ``name``, ``mode`` (``"ss"`` or
    ``"ms_flip"``), ``checkpoint``, ``iteration`` (of a training checkpoint, else None),
    ``settings`` (the :class:`~trainer.evaluate.InferenceSettings`), ``seconds`` (wall time of
    the evaluation), ``metrics`` (aAcc, mIoU, mAcc in percent), ``per_class`` (class ->
    ``{"iou", "acc"}`` in percent, None where undefined), ``reference`` and ``published``; and
    ``RUN_DIR/eval/<name>.txt``, the table of :func:`~trainer.metrics.format_metrics_table`
    with the published mIoU of the mode, also printed to stdout. Metrics go to the run's MLflow
    run as ``eval/<mode>/<metric>`` at the checkpoint's iteration.

    Returns:
        The dict written to the JSON file.

    Raises:
        FileNotFoundError: no checkpoint; ValueError: the checkpoint does not fit the model
            (holds a backbone only, or an official SegFormer decoder for a model with mmseg's
            head: the message names the preset to use), or a submission for a non-Cityscapes
            recipe; ``segctl.io.weights_cache.NotCachedError``: a
            checkpoint URL that is not in the weights cache.
    """
    _ensure_logging()
    run_dir = Path(run_dir)
    recipe = stage_job_inputs(read_recipe(run_dir), run_dir)  # data and remote checkpoints
    request = request or EvalRequest(ms_flip=recipe.eval.ms_flip)
    settings = InferenceSettings.from_recipe(recipe, request.ms_flip)
    mode = request.mode
    export_submitit_env()
    accelerator = build_accelerator(recipe.train.precision, recipe.train.tf32)
    tracker = None
    failed = True
    try:
        source = resolve_checkpoint(run_dir, request.checkpoint)
        local = (cached_path(source, weights_dir or default_weights_dir())
                 if is_remote(source) else source)  # jobs never download weights
        state = ckpt.load_model_weights(local)
        iteration = state.get("iteration") if isinstance(state, dict) else None
        model = build_model(recipe, load_init=False)
        load_pretrained(model, state, require_full=True, source=str(source))
        model.to(accelerator.device)
        name = request.name_for(source)
        if request.output_format is OutputFormat.CITYSCAPES_SUBMISSION:
            result = _write_cityscapes_submission(model, recipe, accelerator, settings, name,
                                                  source, iteration, run_dir)
            failed = False
            return result

        started = time.perf_counter()
        val_set = build_val_dataset(recipe)
        spec = DatasetSpec.from_recipe(recipe)
        metrics = evaluate(model, val_set, settings, accelerator,
                           num_classes=spec.num_classes, ignore_index=spec.ignore_index)
        seconds = time.perf_counter() - started

        classes = list(spec.classes)
        reference = reference_for(recipe, request.ms_flip)
        table = format_metrics_table(metrics, classes, reference)
        step = int(iteration) if iteration is not None else (recipe.schedule.max_iters or 0)
        result = {
            "name": name,
            "mode": mode,
            "checkpoint": source,
            "iteration": iteration,
            "settings": asdict(settings),
            "seconds": seconds,
            "metrics": {
                k: _finite_or_none(getattr(metrics, k) * 100.0) for k in ("aAcc", "mIoU", "mAcc")
            },
            "per_class": {
                c: {"iou": _finite_or_none(i * 100.0), "acc": _finite_or_none(a * 100.0)}
                for c, i, a in zip(classes, metrics.per_class_iou, metrics.per_class_acc)
            },
            "reference": reference,
            "published": request.published,
        }
        if accelerator.is_main_process:
            atomic_write_json(RunDir(run_dir).eval_file(name, ".json"), result)
            atomic_write(RunDir(run_dir).eval_file(name, ".txt"),
                         lambda h: h.write((table + "\n").encode("utf-8")))
            print(table, flush=True)
            untracked = not RunDir(run_dir).mlflow_run_id.exists()  # no training run logged here
            devices = devices_in_use(accelerator)  # (GPUs, CPU cores): 0 GPUs on CPUs
            tracker = Tracker.for_recipe(run_dir, recipe, system_metrics=False,  # no job to watch
                                         devices=devices)
            if untracked:  # e.g. eval --published before any training: name the MLflow run
                info = job_info()
                tracker.set_tags(run_tags(recipe, executor=info.executor, job_id=info.job_id,
                                          gpus=devices[0], run_dir=run_dir))
                tracker.log_params(recipe_params(recipe))
            tracker.log_metrics(
                metrics_in_percent(
                    metrics.to_dict(classes),
                    prefix=tracking_names.eval_prefix(mode, request.published),
                ),
                step=step,
            )
            tracker.log_text(table, tracking_names.eval_table_artifact(name))
            overlays = prediction_overlays(
                model, val_set, recipe, InferenceSettings.from_recipe(recipe, ms_flip=False),
                accelerator.device,
            )
            for k, overlay in enumerate(overlays):  # filed under the evaluation's label
                tracker.log_image(overlay.png, tracking_names.eval_overlay_artifact(name, k))
        failed = False
        return result
    finally:
        if tracker is not None:
            tracker.close("FINISHED")
        teardown(accelerator, wait=not failed)

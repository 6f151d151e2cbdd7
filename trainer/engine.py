"""The training loop: plain PyTorch under Accelerate, iteration-based.

:func:`train` reads top to bottom: resolve the dataset's facts and the schedule once, build the
model, optimizer and data; resume from the latest checkpoint; then for each iteration set the
scheduled learning rates, take one batch (N micro-batches with gradient accumulation), step,
and on their intervals log, evaluate and checkpoint. The loop names no architecture: each
segmentor computes its own training loss
(:meth:`~trainer.models.segmentor.EncoderDecoder.training_loss`). The only framework calls are
``accelerator.prepare`` (model, optimizer), ``backward``, ``autocast``, ``no_sync``,
``reduce``, ``gather_object`` and ``wait_for_everyone``; process groups and precision come from
:mod:`trainer.distributed`.

Data order (:mod:`trainer.data.order`): sample ``k`` of the stream a rank reads is a pure
function of (seed, iteration, rank), so a resumed run continues exactly; the loader is built
with its own sampler instead of being passed through ``accelerator.prepare``.

Gradient accumulation (``train.grad_accum_steps`` = N): an iteration stays one optimizer step,
made of the next N loader batches (micro-batches) of the data order; W processes accumulating
N micro-batches of ``batch_size`` train as W * N processes without accumulation would (the
published global batch on fewer GPUs). Per item, what follows the step and what the
micro-batch:

- loss: each micro-batch's loss is divided by N before ``backward``, so the summed gradients
  are the mean over the step's micro-batches (and DDP averages over processes): the mean over
  W * N per-GPU losses. Equal to one batch of N times the images only where the loss is a mean
  over a fixed number of pixels per image (mmseg's ``avg_non_ignore=False``) and nothing else
  couples the images; MCIBI's loss averages over non-ignored pixels per micro-batch, as each
  GPU of a larger run does.
- DDP: the first N - 1 micro-batches run under ``accelerator.no_sync``, so gradients are
  all-reduced once per step, in the last micro-batch's backward.
- optimizer, learning rate, warm-up: the schedule is set once per step (``poly_lr`` of the
  optimizer steps done), before its first micro-batch; one ``optimizer.step()`` per step.
- gradient clipping: once per step, on the accumulated (all-reduced) gradients.
- mixed precision: bf16 autocast per micro-batch needs no scaler; fp16's GradScaler scales each
  micro-batch's loss by the same factor, unscales once before clipping, and steps and updates
  once per step (a step whose accumulated gradients overflow is skipped whole).
- EMA: updated once per optimizer step (its ramp counts steps).
- OHEM: selects pixels per micro-batch: ``mmseg_sampler`` keeps ``ohem_min_kept`` per image
  anyway; ``up_seg_ohem`` keeps them per micro-batch, as per GPU in a larger run.
- MCIBI's memory: updated once per step, to the mean of the micro-batches' updates (each from
  the memory as the step began) over micro-batches and processes, the larger run's all-reduced
  update (:class:`AccumulatedMean`); its memory loss is the one item that differs (see
  ``trainer.models.mcibi.MCIBISegmentor.training_loss``).
- BatchNorm: statistics per micro-batch (as per GPU without SyncBN; SyncBN syncs only the W
  processes of one micro-batch); running statistics move once per micro-batch.
- epoch (MCIBI), logging, evaluation, checkpoints, preemption, progress: per optimizer step.
  A checkpoint is written only between steps, never with gradients accumulated but not
  applied; a preemption signal arriving mid-step is acted on after that step.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segctl.recipe import Recipe, tracking_names
from segctl.recipe.dataset_spec import DatasetSpec
from segctl.recipe.published_curve import PublishedCurve
from segctl.recipe.schema import TrainConfig
from trainer import checkpoint as ckpt
from trainer.data.build import build_train_dataset, build_val_dataset
from trainer.data.order import DataOrder, build_train_loader, resolve_schedule
from trainer.data.transforms import batch_normalize, to_device_batch
from trainer.distributed import convert_sync_batchnorm
from trainer.ema import ModelEMA
from trainer.evaluate import InferenceSettings, evaluate, reference_for
from trainer.metrics import format_metrics_table
from trainer.models.build import build_model
from trainer.models.segmentor import mean_over_processes
from trainer.optim import build_optimizer, set_learning_rates
from trainer.preemption import StopSignal
from trainer.progress import Progress
from trainer.published_guard import CurveGuard, first_parameter_lr
from trainer.tracking import Tracker, metrics_in_percent, recipe_params
from trainer.visuals import per_class_iou_png

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch (all devices); optionally prefer deterministic kernels.

    ``deterministic`` selects deterministic implementations where torch has them and warns
    (rather than fails) where it has none: bilinear upsampling's backward on CUDA, used by
    every SegFormer head and the loss, has none.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# --- one step, checkpoints ------------------------------------------------------------------------


class AccumulatedMean:
    """The ``reduce`` (:data:`trainer.models.segmentor.Reduce`) of one optimizer step made of
    ``micro_batches`` micro-batches: state a model keeps in sync over processes (MCIBI's
    memory) is updated once per step, as by a run with ``micro_batches`` times the processes.

    Called once per micro-batch with that micro-batch's updated state (computed from the state
    as the step began, since nothing changes it before the last call): the first
    ``micro_batches - 1`` calls keep a float32 running sum and return None (the caller keeps
    its state); the last returns ``mean_over_processes(sum / micro_batches)``, i.e. the mean
    over the step's micro-batches and all processes, as the larger run's all-reduce gives.
    Every process must call it as often as the others (the last call is a collective).

    Args:
        micro_batches: N >= 1; with 1 every call is ``mean_over_processes``.
        reduce: the cross-process mean; default
            :func:`~trainer.models.segmentor.mean_over_processes`.

    Raises:
        RuntimeError: (call) more than ``micro_batches`` calls, or tensors of another shape.
    """

    def __init__(self, micro_batches: int,
                 reduce: Callable[[torch.Tensor], torch.Tensor] = mean_over_processes) -> None:
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        self.micro_batches = micro_batches
        self.reduce = reduce
        self.calls = 0
        self._sum: torch.Tensor | None = None

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor | None:
        self.calls += 1
        if self.calls > self.micro_batches:
            raise RuntimeError(
                f"called {self.calls} times in a step of {self.micro_batches} micro-batches: "
                "a model may keep one tensor in sync per forward pass"
            )
        value = tensor.detach().float()
        if self._sum is None:
            self._sum = value.clone()
        elif self._sum.shape != value.shape:
            raise RuntimeError(f"shape {tuple(value.shape)} differs from the step's first "
                               f"{tuple(self._sum.shape)}")
        else:
            self._sum += value
        if self.calls < self.micro_batches:
            return None
        mean = self._sum / self.micro_batches
        self._sum = None
        return self.reduce(mean).to(tensor.dtype)


def train_step(
    model, optimizer, batch, accelerator, recipe: Recipe, *,
    lr: float | None = None, epoch: int | None = None, spec: DatasetSpec | None = None,
) -> torch.Tensor:
    """One optimizer step: forward, loss and backward per micro-batch, then optional clipping
    and the optimizer step. Returns the step's loss: the mean of its micro-batches' losses,
    detached (a float scalar on the device).

    The loss is the segmentor's own ``training_loss`` (mmseg's, or MCIBI's), through the
    (wrapped) ``model``'s forward under autocast; ``train.loss: ohem`` (``ohem_thresh``,
    ``ohem_min_kept``, ``ohem_style``) selects OHEM terms; state the model keeps in sync over
    ranks is averaged with :func:`~trainer.models.segmentor.mean_over_processes`, once per
    step (:class:`AccumulatedMean`).

    With ``train.grad_accum_steps`` N > 1 (see the module's docstring), each micro-batch's loss
    is divided by N before ``backward``, the first N - 1 run under ``accelerator.no_sync`` (no
    DDP all-reduce), and clipping and ``optimizer.step()`` follow the last one.

    Args:
        batch: one batch ``{"image": float (B, 3, H, W), "label": int64 (B, H, W)}`` (N = 1),
            or the training loader's uint8 batch ``{"image": uint8 (B, H, W, 3), "label":
            uint8 | int64 (B, H, W), "valid_box": int64 (B, 4)}``, normalised with the
            dataset's mean and std on the device (:func:`~trainer.data.transforms.
            to_device_batch`); or an iterable of exactly ``train.grad_accum_steps`` such
            micro-batches, taken one at a time (the next is loaded after the previous one's
            backward).
        lr: the schedule's current base learning rate (before group multipliers); required
            for MCIBI models.
        epoch: the 1-based epoch of this step; used by MCIBI models.
        spec: the dataset's facts (ignore index, mean and std); default from the recipe.

    Raises:
        ValueError: an iterable yielding another number of micro-batches than
            ``train.grad_accum_steps`` (the optimizer then has not stepped).
    """
    micro_batches: Iterable[Mapping[str, torch.Tensor]]
    if isinstance(batch, Mapping):
        n, micro_batches = 1, [batch]
    else:
        n, micro_batches = recipe.train.grad_accum_steps, batch
    net = accelerator.unwrap_model(model)
    train_cfg = recipe.train
    ohem = (train_cfg.ohem_thresh, train_cfg.ohem_min_kept) if train_cfg.loss == "ohem" else None
    spec = spec or DatasetSpec.from_recipe(recipe)
    ignore_index = spec.ignore_index
    normalize = batch_normalize(tuple(spec.mean), tuple(spec.std))
    reduce = mean_over_processes if n == 1 else AccumulatedMean(n)
    optimizer.zero_grad(set_to_none=True)
    loss_sum, taken = None, 0
    for micro in micro_batches:
        taken += 1
        if taken > n:
            raise ValueError(f"more than train.grad_accum_steps={n} micro-batches in one step")
        # uint8 batches are cast, normalised and padded on the device (mmseg 1.x's
        # SegDataPreProcessor); float batches only move
        images, labels = to_device_batch(micro, accelerator.device, normalize)
        # DDP all-reduces in the backward of the step's last micro-batch only
        sync = contextlib.nullcontext() if taken == n else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                loss = net.training_loss(
                    images, labels, ignore_index=ignore_index, ohem=ohem,
                    ohem_style=train_cfg.ohem_style, lr=lr, epoch=epoch,
                    reduce=reduce, forward=model,
                )
            accelerator.backward(loss / n)  # exact for n = 1: x / 1 == x in floating point
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    if taken != n:
        raise ValueError(f"a step of train.grad_accum_steps={n} micro-batches got {taken}")
    if recipe.optim.grad_clip is not None:
        # accelerate unscales fp16 gradients before clipping (no-op in fp32 and bf16)
        accelerator.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip)
    optimizer.step()
    return loss_sum / n


def build_ema(model: nn.Module, train_cfg: TrainConfig) -> ModelEMA | None:
    """The weight average the recipe asks for (``train.ema_decay``, ramped by
    ``train.ema_ramp_iters``), or None without ``ema_decay``."""
    if train_cfg.ema_decay is None:
        return None
    return ModelEMA(model, train_cfg.ema_decay, ramp_iters=train_cfg.ema_ramp_iters)


def save_checkpoint(run_dir: Path, model, optimizer, accelerator, iteration: int, order: DataOrder,
                    ema: ModelEMA | None = None,
                    on_saved: Callable[[Path], None] | None = None) -> None:
    """Gather every rank's RNG state; rank 0 writes ``iter_{iteration:07d}.pt`` (with the EMA
    state when ``ema`` is given), prunes, and calls ``on_saved`` with the file's path. Call it
    between optimizer steps only (after :func:`train_step` returned): the file holds no
    gradients, so micro-batches accumulated but not applied would be lost."""
    from accelerate.utils import gather_object

    rng = [ckpt.capture_rng_state()]
    if accelerator.num_processes > 1:
        rng = gather_object(rng)
    if accelerator.is_main_process:
        state = ckpt.training_state(
            model_state=accelerator.unwrap_model(model).state_dict(),
            optimizer_state=optimizer.state_dict(),
            iteration=iteration,
            rng_states=rng,
            data_state=order.state(),
            ema_state=ema.state_dict() if ema is not None else None,
        )
        ckpt.save_training_state(run_dir, state, on_saved=on_saved)
    accelerator.wait_for_everyone()


def resume(run_dir: Path, model, optimizer, accelerator, order: DataOrder,
           ema: ModelEMA | None = None, *, progress: Progress | None = None,
           tracker: Tracker | None = None) -> int:
    """Restore the newest usable checkpoint (model, optimizer, RNG, EMA) and return its
    iteration (0 if none).

    Checkpoints are verified against their checksum (:func:`trainer.checkpoint.find_resume_state`):
    a damaged newer one (changed bytes, cut short, more than tensors) is logged by name, and
    the previous one is used; after every rank has chosen, rank 0 sets the rejected files aside
    (``.rejected``) and records the fallback in ``progress`` (``resumed_from``,
    ``rejected_checkpoints``) and as the tracker's tags ``segctl.resumed_from`` and
    ``segctl.rejected_checkpoints``.

    With ``ema`` and a checkpoint written without EMA, the average restarts from the restored
    weights (logged).

    The learning rates need no state: the schedule is a function of the iteration (optimizer
    steps). Checkpoints hold no gradients: they are written between optimizer steps only. A
    change of world size (or of ``train.grad_accum_steps``) keeps the weights and optimizer but
    cannot replay the per-rank RNG streams; it then reseeds from (seed, rank, iteration) and
    logs a warning.

    Raises:
        trainer.checkpoint.CorruptCheckpointError: the run has checkpoints but none is usable.
    """
    found = ckpt.find_resume_state(run_dir)
    if found is None:
        return 0
    if found.rejected:
        accelerator.wait_for_everyone()  # every rank has chosen before files move
        if accelerator.is_main_process:
            _record_fallback(found, progress, tracker)
    path, state = found.path, found.state
    accelerator.unwrap_model(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        if "ema" in state:
            ema.load_state_dict(state["ema"])
        else:
            log.warning("%s has no EMA state: the average restarts from its weights", path.name)
            ema.module.load_state_dict(state["model"])
    rank = accelerator.process_index
    rngs = state["rng"]
    if state["data"] != order.state() or len(rngs) != accelerator.num_processes:
        log.warning(
            "resuming %s with a different data setup (%s, now %s); the data order and random "
            "streams will differ from an uninterrupted run",
            path.name, state["data"], order.state(),
        )
        seed_everything(order.seed + 1000 * rank + int(state["iteration"]), False)
    else:
        ckpt.restore_rng_state(rngs[rank])
    log.info("resumed from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"])


def _record_fallback(found: ckpt.ResumeState, progress: Progress | None,
                     tracker: Tracker | None) -> None:
    """Set the rejected checkpoints aside and say where the run resumed from instead."""
    ckpt.set_aside([path for path, _ in found.rejected])
    reasons = [f"{path.name}: {reason}" for path, reason in found.rejected]
    if progress is not None:
        progress.update(resumed_from=found.path.name, rejected_checkpoints=reasons)
    if tracker is not None:
        tracker.set_tags({tracking_names.RESUMED_FROM: found.path.name,
                          tracking_names.REJECTED_CHECKPOINTS: "; ".join(reasons)[:4000]})


# --- the loop ------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        iteration: optimizer steps completed.
        max_iters: the schedule's length.
        finished: whether ``iteration == max_iters`` (``final.pt`` written).
        loss: the last logged training loss (mean over the last logging window), or None.
        metrics: the last evaluation's ``SegMetrics.to_dict`` in percent, or None.
        seconds_per_iter: moving average of training seconds per iteration, or None.
    """

    iteration: int
    max_iters: int
    finished: bool
    loss: float | None
    metrics: dict[str, float] | None
    seconds_per_iter: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of the fields."""
        return dict(self.__dict__)


def train(
    recipe: Recipe,
    run_dir: str | Path,
    *,
    accelerator,
    tracker: Tracker,
    progress: Progress,
    data_root: str | Path | None = None,
    init_weights: str | None = None,
    stop_after: int | None = None,
    stop_signal: StopSignal | None = None,
    on_saved: Callable[[Path], None] | None = None,
    curve: PublishedCurve | None = None,
) -> TrainResult:
    """Train (or continue training) the recipe's model in ``run_dir``.

    The dataset's facts and the training split are resolved once; an epoch-based schedule
    becomes iterations from the split's size (:func:`resolve_schedule`, recorded in
    ``progress.json``), and then the recipe's params go to the tracker.

    Args:
        recipe: the resolved recipe, as the run directory holds it.
        run_dir: the run directory (checkpoints are read from and written to
            ``RUN_DIR/checkpoints``).
        accelerator: from :func:`trainer.distributed.build_accelerator`.
        tracker: where params and metrics go (a disabled tracker on ranks other than 0).
        progress: the run's ``progress.json`` writer.
        data_root: the data root to read (the job's staged copy); default ``data.root``.
        init_weights: the file holding ``model.init_checkpoint`` (the job's cached copy of a
            URL); default ``model.init_checkpoint`` itself.
        stop_after: stop once this many iterations (counted from 0, not from the resume point)
            are done, after writing a checkpoint, as preemption does; None trains to
            ``schedule.max_iters``.
        stop_signal: asked after every iteration (all ranks agree); when set, the loop writes a
            checkpoint and stops there (:mod:`trainer.preemption`). None: never stops early.
            With gradient accumulation it is asked after each optimizer step only, so a signal
            arriving mid-step stops training after that step's last micro-batch.
        on_saved: called on rank 0 with the path of every checkpoint file right after it is
            written (``iter_*.pt`` after pruning, ``final.pt``, ``final_raw.pt``), e.g. to copy
            it to ``train.checkpoint_dir``; its exceptions are logged, never raised.
        curve: the published training curve (``reference.log``) to compare the run with at
            every logging window and validation (:class:`trainer.published_guard.CurveGuard`,
            on every rank: a learning-rate mismatch on the published schedule stops all of
            them); None: no comparison.

    Returns:
        A :class:`TrainResult`.
    """
    run_dir = Path(run_dir)
    spec = DatasetSpec.from_recipe(recipe)
    rank, world = accelerator.process_index, accelerator.num_processes
    train_set = build_train_dataset(recipe, spec, root=data_root)
    recipe = resolve_schedule(recipe, len(train_set), world)
    sched = recipe.schedule
    accum = recipe.train.grad_accum_steps
    global_batch = recipe.train.batch_size * world * accum
    if sched.max_epochs is not None:  # epoch-based: record the length it came to
        log.info("schedule: %d epochs of %d images at a global batch of %d = %d iterations",
                 sched.max_epochs, len(train_set), global_batch, sched.max_iters)
        progress.state.update(max_iters=sched.max_iters, max_epochs=sched.max_epochs)
        progress.write()
    if accum > 1:
        log.info("gradient accumulation: %d micro-batches of %d images on each of %d "
                 "processes per optimizer step, a global batch of %d",
                 accum, recipe.train.batch_size, world, global_batch)
    tracker.log_params({**recipe_params(recipe),
                        tracking_names.GLOBAL_BATCH_SIZE: str(global_batch)})
    seed_everything(recipe.train.seed + rank, recipe.train.deterministic)

    model = build_model(recipe, init_weights=init_weights)
    model = convert_sync_batchnorm(model, accelerator, recipe.train.sync_bn)
    optimizer = build_optimizer(model, recipe.optim)
    model, optimizer = accelerator.prepare(model, optimizer)
    val_set = build_val_dataset(recipe, spec, root=data_root)
    ema = build_ema(accelerator.unwrap_model(model), recipe.train)
    eval_model = ema.module if ema is not None else model
    order = DataOrder(len(train_set), recipe.train.batch_size, world, recipe.train.seed,
                      sched.epoch_padding, accum)
    start = resume(run_dir, model, optimizer, accelerator, order, ema, progress=progress,
                   tracker=tracker)
    stop = sched.max_iters if stop_after is None else min(stop_after, sched.max_iters)
    stop_signal = stop_signal or StopSignal()

    loader = build_train_loader(
        train_set, order, rank=rank, start=start, stop=stop,
        num_workers=recipe.data.num_workers, pin_memory=accelerator.device.type == "cuda",
    )
    progress.start_training(start)  # never an older iteration than the file shows
    guard = None
    if curve is not None:
        guard = CurveGuard(curve, max_iters=sched.max_iters, warmup_iters=sched.warmup_iters,
                           progress=progress, tracker=tracker)
        guard.start(start)
    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    window, last_loss, metrics, lr = 0, None, None, 0.0
    iteration, interrupted = start, False
    with stop_signal.blocked():  # loader workers start here; Slurm's signals are not theirs
        batches = iter(loader)
    # iteration = optimizer steps done after this one; the loader holds exactly `accum`
    # micro-batches for each step in [start, stop), taken lazily by train_step
    for iteration in range(start + 1, stop + 1):
        lr = set_learning_rates(optimizer, iteration - 1, sched)
        epoch = 1 + (iteration - 1) * order.images_per_step // order.epoch_positions
        step_batches = next(batches) if accum == 1 else itertools.islice(batches, accum)
        loss_sum += train_step(model, optimizer, step_batches, accelerator, recipe, lr=lr,
                               epoch=epoch, spec=spec)
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        window += 1
        if iteration == start + 1:
            progress.mark(iteration)  # loader start-up is not an iteration's cost
        interrupted = stop_signal.should_stop(accelerator)  # preempted or near the time limit

        if iteration % sched.log_interval == 0 or iteration == stop:
            last_loss = float(accelerator.reduce(loss_sum / window, reduction="mean"))
            loss_sum.zero_()
            window = 0
            log_training(tracker, progress, iteration, sched.max_iters, last_loss, lr)
            if guard is not None:
                guard.on_train_log(iteration, first_parameter_lr(model, optimizer), last_loss)
        if not interrupted and (iteration % sched.val_interval == 0 or iteration == sched.max_iters):
            metrics = run_validation(eval_model, val_set, recipe, spec, accelerator, tracker,
                                     progress, iteration)
            if guard is not None and metrics.get("mIoU") is not None:
                guard.on_validation(iteration, metrics["mIoU"])
        if iteration % sched.checkpoint_interval == 0 or iteration == stop or interrupted:
            save_checkpoint(run_dir, model, optimizer, accelerator, iteration, order, ema,
                            on_saved)
        if interrupted:
            break
    del batches, loader

    finished = iteration >= sched.max_iters and not interrupted
    if finished:
        if metrics is None:  # resumed after the last checkpoint, before the final evaluation
            metrics = run_validation(eval_model, val_set, recipe, spec, accelerator, tracker,
                                     progress, iteration)
            if guard is not None and metrics.get("mIoU") is not None:
                guard.on_validation(iteration, metrics["mIoU"])
        if accelerator.is_main_process:
            raw = accelerator.unwrap_model(model).state_dict()
            if ema is not None:
                ckpt.save_final_weights(run_dir, ema.weights(), on_saved=on_saved)
                ckpt.save_final_weights(run_dir, raw, raw=True, on_saved=on_saved)
            else:
                ckpt.save_final_weights(run_dir, raw, on_saved=on_saved)
        accelerator.wait_for_everyone()
        progress.update(phase="done", iteration=iteration)
    return TrainResult(
        iteration=iteration,
        max_iters=sched.max_iters,
        finished=finished,
        loss=last_loss,
        metrics=metrics,
        seconds_per_iter=progress.state["seconds_per_iter"],
    )


def log_training(tracker: Tracker, progress: Progress, iteration: int, max_iters: int,
                 loss: float, lr: float) -> None:
    """Record one logging window: the log line, MLflow ``loss``/``lr`` and progress."""
    progress.update(phase="training", iteration=iteration, loss=loss, lr=lr)
    spi = progress.state["seconds_per_iter"]
    if progress.enabled:
        log.info(
            "iter %d/%d  loss %.4f  lr %.3e  %s",
            iteration, max_iters, loss, lr, f"{spi:.3f} s/iter" if spi else "",
        )
    tracker.log_metrics({tracking_names.LOSS: loss, tracking_names.LR: lr}, step=iteration)


def run_validation(model, val_set, recipe: Recipe, spec: DatasetSpec, accelerator,
                   tracker: Tracker, progress: Progress, iteration: int) -> dict[str, float]:
    """Evaluate on the validation split, log the metrics and table; returns them in percent."""
    progress.update(phase="evaluating")
    ms_flip = recipe.eval.ms_flip
    class_names = list(spec.classes)
    metrics = evaluate(model, val_set, InferenceSettings.from_recipe(recipe, ms_flip), accelerator,
                       num_classes=spec.num_classes, ignore_index=spec.ignore_index)
    percent = metrics_in_percent(metrics.to_dict(class_names))
    table = format_metrics_table(metrics, class_names, reference_for(recipe, ms_flip))
    if accelerator.is_main_process:
        log.info("evaluation at iteration %d:\n%s", iteration, table)
    tracker.log_metrics(percent, step=iteration)
    chart = per_class_iou_png(percent, iteration) if tracker.enabled else None
    if chart is not None:
        tracker.log_image(chart, tracking_names.per_class_iou_artifact(iteration))
    tracker.log_text(table, tracking_names.validation_table_artifact(iteration))
    progress.update(phase="training", miou=percent["mIoU"])
    full = {k: v * 100.0 for k, v in metrics.to_dict(class_names).items()}
    return full

"""The training loop: plain PyTorch under Accelerate, iteration-based.

:func:`train` reads top to bottom: build the model, optimizer and data; resume from the
latest checkpoint; then for each iteration set the scheduled learning rates, take one batch,
step, and on their intervals log, evaluate and checkpoint. The only framework calls are
``accelerator.prepare`` (model, optimizer), ``backward``, ``autocast``, ``reduce``,
``gather_object`` and ``wait_for_everyone``; process groups and precision come from
:mod:`trainer.distributed`.

Data order: sample ``k`` of the stream a rank reads is a pure function of (seed, iteration,
rank), see :class:`DataOrder`, and each sample's augmentation draws come from a generator seeded
by (seed, epoch, position), so a resumed run continues exactly and results do not depend on the
number of loader workers. The loader is therefore built here with its own sampler instead of
being passed through ``accelerator.prepare``, which would re-shard it.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from segctl.recipe import Recipe, dataset_preset
from segctl.recipe.schema import TrainConfig
from trainer import checkpoint as ckpt
from trainer.data.layouts import build_dataset
from trainer.data.transforms import Compose, eval_pipeline, seed_worker, train_pipeline
from trainer.distributed import autocast_dtype, convert_sync_batchnorm
from trainer.ema import ModelEMA
from trainer.evaluate import InferenceSettings, evaluate_dataset, segmentor_logits
from trainer.metrics import SegMetrics, format_metrics_table
from trainer.models import MODEL_BUILDERS, build_segmentor
from trainer.models.converters.pretrained import load_pretrained
from trainer.models.losses import segmentation_loss
from trainer.models.mcibi import MCIBISegmentor, memory_classification_loss
from trainer.optim import (
    build_optimizer,
    iterations_for_epochs,
    padded_epoch_iterations,
    set_learning_rates,
)
from trainer.preemption import StopSignal
from trainer.progress import Progress
from trainer.tracking import Tracker, metrics_in_percent

log = logging.getLogger(__name__)


# --- data order ---------------------------------------------------------------------------------


@dataclass
class DataOrder:
    """Which sample, with which augmentation seed, each rank reads at each iteration.

    The global stream is the concatenation of per-epoch permutations of the dataset, epoch
    ``e`` permuted by ``numpy.random.default_rng([seed, e])``. Iteration ``i`` gives rank ``r``
    the stream positions ``(i * world_size + r) * batch_size + j`` for ``j < batch_size``; the
    position's epoch and offset fix the dataset index and the augmentation seed
    ``SeedSequence([seed, epoch, offset])``. Nothing here has state beyond a cache.

    With ``epoch_padding="per_rank"`` (``schedule.epoch_padding``) an epoch has
    :attr:`epoch_positions` = ``world_size * batch_size *``
    :func:`~trainer.optim.padded_epoch_iterations` positions, the ones past ``dataset_size``
    repeating the start of its permutation (offset ``o`` reads ``permutation[o %
    dataset_size]``), as United-Perception's ``DistributedSampler`` pads
    (``up/data/samplers/sampler.py``: ``indices += indices[:padding_size]``); only which rank
    reads which image differs (ranks interleave here, take contiguous blocks there). With
    ``"per_rank_drop_last"`` the epoch is that many whole batches rounded down (sssegmentation),
    so the last images of each epoch's permutation go unread, as there.

    Attributes:
        dataset_size: number of training samples (> 0).
        batch_size: samples per rank and iteration.
        world_size: number of ranks.
        seed: the recipe's ``train.seed``.
        epoch_padding: ``"none"``, ``"per_rank"`` or ``"per_rank_drop_last"``.
    """

    dataset_size: int
    batch_size: int
    world_size: int
    seed: int
    epoch_padding: str = "none"
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def permutation(self, epoch: int) -> np.ndarray:
        """The dataset indices of ``epoch`` in reading order."""
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(
                self.dataset_size
            )
        return self._cache[epoch]

    @property
    def epoch_positions(self) -> int:
        """Stream positions (samples over all ranks) in one epoch."""
        if self.epoch_padding == "none":
            return self.dataset_size
        steps = padded_epoch_iterations(self.dataset_size, self.batch_size, self.world_size,
                                        drop_last=self.epoch_padding == "per_rank_drop_last")
        return steps * self.world_size * self.batch_size

    def sample(self, iteration: int, rank: int, slot: int) -> tuple[int, int]:
        """``(dataset index, augmentation seed)`` of ``slot`` in rank's batch at ``iteration``."""
        position = (iteration * self.world_size + rank) * self.batch_size + slot
        epoch, offset = divmod(position, self.epoch_positions)
        index = int(self.permutation(epoch)[offset % self.dataset_size])
        aug_seed = int(np.random.SeedSequence([self.seed, epoch, offset]).generate_state(1)[0])
        return index, aug_seed

    def state(self) -> dict[str, int | str]:
        """What a checkpoint stores to check that a resume reads the same order."""
        state: dict[str, int | str] = {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "dataset_size": self.dataset_size,
        }
        if self.epoch_padding != "none":  # older checkpoints resume as before
            state["epoch_padding"] = self.epoch_padding
        return state


class IterationSampler(Sampler):
    """Yields ``(index, aug_seed)`` for one rank, iterations ``start`` to ``stop`` (exclusive)."""

    def __init__(self, order: DataOrder, rank: int, start: int, stop: int) -> None:
        self.order, self.rank, self.start, self.stop = order, rank, start, stop

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for iteration in range(self.start, self.stop):
            for slot in range(self.order.batch_size):
                yield self.order.sample(iteration, self.rank, slot)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0) * self.order.batch_size


class AugmentedDataset(Dataset):
    """Indexed by ``(index, aug_seed)``: load sample ``index``, apply ``pipeline`` with a
    generator seeded by ``aug_seed``. Items: ``image`` float32 (3, h, w), ``label`` int64
    (h, w)."""

    def __init__(self, dataset, pipeline: Compose) -> None:
        self.dataset = dataset
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, aug_seed = key
        sample = self.pipeline(self.dataset.load(index), np.random.default_rng(aug_seed))
        return {"image": sample["image"], "label": sample["label"]}


def build_train_dataset(recipe: Recipe) -> AugmentedDataset:
    """The training split with the recipe's augmentations (:func:`train_pipeline`: mmseg's
    by default; ``data.ratio_sampling``, ``data.photometric`` and ``data.pad_order`` select
    United-Perception's variants)."""
    preset = dataset_preset(recipe)
    data = recipe.data
    base = build_dataset(
        preset.layout,
        data.root,
        data.train_split or preset.train_split,
        reduce_zero_label=preset.reduce_zero_label,
        ignore_index=preset.ignore_index,
    )
    pipeline = train_pipeline(
        scale=tuple(data.train_scale or preset.train_scale),
        crop_size=tuple(data.crop_size),
        mean=preset.mean,
        std=preset.std,
        ratio_range=tuple(data.ratio_range),
        cat_max_ratio=data.cat_max_ratio,
        ignore_index=preset.ignore_index,
        keep_ratio=data.keep_ratio,
        pad_position=data.pad_position,
        ratio_sampling=data.ratio_sampling,
        photometric=data.photometric,
        pad_order=data.pad_order,
        flip_swap_pairs=data.flip_swap_pairs,
        rotation=(None if data.random_rotation is None
                  else (data.random_rotation.max_degrees, data.random_rotation.prob)),
    )
    return AugmentedDataset(base, pipeline)


def build_val_dataset(recipe: Recipe):
    """The validation split, normalised, at the original resolution."""
    preset = dataset_preset(recipe)
    return build_dataset(
        preset.layout,
        recipe.data.root,
        recipe.data.val_split or preset.val_split,
        transform=eval_pipeline(preset.mean, preset.std),
        reduce_zero_label=preset.reduce_zero_label,
        ignore_index=preset.ignore_index,
    )


def build_train_loader(
    dataset: AugmentedDataset, order: DataOrder, *, rank: int, start: int, stop: int,
    num_workers: int, pin_memory: bool,
) -> DataLoader:
    """One batch per iteration in ``[start, stop)`` for ``rank``, in :class:`DataOrder`.

    Workers are started with ``spawn``, not ``fork``: a forked worker inherits OpenCV's and
    OpenMP's thread pools in whatever state the parent left them, and deadlocks on its first
    use of them when the parent had used them (observed with ``cv2`` after generating data in
    the same process). A script that trains must therefore guard its entry with
    ``if __name__ == "__main__":``, as submitit's job entry does.
    """
    return DataLoader(
        dataset,
        batch_size=order.batch_size,
        sampler=IterationSampler(order, rank, start, stop),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        multiprocessing_context="spawn" if num_workers > 0 else None,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker,
        # A private generator: creating the loader's iterator leaves the global RNG untouched.
        generator=torch.Generator().manual_seed(order.seed),
    )


# --- model ---------------------------------------------------------------------------------------


# sssegmentation names COCO-Stuff-10k "cocostuff10k" in MCIBI_REFERENCE_OPTIONS (either id space)
_MCIBI_DATASET_KEYS = {"coco_stuff10k": "cocostuff10k", "coco_stuff10k_182": "cocostuff10k"}


def builder_options(recipe: Recipe) -> dict[str, Any]:
    """Keyword options for the recipe's model builder.

    In order (later wins): MCIBI's per-row reference options
    (``trainer.models.deeplab_zoo.MCIBI_REFERENCE_OPTIONS`` for the backbone and dataset, when
    listed), ``model.drop_path_rate``, then ``model.options``.

    Raises:
        ValueError: an option the builder does not take; the message names the option, the
            model and the options it does take.
    """
    from trainer.models.deeplab_zoo import MCIBI_REFERENCE_OPTIONS

    name = recipe.model.name
    options: dict[str, Any] = {}
    if name.startswith("deeplabv3_mcibi_"):
        backbone = name[len("deeplabv3_mcibi_"):]
        dataset = _MCIBI_DATASET_KEYS.get(recipe.data.dataset, recipe.data.dataset)
        options.update(MCIBI_REFERENCE_OPTIONS.get((backbone, dataset), {}))
    if recipe.model.drop_path_rate is not None:
        options["drop_path_rate"] = recipe.model.drop_path_rate
    options.update(recipe.model.options)
    builder = MODEL_BUILDERS.get(name)
    if builder is not None and recipe.model.options:
        params = inspect.signature(builder).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            accepted = sorted(k for k, p in params.items()
                              if p.kind is inspect.Parameter.KEYWORD_ONLY
                              or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                                  and k != "num_classes"))
            unknown = sorted(set(recipe.model.options) - set(accepted))
            if unknown:
                raise ValueError(
                    f"model.options {unknown} are not options of model {name!r}; "
                    f"its options: {', '.join(accepted)}"
                )
    return options


def auxiliary_keys(model: nn.Module) -> list[str]:
    """Output keys of the segmentor's auxiliary heads (``"aux"`` or ``"aux0"``, ``"aux1"``, ...),
    as :class:`~trainer.models.segmentor.EncoderDecoder` names them; [] without one."""
    aux = getattr(model, "auxiliary_head", None)
    if aux is None:
        return []
    if isinstance(aux, nn.ModuleList):
        return [f"aux{k}" for k in range(len(aux))]
    return ["aux"]


def build_model(recipe: Recipe, *, load_init: bool = True) -> nn.Module:
    """The recipe's segmentor; with ``load_init``, filled from ``model.init_checkpoint``.

    The builder receives :func:`builder_options`. ``model.aux_loss_weight`` replaces the
    model's ``loss_weights`` for every auxiliary output (:func:`auxiliary_keys`; MCIBI's
    ``stage1`` is part of its decode head and keeps its weight). The init checkpoint goes
    through :func:`trainer.models.converters.pretrained.load_pretrained`: a full segmentor
    loads with ``strict=True``, a backbone (e.g. ImageNet) checkpoint into the backbone alone.

    Raises:
        ValueError: an unknown option; ``aux_loss_weight`` for a model without an auxiliary
            head; a checkpoint that fits neither the model nor its backbone.
    """
    num_classes = dataset_preset(recipe).num_classes
    model = build_segmentor(recipe.model.name, num_classes, **builder_options(recipe))
    if recipe.model.aux_loss_weight is not None:
        keys = auxiliary_keys(model)
        if not keys:
            raise ValueError(
                f"model.aux_loss_weight is set but model {recipe.model.name!r} has no "
                "auxiliary head"
            )
        model.loss_weights.update({k: float(recipe.model.aux_loss_weight) for k in keys})
    if load_init and recipe.model.init_checkpoint:
        load_init_weights(model, recipe.model.init_checkpoint)
    return model


def load_init_weights(model: nn.Module, path_or_url: str) -> str:
    """Load pretrained weights (see :func:`build_model`); returns ``"model"`` or ``"backbone"``."""
    report = load_pretrained(model, path_or_url)
    log.info("%s", report.summary())
    return report.target


def resolve_schedule(recipe: Recipe, dataset_size: int, world_size: int) -> Recipe:
    """The recipe with ``schedule.max_iters`` filled from ``schedule.max_epochs``.

    ``max_iters = ceil(max_epochs * dataset_size / (train.batch_size * world_size))``, or with
    ``schedule.epoch_padding: per_rank`` ``max_epochs`` padded epochs
    (:func:`trainer.optim.iterations_for_epochs`); ``max_epochs`` stays as the record of where
    it came from. A recipe with ``max_iters`` is returned unchanged. The copy is not
    re-validated (the schema wants exactly one of the two); use it in this process only.
    """
    sched = recipe.schedule
    if sched.max_iters is not None or sched.max_epochs is None:
        return recipe
    iters = iterations_for_epochs(sched.max_epochs, dataset_size, recipe.train.batch_size,
                                  world_size, sched.epoch_padding)
    return recipe.model_copy(update={"schedule": sched.model_copy(update={"max_iters": iters})})


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


# --- evaluation ----------------------------------------------------------------------------------


def inference_settings(recipe: Recipe, ms_flip: bool) -> InferenceSettings:
    """The recipe's test-time settings: single scale, or ``eval.scales`` with flip (flipped views
    exchange the scores of ``data.flip_swap_pairs``, as training's flips exchange the labels).
    With ``ms_flip``, ``eval.ms_flip_mode``, ``ms_flip_crop_size``, ``ms_flip_stride`` and
    ``ms_flip_average`` replace ``mode``, ``crop_size``, ``stride`` and ``average`` where set."""
    ev = recipe.eval

    def pick(field: str):
        override = getattr(ev, f"ms_flip_{field}") if ms_flip else None
        return getattr(ev, field) if override is None else override

    crop_size, stride = pick("crop_size"), pick("stride")
    return InferenceSettings(
        mode=pick("mode"),
        test_scale=tuple(ev.test_scale) if ev.test_scale else None,
        scales=tuple(ev.scales) if ms_flip else (1.0,),
        flip=ms_flip,
        crop_size=tuple(crop_size) if crop_size else None,
        stride=tuple(stride) if stride else None,
        flip_swap_pairs=tuple(tuple(pair) for pair in recipe.data.flip_swap_pairs),
        keep_ratio=ev.keep_ratio,
        average=pick("average"),
        size_divisor=ev.size_divisor,
    )


def evaluate(model: nn.Module, dataset, recipe: Recipe, accelerator, *, ms_flip: bool) -> SegMetrics:
    """Score the whole ``dataset`` (sharded over ranks, reduced) with the recipe's settings."""
    preset = dataset_preset(recipe)
    settings = inference_settings(recipe, ms_flip)
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    try:
        metrics, _ = evaluate_dataset(
            segmentor_logits(net, settings),
            dataset,
            num_classes=preset.num_classes,
            ignore_index=preset.ignore_index,
            settings=settings,
            device=accelerator.device,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            autocast_dtype=autocast_dtype(accelerator),
            align_corners=bool(getattr(net, "align_corners", False)),
        )
    finally:
        net.train(was_training)
    return metrics


def reference_for(recipe: Recipe, ms_flip: bool) -> dict[str, Any] | None:
    """The published mIoU matching the evaluation mode, for :func:`format_metrics_table`; None
    without one, and for test-server figures (``reference.split: test``), which a score on the
    validation split is never compared with."""
    ref = recipe.reference
    if ref is not None and ref.split != "val":
        return None
    miou = None if ref is None else (ref.miou_ms_flip if ms_flip else ref.miou_ss)
    if miou is None:
        return None
    label = "multi-scale + flip" if ms_flip else "single-scale"
    return {"miou": miou, "label": label, "source": ref.source}


# --- one step, checkpoints ------------------------------------------------------------------------


def train_step(
    model, optimizer, batch, accelerator, recipe: Recipe, *,
    lr: float | None = None, epoch: int | None = None,
) -> torch.Tensor:
    """Forward, loss, backward, optional clipping, optimizer step. Returns the detached loss.

    The loss is mmseg's: cross-entropy on the decode head plus each auxiliary head at the
    weight the model declares in ``loss_weights`` (e.g. 0.4 for the auxiliary FCN head),
    averaged over all pixels (``avg_non_ignore=False``, the mmseg default the published configs
    ran with), each output resized to the label size with the segmentor's ``align_corners``
    (as mmseg's ``BaseDecodeHead.loss_by_feat``; True for United-Perception's HRNet heads).
    With ``train.loss: ohem`` the decode head's term is OHEM cross-entropy
    (``train.ohem_thresh``, ``train.ohem_min_kept``; :func:`~trainer.models.losses.ohem_cross_entropy`),
    or with ``train.ohem_style: up_seg_ohem`` every head's term is United-Perception's
    (:func:`~trainer.models.losses.ohem_kept_cross_entropy`).

    An :class:`~trainer.models.mcibi.MCIBISegmentor` follows the training contract of
    :mod:`trainer.models.mcibi`: the (wrapped) model is called with the labels, ``lr`` and
    ``epoch`` (its memory update all-reduces, so every rank calls it every step), the
    cross-entropy averages over non-ignored pixels, and the memory classification loss (from
    epoch 2 where the model emits it) is added at ``memory_loss_weight``.

    Args:
        lr: the schedule's current base learning rate (before group multipliers); required
            for MCIBI models.
        epoch: the 1-based epoch of this step; used by MCIBI models.
    """
    images = batch["image"].to(accelerator.device, non_blocking=True)
    labels = batch["label"].to(accelerator.device, non_blocking=True)
    net = accelerator.unwrap_model(model)
    train_cfg = recipe.train
    ohem = (train_cfg.ohem_thresh, train_cfg.ohem_min_kept) if train_cfg.loss == "ohem" else None
    ignore_index = dataset_preset(recipe).ignore_index
    align_corners = bool(getattr(net, "align_corners", False))  # loss resize, as the model
    with accelerator.autocast():
        if isinstance(net, MCIBISegmentor):
            outputs = model(images, labels, lr=lr, epoch=epoch)
            memory_logits = outputs.pop("memory", None)
            loss, _ = segmentation_loss(
                outputs, labels, ignore_index=ignore_index, weights=net.loss_weights,
                avg_non_ignore=True, ohem=ohem, ohem_style=train_cfg.ohem_style,
                align_corners=align_corners,
            )
            if memory_logits is not None:
                loss = loss + net.memory_loss_weight * memory_classification_loss(
                    memory_logits, net.decode_head.memory_module.num_feats_per_cls
                )
        else:
            outputs = model(images)
            loss, _ = segmentation_loss(
                outputs, labels, ignore_index=ignore_index, weights=net.loss_weights,
                avg_non_ignore=False, ohem=ohem, ohem_style=train_cfg.ohem_style,
                align_corners=align_corners,
            )
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    if recipe.optim.grad_clip is not None:
        # accelerate unscales fp16 gradients before clipping (no-op in fp32 and bf16)
        accelerator.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip)
    optimizer.step()
    return loss.detach()


def build_ema(model: nn.Module, train_cfg: TrainConfig) -> ModelEMA | None:
    """The weight average the recipe asks for (``train.ema_decay``, ramped by
    ``train.ema_ramp_iters``), or None without ``ema_decay``."""
    if train_cfg.ema_decay is None:
        return None
    return ModelEMA(model, train_cfg.ema_decay, ramp_iters=train_cfg.ema_ramp_iters)


def save_checkpoint(run_dir: Path, model, optimizer, accelerator, iteration: int, order: DataOrder,
                    ema: ModelEMA | None = None) -> None:
    """Gather every rank's RNG state; rank 0 writes ``iter_{iteration:07d}.pt`` (with the EMA
    state when ``ema`` is given) and prunes."""
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
        ckpt.save_training_state(run_dir, state)
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

    The learning rates need no state: the schedule is a function of the iteration. A change of
    world size keeps the weights and optimizer but cannot replay the per-rank RNG streams; it
    then reseeds from (seed, rank, iteration) and logs a warning.

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
        tracker.set_tags({"segctl.resumed_from": found.path.name,
                          "segctl.rejected_checkpoints": "; ".join(reasons)[:4000]})


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
    stop_after: int | None = None,
    stop_signal: StopSignal | None = None,
) -> TrainResult:
    """Train (or continue training) the recipe's model in ``run_dir``.

    Args:
        recipe: the resolved recipe.
        run_dir: the run directory (checkpoints are read from and written to
            ``RUN_DIR/checkpoints``).
        accelerator: from :func:`trainer.distributed.build_accelerator`.
        tracker: where params and metrics go (a disabled tracker on ranks other than 0).
        progress: the run's ``progress.json`` writer.
        stop_after: stop once this many iterations (counted from 0, not from the resume point)
            are done, after writing a checkpoint, as preemption does; None trains to
            ``schedule.max_iters``.
        stop_signal: asked after every iteration (all ranks agree); when set, the loop writes a
            checkpoint and stops there (:mod:`trainer.preemption`). None: never stops early.

    Returns:
        A :class:`TrainResult`.
    """
    run_dir = Path(run_dir)
    class_names = list(dataset_preset(recipe).classes)
    rank, world = accelerator.process_index, accelerator.num_processes
    seed_everything(recipe.train.seed + rank, recipe.train.deterministic)

    model = convert_sync_batchnorm(build_model(recipe), accelerator, recipe.train.sync_bn)
    optimizer = build_optimizer(model, recipe.optim)
    model, optimizer = accelerator.prepare(model, optimizer)
    train_set, val_set = build_train_dataset(recipe), build_val_dataset(recipe)
    recipe = resolve_schedule(recipe, len(train_set), world)  # no-op after run_training's
    sched = recipe.schedule
    ema = build_ema(accelerator.unwrap_model(model), recipe.train)
    eval_model = ema.module if ema is not None else model
    order = DataOrder(len(train_set), recipe.train.batch_size, world, recipe.train.seed,
                      sched.epoch_padding)
    images_per_step = recipe.train.batch_size * world
    start = resume(run_dir, model, optimizer, accelerator, order, ema, progress=progress,
                   tracker=tracker)
    stop = sched.max_iters if stop_after is None else min(stop_after, sched.max_iters)
    stop_signal = stop_signal or StopSignal()

    loader = build_train_loader(
        train_set, order, rank=rank, start=start, stop=stop,
        num_workers=recipe.data.num_workers, pin_memory=accelerator.device.type == "cuda",
    )
    progress.start_training(start)  # never an older iteration than the file shows
    model.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    window, last_loss, metrics, lr = 0, None, None, 0.0
    iteration, interrupted = start, False
    with stop_signal.blocked():  # loader workers start here; Slurm's signals are not theirs
        batches = iter(loader)
    for iteration, batch in enumerate(batches, start=start + 1):  # iteration = steps done after
        lr = set_learning_rates(optimizer, iteration - 1, sched)
        epoch = 1 + (iteration - 1) * images_per_step // order.epoch_positions
        loss_sum += train_step(model, optimizer, batch, accelerator, recipe, lr=lr, epoch=epoch)
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
        if not interrupted and (iteration % sched.val_interval == 0 or iteration == sched.max_iters):
            metrics = run_validation(eval_model, val_set, recipe, accelerator, tracker, progress,
                                     iteration, class_names)
        if iteration % sched.checkpoint_interval == 0 or iteration == stop or interrupted:
            save_checkpoint(run_dir, model, optimizer, accelerator, iteration, order, ema)
        if interrupted:
            break
    del batches, loader

    finished = iteration >= sched.max_iters and not interrupted
    if finished:
        if metrics is None:  # resumed after the last checkpoint, before the final evaluation
            metrics = run_validation(eval_model, val_set, recipe, accelerator, tracker, progress,
                                     iteration, class_names)
        if accelerator.is_main_process:
            raw = accelerator.unwrap_model(model).state_dict()
            if ema is not None:
                ckpt.save_final_weights(run_dir, ema.weights())
                ckpt.save_final_weights(run_dir, raw, ckpt.FINAL_RAW_NAME)
            else:
                ckpt.save_final_weights(run_dir, raw)
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
    tracker.log_metrics({"loss": loss, "lr": lr}, step=iteration)


def run_validation(model, val_set, recipe: Recipe, accelerator, tracker: Tracker,
                   progress: Progress, iteration: int, class_names: list[str]) -> dict[str, float]:
    """Evaluate on the validation split, log the metrics and table; returns them in percent."""
    progress.update(phase="evaluating")
    ms_flip = recipe.eval.ms_flip
    metrics = evaluate(model, val_set, recipe, accelerator, ms_flip=ms_flip)
    percent = metrics_in_percent(metrics.to_dict(class_names))
    table = format_metrics_table(metrics, class_names, reference_for(recipe, ms_flip))
    if accelerator.is_main_process:
        log.info("evaluation at iteration %d:\n%s", iteration, table)
    tracker.log_metrics(percent, step=iteration)
    tracker.log_text(table, f"tables/iter_{iteration:07d}.txt")
    progress.update(phase="training", miou=percent["mIoU"])
    full = {k: v * 100.0 for k, v in metrics.to_dict(class_names).items()}
    return full

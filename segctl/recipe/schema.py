"""The recipe schema: a closed pydantic v2 model tree, one section per concern.

A recipe file states what differs from the presets; :func:`segctl.recipe.resolve` fills every
optional field from the dataset and model presets, so the resolved recipe (written as JSON into
the run directory, and read by the job) is complete and needs no further lookups.

Conventions: sizes are ``[height, width]`` in pixels (``crop_size``, ``stride``); scales are
``[long edge, short edge]`` in pixels with the aspect ratio kept (mmsegmentation's
``img_scale`` with ``keep_ratio=True``); learning rates are per parameter step; iterations count
optimizer steps.

What can be known offline is checked here, so a recipe that cannot train fails in
``segctl recipes validate`` rather than in the job: every pixel size is at most
:data:`MAX_IMAGE_SIDE` per side (no public dataset comes near it; a 100000 x 100000 crop would
need 120 GB), numbers are finite, ``max_iters`` is at most :data:`MAX_ITERS`, the warm-up is no
longer than training, ``model.options`` are those the model's builder takes
(:mod:`segctl.recipe.model_options`), split names are names (no path), and free text is kept to
sizes MLflow and ``recipe.json`` can hold.

Defaults for the optimizer and schedule are those of the mmsegmentation SegFormer configs
(``configs/segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py``: AdamW lr 6e-5,
weight decay 0.01, head lr x10, no decay on norms and position blocks, poly power 1.0 with a
1500-iteration linear warm-up from ratio 1e-6).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from segctl.recipe.datasets import DATASET_PRESETS
from segctl.recipe.errors import short_repr
from segctl.recipe.fields import Section, check_slurm_word
from segctl.recipe.model_options import MODEL_OPTIONS, option_problems
from segctl.recipe.models import MODEL_PRESETS

Size2 = tuple[int, int]

#: The mmsegmentation multi-scale test ratios (with flip: 12 views).
MS_FLIP_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

#: Largest side, in pixels, of any crop, window, stride or scale, and of a training image after
#: the random resize (train_scale x the largest ratio). The largest standard setups reach 4096
#: (Cityscapes 2048 x 2.0).
MAX_IMAGE_SIDE = 8192
#: Most optimizer steps a recipe may ask for (the longest published schedules are ~10^6).
MAX_ITERS = 10**9
#: Most epochs a recipe may ask for.
MAX_EPOCHS = 10**6
#: Longest description, in characters (it goes into recipe.json and MLflow).
MAX_DESCRIPTION_CHARS = 10_000
#: Longest MLflow experiment name (MLflow's own limit, ``mlflow.utils.validation``).
MAX_EXPERIMENT_CHARS = 500

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


def _positive_pair(value: Size2 | None, field: str) -> Size2 | None:
    if value is not None and (value[0] <= 0 or value[1] <= 0):
        raise ValueError(f"{field} must be two positive integers, got {list(value)}")
    if value is not None and max(value) > MAX_IMAGE_SIDE:
        raise ValueError(
            f"{field} {list(value)} is beyond any image segctl trains on: each side must be at "
            f"most {MAX_IMAGE_SIDE} pixels"
        )
    return value


def _check_split(value: str | None, field: str) -> str | None:
    """A split name, or names joined by '+': names only, never a path."""
    if value is None:
        return value
    for part in value.split("+"):
        if part and (not _SPLIT_RE.match(part) or part in (".", "..")):
            raise ValueError(
                f"{field} {short_repr(value)} is not a split name: use the name of the split "
                "folder (letters, digits, '.', '_', '-'; e.g. train or val), not a path; put the "
                "dataset's location in data.root"
            )
    return value


class RotationConfig(Section):
    """Random rotation of training samples (sssegmentation's ``RandomRotation``)."""

    max_degrees: int = Field(
        gt=0, le=180, description="Angles are whole degrees drawn from [-max_degrees, max_degrees)."
    )
    prob: float = Field(ge=0, le=1, description="Probability that a sample is rotated.")


class DataConfig(Section):
    """Which dataset, where it lives, and how training crops are made."""

    dataset: str = Field(description="Dataset preset name (see `segctl recipes presets`).")
    root: str = Field(description="Dataset root: a local path or any fsspec URL.")
    crop_size: Size2 = Field(description="Training crop [height, width] in pixels.")
    train_split: str | None = Field(
        None,
        description="Split to train on (preset default); Cityscapes also takes splits joined "
        "by '+' (train+val, as test-server entries train).",
    )
    val_split: str | None = Field(None, description="Split to evaluate on (preset default).")
    train_scale: Size2 | None = Field(
        None, description="[long, short] edge in pixels scaled by the random resize ratio."
    )
    ratio_range: tuple[float, float] = Field(
        (0.5, 2.0), description="Random resize ratio range applied to train_scale."
    )
    ratio_sampling: Literal["uniform", "halves"] = Field(
        "uniform",
        description="How the resize ratio is drawn from ratio_range. uniform: one uniform draw "
        "(mmcv RandomResize). halves: [low, 1) or [1, high), each with probability 1/2, "
        "uniform within (ModelTC/United-Perception up/tasks/seg/data/seg_transfomer.py "
        "SegRandResize); needs low <= 1 <= high.",
    )
    cat_max_ratio: float = Field(
        0.75, gt=0, le=1, description="Largest share of a random crop one class may take."
    )
    keep_ratio: bool = Field(
        True,
        description="Random resize keeping the aspect ratio (mmseg). False: resize to exactly "
        "train_scale x ratio, its long edge along the image's longer side (sssegmentation "
        "Resize keep_ratio=False).",
    )
    pad_position: Literal["bottom_right", "center"] = Field(
        "bottom_right",
        description="Where a crop smaller than crop_size sits in the padded sample: "
        "bottom_right pads after the pixels (mmseg Pad), center pads around them "
        "(sssegmentation Padding).",
    )
    pad_order: Literal["after_normalize", "before_photometric"] = Field(
        "after_normalize",
        description="When a crop smaller than crop_size is padded. after_normalize: after "
        "Normalize, so the image pad is 0 in normalized units (mmseg Pad). "
        "before_photometric: the uint8 image is padded with 0 before the photometric "
        "transform and Normalize, so pad pixels are jittered and come out near -mean/std "
        "(ModelTC/United-Perception up/tasks/seg/data/seg_transfomer.py SegCrop). The label "
        "pad is the ignore index either way.",
    )
    photometric: Literal["mmseg", "up_color_jitter", "up_brightness"] = Field(
        "mmseg",
        description="Photometric transform after the flip. mmseg: PhotoMetricDistortion (each "
        "step with probability 1/2). up_color_jitter: United-Perception color_jitter_mmseg "
        "(same steps, each with probability 2/3, contrast skipped in 1/3 of the samples, hue "
        "shift in [-18, 18]). up_brightness: United-Perception seg_rand_brightness (with "
        "probability 1/2, one integer in [-10, 10] added to every pixel). Both in "
        "ModelTC/United-Perception up/tasks/seg/data/seg_transfomer.py.",
    )
    flip_swap_pairs: list[tuple[int, int]] = Field(
        default_factory=list,
        description="Class pairs swapped in the label when a sample is flipped (left/right "
        "parts, e.g. LIP [[15, 14], [17, 16], [19, 18]]); each class at most once.",
    )
    random_rotation: RotationConfig | None = Field(
        None,
        description="Rotate after the flip, image bicubic (fill 0), label nearest (fill the "
        "ignore index); off if unset.",
    )
    num_workers: int = Field(2, ge=0, description="Data loader worker processes per rank.")
    stage_to: str | None = Field(
        None,
        description="Stage the dataset before training: a local directory, or 'node-local' "
        "(scratch_dir, else $TMPDIR, at job start). A remote (URL) root is staged to "
        "'node-local' when unset.",
    )
    scratch_dir: str | None = Field(
        None, description="Node-local scratch folder for stage_to: node-local (default $TMPDIR)."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="fsspec storage options for data.root (e.g. endpoint_url); may hold "
        "secrets: never logged, left out of the run hash.",
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in DATASET_PRESETS:
            known = ", ".join(sorted(DATASET_PRESETS))
            raise ValueError(f"unknown dataset preset {short_repr(value)}; known: {known}")
        return value

    @field_validator("crop_size", "train_scale")
    @classmethod
    def _positive(cls, value: Size2 | None, info) -> Size2 | None:
        return _positive_pair(value, info.field_name)

    @field_validator("ratio_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"ratio_range must satisfy 0 < low <= high, got {list(value)}")
        return value

    @field_validator("train_split", "val_split")
    @classmethod
    def _split_name(cls, value: str | None, info) -> str | None:
        return _check_split(value, info.field_name)

    @model_validator(mode="after")
    def _resized_image_fits(self) -> DataConfig:
        scale = self.train_scale or DATASET_PRESETS[self.dataset].train_scale
        largest = max(scale) * self.ratio_range[1]
        if largest > MAX_IMAGE_SIDE:
            raise ValueError(
                f"ratio_range {list(self.ratio_range)} resizes training images to {largest:.0f} "
                f"pixels (train_scale {list(scale)} x {self.ratio_range[1]}); keep "
                f"train_scale x the largest ratio at most {MAX_IMAGE_SIDE} pixels"
            )
        return self

    @model_validator(mode="after")
    def _halves_around_one(self) -> DataConfig:
        low, high = self.ratio_range
        if self.ratio_sampling == "halves" and not low <= 1.0 <= high:
            raise ValueError(
                f"ratio_sampling 'halves' draws below and above 1, so ratio_range must contain "
                f"1, got {list(self.ratio_range)}"
            )
        return self

    @model_validator(mode="after")
    def _combined_split(self) -> DataConfig:
        for name in ("train_split", "val_split"):
            split = getattr(self, name)
            if split is None or "+" not in split:
                continue
            parts = split.split("+")
            if DATASET_PRESETS[self.dataset].layout != "cityscapes":
                raise ValueError(f"{name} {split!r}: only the cityscapes layout joins splits")
            if "" in parts or len(set(parts)) != len(parts):
                raise ValueError(f"{name} {split!r}: join distinct split names, e.g. train+val")
        return self

    @model_validator(mode="after")
    def _swap_pairs_within_classes(self) -> DataConfig:
        num_classes = DATASET_PRESETS[self.dataset].num_classes
        outside = sorted({c for pair in self.flip_swap_pairs for c in pair if c >= num_classes})
        if outside:
            raise ValueError(
                f"flip_swap_pairs names class {outside[0]}, but {self.dataset} has classes "
                f"0..{num_classes - 1}"
            )
        return self

    @field_validator("flip_swap_pairs")
    @classmethod
    def _distinct_pairs(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        classes = [c for pair in value for c in pair]
        if any(c < 0 for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(
                "flip_swap_pairs must hold non-negative class indices, each at most once, "
                f"got {[list(p) for p in value]}"
            )
        return value


class ModelConfig(Section):
    """Which architecture, and which weights to start from."""

    name: str = Field(description="Model preset name (see `segctl recipes presets`).")
    init_checkpoint: str | None = Field(
        None, description="Pretrained weights (backbone or full model): a path or fsspec URL."
    )
    drop_path_rate: float | None = Field(
        None, ge=0, lt=1, description="Stochastic depth rate (architecture default if unset)."
    )
    aux_loss_weight: float | None = Field(
        None, ge=0, description="Weight of the auxiliary head's loss (architecture default if unset)."
    )
    options: dict[str, bool | int | float | str | list[int] | list[float]] = Field(
        default_factory=dict,
        description="Keyword options of the architecture's builder (e.g. MCIBI's "
        "momentum_base_lr, a head's dropout_ratio or align_corners); checked against the "
        "options each builder takes (`segctl recipes validate` names unknown ones).",
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODEL_PRESETS:
            known = ", ".join(sorted(MODEL_PRESETS))
            raise ValueError(f"unknown model preset {short_repr(value)}; known: {known}")
        return value

    @field_validator("drop_path_rate")
    @classmethod
    def _model_has_drop_path(cls, value: float | None, info) -> float | None:
        name = info.data.get("name")
        takes = MODEL_OPTIONS.get(name, {"drop_path_rate": float})
        if value is not None and "drop_path_rate" not in takes:
            raise ValueError(
                f"model {name} has no stochastic depth (its builder takes no drop_path_rate): "
                "remove model.drop_path_rate"
            )
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _known_options(cls, value, info):
        name = info.data.get("name")
        if isinstance(value, dict) and name is not None:
            problems = option_problems(name, value)
            if problems:
                raise ValueError("; ".join(problems))
        return value


class OptimConfig(Section):
    """Optimizer and its parameter groups."""

    type: Literal["adamw", "sgd"] = Field("adamw", description="adamw or sgd (with momentum).")
    lr: float = Field(6e-5, gt=0, description="Base learning rate.")
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    head_lr_mult: float = Field(10.0, gt=0, description="Learning-rate multiplier of the heads.")
    backbone_lr_mult: float = Field(
        1.0,
        gt=0,
        description="Learning-rate multiplier of the backbone (parameters under `backbone.`), "
        "as sssegmentation's params_rules backbone_net lr_multiplier; multiplies with "
        "head_lr_mult where both apply. Not with layer_decay_rate.",
    )
    no_decay_norm_and_pos: bool = Field(
        True, description="No weight decay on normalisation and position-block parameters."
    )
    grad_clip: float | None = Field(
        None, gt=0, description="Clip the global gradient norm to this value (off if unset)."
    )
    layer_decay_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Layer-wise lr decay (InternImage backbones): layer k of L gets "
        "lr * rate ** (L - 1 - k); replaces the custom-key groups. Off if unset.",
    )

    @model_validator(mode="after")
    def _one_backbone_rule(self) -> OptimConfig:
        if self.layer_decay_rate is not None and self.backbone_lr_mult != 1.0:
            raise ValueError(
                "backbone_lr_mult does not combine with layer_decay_rate (the layer-wise groups "
                "set the backbone's rates); drop one of them"
            )
        return self


class ScheduleConfig(Section):
    """Iteration-based schedule: poly learning rate with linear warm-up."""

    max_iters: int | None = Field(
        None, gt=0, le=MAX_ITERS, description="Optimizer steps to train (or give max_epochs)."
    )
    max_epochs: int | None = Field(
        None,
        gt=0,
        le=MAX_EPOCHS,
        description="Epochs to train instead of max_iters: the job turns them into iterations "
        "as ceil(epochs * train images / global batch) (see epoch_padding).",
    )
    epoch_padding: Literal["none", "per_rank", "per_rank_drop_last"] = Field(
        "none",
        description="What an epoch of the training data is. none: the N training images once, "
        "epochs read back to back as one stream. per_rank: as a DistributedSampler with "
        "drop_last false pads it, ceil(N / GPUs) images per GPU rounded up to whole batches, "
        "the extra ones repeating the start of the epoch's shuffled order "
        "(ModelTC/United-Perception up/data/samplers/sampler.py); max_epochs then means "
        "epochs * ceil(ceil(N / GPUs) / batch_size) iterations (Cityscapes on 4 GPUs x 2: "
        "372 an epoch). per_rank_drop_last: the same padded sampler under a loader that drops "
        "each GPU's last partial batch, floor(ceil(N / GPUs) / batch_size) iterations an epoch "
        "(sssegmentation: torch DistributedSampler, drop_last True in "
        "ssseg/configs/_base_/dataloaders/default_dataloader_bs*.py; ADE20K on 8 GPUs x 2: "
        "1263).",
    )
    val_interval: int = Field(gt=0, description="Evaluate every this many iterations.")
    checkpoint_interval: int = Field(gt=0, description="Checkpoint every this many iterations.")
    warmup_iters: int = Field(1500, ge=0, description="Linear warm-up length in iterations.")
    warmup_ratio: float = Field(1e-6, gt=0, le=1, description="Warm-up starts at lr * this.")
    warmup_style: Literal["mmcv", "up_linear"] = Field(
        "mmcv",
        description="Warm-up rule. mmcv: the poly rate scaled by a factor climbing linearly from "
        "warmup_ratio to 1 over warmup_iters steps (mmcv LrUpdaterHook linear warm-up). "
        "up_linear: United-Perception's LinearWarmUpLR, lr * warmup_ratio climbing linearly "
        "to lr at step warmup_iters - 1, then poly from lr at step warmup_iters.",
    )
    poly_power: float = Field(1.0, gt=0, description="Power of the poly decay.")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the last iteration.")
    min_lr_follows_lr_mult: bool = Field(
        False,
        description="false: every parameter group decays to min_lr (mmcv PolyLrUpdaterHook); "
        "true: a group with lr multiplier m decays to min_lr * m, i.e. its rate is m times the "
        "scheduled base rate (sssegmentation PolyScheduler with params_rules, e.g. a ViT "
        "backbone at 0.1x ends at 0.1 * min_lr).",
    )
    log_interval: int = Field(50, gt=0, description="Log loss and lr every this many iterations.")

    @field_validator("warmup_iters")
    @classmethod
    def _warmup_within_training(cls, value: int, info) -> int:
        max_iters = info.data.get("max_iters")
        if max_iters is not None and value > max_iters:
            raise ValueError(
                f"warmup_iters {value} is longer than training (max_iters {max_iters}): "
                "shorten the warm-up or train longer"
            )
        return value

    @model_validator(mode="after")
    def _one_length(self) -> ScheduleConfig:
        if (self.max_iters is None) == (self.max_epochs is None):
            raise ValueError("give exactly one of max_iters and max_epochs")
        return self


class TrainConfig(Section):
    """Batch, seed and numerics."""

    batch_size: int = Field(gt=0, description="Images per GPU (per process on CPU).")
    grad_accum_steps: int = Field(
        1,
        ge=1,
        description="Gradient accumulation: micro-batches of batch_size per GPU whose "
        "gradients are summed (each loss divided by this) before one optimizer step, so the "
        "global batch is batch_size x GPUs x grad_accum_steps. Iterations (schedule, warm-up, "
        "evaluation and checkpoint intervals) count optimizer steps. Each micro-batch plays "
        "one GPU of a run with grad_accum_steps times the GPUs (BatchNorm statistics, OHEM, "
        "MCIBI's memory update per micro-batch). 1: off; other values get their own run ids.",
    )
    seed: int = Field(0, ge=0)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32",
        description="Training and evaluation numerics on CUDA: fp32 (every source config "
        "trains so), bf16 or fp16 autocast (fp16 with a dynamic loss scaler), or auto (bf16 "
        "on CUDA). A speed choice: bf16 and fp16 runs get their own run ids. The CPU always "
        "runs fp32.",
    )
    tf32: bool | None = Field(
        None,
        description="TensorFloat-32 on Ampere+ GPUs. Unset: PyTorch's defaults (cuDNN "
        "convolutions in TF32, matmuls in full fp32), as mmsegmentation and United-Perception "
        "train; true: on for both (InternImage's segmentation/train.py); false: off for both "
        "(sssegmentation).",
    )
    deterministic: bool = Field(False, description="Deterministic algorithms (slower).")
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Keep an exponential moving average of the weights with this decay and "
        "evaluate with it (off if unset).",
    )
    ema_ramp_iters: int | None = Field(
        None,
        gt=0,
        description="Ramp the EMA decay up as ema_decay * (1 - exp(-i / ema_ramp_iters)), i the "
        "0-based index of the optimizer step just taken (United-Perception's exp EMA, 2000 in "
        "its seg configs); unset: constant ema_decay. Needs ema_decay.",
    )
    sync_bn: bool = Field(True, description="SyncBatchNorm across GPUs (plain BN on CPU).")
    loss: Literal["ce", "ohem"] = Field(
        "ce", description="Cross-entropy, or OHEM cross-entropy (hard pixels only)."
    )
    ohem_thresh: float = Field(
        0.7, gt=0, le=1, description="OHEM: keep pixels whose true-class probability is below this."
    )
    ohem_min_kept: int = Field(
        100000,
        ge=0,
        description="OHEM: keep at least this many pixels (per image with mmseg_sampler, per "
        "batch with up_seg_ohem).",
    )
    ohem_style: Literal["mmseg_sampler", "up_seg_ohem"] = Field(
        "mmseg_sampler",
        description="OHEM semantics. mmseg_sampler: mmseg OHEMPixelSampler on the decode head, "
        "min_kept per image, loss averaged over all pixels. up_seg_ohem: United-Perception "
        "seg_ohem on every head, min_kept per batch, averaged over the kept pixels.",
    )
    checkpoint_dir: str | None = Field(
        None,
        description="Also keep checkpoints at this fsspec URL (written atomically), read back "
        "for resume and evaluation when the run directory lacks them.",
    )

    @model_validator(mode="after")
    def _ramp_needs_ema(self) -> TrainConfig:
        if self.ema_ramp_iters is not None and self.ema_decay is None:
            raise ValueError("ema_ramp_iters needs ema_decay (e.g. ema_decay: 0.9998)")
        return self


class EvalConfig(Section):
    """How the validation split is scored."""

    mode: Literal["whole", "slide"] = Field("whole", description="Whole-image or sliding window.")
    crop_size: Size2 | None = Field(None, description="Sliding-window crop [height, width].")
    stride: Size2 | None = Field(None, description="Sliding-window stride [height, width].")
    test_scale: Size2 | None = Field(
        None, description="[long, short] edge the image is resized to (preset default)."
    )
    keep_ratio: bool = Field(
        True,
        description="false: resize to test_scale exactly (a taller image's height, any "
        "other's width, to its larger value), as sssegmentation's LIP test; true: keep the "
        "aspect ratio within test_scale (mmseg).",
    )
    average: Literal["probs", "logits", "probs_before_resize"] = Field(
        "probs",
        description="What the test views average, in whose order. probs: softmax of the "
        "logits resized to the image (mmseg). logits: the resized logits, no softmax "
        "(sssegmentation, use_probs_before_resize False). probs_before_resize: softmax at the "
        "model's resolution, per window in slide mode, before any resize (sssegmentation, "
        "use_probs_before_resize True). The sssegmentation two also take its ratios "
        "(F.interpolate scale_factor on the test-size image) and align_corners.",
    )
    size_divisor: int | None = Field(
        None,
        gt=0,
        description="Round each test view's size up to a multiple of this many pixels after "
        "the resize (mmseg ResizeToMultiple, InternImage's test pipeline: 32); unset: no "
        "rounding.",
    )
    ms_flip: bool = Field(False, description="Multi-scale + flip test-time augmentation.")
    scales: tuple[float, ...] = Field(
        MS_FLIP_RATIOS, description="Ratios of test_scale used when ms_flip is on."
    )
    ms_flip_mode: Literal["whole", "slide"] | None = Field(
        None,
        description="mode of the ms+flip evaluation where it differs from single scale's "
        "(sssegmentation's HRNet configs: whole single scale, 512x512 windows for ms+flip); "
        "unset: mode.",
    )
    ms_flip_crop_size: Size2 | None = Field(
        None, description="Sliding-window crop [height, width] of the ms+flip evaluation; "
        "unset: crop_size."
    )
    ms_flip_stride: Size2 | None = Field(
        None, description="Sliding-window stride [height, width] of the ms+flip evaluation; "
        "unset: stride."
    )
    ms_flip_average: Literal["probs", "logits", "probs_before_resize"] | None = Field(
        None, description="average of the ms+flip evaluation; unset: average."
    )

    @field_validator("crop_size", "stride", "test_scale", "ms_flip_crop_size", "ms_flip_stride")
    @classmethod
    def _positive(cls, value: Size2 | None, info) -> Size2 | None:
        return _positive_pair(value, info.field_name)

    @field_validator("scales")
    @classmethod
    def _scales(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(s <= 0 for s in value):
            raise ValueError("scales must be a non-empty list of positive ratios")
        return value

    @model_validator(mode="after")
    def _slide_needs_window(self) -> EvalConfig:
        if self.mode == "slide" and (self.crop_size is None or self.stride is None):
            raise ValueError(
                "mode 'slide' needs crop_size and stride, e.g. crop_size: [1024, 1024] and "
                "stride: [768, 768]"
            )
        errors = []
        ms_mode = self.ms_flip_mode or self.mode
        ms_window = [self.ms_flip_crop_size or self.crop_size, self.ms_flip_stride or self.stride]
        if ms_mode == "slide" and None in ms_window:
            errors.append(
                "the ms+flip evaluation slides (ms_flip_mode: slide) without a window: set "
                "ms_flip_crop_size and ms_flip_stride, e.g. [512, 512] and [341, 341]"
            )
        if ms_mode == "whole":
            for name in ("ms_flip_crop_size", "ms_flip_stride"):
                if getattr(self, name) is not None:
                    errors.append(
                        f"{name} is set but the ms+flip evaluation runs whole images: set "
                        f"ms_flip_mode: slide, or remove {name}"
                    )
        averages = {self.average, self.ms_flip_average or self.average}
        if self.size_divisor is not None and averages & {"logits", "probs_before_resize"}:
            errors.append(
                "size_divisor (mmseg's ResizeToMultiple) needs average probs: averages logits "
                "and probs_before_resize follow sssegmentation's test order, which has none"
            )
        if errors:
            raise ValueError("; ".join(errors))
        return self


class ClusterConfig(Section):
    """Where the job runs. None of these change results."""

    executor: Literal["auto", "local", "slurm"] = Field(
        "auto", description="auto: Slurm when sbatch is on PATH, else local."
    )
    nodes: int = Field(1, gt=0)
    gpus_per_node: int = Field(1, ge=0, description="GPUs (one task each) per node.")
    cpu_processes_per_node: int = Field(
        1, gt=0, description="Tasks per node on CPU-only placements (gpus_per_node: 0)."
    )
    cpus_per_task: int = Field(2, gt=0)
    mem_gb: float | None = Field(None, gt=0, description="Memory per node in GiB.")
    timeout_min: int | None = Field(
        None, gt=0, description="Time limit of one job in minutes (profile default, else 1440)."
    )
    max_requeues: int = Field(
        3, ge=0, description="Requeues after preemption or time limit before the job fails."
    )
    partition: str | None = Field(None, description="Slurm partition (profile default).")

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str | None) -> str | None:
        return check_slurm_word(value, "partition")


class TrackingConfig(Section):
    """Where metrics go."""

    uri: str | None = Field(
        None,
        description="MLflow tracking URI; default MLFLOW_TRACKING_URI, else an embedded SQLite "
        "store ./mlflow.db in the submitting directory.",
    )
    experiment: str | None = Field(
        None,
        description=f"MLflow experiment (default: dataset name; at most {MAX_EXPERIMENT_CHARS} "
        "characters).",
    )
    system_metrics: bool = Field(
        True,
        description="Log MLflow's system metrics (system/cpu_utilization_percentage, memory, "
        "disk, network; GPU utilisation and memory where nvidia-ml-py is installed) of rank "
        "0's node during training. MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true/false in the "
        "job's environment overrides this for every recipe.",
    )
    system_metrics_interval_s: float = Field(
        10.0,
        gt=0,
        description="Seconds between system metric samples (each sample is one step of the "
        "system/* metrics); MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL, when set, wins.",
    )

    @field_validator("experiment")
    @classmethod
    def _mlflow_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) > MAX_EXPERIMENT_CHARS:
            raise ValueError(
                f"tracking.experiment is {len(value):,} characters; MLflow takes at most "
                f"{MAX_EXPERIMENT_CHARS}: shorten it"
            )
        return value


class ReferenceConfig(Section):
    """The published result this recipe reproduces."""

    miou_ss: float | None = Field(None, ge=0, le=100, description="Single-scale mIoU, percent.")
    miou_ms_flip: float | None = Field(
        None, ge=0, le=100, description="Multi-scale + flip mIoU, percent."
    )
    source: str = Field(description="Table and config the numbers come from.")
    split: Literal["val", "test"] = Field(
        "val",
        description="Where the published figures were scored. val: on the split segctl "
        "evaluates (data.val_split; COCO-Stuff-10k's is its test split), so segctl compares "
        "its scores with them. test: on a benchmark's test server (Cityscapes test), which a "
        "local score is never compared with; `segctl eval` then writes the server's "
        "submission format by default.",
    )
    checkpoint: str | None = Field(
        None,
        description="The published trained model (https URL or any fsspec URL), evaluated by "
        "`segctl eval RECIPE --published`.",
    )
    log: str | None = Field(
        None, description="The published training log (e.g. mmseg's *.log.json), for comparison."
    )


class Recipe(Section):
    """A complete description of one training run and its evaluation."""

    name: str = Field(description="Run name prefix: letters, digits, '.', '_' and '-'.")
    description: str = Field(
        "", description=f"Free text (at most {MAX_DESCRIPTION_CHARS:,} characters)."
    )
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    cluster: ClusterConfig = ClusterConfig()
    tracking: TrackingConfig = TrackingConfig()
    reference: ReferenceConfig | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                "name must start with a letter or digit and use only letters, digits, '.', '_' "
                f"and '-' (at most 100 characters), got {short_repr(value)}"
            )
        return value

    @field_validator("description")
    @classmethod
    def _sane_description(cls, value: str) -> str:
        if len(value) > MAX_DESCRIPTION_CHARS:
            raise ValueError(
                f"description is {len(value):,} characters; keep it under "
                f"{MAX_DESCRIPTION_CHARS:,} (it is copied into recipe.json and MLflow): put "
                "long notes in a file beside the recipe"
            )
        return value

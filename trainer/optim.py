"""Optimizer parameter groups and the poly learning-rate schedule with linear warm-up.

Both reproduce what produced the published SegFormer numbers (mmsegmentation 0.x on mmcv 1.x):

- parameter groups: mmcv ``mmcv/runner/optimizer/default_constructor.py``
  (``DefaultOptimizerConstructor.add_params``) with the SegFormer configs'
  ``paramwise_cfg=dict(custom_keys={'pos_block': dict(decay_mult=0.),
  'norm': dict(decay_mult=0.), 'head': dict(lr_mult=10.)})``;
- schedule: mmcv ``mmcv/runner/hooks/lr_updater.py`` (``PolyLrUpdaterHook.get_lr`` and
  ``LrUpdaterHook.get_warmup_lr`` with ``warmup='linear'``, ``by_epoch=False``).

With ``schedule.min_lr_follows_lr_mult`` the floor of each group scales with its multiplier, as
sssegmentation's ``PolyScheduler.updatelr``
(``ssseg/modules/models/schedulers/polyscheduler.py``, SegmentationBLWX/sssegmentation@eb1878c1),
which schedules one base rate and gives each group ``lr_multiplier`` times it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from segctl.recipe.schema import OptimConfig, ScheduleConfig


def custom_keys(optim: OptimConfig) -> dict[str, dict[str, float]]:
    """The mmcv ``custom_keys`` a recipe's optimizer section stands for.

    ``no_decay_norm_and_pos`` adds ``pos_block`` and ``norm`` with ``decay_mult`` 0;
    ``head_lr_mult`` adds ``head`` with that ``lr_mult`` (omitted when it is 1).
    """
    keys: dict[str, dict[str, float]] = {}
    if optim.no_decay_norm_and_pos:
        keys["pos_block"] = {"decay_mult": 0.0}
        keys["norm"] = {"decay_mult": 0.0}
    if optim.head_lr_mult != 1.0:
        keys["head"] = {"lr_mult": optim.head_lr_mult}
    return keys


#: Name prefix of the backbone's parameters in every segmentor (``self.backbone``).
BACKBONE_PREFIX = "backbone."


def match_custom_key(name: str, keys: Mapping[str, Mapping[str, float]]) -> str | None:
    """The custom key that governs parameter ``name``, or None.

    mmcv's rule: a key matches when it is a substring of the full parameter name; keys are
    tried longest first, ties in alphabetical order, and the first match wins.
    """
    for key in sorted(sorted(keys), key=len, reverse=True):
        if key in name:
            return key
    return None


def param_groups(
    model: nn.Module, optim: OptimConfig
) -> list[dict[str, object]]:
    """Split ``model``'s trainable parameters into optimizer groups.

    Each group holds the parameters sharing one (lr multiplier, decay multiplier) pair and
    carries ``lr`` (= ``optim.lr * lr_mult``), ``weight_decay`` (= ``optim.weight_decay *
    decay_mult``), and, for the schedule and for inspection, ``base_lr``, ``lr_mult``,
    ``decay_mult`` and ``names`` (the parameter names). Parameters without
    ``requires_grad`` are left out. Groups are ordered by first appearance in
    ``model.named_parameters()``, so the order is stable across runs (checkpoints rely on it).

    The custom keys' ``lr_mult`` (mmcv's rule) is multiplied by ``optim.backbone_lr_mult`` for
    the backbone's parameters (names starting with ``backbone.``): sssegmentation's
    ``params_rules={'backbone_net': dict(lr_multiplier=...)}``, whose other parameters keep
    the base rate (``ssseg/modules/models/optimizers/paramsconstructor.py``).
    """
    keys = custom_keys(optim)
    groups: dict[tuple[float, float], dict[str, object]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = match_custom_key(name, keys)
        rule = keys[key] if key is not None else {}
        lr_mult = float(rule.get("lr_mult", 1.0))
        if name.startswith(BACKBONE_PREFIX):
            lr_mult *= optim.backbone_lr_mult
        decay_mult = float(rule.get("decay_mult", 1.0))
        group = groups.setdefault(
            (lr_mult, decay_mult),
            {
                "params": [],
                "names": [],
                "lr_mult": lr_mult,
                "decay_mult": decay_mult,
                "base_lr": optim.lr * lr_mult,
                "lr": optim.lr * lr_mult,
                "weight_decay": optim.weight_decay * decay_mult,
            },
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (``betas``, ``weight_decay``) or SGD (``momentum``) over :func:`param_groups`, or
    over InternImage's layer-wise decay groups when ``optim.layer_decay_rate`` is set
    (``trainer.models.internimage.layer_decay_param_groups``, after the reference's
    ``mmcv_custom/layer_decay_optimizer_constructor.py``).

    Raises:
        ValueError: the model has no trainable parameter, or layer decay is asked for a model
            whose backbone is not an InternImage.
    """
    if optim.layer_decay_rate is not None:
        from trainer.models.internimage import InternImage, layer_decay_param_groups

        if not isinstance(getattr(model, "backbone", None), InternImage):
            raise ValueError("optim.layer_decay_rate is supported for InternImage backbones only")
        groups = layer_decay_param_groups(
            model, optim.lr, optim.weight_decay, optim.layer_decay_rate, optim.head_lr_mult
        )
    else:
        groups = param_groups(model, optim)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if optim.type == "adamw":
        return torch.optim.AdamW(
            groups, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
        )
    return torch.optim.SGD(
        groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )


def poly_lr(
    base_lr: float, iteration: int, schedule: ScheduleConfig, lr_mult: float = 1.0
) -> float:
    """Learning rate of a group with initial rate ``base_lr`` before step ``iteration``.

    ``iteration`` counts completed optimizer steps (0 for the first step), as mmcv's
    ``runner.iter`` in ``before_train_iter`` and sssegmentation's ``scheduler.cur_iter`` when
    ``updatelr`` is called::

        floor   = min_lr * lr_mult if schedule.min_lr_follows_lr_mult else min_lr
        regular = (base_lr - floor) * (1 - iteration / max_iters) ** power + floor
        warm-up (iteration < warmup_iters), warmup_style "mmcv":
            k  = (1 - iteration / warmup_iters) * (1 - warmup_ratio)
            lr = regular * (1 - k)
        warm-up (iteration < warmup_iters), warmup_style "up_linear":
            start = base_lr * warmup_ratio
            lr    = start + (base_lr - start) / max(1, warmup_iters - 1) * iteration

    ``"mmcv"`` is mmcv's linear warm-up (``LrUpdaterHook.get_warmup_lr``), which scales the
    poly rate and reaches it at ``warmup_iters``. ``"up_linear"`` is United-Perception's
    (ModelTC/United-Perception@52aaeb9ed27a ``up/utils/model/lr_helper.py``: ``LinearWarmUpLR``
    with ``init_lr = warmup_ratio * target_lr`` from ``BaseWarmScheduler``, chained to
    ``PolyLR`` by ``BaseLRScheduler``'s ``ChainIterLR``): it climbs from ``base_lr *
    warmup_ratio`` to ``base_lr`` at step ``warmup_iters - 1``, ignoring the poly decay, and at
    step ``warmup_iters`` poly takes over from the rate just reached (``base_lr``, up to one
    rounding), i.e. ``regular`` from then on.

    By default (``min_lr_follows_lr_mult`` false) ``min_lr`` is subtracted from every group's
    own base rate, as in mmcv (``mmcv/runner/hooks/lr_updater.py``, ``PolyLrUpdaterHook``), so a
    head group at 10x decays to the same ``min_lr``. With it true, and ``base_lr = lr *
    lr_mult``, the rate is ``lr_mult`` times the base schedule, as sssegmentation's
    ``PolyScheduler.updatelr`` (``ssseg/modules/models/schedulers/polyscheduler.py``)::

        target_lr = (1 - cur_iter / max_iters) ** power * (lr - min_lr) + min_lr
        param_group['lr'] = param_group['lr_multiplier'] * target_lr

    Args:
        base_lr: the group's initial rate (``optim.lr * lr_mult``), per step.
        iteration: completed optimizer steps, >= 0; values past ``max_iters`` are clamped.
        schedule: a schedule with ``max_iters`` resolved.
        lr_mult: the group's multiplier of ``optim.lr``; only used with
            ``min_lr_follows_lr_mult``.

    Returns:
        The learning rate, per step.
    """
    floor = schedule.min_lr * lr_mult if schedule.min_lr_follows_lr_mult else schedule.min_lr
    progress = min(iteration, schedule.max_iters) / schedule.max_iters
    regular = (base_lr - floor) * (1 - progress) ** schedule.poly_power + floor
    if iteration < schedule.warmup_iters:
        if schedule.warmup_style == "up_linear":
            start = base_lr * schedule.warmup_ratio  # UP's operation order, bit for bit
            gamma = (base_lr - start) / max(1, schedule.warmup_iters - 1)
            return start + gamma * iteration
        k = (1 - iteration / schedule.warmup_iters) * (1 - schedule.warmup_ratio)
        return regular * (1 - k)
    return regular


def set_learning_rates(
    optimizer: torch.optim.Optimizer, iteration: int, schedule: ScheduleConfig
) -> float:
    """Set every group's ``lr`` to :func:`poly_lr` of its ``base_lr`` (and ``lr_mult``).

    ``iteration`` counts optimizer steps, not micro-batches: with gradient accumulation
    (``train.grad_accum_steps``) the loop calls this once per step, before its first
    micro-batch, so the rates (warm-up included) are those of a run without accumulation.

    Returns:
        The rate of a group with multiplier 1 (the recipe's ``optim.lr`` scheduled), for logs
        and for MCIBI's memory momentum (sssegmentation passes this ``target_lr`` to the model).
    """
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["base_lr"], iteration, schedule, group["lr_mult"])
    base = optimizer.param_groups[0]["base_lr"] / optimizer.param_groups[0]["lr_mult"]
    return poly_lr(base, iteration, schedule)


def iterations_for_epochs(
    max_epochs: int, dataset_size: int, batch_size: int, world_size: int,
    epoch_padding: str = "none",
) -> int:
    """Optimizer steps of an epoch-based schedule, with ``batch_size`` per process (so the
    global batch is ``batch_size * world_size``). With gradient accumulation pass
    ``world_size * grad_accum_steps``: each micro-batch counts as one process
    (``trainer.data.order.resolve_schedule``).

    ``epoch_padding="none"``: ``ceil(max_epochs * dataset_size / (batch_size * world_size))``;
    the data order (``trainer.data.order.DataOrder``) is one stream of epochs, so the last step may
    reach into the next epoch's first images. ``"per_rank"`` / ``"per_rank_drop_last"``:
    ``max_epochs *`` :func:`padded_epoch_iterations` (schedule.epoch_padding).

    Raises:
        ValueError: any argument is not positive; an unknown ``epoch_padding``.
    """
    values = {"max_epochs": max_epochs, "dataset_size": dataset_size,
              "batch_size": batch_size, "world_size": world_size}
    bad = [f"{k}={v}" for k, v in values.items() if v <= 0]
    if bad:
        raise ValueError(f"cannot turn epochs into iterations: {', '.join(bad)} (must be > 0)")
    if epoch_padding in ("per_rank", "per_rank_drop_last"):
        return max_epochs * padded_epoch_iterations(
            dataset_size, batch_size, world_size, drop_last=epoch_padding == "per_rank_drop_last"
        )
    if epoch_padding != "none":
        raise ValueError(
            "epoch_padding must be 'none', 'per_rank' or 'per_rank_drop_last', "
            f"got {epoch_padding!r}"
        )
    return -(-max_epochs * dataset_size // (batch_size * world_size))


def padded_epoch_iterations(
    dataset_size: int, batch_size: int, world_size: int, drop_last: bool = False
) -> int:
    """Iterations of one padded epoch (``schedule.epoch_padding: per_rank``):
    ``ceil(ceil(dataset_size / world_size) / batch_size)``, the length of a batch sampler
    (``drop_last=False``) over a ``DistributedSampler`` that pads the epoch to
    ``world_size * ceil(dataset_size / world_size)`` samples
    (ModelTC/United-Perception@52aaeb9ed27a ``up/data/samplers/sampler.py``
    ``DistributedSampler``, ``batch_sampler.py`` ``BaseBatchSampler``; UP's ``max_epoch`` is
    that many iterations per epoch, ``up/runner/base_runner.py``). Cityscapes' 2975 images on
    4 GPUs x 2: 372; on 8 GPUs x 1: 372.

    With ``drop_last`` (``per_rank_drop_last``) each rank's loader drops its last partial
    batch: ``floor(ceil(dataset_size / world_size) / batch_size)``, sssegmentation's epoch
    (SegmentationBLWX/sssegmentation@eb1878c1 ``ssseg/modules/parallel/dataloader.py``: torch
    ``DistributedSampler``; ``drop_last: True`` in
    ``ssseg/configs/_base_/dataloaders/default_dataloader_bs*.py``). ADE20K's 20210 images on
    8 GPUs x 2: 1263.
    """
    per_rank = -(-dataset_size // world_size)
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)

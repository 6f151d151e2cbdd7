"""Parameter groups (mmcv custom-keys rule) and the poly + linear warm-up schedule."""

from __future__ import annotations

import math

import pytest
import torch

from segctl.recipe.schema import OptimConfig, ScheduleConfig
from trainer.models import build_segmentor
from trainer.optim import (
    build_optimizer,
    custom_keys,
    match_custom_key,
    param_groups,
    poly_lr,
    set_learning_rates,
)


@pytest.fixture(scope="module")
def model():
    return build_segmentor("segformer_mit_b0", num_classes=19)


def _group_of(groups, name):
    return next(g for g in groups if name in g["names"])


def test_custom_key_order_longest_then_alphabetical():
    keys = {"norm": {}, "head": {}, "pos_block": {}, "ab": {}, "aa": {}}
    assert match_custom_key("decode_head.norm.weight", keys) == "head"  # same length: 'head' < 'norm'
    assert match_custom_key("backbone.pos_block.0.norm", keys) == "pos_block"  # longest first
    assert match_custom_key("x.aab", keys) == "aa"
    assert match_custom_key("backbone.layers.0.2.weight", keys) is None


def test_param_groups_follow_segformer_custom_keys(model):
    optim = OptimConfig(lr=6e-5, weight_decay=0.01)
    assert custom_keys(optim) == {
        "pos_block": {"decay_mult": 0.0},
        "norm": {"decay_mult": 0.0},
        "head": {"lr_mult": 10.0},
    }
    groups = param_groups(model, optim)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(n for g in groups for n in g["names"]) == sorted(names)

    expected_no_decay = [n for n in names if "norm" in n and "head" not in n]
    expected_head = [n for n in names if "head" in n]
    no_decay = [n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]]
    head = [n for g in groups if g["lr"] == pytest.approx(6e-4) for n in g["names"]]
    assert sorted(no_decay) == sorted(expected_no_decay)
    assert sorted(head) == sorted(expected_head)
    # MiT-B0: per stage, patch-embed norm (2), per block norm1/norm2/attn.norm (2 blocks x 6);
    # attn.norm exists where sr_ratio > 1 (stages 0..2).
    assert len(no_decay) == 4 * 2 + 4 * 2 * 4 + 3 * 2 * 2
    assert len(head) == 17

    stage_norm = _group_of(groups, "backbone.layers.0.2.weight")  # its name has no 'norm'
    assert stage_norm["weight_decay"] == pytest.approx(0.01)
    assert stage_norm["lr"] == pytest.approx(6e-5)
    block_norm = _group_of(groups, "backbone.layers.0.1.0.norm1.weight")
    assert block_norm["weight_decay"] == 0.0 and block_norm["lr"] == pytest.approx(6e-5)
    head_bn = _group_of(groups, "decode_head.fusion_conv.bn.weight")
    assert head_bn["weight_decay"] == pytest.approx(0.01) and head_bn["lr"] == pytest.approx(6e-4)


def test_param_groups_without_custom_rules(model):
    optim = OptimConfig(lr=1e-3, head_lr_mult=1.0, no_decay_norm_and_pos=False)
    groups = param_groups(model, optim)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01


def test_backbone_lr_mult_scales_the_backbone_groups_only(model):
    optim = OptimConfig(type="sgd", lr=0.01, weight_decay=0.0, head_lr_mult=1.0,
                        no_decay_norm_and_pos=False, backbone_lr_mult=0.1)
    groups = param_groups(model, optim)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    lr_of = {n: g["lr"] for g in groups for n in g["names"]}
    assert sorted(lr_of) == sorted(names)
    assert any(n.startswith("backbone.") for n in names) and any(
        not n.startswith("backbone.") for n in names)
    for name in names:
        expected = 0.001 if name.startswith("backbone.") else 0.01
        assert lr_of[name] == pytest.approx(expected), name
    # with the SegFormer custom keys: multipliers combine, norms keep no decay
    combined = param_groups(model, OptimConfig(lr=6e-5, backbone_lr_mult=0.5))
    norm = _group_of(combined, "backbone.layers.0.1.0.norm1.weight")
    assert norm["lr"] == pytest.approx(3e-5) and norm["weight_decay"] == 0.0
    assert _group_of(combined, "decode_head.conv_seg.weight")["lr"] == pytest.approx(6e-4)
    optimizer = build_optimizer(model, optim)
    schedule = ScheduleConfig(max_iters=100, warmup_iters=0, val_interval=10,
                              checkpoint_interval=10, poly_power=0.9)
    assert set_learning_rates(optimizer, 50, schedule) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert sorted({round(g["lr"], 12) for g in optimizer.param_groups}) == pytest.approx(
        [0.001 * 0.5 ** 0.9, 0.01 * 0.5 ** 0.9])


@pytest.mark.slow
def test_backbone_lr_mult_on_the_mcibi_vit_large():
    """sssegmentation's ViT-L MCIBI configs: backbone_net at 0.1x, everything else at 1x."""
    model = build_segmentor("deeplabv3_mcibi_vit_large", num_classes=4)
    optim = OptimConfig(type="sgd", lr=0.001, weight_decay=0.0, head_lr_mult=1.0,
                        no_decay_norm_and_pos=False, backbone_lr_mult=0.1)
    groups = param_groups(model, optim)
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.0001, 0.001])
    backbone = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    for group in groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert in_backbone == {group["lr"] == pytest.approx(0.0001)}


def test_backbone_lr_mult_is_validated():
    with pytest.raises(ValueError):
        OptimConfig(backbone_lr_mult=0.0)
    with pytest.raises(ValueError, match="layer_decay_rate"):
        OptimConfig(backbone_lr_mult=0.1, layer_decay_rate=0.9)
    with pytest.raises(ValueError):
        OptimConfig(backbone_lr_mult=0.1, unknown=1)


def test_optimizer_types(model):
    adamw = build_optimizer(model, OptimConfig(type="adamw", betas=(0.8, 0.9)))
    assert adamw.__class__.__name__ == "AdamW" and adamw.param_groups[0]["betas"] == (0.8, 0.9)
    sgd = build_optimizer(model, OptimConfig(type="sgd", lr=0.01, momentum=0.8))
    assert sgd.__class__.__name__ == "SGD" and sgd.param_groups[0]["momentum"] == 0.8


def _mmcv_lr(base, it, max_iters, power, min_lr, warmup_iters, warmup_ratio):
    """mmcv PolyLrUpdaterHook.get_lr + LrUpdaterHook.get_warmup_lr('linear'), written out."""
    regular = (base - min_lr) * (1 - it / max_iters) ** power + min_lr
    if it < warmup_iters:
        k = (1 - it / warmup_iters) * (1 - warmup_ratio)
        return regular * (1 - k)
    return regular


@pytest.mark.parametrize("power,min_lr", [(1.0, 0.0), (0.9, 1e-4)])
def test_poly_schedule_matches_mmcv(power, min_lr):
    sched = ScheduleConfig(
        max_iters=1000, val_interval=100, checkpoint_interval=100, warmup_iters=100,
        warmup_ratio=1e-6, poly_power=power, min_lr=min_lr,
    )
    base = 6e-4
    for it in (0, 50, 100, 500, 999):
        want = _mmcv_lr(base, it, 1000, power, min_lr, 100, 1e-6)
        assert math.isclose(poly_lr(base, it, sched), want, rel_tol=1e-12)
    # first step: the regular rate at iteration 0 is the base rate, times warmup_ratio
    assert poly_lr(base, 0, sched) == pytest.approx(base * 1e-6)
    # end of warm-up: the regular poly rate
    assert poly_lr(base, 100, sched) == pytest.approx((base - min_lr) * 0.9**power + min_lr)
    # middle of warm-up, power 1, no min_lr: regular * (1 - 0.5 * (1 - 1e-6))
    if min_lr == 0.0 and power == 1.0:
        assert poly_lr(base, 50, sched) == pytest.approx(base * 0.95 * (0.5 + 0.5e-6))
        assert poly_lr(base, 999, sched) == pytest.approx(base * 0.001)


def _up_lrs(target, warmup_iter, warmup_ratio, max_iter, power, min_lr, steps):
    """ModelTC/United-Perception@52aaeb9ed27a up/utils/model/lr_helper.py, written out:
    BaseWarmScheduler (init_lr = warmup_ratio * target_lr), LinearWarmUpLR (gamma =
    (target - init) / max(1, warmup_iter - 1), lr = init + gamma * last_iter) and ChainIterLR
    over PolyLR (at last_iter == warmup_iter base_lrs becomes the group's current lr, then
    (base - min_lr) * (1 - last_iter / max_iter) ** power + min_lr). Iteration i trains with
    the rate of last_iter = i (BaseRunner.train steps the scheduler after each iteration)."""
    init = warmup_ratio * target
    gamma = (target - init) / max(1, warmup_iter - 1)
    rates, base, group_lr = [], target, target
    for last_iter in range(steps):
        if last_iter < warmup_iter:
            lr = init + gamma * last_iter
        else:
            if last_iter == warmup_iter:
                base = group_lr
            lr = (base - min_lr) * (1 - last_iter / max_iter) ** power + min_lr
        rates.append(lr)
        group_lr = lr
    return rates


@pytest.mark.parametrize("lr,warmup,ratio,max_iters,power", [
    (0.005, 500, 0.25, 66960, 0.9),     # configs/seg/hrnet/*.yaml: 0.000625 x 8
    (0.0006, 1500, 1e-6, 160000, 1.0),  # configs/seg/segformer/*.yaml decoder: 7.5e-5 x 8
])
def test_up_linear_warmup_is_united_perceptions_rule(lr, warmup, ratio, max_iters, power):
    sched = ScheduleConfig(max_iters=max_iters, val_interval=1860, checkpoint_interval=372,
                           warmup_iters=warmup, warmup_ratio=ratio, poly_power=power,
                           warmup_style="up_linear")
    want = _up_lrs(lr, warmup, ratio, max_iters, power, 0.0, warmup + 50)
    for it, rate in enumerate(want):
        got = poly_lr(lr, it, sched)
        if it < warmup:
            assert got == rate, it  # same operations in the same order
        else:
            assert math.isclose(got, rate, rel_tol=1e-12), it
    assert math.isclose(poly_lr(lr, max_iters - 1, sched),
                        lr * (1 / max_iters) ** power, rel_tol=1e-9)


def test_up_linear_warmup_by_hand():
    """The HRNet recipes' schedule (lr 0.005, 500 warm-up steps from 0.25 x lr, poly 0.9 over
    66960 steps), each value computed by hand from LinearWarmUpLR and PolyLR."""
    sched = ScheduleConfig(max_iters=66960, val_interval=1860, checkpoint_interval=372,
                           warmup_iters=500, warmup_ratio=0.25, poly_power=0.9,
                           warmup_style="up_linear")
    assert poly_lr(0.005, 0, sched) == pytest.approx(0.00125, rel=1e-15)
    assert poly_lr(0.005, 1, sched) == pytest.approx(0.00125 + 0.00375 / 499, rel=1e-15)
    assert poly_lr(0.005, 249, sched) == pytest.approx(0.0031212424849699398, rel=1e-15)
    assert poly_lr(0.005, 499, sched) == pytest.approx(0.005, rel=1e-15)  # lr reached at W - 1
    assert poly_lr(0.005, 500, sched) == pytest.approx(0.005 * (66460 / 66960) ** 0.9,
                                                       rel=1e-15)
    # mmcv's rule on the same numbers: the poly rate times a factor reaching 1 at step 500
    mmcv = sched.model_copy(update={"warmup_style": "mmcv"})
    assert poly_lr(0.005, 0, mmcv) == pytest.approx(0.00125, rel=1e-12)
    assert poly_lr(0.005, 499, mmcv) == pytest.approx(
        0.005 * (1 - 499 / 66960) ** 0.9 * (1 - 0.75 / 500), rel=1e-12)
    # no warm-up: both are plain poly
    for style in ("mmcv", "up_linear"):
        flat = sched.model_copy(update={"warmup_iters": 0, "warmup_style": style})
        assert poly_lr(0.005, 0, flat) == 0.005


def test_padded_epochs_count_the_batches_of_a_distributed_sampler():
    """ModelTC/United-Perception@52aaeb9ed27a up/data/samplers/sampler.py DistributedSampler:
    num_samples = ceil(N / world) per rank; BaseBatchSampler (drop_last False) then gives
    ceil(num_samples / batch) batches; base_runner: max_iter = max_epoch x that."""
    from trainer.optim import iterations_for_epochs, padded_epoch_iterations

    assert padded_epoch_iterations(2975, 2, 4) == 372       # ceil(744 / 2)
    assert padded_epoch_iterations(2975, 1, 8) == 372       # ceil(2975 / 8) = 372
    assert padded_epoch_iterations(10, 3, 3) == 2           # ceil(ceil(10 / 3) / 3) = ceil(4 / 3)
    assert iterations_for_epochs(180, 2975, 2, 4, "per_rank") == 66960
    assert iterations_for_epochs(180, 2975, 2, 4) == 66938  # the unpadded stream: ceil(66937.5)
    with pytest.raises(ValueError, match="epoch_padding"):
        iterations_for_epochs(1, 10, 2, 1, "drop_last")


def test_drop_last_epochs_count_whole_batches_per_rank():
    """sssegmentation@eb1878c1: torch DistributedSampler pads to ceil(N / world) per rank
    (ssseg/modules/parallel/dataloader.py), the DataLoader drops the last partial batch
    (drop_last True, ssseg/configs/_base_/dataloaders/default_dataloader_bs*.py)."""
    from trainer.data.order import DataOrder
    from trainer.optim import iterations_for_epochs, padded_epoch_iterations

    assert padded_epoch_iterations(20210, 2, 8, drop_last=True) == 1263  # ceil(2526.25) // 2
    assert iterations_for_epochs(130, 20210, 2, 8, "per_rank_drop_last") == 164190  # ADE20K
    assert iterations_for_epochs(180, 20210, 2, 8, "per_rank_drop_last") == 227340
    assert iterations_for_epochs(440, 3475, 2, 8, "per_rank_drop_last") == 95480  # train+val
    assert iterations_for_epochs(150, 30462, 4, 8, "per_rank_drop_last") == 142800  # LIP

    order = DataOrder(10, 2, 2, seed=0, epoch_padding="per_rank_drop_last")
    assert order.epoch_positions == 8  # ceil(10 / 2) = 5 per rank, 2 whole batches of 2
    first_epoch = [order.sample(i, r, j)[0] for i in range(2) for r in range(2) for j in range(2)]
    assert len(set(first_epoch)) == 8 and set(first_epoch) == set(order.permutation(0)[:8])
    assert order.sample(2, 0, 0)[0] == order.permutation(1)[0]  # iteration 2 starts epoch 1


def test_warmup_style_defaults_to_mmcv_and_is_validated():
    from pydantic import ValidationError

    base = {"max_iters": 10, "val_interval": 1, "checkpoint_interval": 1}
    assert ScheduleConfig(**base).warmup_style == "mmcv"
    assert ScheduleConfig(**base).epoch_padding == "none"
    with pytest.raises(ValidationError):
        ScheduleConfig(**base, warmup_style="linear")
    with pytest.raises(ValidationError):
        ScheduleConfig(**base, epoch_padding="per_gpu")


def test_set_learning_rates_per_group(model):
    optim = OptimConfig(lr=6e-5)
    sched = ScheduleConfig(max_iters=100, val_interval=10, checkpoint_interval=10, warmup_iters=0)
    opt = build_optimizer(model, optim)
    lr = set_learning_rates(opt, 50, sched)
    assert lr == pytest.approx(3e-5)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(group["lr_mult"] * 3e-5)


def test_min_lr_follows_lr_mult_is_sssegmentations_poly_scheduler(model):
    """SegmentationBLWX/sssegmentation@eb1878c1 ssseg/modules/models/schedulers/polyscheduler.py
    (``PolyScheduler.updatelr``) with ``basescheduler.py``'s ``min_lr = lr * 0.01`` default:

        target_lr = (1 - cur_iter / max_iters) ** power * (lr - min_lr) + min_lr
        param_group['lr'] = param_group['lr_multiplier'] * target_lr

    The MCIBI ViT-L COCO-Stuff row: lr 0.001, min_lr 1e-5, power 0.9, backbone_net x0.1.
    Expected values worked out by hand (max_iters 1000)."""
    optim = OptimConfig(type="sgd", lr=0.001, weight_decay=0.0, head_lr_mult=1.0,
                        no_decay_norm_and_pos=False, backbone_lr_mult=0.1)
    sched = ScheduleConfig(max_iters=1000, val_interval=10, checkpoint_interval=10,
                           warmup_iters=0, poly_power=0.9, min_lr=1e-5,
                           min_lr_follows_lr_mult=True)
    # iteration 500: 0.5 ** 0.9 = 0.535886731268146; (0.001 - 1e-5) * that + 1e-5
    heads_500 = 0.00054052786395546
    # iteration 999: 0.001 ** 0.9 = 0.001995262314968879; 0.00099 * that + 1e-5
    heads_999 = 1.1975309691819190e-05
    hand = {0: (0.001, 0.0001), 500: (heads_500, heads_500 / 10),
            999: (heads_999, heads_999 / 10), 1000: (1e-5, 1e-6)}
    for it, (heads, backbone) in hand.items():
        assert poly_lr(0.001, it, sched) == pytest.approx(heads, rel=1e-12)
        assert poly_lr(0.0001, it, sched, lr_mult=0.1) == pytest.approx(backbone, rel=1e-12)
    # mmcv's rule (the default) takes the same absolute floor from every group instead.
    mmcv = sched.model_copy(update={"min_lr_follows_lr_mult": False})
    assert poly_lr(0.0001, 1000, mmcv, lr_mult=0.1) == pytest.approx(1e-5)
    assert poly_lr(0.0001, 500, mmcv, lr_mult=0.1) == pytest.approx(
        (0.0001 - 1e-5) * 0.5 ** 0.9 + 1e-5)
    # through the optimizer: every group at its multiplier times the returned base rate
    with torch.device("meta"):
        vit = build_segmentor("deeplabv3_mcibi_vit_large", num_classes=4)
    opt = build_optimizer(vit, optim)
    assert set_learning_rates(opt, 500, sched) == pytest.approx(heads_500, rel=1e-12)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx(
        [heads_500 / 10, heads_500], rel=1e-12)


def test_layer_decay_rate_builds_internimage_layer_groups():
    from segctl.recipe.schema import OptimConfig
    from trainer.models import build_segmentor
    from trainer.optim import build_optimizer

    with torch.device("meta"):
        model = build_segmentor("upernet_internimage_t", num_classes=150)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-4, layer_decay_rate=0.9, head_lr_mult=1.0))
    scales = sorted({round(group["lr"] / 1e-4, 12) for group in optimizer.param_groups})
    assert scales[-1] == 1.0 and len(scales) > 20  # heads at full lr, one scale per layer
    assert scales[0] == pytest.approx(0.9 ** (len(scales) - 1))
    with torch.device("meta"):
        segformer = build_segmentor("segformer_mit_b0", num_classes=19)
    with pytest.raises(ValueError, match="InternImage backbones only"):
        build_optimizer(segformer, OptimConfig(layer_decay_rate=0.9))

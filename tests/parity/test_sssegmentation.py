"""Parity of the 18 DeepLabV3 + MCIBI recipes with their sssegmentation configs.

Every expected value below was read from SegmentationBLWX/sssegmentation at commit
:data:`COMMIT` (the configs moved from ``ssseg/configs/memorynet/memorynet_deeplabv3_*.py`` to
``ssseg/configs/mcibi/mcibi_deeplabv3_*.py`` in 222a73f9); each table cites its file. The test
compares them with the resolved recipes and with the models built on the meta device, so a
recipe or builder value that drifts from its source fails here. Where a recipe departs from its
source on purpose (its ``# departs from`` comments), the departure is spelled out here too
(:data:`HRNET_STEM_RELU`). The evaluation is compared through
``InferenceSettings.from_recipe``, single scale and ms+flip each with the inference block the
config gives it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from torch import nn

from tests.parity.support import (
    Source,
    align_corners_values,
    dropout_probabilities,
    meta_model,
    recipes_matching,
    resolved,
)
from trainer.data.order import resolve_schedule
from trainer.evaluate import InferenceSettings

REPO = "SegmentationBLWX/sssegmentation"
COMMIT = "eb1878c112402e86a92ee6958778272065bf59b9"


def src(path: str) -> Source:
    return Source(REPO, COMMIT, path)


#: MCIBI_SEGMENTOR_CFG: what every config starts from.
BASE = src("ssseg/configs/_base_/segmentors/mcibi.py")
BASE_VALUES = {
    "align_corners": False,
    "norm": "SyncBatchNorm",
    "optimizer": "SGD",
    "momentum": 0.9,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "poly_power": 0.9,
    "warmup": None,
    "eval_interval_epochs": 10,
    "save_interval_epochs": 1,
    "head_dropout": 0.1,
    "aux_dropout": 0.1,
    "loss_aux": 0.4,
    "loss_cls_stage1": 0.4,
    "base_momentum": 0.9,
    "momentum_base_lr": 0.01,
    "use_loss": True,
    "dilations": (1, 12, 24, 36),
    "fp16_cfg": None,  # no fp16_cfg key: ssseg/train.py falls back to {'type': None}
}
#: BaseScheduler.__init__: ``self.min_lr = min_lr if min_lr is not None else lr * 0.01``.
BASE_SCHEDULER = src("ssseg/modules/models/schedulers/basescheduler.py")
MIN_LR_FACTOR = 0.01
#: PolyScheduler.updatelr: ``param_group['lr'] = param_group.get('lr_multiplier', 1.0) *
#: target_lr``: the floor scales with each group's multiplier.
POLY_SCHEDULER = src("ssseg/modules/models/schedulers/polyscheduler.py")
#: Trainer.__init__: ``torch.backends.cuda.matmul.allow_tf32 = False`` and
#: ``torch.backends.cudnn.allow_tf32 = False``; no fp16_cfg -> fp16_type None (fp32).
TRAINER = src("ssseg/train.py")
#: BuildDistributedDataloader: DistributedSampler (pads to a multiple of the world size) and
#: the loader's drop_last True: iterations per epoch = ceil(N / 8) // batch_per_gpu.
DATALOADER = src("ssseg/modules/parallel/dataloader.py")
GPUS = 8  # expected_total_train_bs_for_assert = batch_size_per_gpu * 8 in every loader config

#: Dataloader configs: global batch -> (batch per GPU, source).
LOADERS = {
    16: (2, src("ssseg/configs/_base_/dataloaders/default_dataloader_bs16.py")),
    32: (4, src("ssseg/configs/_base_/dataloaders/default_dataloader_bs32.py")),
    40: (5, src("ssseg/configs/_base_/dataloaders/default_dataloader_bs40.py")),
}

#: Dataset configs (train/test pipelines) and the dataset classes (num_classes, train size).
DATASETS = {
    "ade20k": dict(
        source=src("ssseg/configs/_base_/datasets/ade20k_512x512.py"),
        preset="ade20k", crop=(512, 512), train_scale=(2048, 512), ratio_range=(0.5, 2.0),
        keep_ratio=True, cat_max_ratio=0.75, test_scale=(2048, 512), test_keep_ratio=True,
        train_set="train", test_set="val", flip_pairs=[], rotation=None,
        num_classes=150, train_images=20210,  # ssseg/modules/datasets/ade20k.py
    ),
    "cityscapes": dict(
        source=src("ssseg/configs/_base_/datasets/cityscapes_512x1024.py"),
        preset="cityscapes", crop=(512, 1024), train_scale=(2048, 1024), ratio_range=(0.5, 2.0),
        keep_ratio=True, cat_max_ratio=0.75, test_scale=(2048, 1024), test_keep_ratio=True,
        train_set="trainval", test_set="test",  # set by every MCIBI Cityscapes config
        flip_pairs=[], rotation=None,
        num_classes=19, train_images=2975 + 500,  # ssseg/modules/datasets/cityscapes.py
    ),
    "cocostuff10k": dict(
        source=src("ssseg/configs/_base_/datasets/cocostuff10k_512x512.py"),
        preset="coco_stuff10k_182", crop=(512, 512), train_scale=(2048, 512),
        ratio_range=(0.5, 2.0), keep_ratio=True, cat_max_ratio=0.75, test_scale=(2048, 512),
        test_keep_ratio=True, train_set="train", test_set="test", flip_pairs=[], rotation=None,
        num_classes=182, train_images=9000,  # ssseg/modules/datasets/coco.py COCOStuff10kDataset
    ),
    "lip": dict(
        source=src("ssseg/configs/_base_/datasets/lip_473x473.py"),
        preset="lip", crop=(473, 473), train_scale=(520, 520), ratio_range=(0.75, 1.25),
        keep_ratio=False, cat_max_ratio=0.75, test_scale=(473, 473), test_keep_ratio=False,
        train_set="train", test_set="val", flip_pairs=[(15, 14), (17, 16), (19, 18)],
        rotation=(30, 0.6), num_classes=20, train_images=30462,  # ssseg/modules/datasets/lip.py
    ),
}

#: Backbones: DEFAULT_MODEL_URLS[structure_type] in ssseg/modules/models/backbones/*.py.
BACKBONE_WEIGHTS = {
    "r50": ("https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
            src("ssseg/modules/models/backbones/resnet.py")),  # resnet50conv3x3stem
    "r101": ("https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
             src("ssseg/modules/models/backbones/resnet.py")),  # resnet101conv3x3stem
    "resnest101": ("https://download.openmmlab.com/pretrain/third_party/resnest101_d2-f3b931b2.pth",
                   src("ssseg/modules/models/backbones/resnest.py")),
    "hrnetv2_w48": ("https://download.openmmlab.com/pretrain/third_party/hrnetv2_w48-d2186c55.pth",
                    src("ssseg/modules/models/backbones/hrnet.py")),
    "vit_large": ("https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
                  "jx_vit_large_p16_384-b3be5167.pth",
                  src("ssseg/modules/models/backbones/vit.py")),  # jx_vit_large_p16_384
}

#: docs/modelzoo/mcibi/README.md: the "model" and "log" links of each row.
MODELZOO = src("docs/modelzoo/mcibi/README.md")
MODELSTORE = "https://github.com/SegmentationBLWX/modelstore/releases/download/ssseg_mcibi/"

S6 = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
S5 = (0.5, 0.75, 1.0, 1.25, 1.5)
WHOLE = ("whole", None, None)
SLIDE_512 = ("slide", (512, 512), (341, 341))
SLIDE_CITY = ("slide", (1024, 512), (341, 341))  # cropsize (h, w) as base.py inference reads it
#: MCIBI_SEGMENTOR_CFG inference (BASE): forward mode whole, tta multiscale [1], flip False,
#: use_probs_before_resize False: the single scale of every config that keeps it
#: ("--single-scale": ``SEGMENTOR_CFG['inference'].copy()``), as (forward, probs before resize).
BASE_SINGLE = (WHOLE, False)
#: ``eval.average`` for sssegmentation's ``use_probs_before_resize`` (trainer/evaluate.py
#: follows base.py ``inference``/``auginference`` and test.py's merge for both).
AVERAGE = {True: "probs_before_resize", False: "logits"}


def row(config: str, dataset: str, backbone: str, *, epochs: int, batch: int = 16,
        lr: float = BASE_VALUES["lr"], weight_decay: float = BASE_VALUES["weight_decay"],
        min_lr: float | None = None, backbone_lr_mult: float = 1.0,
        momentum_base_lr: float = BASE_VALUES["momentum_base_lr"],
        use_loss: bool = BASE_VALUES["use_loss"], act: str = "relu",
        downsample_stride: int = 1, dilations: tuple[int, ...] = BASE_VALUES["dilations"],
        mcibi_version: bool = False, vit_drop_rate: float | None = None,
        single: tuple = BASE_SINGLE, tta: tuple, store: str) -> dict:
    """One config's values. ``single``: ((mode, cropsize, stride), use_probs_before_resize) of
    the active inference (``segctl``'s single scale and training-time validation, which ssseg's
    train.py runs with ``inference`` alone); ``tta``: (forward, multiscale, flip,
    use_probs_before_resize) of the multi-scale/flip inference (the commented block of the
    ADE20K/COCO-Stuff/LIP configs, the active one of Cityscapes)."""
    return dict(
        source=src(f"ssseg/configs/mcibi/{config}"), dataset=dataset, backbone=backbone,
        epochs=epochs, batch=batch, lr=lr, weight_decay=weight_decay, min_lr=min_lr,
        backbone_lr_mult=backbone_lr_mult, momentum_base_lr=momentum_base_lr, use_loss=use_loss,
        act=act, downsample_stride=downsample_stride, dilations=dilations,
        mcibi_version=mcibi_version, vit_drop_rate=vit_drop_rate, single=single, tta=tta,
        store=store,
    )


#: Recipe -> the values of its config (ssseg/configs/mcibi/<config>), literal as the file has
#: them; defaults of :func:`row` are MCIBI_SEGMENTOR_CFG's (:data:`BASE_VALUES`).
CONFIGS: dict[str, dict] = {
    # --- ADE20K (DATASET_CFG_ADE20k_512x512) ---
    "ade20k/deeplabv3_mcibi_r50_512x512_130e.yaml": row(
        "mcibi_deeplabv3_resnet50os8_ade20k.py", "ade20k", "r50", epochs=130,
        tta=(WHOLE, S6, True, True), store="mcibi_deeplabv3_r50_ade20k"),
    "ade20k/deeplabv3_mcibi_r101_512x512_130e.yaml": row(
        "mcibi_deeplabv3_resnet101os8_ade20k.py", "ade20k", "r101", epochs=130,
        tta=(WHOLE, S6, True, True), store="mcibi_deeplabv3_r101_ade20k"),
    "ade20k/deeplabv3_mcibi_resnest101_512x512_180e.yaml": row(
        "mcibi_deeplabv3_resnest101os8_ade20k.py", "ade20k", "resnest101", epochs=180,
        lr=0.004, momentum_base_lr=0.004,
        tta=(WHOLE, S6, True, True), store="mcibi_deeplabv3_s101_ade20k"),
    "ade20k/deeplabv3_mcibi_hrnetv2_w48_512x512_180e.yaml": row(
        "mcibi_deeplabv3_hrnetv2w48_ade20k.py", "ade20k", "hrnetv2_w48", epochs=180,
        lr=0.004, momentum_base_lr=0.004,
        tta=(SLIDE_512, S6, True, True), store="mcibi_deeplabv3_hrnetv2w48_ade20k"),
    "ade20k/deeplabv3_mcibi_vit_large_512x512_130e.yaml": row(
        "mcibi_deeplabv3_vitlarge_ade20k.py", "ade20k", "vit_large", epochs=130,
        weight_decay=0.0, backbone_lr_mult=0.1, dilations=(1, 6, 12, 18), vit_drop_rate=0.0,
        single=(SLIDE_512, True), tta=(SLIDE_512, S6, True, True),
        store="mcibi_deeplabv3_vitlarge_ade20k"),
    # --- Cityscapes (DATASET_CFG_CITYSCAPES_512x1024, train 'trainval', test 'test') ---
    "cityscapes/deeplabv3_mcibi_r50_512x1024_440e.yaml": row(
        "mcibi_deeplabv3_resnet50os8_cityscapes.py", "cityscapes", "r50", epochs=440,
        use_loss=False, momentum_base_lr=0.01 * 0.9, single=(SLIDE_CITY, True),
        tta=(SLIDE_CITY, S6, True, True), store="mcibi_deeplabv3_r50_cityscapes"),
    "cityscapes/deeplabv3_mcibi_r101_512x1024_440e.yaml": row(
        "mcibi_deeplabv3_resnet101os8_cityscapes.py", "cityscapes", "r101", epochs=440,
        use_loss=False, momentum_base_lr=0.01 * 0.9, single=(SLIDE_CITY, True),
        tta=(SLIDE_CITY, S6, True, True), store="mcibi_deeplabv3_r101_cityscapes"),
    "cityscapes/deeplabv3_mcibi_resnest101_512x1024_500e.yaml": row(
        "mcibi_deeplabv3_resnest101os8_cityscapes.py", "cityscapes", "resnest101", epochs=500,
        use_loss=False, momentum_base_lr=0.01 * 0.9, single=(SLIDE_CITY, True),
        tta=(SLIDE_CITY, S6, True, True), store="mcibi_deeplabv3_s101_cityscapes"),
    "cityscapes/deeplabv3_mcibi_hrnetv2_w48_512x1024_500e.yaml": row(
        "mcibi_deeplabv3_hrnetv2w48_cityscapes.py", "cityscapes", "hrnetv2_w48", epochs=500,
        use_loss=False, momentum_base_lr=0.01 * 0.9, downsample_stride=2, mcibi_version=True,
        single=(SLIDE_CITY, True), tta=(SLIDE_CITY, S6, True, True),
        store="mcibi_deeplabv3_hrnetv2w48_cityscapes"),
    # --- COCO-Stuff-10k (DATASET_CFG_COCOStuff10k_512x512, num_classes 182) ---
    "coco_stuff10k/deeplabv3_mcibi_r50_512x512_110e.yaml": row(
        "mcibi_deeplabv3_resnet50os8_cocostuff10k.py", "cocostuff10k", "r50", epochs=110,
        lr=0.001, weight_decay=1e-4, use_loss=False, momentum_base_lr=0.001 * 0.9,
        tta=(WHOLE, S5, True, True), store="mcibi_deeplabv3_r50_cocostuff10k"),
    "coco_stuff10k/deeplabv3_mcibi_r101_512x512_110e.yaml": row(
        "mcibi_deeplabv3_resnet101os8_cocostuff10k.py", "cocostuff10k", "r101", epochs=110,
        lr=0.001, weight_decay=1e-4, use_loss=False, momentum_base_lr=0.001 * 0.9,
        tta=(WHOLE, S6, True, True), store="mcibi_deeplabv3_r101_cocostuff10k"),
    "coco_stuff10k/deeplabv3_mcibi_resnest101_512x512_150e.yaml": row(
        "mcibi_deeplabv3_resnest101os8_cocostuff10k.py", "cocostuff10k", "resnest101",
        epochs=150, batch=32, lr=0.001, weight_decay=5e-4, min_lr=1e-4, use_loss=False,
        momentum_base_lr=0.001 * 0.9,
        tta=(WHOLE, S5, True, True), store="mcibi_deeplabv3_s101_cocostuff10k"),
    "coco_stuff10k/deeplabv3_mcibi_hrnetv2_w48_512x512_110e.yaml": row(
        "mcibi_deeplabv3_hrnetv2w48_cocostuff10k.py", "cocostuff10k", "hrnetv2_w48", epochs=110,
        lr=0.001, weight_decay=1e-4, use_loss=False, momentum_base_lr=0.001 * 0.9,
        tta=(SLIDE_512, S5, True, True), store="mcibi_deeplabv3_hrnetv2w48_cocostuff10k"),
    "coco_stuff10k/deeplabv3_mcibi_vit_large_512x512_110e.yaml": row(
        "mcibi_deeplabv3_vitlarge_cocostuff10k.py", "cocostuff10k", "vit_large", epochs=110,
        lr=0.001, weight_decay=0.0, backbone_lr_mult=0.1, use_loss=False,
        momentum_base_lr=0.001 * 0.9, dilations=(1, 12, 24, 36), vit_drop_rate=0.0,
        single=(SLIDE_512, True), tta=(SLIDE_512, S6, True, True),
        store="mcibi_deeplabv3_vitlarge_cocostuff10k"),
    # --- LIP (DATASET_CFG_LIP_473x473) ---
    "lip/deeplabv3_mcibi_r50_473x473_150e.yaml": row(
        "mcibi_deeplabv3_resnet50os8_lip.py", "lip", "r50", epochs=150, batch=32,
        use_loss=False, act="leaky_relu",  # act_cfg LeakyReLU negative_slope 0.01
        tta=(WHOLE, (1.0,), True, False), store="mcibi_deeplabv3_r50_lip"),
    "lip/deeplabv3_mcibi_r101_473x473_150e.yaml": row(
        "mcibi_deeplabv3_resnet101os8_lip.py", "lip", "r101", epochs=150, batch=32,
        use_loss=False, act="leaky_relu",
        tta=(WHOLE, (1.0,), True, False), store="mcibi_deeplabv3_r101_lip"),
    "lip/deeplabv3_mcibi_resnest101_473x473_150e.yaml": row(
        "mcibi_deeplabv3_resnest101os8_lip.py", "lip", "resnest101", epochs=150, batch=40,
        lr=0.007, use_loss=False, momentum_base_lr=0.007,
        tta=(WHOLE, (1.0,), True, False), store="mcibi_deeplabv3_s101_lip"),
    "lip/deeplabv3_mcibi_hrnetv2_w48_473x473_150e.yaml": row(
        "mcibi_deeplabv3_hrnetv2w48_lip.py", "lip", "hrnetv2_w48", epochs=150, batch=40,
        lr=0.007, use_loss=False, momentum_base_lr=0.007, downsample_stride=2,
        tta=(WHOLE, (1.0,), True, False), store="mcibi_deeplabv3_hrnetv2w48_lip"),
}

#: Deliberate departure (the recipes' ``# departs from`` comments): the published MCIBI HRNet
#: models have no ReLU after the stem's bn1 in every row, while the configs ask for it
#: (mcibi_version True) only in the Cityscapes row: ssseg's backbones/hrnet.py had no such ReLU
#: until 4602275d (2025-06), and 85efec48 keeps the old stem as mcibi_version "to align with
#: paper results".
HRNET_STEM_RELU = False
HRNET = src("ssseg/modules/models/backbones/hrnet.py")
#: The ViT-L backbone of both ViT configs: img_size (512, 512), out_indices (9, 14, 19, 23),
#: head norm_cfg LayerNorm eps 1e-6 on each tap, final_norm False, drop_rate 0.0 (since
#: c99d1e5c), with_cls_token True.
VIT = dict(img_size=(512, 512), out_indices=(9, 14, 19, 23), final_norm=False, taps_eps=1e-6,
           with_cls_token=True)

PATHS = recipes_matching("*/deeplabv3_mcibi_*.yaml")


def iters_per_epoch(cfg: dict) -> int:
    per_gpu = LOADERS[cfg["batch"]][0]
    return math.ceil(DATASETS[cfg["dataset"]]["train_images"] / GPUS) // per_gpu


def test_the_table_covers_every_mcibi_recipe():
    assert sorted(CONFIGS) == PATHS
    assert len(PATHS) == 18


@pytest.mark.parametrize("path", PATHS)
def test_data_matches_the_dataset_config(path):
    cfg = CONFIGS[path]
    ds = DATASETS[cfg["dataset"]]
    data, where = resolved(path).data, f"{path} vs {ds['source']}"
    assert data.dataset == ds["preset"], where
    assert tuple(data.crop_size) == ds["crop"], where
    assert tuple(data.train_scale) == ds["train_scale"], where
    assert tuple(data.ratio_range) == ds["ratio_range"], where
    assert data.keep_ratio == ds["keep_ratio"], where
    assert data.cat_max_ratio == ds["cat_max_ratio"], where
    assert data.pad_position == "center", where  # Padding: top = (out - h) // 2
    assert [tuple(p) for p in data.flip_swap_pairs] == ds["flip_pairs"], where
    rotation = data.random_rotation
    assert (None if rotation is None else (rotation.max_degrees, rotation.prob)) == ds["rotation"]
    assert data.train_split == {"trainval": "train+val"}.get(ds["train_set"], ds["train_set"])
    if cfg["dataset"] == "cityscapes":
        # 'test' is scored on the server (reference.split test); in-training validation runs
        # on val (labelled, though seen in training), where ssseg's evaluate() reads 'test'.
        assert (data.val_split, resolved(path).reference.split) == ("val", "test"), where
    else:
        assert data.val_split == ds["test_set"], where
    from segctl.recipe.datasets import DATASET_PRESETS

    assert DATASET_PRESETS[data.dataset].num_classes == ds["num_classes"], where


@pytest.mark.parametrize("path", PATHS)
def test_optimizer_schedule_and_numerics(path):
    cfg = CONFIGS[path]
    recipe, where = resolved(path), f"{path} vs {cfg['source']}"
    optim, sched, train = recipe.optim, recipe.schedule, recipe.train
    assert optim.type == BASE_VALUES["optimizer"].lower(), where
    assert (optim.lr, optim.momentum) == (cfg["lr"], BASE_VALUES["momentum"]), where
    assert optim.weight_decay == cfg["weight_decay"], where
    assert optim.backbone_lr_mult == cfg["backbone_lr_mult"], where
    # params_rules {} (or backbone_net only): no other multiplier, decay on every parameter
    assert (optim.head_lr_mult, optim.no_decay_norm_and_pos) == (1.0, False), where
    assert (optim.grad_clip, optim.layer_decay_rate) == (None, None), where  # no clipgrad_cfg

    assert (sched.max_epochs, sched.max_iters) == (cfg["epochs"], None), where
    assert sched.warmup_iters == 0, f"{where}; {BASE} has no warmup_cfg"
    assert sched.poly_power == BASE_VALUES["poly_power"], where
    min_lr = cfg["min_lr"] if cfg["min_lr"] is not None else cfg["lr"] * MIN_LR_FACTOR
    assert sched.min_lr == pytest.approx(min_lr, rel=1e-12), f"{where}; {BASE_SCHEDULER}"
    assert sched.min_lr_follows_lr_mult is True, f"{where}; {POLY_SCHEDULER}"
    per_epoch = iters_per_epoch(cfg)
    assert sched.epoch_padding == "per_rank_drop_last", f"{where}; {DATALOADER}"
    total = resolve_schedule(recipe, DATASETS[cfg["dataset"]]["train_images"], GPUS)
    assert total.schedule.max_iters == cfg["epochs"] * per_epoch, f"{where}; {DATALOADER}"
    assert sched.val_interval == BASE_VALUES["eval_interval_epochs"] * per_epoch, where
    assert sched.checkpoint_interval == BASE_VALUES["save_interval_epochs"] * per_epoch, where

    per_gpu, loader = LOADERS[cfg["batch"]]
    assert train.batch_size == per_gpu, f"{path} vs {loader}"
    assert recipe.cluster.nodes * recipe.cluster.gpus_per_node == GPUS, path
    assert (train.precision, train.tf32) == ("fp32", False), f"{path} vs {TRAINER}"
    assert train.sync_bn is (BASE_VALUES["norm"] == "SyncBatchNorm"), where
    assert (train.ema_decay, train.loss, train.deterministic) == (None, "ce", False), where


@pytest.mark.parametrize("path", PATHS)
def test_evaluation_matches_the_inference_config(path):
    cfg = CONFIGS[path]
    ds = DATASETS[cfg["dataset"]]
    recipe = resolved(path)
    ev, where = recipe.eval, f"{path} vs {cfg['source']}"
    test_size = (ds["test_scale"], ds["test_keep_ratio"])
    (forward, probs) = cfg["single"]
    single = InferenceSettings.from_recipe(recipe, ms_flip=False)
    assert (single.mode, single.crop_size, single.stride) == forward, where
    assert (single.scales, single.flip, single.average) == ((1.0,), False, AVERAGE[probs]), where
    assert (single.test_scale, single.keep_ratio) == test_size, f"{path} vs {ds['source']}"
    forward, scales, flip, probs = cfg["tta"]
    assert flip, where  # every published second figure is flipped
    ms_flip = InferenceSettings.from_recipe(recipe, ms_flip=True)
    assert (ms_flip.mode, ms_flip.crop_size, ms_flip.stride) == forward, where
    assert (ms_flip.scales, ms_flip.flip, ms_flip.average) == (scales, True, AVERAGE[probs]), where
    assert (ms_flip.test_scale, ms_flip.keep_ratio) == test_size, f"{path} vs {ds['source']}"
    assert ev.ms_flip == (cfg["dataset"] == "cityscapes"), where  # only the ms+flip is published
    assert single.size_divisor is ms_flip.size_divisor is None, where
    # auginference's fixed_seg_target_pairs: the train pipeline's RandomFlip ones (base.py)
    pairs = tuple(tuple(pair) for pair in ds["flip_pairs"])
    assert single.flip_swap_pairs == ms_flip.flip_swap_pairs == pairs, f"{path} vs {ds['source']}"


@pytest.mark.parametrize("path", PATHS)
def test_weights_and_published_artefacts(path):
    cfg = CONFIGS[path]
    recipe = resolved(path)
    url, backbone_file = BACKBONE_WEIGHTS[cfg["backbone"]]
    assert recipe.model.init_checkpoint == url, f"{path} vs {backbone_file}"
    assert recipe.model.name == f"deeplabv3_mcibi_{cfg['backbone']}", path
    ref = recipe.reference
    assert ref.checkpoint == MODELSTORE + cfg["store"] + ".pth", f"{path} vs {MODELZOO}"
    assert ref.log == MODELSTORE + cfg["store"] + ".log", f"{path} vs {MODELZOO}"
    assert ref.split == ("test" if cfg["dataset"] == "cityscapes" else "val"), path
    assert cfg["source"].path in ref.source and "memorynet" not in path, path


@pytest.mark.parametrize("path", PATHS)
def test_model_on_the_meta_device(path):
    cfg = CONFIGS[path]
    where = f"{path} vs {cfg['source']}"
    model = meta_model(path)
    head = model.decode_head
    num_classes = DATASETS[cfg["dataset"]]["num_classes"]
    assert head.decoder_stage1[-1].out_channels == num_classes, where
    assert head.decoder_stage2[-1].out_channels == num_classes, where
    assert head.memory_module.memory.shape[0] == num_classes, where
    # head.update_cfg.momentum_cfg, head.use_loss, context dilations, downsample_backbone
    assert model.base_momentum == BASE_VALUES["base_momentum"], where
    assert model.momentum_base_lr == pytest.approx(cfg["momentum_base_lr"], rel=1e-12), where
    assert model.use_memory_loss == cfg["use_loss"], where
    assert head.context_within_image_module.dilations == cfg["dilations"], where
    assert hasattr(model, "downsample_backbone") == (cfg["downsample_stride"] == 2), where
    # act_cfg: LeakyReLU(0.01) in every head block of the LIP ResNet rows, ReLU elsewhere
    heads = [m for name, m in model.named_modules()
             if not name.startswith("backbone") and isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    kinds = {type(m) for m in heads}
    assert kinds == ({nn.LeakyReLU} if cfg["act"] == "leaky_relu" else {nn.ReLU}), where
    if cfg["act"] == "leaky_relu":
        assert {m.negative_slope for m in heads} == {0.01}, where
    # dropouts: head dropout 0.1 before both classifiers, 0.1 in every auxiliary decoder
    drops = dropout_probabilities(model)
    aux = {k: p for k, p in drops.items() if k.startswith("auxiliary_head")}
    assert {k: p for k, p in drops.items() if k.startswith("decode_head")} == {
        "decode_head.decoder_stage1.3": BASE_VALUES["head_dropout"],
        "decode_head.decoder_stage2.3": BASE_VALUES["head_dropout"],
    }, where
    assert set(aux.values()) <= {BASE_VALUES["aux_dropout"]}, where
    assert not dropout_probabilities(model, "backbone"), where  # ViT drop_rate 0.0, CNNs none
    assert set(align_corners_values(model).values()) <= {BASE_VALUES["align_corners"]}, where
    # auxiliary decoders and loss weights (losses: loss_aux* 0.4, loss_cls_stage1 0.4)
    weights = {"stage1": BASE_VALUES["loss_cls_stage1"]}
    if cfg["backbone"] == "hrnetv2_w48":  # auxiliary None, losses.pop('loss_aux')
        assert model.auxiliary_head is None and not aux, where
        assert model.backbone.stem_relu is HRNET_STEM_RELU, f"{where}; {HRNET}"
        assert cfg["mcibi_version"] == (cfg["dataset"] == "cityscapes"), where
    elif cfg["backbone"] == "vit_large":  # three upsampling auxiliary decoders
        vit = model.backbone
        assert (vit.img_size, vit.out_indices, vit.final_norm, vit.with_cls_token) == (
            VIT["img_size"], VIT["out_indices"], VIT["final_norm"], VIT["with_cls_token"]), where
        assert [n.eps for n in vit.norm_layers] == [VIT["taps_eps"]] * 4, where
        assert cfg["vit_drop_rate"] == vit.drop_after_pos.p == 0.0, where
        assert isinstance(model.auxiliary_head, nn.ModuleList), where
        assert len(model.auxiliary_head) == 3 and len(aux) == 3, where
        weights.update({f"aux{i}": BASE_VALUES["loss_aux"] for i in range(3)})
    else:  # auxiliary: in_channels 1024, out_channels 512, dropout 0.1
        assert model.auxiliary_head.convs[0].conv.in_channels == 1024, where
        assert model.auxiliary_head.convs[0].conv.out_channels == 512, where
        weights["aux"] = BASE_VALUES["loss_aux"]
    assert model.loss_weights == weights, where


# --- COCO-Stuff: the 171 train ids on disk -> sssegmentation's 182 labels ---------------------

COCO_DATASET = src("ssseg/modules/datasets/coco.py")  # clsid2label: i -> i - 1, 0 -> ignore
#: The 11 COCO-Stuff category ids (1-based) never annotated, and their names in
#: COCOStuff10kDataset.classnames (index id - 1).
UNANNOTATED = {12: "street sign", 26: "hat", 29: "shoe", 30: "eye glasses", 45: "plate",
               66: "mirror", 68: "window", 69: "desk", 71: "door", 83: "blender",
               91: "hair brush"}


def test_coco_stuff_182_preset_is_sssegmentations_class_list():
    from segctl.recipe.datasets import (
        COCO_STUFF_182_CLASSES,
        COCO_STUFF_CLASSES,
        COCO_STUFF_UNANNOTATED_IDS,
        DATASET_PRESETS,
    )
    from trainer.data.convert.coco_stuff import UNUSED_IDS

    preset = DATASET_PRESETS["coco_stuff10k_182"]
    assert preset.num_classes == 182 and preset.classes == COCO_STUFF_182_CLASSES
    assert (preset.ignore_index, preset.reduce_zero_label) == (255, False)
    assert (preset.train_split, preset.val_split) == ("train", "test")
    assert tuple(UNANNOTATED) == COCO_STUFF_UNANNOTATED_IDS == UNUSED_IDS
    assert {i: COCO_STUFF_182_CLASSES[i - 1] for i in UNANNOTATED} == UNANNOTATED, COCO_DATASET
    assert COCO_STUFF_182_CLASSES[:3] == ("person", "bicycle", "car"), COCO_DATASET
    assert COCO_STUFF_182_CLASSES[91:93] == ("banner", "blanket"), COCO_DATASET  # stuff: 92..
    assert COCO_STUFF_182_CLASSES[-1] == "wood", COCO_DATASET
    kept = tuple(c for i, c in enumerate(COCO_STUFF_182_CLASSES, 1) if i not in UNANNOTATED)
    assert kept == COCO_STUFF_CLASSES


def test_coco_stuff_train_ids_map_back_to_sssegmentation_labels():
    """Train id t (``segctl data prepare coco_stuff10k``: the t-th annotated category id) is
    sssegmentation's label (category id - 1); pinned at hand-checked points."""
    from trainer.data.convert.coco_stuff import coco_stuff_to_train_ids
    from trainer.data.coco_stuff import train_ids_to_sssegmentation_182

    hand = {0: 0, 10: 10, 11: 12, 22: 23, 23: 24, 24: 26, 25: 27, 26: 30, 39: 43, 40: 45,
            59: 64, 60: 66, 61: 69, 62: 71, 79: 89, 80: 91, 170: 181, 255: 255}
    ids = np.array(list(hand), np.uint8)
    np.testing.assert_array_equal(train_ids_to_sssegmentation_182(ids), list(hand.values()))
    # the exact inverse of the converter: every annotated raw id i -> train id -> i - 1
    raw = np.array([i for i in range(183) if i not in UNANNOTATED], np.uint8)  # 0: unlabeled
    labels = train_ids_to_sssegmentation_182(coco_stuff_to_train_ids(raw, "one-based"))
    np.testing.assert_array_equal(labels, np.where(raw == 0, 255, raw.astype(int) - 1))
    assert not set(np.unique(labels)) & {i - 1 for i in UNANNOTATED}
    with pytest.raises(ValueError):
        train_ids_to_sssegmentation_182(np.array([256]))


def test_coco_stuff_182_layout_reads_the_prepared_files(tmp_path):
    from PIL import Image

    from trainer.data.layouts import build_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "imageLists").mkdir()
    Image.new("RGB", (4, 1)).save(tmp_path / "images" / "a.jpg")
    Image.fromarray(np.array([[0, 11, 170, 255]], np.uint8)).save(
        tmp_path / "annotations" / "a_labelTrainIds.png")
    (tmp_path / "imageLists" / "test.txt").write_text("a\n")
    sample = build_dataset("coco_stuff10k_182", tmp_path, "test")[0]
    np.testing.assert_array_equal(sample["label"], [[0, 12, 181, 255]])
    plain = build_dataset("coco_stuff10k", tmp_path, "test")[0]
    np.testing.assert_array_equal(plain["label"], [[0, 11, 170, 255]])

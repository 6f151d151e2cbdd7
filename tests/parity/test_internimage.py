"""UperNet + InternImage ADE20K recipes against OpenGVLab/InternImage's configs.

Every expected value below was read from the source files cited beside it (OpenGVLab/InternImage
at commit 31c962dc6c1c: ``segmentation/configs/ade20k/upernet_internimage_*_160k_ade20k.py``, the
``_base_`` files they inherit, the layer-decay optimizer constructor, ``train.py``/``test.py`` and
the README's model table) and is written here as literal data, one table per source config. The
tests compare those tables with the resolved recipes (``recipes/ade20k/upernet_internimage_*``
and the alias ``recipes/internimage_h_ade20k.yaml``), with the segmentors built on the meta
device, and with the optimizer parameter groups that ``trainer.optim.build_optimizer`` makes
(against a transcription of the reference's constructor). A recipe value that drifts from its
source fails here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tests.parity.support import (
    Source,
    align_corners_values,
    dropout_probabilities,
    meta_model,
    recipes_matching,
    resolved,
)

REPOSITORY = "OpenGVLab/InternImage"
COMMIT = "31c962dc6c1ceb23e580772f7daaa6944694fbe6"


def internimage(path: str) -> Source:
    return Source(REPOSITORY, COMMIT, path)


# --- the files every config shares --------------------------------------------------------------

BASE_MODEL = internimage("segmentation/configs/_base_/models/upernet_r50.py")
#: upernet_r50.py: decode_head UPerHead and auxiliary_head FCNHead (norm SyncBN, CE loss).
HEADS = {
    "decode_channels": 512,
    "pool_scales": (1, 2, 3, 6),
    "decode_dropout": 0.1,
    "aux_in_index": 2,
    "aux_channels": 256,
    "aux_num_convs": 1,
    "aux_concat_input": False,
    "aux_dropout": 0.1,
    "aux_loss_weight": 0.4,
    "align_corners": False,
    "sync_bn": True,  # norm_cfg = dict(type='SyncBN', requires_grad=True)
}

BASE_DATA = internimage("segmentation/configs/_base_/datasets/ade20k.py")
#: _base_/datasets/ade20k.py train_pipeline and data (L/XL/H repeat the pipeline, other scales).
DATA = {
    "ratio_range": (0.5, 2.0),  # Resize(img_scale=..., ratio_range=(0.5, 2.0))
    "cat_max_ratio": 0.75,  # RandomCrop(crop_size, cat_max_ratio=0.75)
    "keep_ratio": True,  # Resize's default keep_ratio=True
    "pad_position": "bottom_right",  # Pad(size=crop_size, pad_val=0, seg_pad_val=255)
    "workers_per_gpu": 4,
    "train_split": "train",  # img_dir='images/training'
    "val_split": "val",  # val/test img_dir='images/validation'
    "num_classes": 150,  # the configs' decode_head/auxiliary_head num_classes
}

BASE_RUNTIME = internimage("segmentation/configs/_base_/default_runtime.py")
RUNTIME = {"log_interval": 50}  # log_config interval=50

BASE_SCHEDULE = internimage("segmentation/configs/_base_/schedules/schedule_160k.py")
SCHEDULE = {"max_iters": 160000}  # runner = dict(type='IterBasedRunner', max_iters=160000)

CONSTRUCTOR = internimage("segmentation/mmcv_custom/custom_layer_decay_optimizer_constructor.py")
BACKBONE = internimage("segmentation/mmseg_custom/models/backbones/intern_image.py")
#: intern_image.py: dpr = torch.linspace(0, drop_path_rate, sum(depths)); mlp_ratio 4. (configs)
MLP_RATIO = 4.0

TRAIN_PY = internimage("segmentation/train.py")
#: train.py sets both before train_segmentor; test.py runs torch 1.11 (README) whose defaults
#: are both on as well.
TF32 = True

TEST_PY = internimage("segmentation/test.py")
#: test.py --aug-test: cfg.data.test.pipeline[1].img_ratios = [0.5, ..., 1.75], flip = True.
AUG_TEST_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

MMSEG = Source("open-mmlab/mmsegmentation", "v0.27.0",
               "mmseg/models/segmentors/encoder_decoder.py")
#: mmseg 0.27.0 (the README's base) aug_test averages the views' softmax outputs.
VIEW_AVERAGE = "probs"

README = internimage("segmentation/README.md")
HF = "https://huggingface.co/OpenGVLab/InternImage"


@dataclass(frozen=True)
class Config:
    """The values one ``upernet_internimage_*_160k_ade20k.py`` sets (plus its README row)."""

    source: Source
    # model.backbone
    pretrained: str
    channels: int
    depths: tuple[int, int, int, int]
    groups: tuple[int, int, int, int]
    drop_path_rate: float
    layer_scale: float | None
    offset_scale: float
    post_norm: bool
    dw_kernel_size: int | None
    res_post_norm: bool
    level2_post_norm_block_ids: tuple[int, ...] | None
    center_feature_scale: bool
    with_cp: bool
    # model heads
    decode_in_channels: tuple[int, int, int, int]
    aux_in_channels: int
    test_mode: str
    # train pipeline (the base's for T/S/B)
    crop_size: tuple[int, int]
    img_scale: tuple[int, int]
    # test pipeline
    test_img_scale: tuple[int, int]
    size_divisor: int
    # optimizer (AdamW through CustomLayerDecayOptimizerConstructor)
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    num_layers: int
    layer_decay_rate: float
    offset_lr_scale: float
    grad_clip: float | None  # optimizer_config grad_clip max_norm (norm_type 2); None: dict()
    # lr_config
    warmup_iters: int
    warmup_ratio: float
    power: float
    min_lr: float
    # data / runner
    samples_per_gpu: int
    gpus: int  # "# By default, models are trained on N GPUs with M images per GPU"
    checkpoint_interval: int
    eval_interval: int
    fp16: bool  # the fp16 line is commented out in every config
    # README row
    checkpoint: str
    log: str
    miou_ss: float
    miou_ms_flip: float


def _urls(stem: str) -> dict[str, str]:
    return {"checkpoint": f"{HF}/resolve/main/{stem}.pth",
            "log": f"{HF}/raw/main/{stem}.log.json"}


_COMMON = dict(offset_lr_scale=1.0, betas=(0.9, 0.999), weight_decay=0.05, warmup_iters=1500,
               warmup_ratio=1e-6, power=1.0, min_lr=0.0, checkpoint_interval=1000,
               eval_interval=16000, fp16=False, with_cp=False, test_mode="whole",
               size_divisor=32, dw_kernel_size=None, res_post_norm=False,
               level2_post_norm_block_ids=None, center_feature_scale=False)

CONFIGS: dict[str, Config] = {
    "upernet_internimage_t": Config(
        source=internimage("segmentation/configs/ade20k/upernet_internimage_t_512_160k_ade20k.py"),
        pretrained=f"{HF}/resolve/main/internimage_t_1k_224.pth",
        channels=64, depths=(4, 4, 18, 4), groups=(4, 8, 16, 32), drop_path_rate=0.2,
        layer_scale=1.0, offset_scale=1.0, post_norm=False,
        decode_in_channels=(64, 128, 256, 512), aux_in_channels=256,
        crop_size=(512, 512), img_scale=(2048, 512), test_img_scale=(2048, 512),
        lr=6e-5, num_layers=30, layer_decay_rate=1.0, grad_clip=None,
        samples_per_gpu=2, gpus=8,
        **_urls("upernet_internimage_t_512_160k_ade20k"), miou_ss=47.9, miou_ms_flip=48.1,
        **_COMMON,
    ),
    "upernet_internimage_s": Config(
        source=internimage("segmentation/configs/ade20k/upernet_internimage_s_512_160k_ade20k.py"),
        pretrained=f"{HF}/resolve/main/internimage_s_1k_224.pth",
        channels=80, depths=(4, 4, 21, 4), groups=(5, 10, 20, 40), drop_path_rate=0.3,
        layer_scale=1.0, offset_scale=1.0, post_norm=True,
        decode_in_channels=(80, 160, 320, 640), aux_in_channels=320,
        crop_size=(512, 512), img_scale=(2048, 512), test_img_scale=(2048, 512),
        lr=6e-5, num_layers=33, layer_decay_rate=1.0, grad_clip=None,
        samples_per_gpu=2, gpus=8,
        **_urls("upernet_internimage_s_512_160k_ade20k"), miou_ss=50.1, miou_ms_flip=50.9,
        **_COMMON,
    ),
    "upernet_internimage_b": Config(
        source=internimage("segmentation/configs/ade20k/upernet_internimage_b_512_160k_ade20k.py"),
        pretrained=f"{HF}/resolve/main/internimage_b_1k_224.pth",
        channels=112, depths=(4, 4, 21, 4), groups=(7, 14, 28, 56), drop_path_rate=0.4,
        layer_scale=1.0, offset_scale=1.0, post_norm=True,
        decode_in_channels=(112, 224, 448, 896), aux_in_channels=448,
        crop_size=(512, 512), img_scale=(2048, 512), test_img_scale=(2048, 512),
        lr=6e-5, num_layers=33, layer_decay_rate=1.0, grad_clip=None,
        samples_per_gpu=2, gpus=8,
        **_urls("upernet_internimage_b_512_160k_ade20k"), miou_ss=50.8, miou_ms_flip=51.3,
        **_COMMON,
    ),
    "upernet_internimage_l": Config(
        source=internimage("segmentation/configs/ade20k/upernet_internimage_l_640_160k_ade20k.py"),
        pretrained=f"{HF}/resolve/main/internimage_l_22k_192to384.pth",
        channels=160, depths=(5, 5, 22, 5), groups=(10, 20, 40, 80), drop_path_rate=0.4,
        layer_scale=1.0, offset_scale=2.0, post_norm=True,
        decode_in_channels=(160, 320, 640, 1280), aux_in_channels=640,
        crop_size=(640, 640), img_scale=(2560, 640), test_img_scale=(2560, 640),
        lr=2e-5, num_layers=37, layer_decay_rate=0.94, grad_clip=0.1,
        samples_per_gpu=2, gpus=8,
        **_urls("upernet_internimage_l_640_160k_ade20k"), miou_ss=53.9, miou_ms_flip=54.1,
        **_COMMON,
    ),
    "upernet_internimage_xl": Config(
        source=internimage("segmentation/configs/ade20k/upernet_internimage_xl_640_160k_ade20k.py"),
        pretrained=f"{HF}/resolve/main/internimage_xl_22k_192to384.pth",
        channels=192, depths=(5, 5, 24, 5), groups=(12, 24, 48, 96), drop_path_rate=0.4,
        layer_scale=1.0, offset_scale=2.0, post_norm=True,
        decode_in_channels=(192, 384, 768, 1536), aux_in_channels=768,
        crop_size=(640, 640), img_scale=(2560, 640), test_img_scale=(2560, 640),
        lr=2e-5, num_layers=39, layer_decay_rate=0.94, grad_clip=0.1,
        samples_per_gpu=2, gpus=8,
        **_urls("upernet_internimage_xl_640_160k_ade20k"), miou_ss=55.0, miou_ms_flip=55.3,
        **_COMMON,
    ),
    "upernet_internimage_h": Config(
        source=internimage("segmentation/configs/ade20k/upernet_internimage_h_896_160k_ade20k.py"),
        pretrained=f"{HF}/resolve/main/internimage_h_jointto22k_384.pth",
        channels=320, depths=(6, 6, 32, 6), groups=(10, 20, 40, 80), drop_path_rate=0.5,
        layer_scale=None, offset_scale=1.0, post_norm=False,
        decode_in_channels=(320, 640, 1280, 2560), aux_in_channels=1280,
        crop_size=(896, 896), img_scale=(3584, 896), test_img_scale=(3584, 896),
        lr=2e-5, num_layers=50, layer_decay_rate=0.95, grad_clip=0.1,
        samples_per_gpu=1, gpus=16,
        **_urls("upernet_internimage_h_896_160k_ade20k"), miou_ss=59.9, miou_ms_flip=60.3,
        **{**_COMMON, "dw_kernel_size": 5, "res_post_norm": True,
           "level2_post_norm_block_ids": (5, 11, 17, 23, 29), "center_feature_scale": True},
    ),
}

RECIPES = recipes_matching("ade20k/upernet_internimage_*.yaml") + ["internimage_h_ade20k.yaml"]


def expected(path: str) -> Config:
    return CONFIGS[resolved(path).model.name]


def test_every_internimage_recipe_is_covered():
    assert len(RECIPES) == 7
    assert sorted(resolved(p).model.name for p in RECIPES) == sorted(
        [*CONFIGS, "upernet_internimage_h"]
    )


def test_alias_is_the_h_recipe():
    alias, target = resolved("internimage_h_ade20k.yaml"), resolved(
        "ade20k/upernet_internimage_h_896x896_160k.yaml")
    assert alias.model_dump() == target.model_dump()


@pytest.mark.parametrize("path", RECIPES)
def test_data_equals_the_source_pipeline(path):
    cfg, data = expected(path), resolved(path).data
    where = f"{path} vs {cfg.source} / {BASE_DATA}"
    assert data.dataset == "ade20k", where
    assert tuple(data.crop_size) == cfg.crop_size, where
    assert tuple(data.train_scale) == cfg.img_scale, where
    assert tuple(data.ratio_range) == DATA["ratio_range"], where
    assert data.cat_max_ratio == DATA["cat_max_ratio"], where
    assert data.keep_ratio is DATA["keep_ratio"], where
    assert data.pad_position == DATA["pad_position"], where
    assert (data.train_split, data.val_split) == (DATA["train_split"], DATA["val_split"]), where
    assert data.num_workers == DATA["workers_per_gpu"], where
    assert not data.flip_swap_pairs and data.random_rotation is None, where


@pytest.mark.parametrize("path", RECIPES)
def test_model_section_equals_the_source(path):
    cfg, model = expected(path), resolved(path).model
    where = f"{path} vs {cfg.source}"
    assert model.init_checkpoint == cfg.pretrained, where
    assert model.drop_path_rate == cfg.drop_path_rate, where
    assert model.aux_loss_weight in (None, HEADS["aux_loss_weight"]), f"{path} vs {BASE_MODEL}"
    assert model.options.get("with_cp", False) is cfg.with_cp, where


@pytest.mark.parametrize("path", RECIPES)
def test_optimizer_and_schedule_equal_the_source(path):
    cfg, recipe = expected(path), resolved(path)
    optim, sched = recipe.optim, recipe.schedule
    where = f"{path} vs {cfg.source}"
    assert optim.type == "adamw", where
    assert optim.lr == cfg.lr and tuple(optim.betas) == cfg.betas, where
    assert optim.weight_decay == cfg.weight_decay, where
    assert optim.layer_decay_rate == cfg.layer_decay_rate, where
    assert optim.head_lr_mult == 1.0 and optim.backbone_lr_mult == 1.0, f"{where} / {CONSTRUCTOR}"
    assert optim.grad_clip == cfg.grad_clip, f"{where} / {BASE_SCHEDULE}"
    assert cfg.num_layers == sum(cfg.depths), f"{cfg.source}: num_layers != sum(depths)"
    assert cfg.offset_lr_scale == 1.0  # no sampling_offsets parameter here anyway
    assert sched.max_iters == SCHEDULE["max_iters"] and sched.max_epochs is None, (
        f"{path} vs {BASE_SCHEDULE}")
    assert (sched.warmup_iters, sched.warmup_ratio) == (cfg.warmup_iters, cfg.warmup_ratio), where
    assert (sched.poly_power, sched.min_lr) == (cfg.power, cfg.min_lr), where
    assert sched.val_interval == cfg.eval_interval, where
    assert sched.checkpoint_interval == cfg.checkpoint_interval, where
    assert sched.log_interval == RUNTIME["log_interval"], f"{path} vs {BASE_RUNTIME}"


@pytest.mark.parametrize("path", RECIPES)
def test_train_section_equals_the_source(path):
    cfg, recipe = expected(path), resolved(path)
    train, cluster = recipe.train, recipe.cluster
    where = f"{path} vs {cfg.source}"
    assert train.batch_size == cfg.samples_per_gpu, where
    assert cluster.nodes * cluster.gpus_per_node == cfg.gpus, where
    assert train.precision == ("fp16" if cfg.fp16 else "fp32"), where
    assert train.tf32 is TF32, f"{path} vs {TRAIN_PY}"
    assert train.sync_bn is HEADS["sync_bn"], f"{path} vs {BASE_MODEL}"
    assert train.loss == "ce" and train.ema_decay is None, f"{path} vs {BASE_MODEL}"


@pytest.mark.parametrize("path", RECIPES)
def test_eval_equals_the_source_test_pipeline(path):
    cfg, recipe = expected(path), resolved(path)
    ev = recipe.eval
    where = f"{path} vs {cfg.source}"
    assert ev.mode == cfg.test_mode, where
    assert tuple(ev.test_scale) == cfg.test_img_scale and ev.keep_ratio, where
    assert ev.size_divisor == cfg.size_divisor, where
    assert tuple(ev.scales) == AUG_TEST_RATIOS, f"{path} vs {TEST_PY}"
    assert ev.average == VIEW_AVERAGE, f"{path} vs {MMSEG}"
    from trainer.evaluate import InferenceSettings

    settings = InferenceSettings.from_recipe(recipe, ms_flip=True)
    assert settings.size_divisor == cfg.size_divisor and settings.flip, where


@pytest.mark.parametrize("path", RECIPES)
def test_reference_equals_the_readme(path):
    cfg, ref = expected(path), resolved(path).reference
    where = f"{path} vs {README}"
    assert (ref.miou_ss, ref.miou_ms_flip) == (cfg.miou_ss, cfg.miou_ms_flip), where
    assert (ref.checkpoint, ref.log) == (cfg.checkpoint, cfg.log), where
    assert ref.split == "val", where


@pytest.mark.parametrize("path", RECIPES)
def test_meta_model_equals_the_source_architecture(path):
    cfg, model = expected(path), meta_model(path)
    where = f"{path} vs {cfg.source} / {BASE_MODEL}"
    backbone = model.backbone
    # stem: two stride-2 3x3 convs, 3 -> channels / 2 -> channels
    stem = backbone.patch_embed
    assert (stem.conv1.in_channels, stem.conv1.out_channels) == (3, cfg.channels // 2), where
    assert (stem.conv2.out_channels, stem.conv1.stride, stem.conv2.stride) == (
        cfg.channels, (2, 2), (2, 2)), where
    assert backbone.depths == cfg.depths and backbone.out_indices == (0, 1, 2, 3), where
    rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
    k = 0
    for i, level in enumerate(backbone.levels):
        width = cfg.channels * 2**i
        assert len(level.blocks) == cfg.depths[i], where
        for block in level.blocks:
            dcn = block.dcn
            assert (dcn.channels, dcn.group, dcn.offset_scale) == (
                width, cfg.groups[i], cfg.offset_scale), where
            assert dcn.dw_kernel_size == (cfg.dw_kernel_size or 3), where
            assert dcn.center_feature_scale is cfg.center_feature_scale, where
            assert block.post_norm is cfg.post_norm and block.with_cp is cfg.with_cp, where
            assert block.res_post_norm is cfg.res_post_norm, where
            assert block.layer_scale is (cfg.layer_scale is not None), where
            assert block.mlp.fc1.out_features == int(width * MLP_RATIO), f"{where} / {BACKBONE}"
            p = getattr(block.drop_path, "p", 0.0)
            assert p == pytest.approx(rates[k]), f"{where} / {BACKBONE}: drop path of block {k}"
            k += 1
        expected_ids = cfg.level2_post_norm_block_ids if i == 2 else None
        assert level.post_norm_block_ids == tuple(expected_ids or ()), where
        assert (level.downsample is not None) == (i < 3), where
    # heads: upernet_r50.py with the config's in_channels and 150 classes
    decode, aux = model.decode_head, model.auxiliary_head
    assert decode.in_channels == cfg.decode_in_channels, where
    assert (decode.channels, decode.pool_scales) == (
        HEADS["decode_channels"], HEADS["pool_scales"]), where
    assert decode.conv_seg.out_channels == DATA["num_classes"], where
    assert aux.in_channels == cfg.aux_in_channels and aux.in_index == HEADS["aux_in_index"], where
    assert aux.channels == HEADS["aux_channels"] and aux.concat_input is HEADS["aux_concat_input"]
    assert len(aux.convs) == HEADS["aux_num_convs"], where
    assert aux.conv_seg.out_channels == DATA["num_classes"], where
    assert model.loss_weights == {"aux": HEADS["aux_loss_weight"]}, where
    assert dropout_probabilities(model) == {
        "decode_head.dropout": HEADS["decode_dropout"],
        "auxiliary_head.dropout": HEADS["aux_dropout"],
    }, where
    corners = align_corners_values(model)
    assert {"", "decode_head", "auxiliary_head"} <= set(corners), corners
    assert set(corners.values()) == {HEADS["align_corners"]}, where


# --- the layer-wise decay: a transcription of the reference constructor --------------------------


def reference_layer_id(var_name: str, num_max_layer: int, depths) -> int:
    """``get_num_layer_for_swin`` of the constructor (CONSTRUCTOR), the branches that can match
    an UperNet + InternImage parameter, copied line for line."""
    if var_name.startswith("backbone.patch_embed"):
        return 0
    elif "level_embeds" in var_name:
        return 0
    elif var_name.startswith("backbone.layers") or var_name.startswith("backbone.levels"):
        if var_name.split(".")[3] not in ["downsample", "norm"]:
            stage_id = int(var_name.split(".")[2])
            layer_id = int(var_name.split(".")[4])
            if stage_id == 0:
                return layer_id + 1
            elif stage_id == 1:
                return layer_id + 1 + depths[0]
            elif stage_id == 2:
                return layer_id + 1 + depths[0] + depths[1]
            else:
                return layer_id + 1 + depths[0] + depths[1] + depths[2]
        else:
            stage_id = int(var_name.split(".")[2])
            if stage_id == 0:
                return 1 + depths[0]
            elif stage_id == 1:
                return 1 + depths[0] + depths[1]
            elif stage_id == 2:
                return 1 + depths[0] + depths[1] + depths[2]
            else:
                return 1 + depths[0] + depths[1] + depths[2]
    else:
        return num_max_layer - 1


def reference_groups(model, cfg: Config) -> dict[str, tuple[str, float, float]]:
    """``{parameter name: (group name, lr, weight decay)}`` as CustomLayerDecayOptimizerConstructor
    ``add_params`` assigns them (paramwise_cfg num_layers, layer_decay_rate, depths,
    offset_lr_scale of the config; no dino_head, no backbone_small_lr)."""
    num_layers = cfg.num_layers + 2
    out = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if (len(param.shape) == 1 or name.endswith(".bias") or "relative_position" in name
                or "norm" in name or "sampling_offsets" in name):
            group_name, this_weight_decay = "no_decay", 0.0
        else:
            group_name, this_weight_decay = "decay", cfg.weight_decay
        layer_id = reference_layer_id(name, num_layers, cfg.depths)
        scale = cfg.layer_decay_rate ** (num_layers - layer_id - 1)
        if ("sampling_offsets" in name or "reference_points" in name) and "backbone" in name:
            group_name = f"layer_{layer_id}_{group_name}_offset_lr_scale"
            scale *= cfg.offset_lr_scale
        else:
            group_name = f"layer_{layer_id}_{group_name}"
        out[name] = (group_name, scale * cfg.lr, this_weight_decay)
    return out


@pytest.mark.parametrize("path", RECIPES)
def test_optimizer_groups_equal_the_reference_constructor(path):
    from trainer.optim import build_optimizer

    cfg, model = expected(path), meta_model(path)
    optimizer = build_optimizer(model, resolved(path).optim)
    ours = {}
    for group in optimizer.param_groups:
        for name in group["names"]:
            ours[name] = (group["group_name"], group["lr"], group["weight_decay"])
    reference = reference_groups(model, cfg)
    assert set(ours) == set(reference), f"{path}: parameters differ from {CONSTRUCTOR}"
    wrong = {n: (ours[n], reference[n]) for n in reference
             if ours[n][0] != reference[n][0] or ours[n][2] != reference[n][2]
             or ours[n][1] != pytest.approx(reference[n][1], rel=1e-12)}
    assert not wrong, f"{path} vs {CONSTRUCTOR}: {dict(list(wrong.items())[:5])}"
    # the H post-norms take block k's id (the reference reads index 4 of their names)
    if cfg.level2_post_norm_block_ids:
        name = "backbone.levels.2.post_norms.0.0.weight"
        assert reference[name][0] == f"layer_{1 + cfg.depths[0] + cfg.depths[1]}_no_decay"

"""The 12 United-Perception "seg benchmark" Cityscapes recipes against their source configs.

Every expected value below was read from ModelTC/United-Perception at commit
52aaeb9ed27a490820696d7754d19f98cd6ecd11 (the configs and ``up/tasks/seg`` are identical at the
``0.2.0_github`` tag 164bff80486e, whose checkpoints the benchmark links): the six
``configs/seg/segformer/segformer_b*.yaml``, the six ``configs/seg/hrnet/*.yaml``, and the code
they run, each group citing its file. What segctl still cannot express is written in the
recipes as "departs from" comments (the init weights where the config's file is not public, the
8-GPU test sampler's 504 images, the heads' conv bias before BatchNorm while training). Models
are built on the meta device (no weights), the whole file runs in seconds.
"""

from __future__ import annotations

import math

import pytest

from segctl.recipe.datasets import DATASET_PRESETS
from tests.parity.support import (
    Source,
    align_corners_values,
    dropout_probabilities,
    meta_model,
    recipes_matching,
    resolved,
)

UP_REPO = "ModelTC/United-Perception"
UP_COMMIT = "52aaeb9ed27a490820696d7754d19f98cd6ecd11"


def up(path: str) -> Source:
    return Source(UP_REPO, UP_COMMIT, path)


# --- what the configs and the code they run say -------------------------------------------------

#: up/runner/base_runner.py: set_default_cfg (random_seed 131), prepare_fp16 (fp32 unless
#: runtime.fp16, which no seg config sets), build_lr_scheduler (lr_scale = world_size x
#: batch_size), is_test (every test_freq x epoch size iterations), save_epoch_ckpt with
#: only_save_latest (every save_latest_freq = 1 epoch); up/data/samplers/sampler.py
#: DistributedSampler (ceil(len / world_size) samples per rank, drop_last False).
RUNNER = {
    "source": up("up/runner/base_runner.py"),
    "random_seed": 131,
    "precision": "fp32",
    "cityscapes_train_images": 2975,
}

#: up/tasks/seg/data/seg_transfomer.py: SegRandResize (halves around 1, scales the frame
#: itself: (int(w r), int(h r)), cv2 INTER_LINEAR / INTER_NEAREST), SegCrop (pads raw 0 / ignore 255 before cropping, no class-share check),
#: Random_Brightness (shift_value 10, skipped with probability 0.5), RandomColorJitterMMSeg
#: (mmseg's defaults with random.randint).
TRANSFORMS = {
    "source": up("up/tasks/seg/data/seg_transfomer.py"),
    "ratio_sampling": "halves",
    "frame_size": (2048, 1024),                # every Cityscapes frame
    "cat_max_ratio": 1.0,
    "pad_order": "before_photometric",
    "image_pad": 0,
    "label_pad": 255,
    "brightness_shift_value": 10,
    "brightness_prob": 0.5,
    "color_jitter": {"brightness_delta": 32, "contrast_range": (0.5, 1.5),
                     "saturation_range": (0.5, 1.5), "hue_delta": 18},
}

#: The normalize transform of every seg config (ImageNet statistics, RGB).
NORMALIZE = {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}

#: configs/seg/segformer/segformer_b{0..5}.yaml, identical but for the encoder, its width and
#: the pretrain file (the decoder is up/tasks/seg/models/decoder/segformer_decoder.py, the
#: optimizer register_type segformer up/tasks/seg/utils/optimizer_helper.py).
SEGFORMER = {
    "crop": (1024, 1024),
    "rand_resize_scale": (0.5, 2.0),
    "test_resize": (2048, 1024),
    "photometric": "up_color_jitter",          # color_jitter_mmseg
    "batch_size": 1,
    "num_workers": 4,
    "max_iter": 160000,
    "test_freq": 5,
    "optimizer": "adamw",
    "lr": 0.0000075,
    "betas": (0.9, 0.999),
    "weight_decay": 0.01,
    "special_param_group": [("decoder", 0.000075, 0.01), ("norm", 0.0000075, 0.0)],
    "warmup_iter": 1500,
    "warmup_ratio": 0.000001,
    "warmup_type": "linear",                   # up/utils/model/lr_helper.py LinearWarmUpLR
    "power": 1.0,
    "min_lr": 0.0,
    "drop_path_rate": 0.1,
    "decoder_dropout": 0.1,
    "align_corners": False,
    "loss": "ce",                              # seg_ce, loss_weight 1.0
    "loss_resize_align_corners": False,        # F.interpolate(out, size, align_corners) first
}

#: configs/seg/hrnet/*.yaml (heads: up/tasks/seg/models/decoder/ocrnet.py hr_seg_head and
#: ocr_head; encoder up/tasks/seg/models/encoder/hrnet.py; loss seg_ohem
#: up/tasks/seg/models/losses/seg_loss.py; EMA up/utils/model/ema_helper.py ExpEMA).
HRNET = {
    "crop": (1024, 1024),
    "rand_resize_scale": (0.5, 2.0),
    "test_resize": (2048, 1024),
    "photometric": "up_brightness",            # seg_rand_brightness
    "batch_size": 2,
    "num_workers": 4,
    "max_epoch": 180,
    "test_freq": 5,
    "optimizer": "sgd",
    "lr": 0.000625,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "warmup_iter": 500,
    "warmup_ratio": 0.25,
    "warmup_type": "linear",                   # up/utils/model/lr_helper.py LinearWarmUpLR
    "power": 0.9,
    "min_lr": 0.0,
    "ohem_thresh": 0.9,
    "ohem_min_kept": 100000,
    "align_corners": True,                     # nn.UpsamplingBilinear2d everywhere
    "loss_resize_align_corners": True,         # heads upsample to the crop before seg_ohem
    "ema_decay": 0.9998,                       # ema_type exp
    "ema_ramp_iters": 2000,                    # ExpEMA: decay * (1 - exp(-x / 2000))
    "ocr_dropout": 0.05,                       # SpatialOCR_Module(dropout=0.05)
    "ocr_aux_weight": 0.4,                     # seg_ohem aux_weight
}

RELEASE = "https://github.com/ModelTC/United-Perception/releases/download/0.2.0_github"
MMSEG_PRETRAIN = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer"
HRNET_CLS = ("https://github.com/HRNet/HRNet-Image-Classification/releases/download/"
             "PretrainedWeights")

#: Per recipe: its config, the GPUs of the benchmark's global batch 8, the encoder, the
#: segctl model, the init weights (the config's file, or the closest public one), whether
#: the config has an EMA, the benchmark's mIoU and checkpoint (benchmark/semantic_benchmark.md).
ROWS = {
    "cityscapes/segformer_mit_b0_1024x1024_160k.yaml": dict(
        config=up("configs/seg/segformer/segformer_b0.yaml"), family="segformer", gpus=8,
        model="segformer_mit_b0", ema=False, miou=75.28, ckpt=f"{RELEASE}/Segfomer_b0.pth",
        init=f"{MMSEG_PRETRAIN}/mit_b0_20220624-7e0fe6dd.pth"),        # for mit_b0_cvt.pth
    "cityscapes/segformer_mit_b1_1024x1024_160k.yaml": dict(
        config=up("configs/seg/segformer/segformer_b1.yaml"), family="segformer", gpus=8,
        model="segformer_mit_b1", ema=False, miou=77.55, ckpt=f"{RELEASE}/Segfomer_b1.pth",
        init=f"{MMSEG_PRETRAIN}/mit_b1_20220624-02e5a6a1.pth"),
    "cityscapes/segformer_mit_b2_1024x1024_160k.yaml": dict(
        config=up("configs/seg/segformer/segformer_b2.yaml"), family="segformer", gpus=8,
        model="segformer_mit_b2", ema=False, miou=80.38, ckpt=f"{RELEASE}/Segfomer_b2.pth",
        init=f"{MMSEG_PRETRAIN}/mit_b2_20220624-66e8bf70.pth"),
    "cityscapes/segformer_mit_b3_1024x1024_160k.yaml": dict(
        config=up("configs/seg/segformer/segformer_b3.yaml"), family="segformer", gpus=8,
        model="segformer_mit_b3", ema=False, miou=81.36, ckpt=f"{RELEASE}/Segfomer_b3.pth",
        init=f"{MMSEG_PRETRAIN}/mit_b3_20220624-13b1141c.pth"),
    "cityscapes/segformer_mit_b4_1024x1024_160k.yaml": dict(
        config=up("configs/seg/segformer/segformer_b4.yaml"), family="segformer", gpus=8,
        model="segformer_mit_b4", ema=False, miou=81.49, ckpt=f"{RELEASE}/Segfomer_b4.pth",
        init=f"{MMSEG_PRETRAIN}/mit_b4_20220624-d588d980.pth"),
    "cityscapes/segformer_mit_b5_1024x1024_160k.yaml": dict(
        config=up("configs/seg/segformer/segformer_b5.yaml"), family="segformer", gpus=8,
        model="segformer_mit_b5", ema=False, miou=81.52, ckpt=f"{RELEASE}/Segfomer_b5.pth",
        init=f"{MMSEG_PRETRAIN}/mit_b5_20220624-658746d9.pth"),
    "cityscapes/fcn_hrnetv2_w18_1024x1024_180e.yaml": dict(
        config=up("configs/seg/hrnet/hrnet18_1024x1024.yaml"), family="hrnet", gpus=4,
        model="fcn_hrnetv2_w18", ema=False, miou=79.9, ckpt=f"{RELEASE}/hrnet18_seg.pth",
        init=f"{HRNET_CLS}/HRNet_W18_C_ssld_pretrained.pth"),           # the config's file
    "cityscapes/fcn_hrnetv2_w18_1024x1024_180e_ema.yaml": dict(
        config=up("configs/seg/hrnet/hrnet18_1024x1024_ema.yaml"), family="hrnet", gpus=4,
        model="fcn_hrnetv2_w18", ema=True, miou=80.5, ckpt=f"{RELEASE}/hrnet18_seg_ema.pth",
        init=f"{HRNET_CLS}/HRNet_W18_C_ssld_pretrained.pth"),
    "cityscapes/fcn_hrnetv2_w18_small_v1_1024x1024_180e_ema.yaml": dict(
        config=up("configs/seg/hrnet/hrnet18_small_v1_1024x1024_ema.yaml"), family="hrnet",
        gpus=4, model="fcn_hrnetv2_w18_small_v1", ema=True, miou=67.8,
        ckpt=f"{RELEASE}/hrnet18_small_v1.pth",
        # for hrnet_w18_small_model_v1.pth (OneDrive only): timm's copy,
        # huggingface/pytorch-image-models@c0560cbf22fc:timm/models/hrnet.py
        init="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-hrnet/"
             "hrnet_w18_small_v1-f460c6bc.pth"),
    "cityscapes/fcn_hrnetv2_w18_small_v2_1024x1024_180e_ema.yaml": dict(
        config=up("configs/seg/hrnet/hrnet18_small_v2_1024x1024_ema.yaml"), family="hrnet",
        gpus=4, model="fcn_hrnetv2_w18_small", ema=True, miou=75.6,
        ckpt=f"{RELEASE}/hrnet18_small_v2.pth",
        # for hrnet_w18_small_model_v2.pth: open-mmlab/mmcv@4c01b026f0af:
        # mmcv/model_zoo/open_mmlab.json msra/hrnetv2_w18_small
        init="https://download.openmmlab.com/pretrain/third_party/hrnetv2_w18_small-b5a04e21.pth"),
    "cityscapes/fcn_hrnetv2_w48_1024x1024_180e_ema.yaml": dict(
        config=up("configs/seg/hrnet/hrnet48_1024x1024.yaml"), family="hrnet", gpus=4,
        model="fcn_hrnetv2_w48", ema=True, miou=82.61, ckpt=f"{RELEASE}/hrnet48_seg.pth",
        init=f"{HRNET_CLS}/HRNet_W48_C_ssld_pretrained.pth"),  # for W48_HRNet_W48_C_ssld_...
    "cityscapes/ocr_hrnetv2_w48_1024x1024_180e_ema.yaml": dict(
        config=up("configs/seg/hrnet/hrnet48_1024x1024_ocr_ema.yaml"), family="hrnet", gpus=4,
        model="ocr_hrnetv2_w48", ema=True, miou=83.06, ckpt=f"{RELEASE}/hrnet48_ocr.pth",
        init=f"{HRNET_CLS}/HRNet_W48_C_ssld_pretrained.pth"),
}

PATHS = recipes_matching("cityscapes/segformer_mit_b*_1024x1024_160k.yaml") + recipes_matching(
    "cityscapes/*_1024x1024_180e*.yaml")


def test_the_family_is_the_twelve_recipes():
    assert sorted(PATHS) == sorted(ROWS)


def _row(path: str) -> tuple[dict, dict]:
    row = ROWS[path]
    return row, SEGFORMER if row["family"] == "segformer" else HRNET


def _epoch_iterations(gpus: int, batch_size: int) -> int:
    """len(batch_sampler): ceil(ceil(2975 / gpus) / batch) (DistributedSampler pads)."""
    per_rank = math.ceil(RUNNER["cityscapes_train_images"] / gpus)
    return math.ceil(per_rank / batch_size)


@pytest.mark.parametrize("path", PATHS)
def test_data_matches_the_config(path):
    row, cfg = _row(path)
    data = resolved(path).data
    where = f"{path} vs {row['config']} and {TRANSFORMS['source']}"
    assert tuple(data.crop_size) == cfg["crop"], where
    assert tuple(data.ratio_range) == cfg["rand_resize_scale"], where
    assert data.ratio_sampling == TRANSFORMS["ratio_sampling"], where
    # the frame itself: train_scale is the Cityscapes frame, resized to exactly the target
    assert tuple(data.train_scale) == TRANSFORMS["frame_size"], where
    assert data.keep_ratio is False, where
    assert data.cat_max_ratio == TRANSFORMS["cat_max_ratio"], where
    assert data.pad_order == TRANSFORMS["pad_order"], where
    assert data.pad_position == "bottom_right", where  # copyMakeBorder(0, pad_h, 0, pad_w)
    assert data.photometric == cfg["photometric"], where
    assert (data.train_split, data.val_split) == ("train", "val"), where
    assert data.flip_swap_pairs == [] and data.random_rotation is None, where
    assert data.num_workers == cfg["num_workers"], where
    preset = DATASET_PRESETS[data.dataset]
    assert (tuple(preset.mean), tuple(preset.std)) == (NORMALIZE["mean"], NORMALIZE["std"])
    assert preset.ignore_index == TRANSFORMS["label_pad"]


@pytest.mark.parametrize("path", PATHS)
def test_model_weights_and_reference_match_the_config(path):
    row, cfg = _row(path)
    recipe = resolved(path)
    where = f"{path} vs {row['config']}"
    assert recipe.model.name == row["model"], where
    assert recipe.model.init_checkpoint == row["init"], where
    if row["family"] == "segformer":
        assert recipe.model.drop_path_rate == cfg["drop_path_rate"], where
        assert recipe.model.options == {}, where
        assert recipe.model.aux_loss_weight is None, where
    else:
        expected = {"align_corners": True, "fuse_align_corners": True}
        if row["model"].startswith("ocr"):
            expected["dropout_ratio"] = cfg["ocr_dropout"]
        # the OCR aux weight is the model's own (checked on the meta model below)
        assert recipe.model.aux_loss_weight is None, where
        assert recipe.model.options == expected, where
    ref = recipe.reference
    assert (ref.miou_ss, ref.miou_ms_flip, ref.split) == (row["miou"], None, "val"), where
    assert ref.checkpoint == row["ckpt"], where
    assert ref.log is None, where  # the benchmark publishes no logs


@pytest.mark.parametrize("path", PATHS)
def test_optimizer_schedule_and_training_match_the_config(path):
    row, cfg = _row(path)
    recipe = resolved(path)
    where = f"{path} vs {row['config']} and {RUNNER['source']}"
    world = recipe.cluster.nodes * recipe.cluster.gpus_per_node
    assert world == row["gpus"] and recipe.train.batch_size == cfg["batch_size"], where
    global_batch = world * recipe.train.batch_size
    assert global_batch == 8, where  # the benchmark's bs column
    optim, sched, train = recipe.optim, recipe.schedule, recipe.train
    assert optim.type == cfg["optimizer"], where
    assert optim.lr == pytest.approx(cfg["lr"] * global_batch, rel=1e-12), where
    assert optim.weight_decay == cfg["weight_decay"], where
    assert optim.grad_clip is None and optim.layer_decay_rate is None, where
    assert optim.backbone_lr_mult == 1.0, where
    if row["family"] == "segformer":
        assert tuple(optim.betas) == cfg["betas"], where
        (key, decoder_lr, decoder_wd), (norm_key, norm_lr, norm_wd) = cfg["special_param_group"]
        assert optim.head_lr_mult == pytest.approx(decoder_lr / cfg["lr"]), where
        assert optim.no_decay_norm_and_pos and norm_wd == 0.0 and norm_lr == cfg["lr"], where
        assert (sched.max_iters, sched.max_epochs) == (cfg["max_iter"], None), where
    else:
        assert optim.momentum == cfg["momentum"], where
        assert optim.head_lr_mult == 1.0 and not optim.no_decay_norm_and_pos, where
        assert (sched.max_epochs, sched.max_iters) == (cfg["max_epoch"], None), where
    # every epoch padded as UP's DistributedSampler pads it; max_iter = max_epoch x epoch size
    assert sched.epoch_padding == "per_rank", where
    from trainer.data.order import resolve_schedule

    iters = resolve_schedule(recipe, RUNNER["cityscapes_train_images"], world).schedule.max_iters
    if row["family"] == "segformer":
        assert iters == cfg["max_iter"], where
    else:
        assert iters == cfg["max_epoch"] * _epoch_iterations(row["gpus"], cfg["batch_size"]) \
            == 66960, where
    assert (sched.warmup_iters, sched.warmup_ratio) == (cfg["warmup_iter"], cfg["warmup_ratio"])
    # warmup_type linear: LinearWarmUpLR + ChainIterLR (up/utils/model/lr_helper.py)
    assert (cfg["warmup_type"], sched.warmup_style) == ("linear", "up_linear"), where
    assert (sched.poly_power, sched.min_lr) == (cfg["power"], cfg["min_lr"]), where
    epoch = _epoch_iterations(row["gpus"], cfg["batch_size"])
    assert epoch == 372, where
    assert sched.val_interval == cfg["test_freq"] * epoch, where
    assert sched.checkpoint_interval == epoch, where  # only_save_latest, every epoch
    assert train.seed == RUNNER["random_seed"], where
    assert (train.precision, train.tf32) == (RUNNER["precision"], None), where
    assert train.sync_bn and not train.deterministic, where
    if row["ema"]:
        assert (train.ema_decay, train.ema_ramp_iters) == (
            HRNET["ema_decay"], HRNET["ema_ramp_iters"]), where
    else:
        assert (train.ema_decay, train.ema_ramp_iters) == (None, None), where
    if row["family"] == "segformer":
        assert train.loss == cfg["loss"], where
    else:
        assert (train.loss, train.ohem_style) == ("ohem", "up_seg_ohem"), where
        assert (train.ohem_thresh, train.ohem_min_kept) == (
            cfg["ohem_thresh"], cfg["ohem_min_kept"]), where
    ev = recipe.eval
    assert (ev.mode, tuple(ev.test_scale), ev.ms_flip) == ("whole", cfg["test_resize"], False)
    assert ev.keep_ratio and ev.size_divisor is None, where


def _up_name(name: str) -> str:
    """segctl parameter name -> United-Perception's (net: encoder, decoder; same inner names)."""
    return name.replace("backbone.", "encoder.", 1).replace("decode_head.", "decoder.", 1)


@pytest.mark.parametrize("path", PATHS)
def test_parameter_groups_follow_up_optimizer_rules(path):
    """SegformerOptimizer / BaseOptimizer.get_trainable_params (up/tasks/seg/utils/
    optimizer_helper.py, up/utils/model/optimizer_helper.py): the first special_param_group
    whose key is in the parameter name sets its lr and weight decay, each lr then x 8."""
    from trainer.optim import param_groups

    row, cfg = _row(path)
    recipe = resolved(path)
    model = meta_model(path)
    got = {}
    for group in param_groups(model, recipe.optim):
        for name in group["names"]:
            got[name] = (group["lr"], group["weight_decay"])
    rules = cfg.get("special_param_group", [])
    assert len(got) == sum(1 for _ in model.parameters())
    for name, (lr, wd) in got.items():
        up_lr, up_wd = cfg["lr"], cfg["weight_decay"]
        for key, key_lr, key_wd in rules:
            if key in _up_name(name):
                up_lr, up_wd = key_lr, key_wd
                break
        assert lr == pytest.approx(up_lr * 8, rel=1e-12), (path, name)
        assert wd == up_wd, (path, name)


@pytest.mark.parametrize("path", PATHS)
def test_meta_model_matches_the_source_architecture(path):
    row, cfg = _row(path)
    model = meta_model(path)
    where = f"{path} vs {row['config']}"
    conv_seg = [m for n, m in model.named_modules() if n.endswith("conv_seg")]
    assert conv_seg and all(m.out_channels == 19 for m in conv_seg), where  # num_classes 19
    corners = align_corners_values(model)
    assert corners and set(corners.values()) == {cfg["align_corners"]}, (where, corners)
    # trainer.engine.train_step resizes the logits to the labels with the model's align_corners
    assert model.align_corners is cfg["loss_resize_align_corners"], where
    dropouts = dropout_probabilities(model)
    if row["family"] == "segformer":
        assert dropouts == {"decode_head.dropout": cfg["decoder_dropout"]}, where
        drop_path = [m.p for m in model.backbone.modules() if type(m).__name__ == "DropPath"]
        assert max(drop_path) == pytest.approx(cfg["drop_path_rate"]), where
        assert min(drop_path) == 0.0, where  # linspace(0, drop_path_rate, depth)
        assert getattr(model, "auxiliary_head", None) is None and model.loss_weights == {}
    else:
        fuse = {m.fuse_align_corners for m in model.backbone.modules()
                if hasattr(m, "fuse_align_corners")}
        assert fuse == {True}, where
        assert model.backbone.stem_relu, where  # conv1-bn1-relu-conv2-bn2-relu
        if row["model"].startswith("ocr"):
            assert dropouts == {"decode_head.1.dropout": cfg["ocr_dropout"]}, where
            assert model.loss_weights == {"aux": cfg["ocr_aux_weight"]}, where
        else:
            assert dropouts == {}, where  # hr_seg_head: no dropout
            assert getattr(model, "auxiliary_head", None) is None, where


@pytest.mark.parametrize("path", PATHS)
def test_the_released_checkpoint_layout_loads_strictly(path):
    """reference.checkpoint is a UP ModelHelper state dict (encoder.*, decoder.*): generated
    here on the meta device from the recipe's model through the inverse name table of
    tests/test_converters_united_perception.py, it converts to exactly the model's keys and
    shapes (what ``segctl eval --published`` loads with strict=True)."""
    from tests.test_converters_united_perception import to_up
    from trainer.models.converters.pretrained import detect_kind
    from trainer.models.converters.united_perception import convert_united_perception

    row, _ = _row(path)
    model = meta_model(path)
    head = "segformer" if row["family"] == "segformer" else row["model"].split("_")[0]
    ours = model.state_dict()
    up_state = to_up(ours, head)
    assert detect_kind(list(up_state)) == "united_perception", path
    converted, dropped = convert_united_perception(up_state)
    assert dropped == [] and set(converted) == set(ours), path
    assert all(converted[k].shape == ours[k].shape for k in ours), path

@pytest.fixture(scope="module")
def synthetic_cityscapes(tmp_path_factory):
    from trainer.data.synthetic import make_synthetic_cityscapes

    return make_synthetic_cityscapes(tmp_path_factory.mktemp("cs"), n_train=1, n_val=1,
                                     size=(64, 128))


@pytest.mark.parametrize("family", ["segformer", "hrnet"])
def test_engine_assembles_the_up_pipeline(family, synthetic_cityscapes):
    """trainer.data.build.build_train_dataset turns the recipe into the configs' transformer list
    [seg_rand_resize, seg_random_flip, seg_crop, <colour>, custom_to_tensor, normalize]."""
    from trainer.data.transforms import (
        Normalize,
        Pad,
        RandomBrightnessShift,
        RandomCrop,
        RandomResize,
        UPColorJitter,
    )
    from segctl.recipe.dataset_spec import DatasetSpec
    from trainer.data.build import build_train_dataset

    path = next(p for p in PATHS if ROWS[p]["family"] == family)
    recipe = resolved(path)
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(
        update={"root": str(synthetic_cityscapes)})})
    transforms = build_train_dataset(recipe).pipeline.transforms
    names = [type(t).__name__ for t in transforms]
    colour = UPColorJitter if family == "segformer" else RandomBrightnessShift
    # the engine normalises on the device (trainer.data.transforms.BatchNormalize)
    assert names == ["RandomResize", "RandomCrop", "RandomFlip", "Pad", colour.__name__,
                     "ToUint8Tensor"]
    resize, crop, _, pad, jitter, _ = transforms
    assert isinstance(resize, RandomResize) and resize.ratio_sampling == "halves"
    assert resize.ratio_range == SEGFORMER["rand_resize_scale"] == HRNET["rand_resize_scale"]
    assert isinstance(crop, RandomCrop) and crop.cat_max_ratio == 1.0
    assert crop.crop_size == (1024, 1024)
    assert isinstance(pad, Pad) and (pad.pad_val, pad.seg_pad_val) == (
        TRANSFORMS["image_pad"], TRANSFORMS["label_pad"])
    if family == "segformer":
        params = TRANSFORMS["color_jitter"]
        assert (jitter.brightness_delta, jitter.contrast_range, jitter.saturation_range,
                jitter.hue_delta) == (params["brightness_delta"], params["contrast_range"],
                                      params["saturation_range"], params["hue_delta"])
    else:
        assert (jitter.shift_value, jitter.prob) == (
            TRANSFORMS["brightness_shift_value"], TRANSFORMS["brightness_prob"])
    spec = DatasetSpec.from_recipe(recipe)  # what train_step's BatchNormalize uses
    normalize = Normalize(spec.mean, spec.std)
    assert tuple(normalize.mean.tolist()) == pytest.approx(NORMALIZE["mean"])
    assert tuple(normalize.std.tolist()) == pytest.approx(NORMALIZE["std"])



def _up_resize_scale(scale, draws):
    """SegRandResize.augment's ratio (up/tasks/seg/data/seg_transfomer.py), its two
    ``random.random()`` values replaced by ``draws``."""
    if draws[0] < 0.5:
        return scale[0] + (1. - scale[0]) * draws[1]
    return 1. + (scale[1] - 1.) * draws[1]


def _seg_rand_resize(image, label, scale, draws):
    """SegRandResize.augment, aspect_ratio None: (int(w r), int(h r)), cv2 linear / nearest."""
    import cv2

    temp_scale = _up_resize_scale(scale, draws)
    h, w, _ = image.shape
    new_w, new_h = int(w * temp_scale), int(h * temp_scale)
    return (cv2.resize(image, dsize=(new_w, new_h), interpolation=cv2.INTER_LINEAR),
            cv2.resize(label, dsize=(new_w, new_h), interpolation=cv2.INTER_NEAREST))


@pytest.mark.parametrize("path", [p for p in PATHS if "b0" in p or "ocr" in p])
def test_resize_gives_up_frames_pixel_for_pixel(path):
    """The recipe's RandomResize against SegRandResize on a 2048x1024 frame: the same two
    uniform draws give the same ratio, the same (int(2048 r), int(1024 r)) size and the same
    pixels."""
    import numpy as np

    from trainer.data.transforms import RandomResize

    data = resolved(path).data
    resize = RandomResize(tuple(data.train_scale), tuple(data.ratio_range), data.keep_ratio,
                          ratio_sampling=data.ratio_sampling)
    frame_w, frame_h = TRANSFORMS["frame_size"]
    for seed in range(500):
        draws = np.random.default_rng(seed).random(2)
        ratio = resize.draw_ratio(np.random.default_rng(seed))
        assert ratio == _up_resize_scale(data.ratio_range, draws), seed
        assert resize.target_size(frame_w, frame_h, ratio) == (
            int(frame_w * ratio), int(frame_h * ratio)), (path, ratio)
    gen = np.random.default_rng(0)
    image = gen.integers(0, 256, (frame_h, frame_w, 3), dtype=np.uint8)
    label = gen.integers(0, 19, (frame_h, frame_w), dtype=np.uint8)
    for seed in (0, 2):  # one ratio below 1, one above
        draws = np.random.default_rng(seed).random(2)
        want_image, want_label = _seg_rand_resize(image, label, data.ratio_range, draws)
        got = resize({"image": image.copy(), "label": label.copy()}, np.random.default_rng(seed))
        assert got["image"].shape == want_image.shape, seed
        assert np.array_equal(got["image"], want_image), seed
        assert np.array_equal(got["label"], want_label), seed

def _up_distributed_sampler_epoch(permutation, world):
    """The indices of one epoch over all ranks, up/data/samplers/sampler.py DistributedSampler:
    num_samples = ceil(len / world), the shuffled indices padded with their own start."""
    num_samples = math.ceil(len(permutation) / world)
    total_size = num_samples * world
    indices = list(permutation)
    padding_size = total_size - len(indices)
    if padding_size <= len(indices):
        indices += indices[:padding_size]
    else:
        indices += (indices * math.ceil(padding_size / len(indices)))[:padding_size]
    return [indices[r * num_samples:(r + 1) * num_samples] for r in range(world)]


@pytest.mark.parametrize("path", [p for p in PATHS if "b0" in p or "w48" in p])
def test_epochs_read_the_images_up_reads(path):
    """trainer.data.order.DataOrder with the recipe's epoch_padding: each epoch of 372 iterations
    reads the UP sampler's multiset of images (2975 + the first one again), and the next epoch
    starts at iteration 372 (which rank reads which image differs; the shuffles are the
    framework's own)."""
    from collections import Counter

    from trainer.data.order import DataOrder

    recipe = resolved(path)
    world = recipe.cluster.nodes * recipe.cluster.gpus_per_node
    images = RUNNER["cityscapes_train_images"]
    order = DataOrder(images, recipe.train.batch_size, world, recipe.train.seed,
                      recipe.schedule.epoch_padding)
    epoch = _epoch_iterations(world, recipe.train.batch_size)
    assert order.epoch_positions == 2976 and epoch * world * recipe.train.batch_size == 2976
    for e in (0, 1):
        read = Counter(order.sample(i, r, j)[0] for i in range(e * epoch, (e + 1) * epoch)
                       for r in range(world) for j in range(recipe.train.batch_size))
        up_ranks = _up_distributed_sampler_epoch(order.permutation(e).tolist(), world)
        assert read == Counter(index for rank in up_ranks for index in rank), (path, e)
        assert order.sample((e + 1) * epoch, 0, 0)[0] == order.permutation(e + 1)[0]


@pytest.mark.parametrize("path", [p for p in PATHS if "b0" in p or "w48" in p])
def test_learning_rate_follows_up_schedule(path):
    """The resolved schedule's rate at the warm-up's ends and after it, against
    up/utils/model/lr_helper.py (LinearWarmUpLR from warmup_ratio x lr, PolyLR from lr over
    max_iter, min_lr 0), for the encoder group (lr x 8)."""
    from trainer.data.order import resolve_schedule
    from trainer.optim import poly_lr

    row, cfg = _row(path)
    recipe = resolved(path)
    world = recipe.cluster.nodes * recipe.cluster.gpus_per_node
    sched = resolve_schedule(recipe, RUNNER["cityscapes_train_images"], world).schedule
    lr = cfg["lr"] * 8
    warm, ratio = cfg["warmup_iter"], cfg["warmup_ratio"]
    total = cfg["max_iter"] if row["family"] == "segformer" else 66960
    gamma = (lr - ratio * lr) / (warm - 1)
    assert poly_lr(recipe.optim.lr, 0, sched) == pytest.approx(ratio * lr, rel=1e-12)
    assert poly_lr(recipe.optim.lr, 7, sched) == pytest.approx(ratio * lr + 7 * gamma, rel=1e-12)
    assert poly_lr(recipe.optim.lr, warm - 1, sched) == pytest.approx(lr, rel=1e-12)
    for step in (warm, total // 2, total - 1):
        assert poly_lr(recipe.optim.lr, step, sched) == pytest.approx(
            lr * (1 - step / total) ** cfg["power"], rel=1e-12), (path, step)

def test_up_data_fields_default_to_mmseg_and_are_validated():
    """The schema fields these recipes added keep every other recipe's pipeline (and run id:
    defaults are left out of the hash) as it was."""
    from pydantic import ValidationError

    from segctl.recipe.schema import DataConfig

    base = {"dataset": "cityscapes", "root": "x", "crop_size": [512, 1024]}
    data = DataConfig(**base)
    assert (data.ratio_sampling, data.pad_order, data.photometric) == (
        "uniform", "after_normalize", "mmseg")
    with pytest.raises(ValidationError, match="must contain 1"):
        DataConfig(**base, ratio_range=[1.25, 2.0], ratio_sampling="halves")
    with pytest.raises(ValidationError):
        DataConfig(**base, photometric="colour_jitter")
    with pytest.raises(ValidationError):
        DataConfig(**base, pad_order="before_crop")

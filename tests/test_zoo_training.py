"""Training features the zoo recipes need: epoch schedules, EMA, SyncBN switch, OHEM,
auxiliary loss weight and builder options, the MCIBI training step, and the Cityscapes
test-server submission."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from segctl.recipe.eval_request import EvalRequest
from segctl.recipe.rundir import RunDir
from segctl.recipe.schema import TrainConfig
from tests.trainer_runs import make_run_dir, small_recipe
from trainer import checkpoint as ckpt
from trainer.distributed import convert_sync_batchnorm
from trainer.ema import ModelEMA
from trainer.engine import build_ema
from trainer.entry import run_evaluation, run_training
from trainer.models import build_segmentor
from trainer.models.losses import (
    ohem_cross_entropy,
    ohem_kept_cross_entropy,
    ohem_pixel_weights,
    segmentation_loss,
)
from trainer.optim import iterations_for_epochs


def _tiny(cityscapes_frame_root, tracking_uri, **sections):
    base = {
        "data": {"crop_size": [64, 128], "ratio_range": [0.5, 1.0]},
        "schedule": {"max_iters": 4, "warmup_iters": 1, "checkpoint_interval": 2,
                     "log_interval": 2},
    }
    base.update(sections)
    return small_recipe(cityscapes_frame_root, tracking_uri, **base)


# --- 1. epochs -> iterations ----------------------------------------------------------------------


def test_iterations_for_epochs_rounds_up():
    assert iterations_for_epochs(180, 2975, 2, 4) == 66938  # ceil(180 * 2975 / 8)
    assert iterations_for_epochs(150, 30462, 4, 8) == 142791  # ceil(150 * 30462 / 32) = ceil(142790.6)
    assert iterations_for_epochs(3, 1, 2, 1) == 2
    with pytest.raises(ValueError, match="world_size=0"):
        iterations_for_epochs(1, 10, 2, 0)


@pytest.mark.slow
def test_max_epochs_resolved_once_at_job_start(cityscapes_frame_root, tracking_uri, tmp_path):
    # one training image, batch 2, one process: ceil(3 * 1 / 2) = 2 iterations
    recipe = _tiny(cityscapes_frame_root, tracking_uri, schedule={
        "max_iters": None, "max_epochs": 3, "val_interval": 1, "checkpoint_interval": 1,
        "warmup_iters": 0, "log_interval": 1,
    })
    assert recipe.schedule.max_iters is None
    run_dir = make_run_dir(tmp_path / "run", recipe)
    result = run_training(run_dir)
    assert result["max_iters"] == 2 and result["iteration"] == 2 and result["finished"]
    progress = RunDir(run_dir).read_progress()
    assert progress["max_iters"] == 2 and progress["max_epochs"] == 3
    assert [i for i, _ in ckpt.iteration_checkpoints(run_dir)] == [1, 2]

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    params = client.get_run(run_id).data.params
    assert params["schedule.max_iters"] == "2" and params["schedule.max_epochs"] == "3"


# --- 2. EMA ---------------------------------------------------------------------------------------


def test_ema_follows_the_formula_over_three_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9)
    expected = {k: v.clone().float() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        loss = model(torch.randn(5, 3)).pow(2).sum()  # also moves the BN running stats
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                expected[key] = 0.9 * expected[key] + 0.1 * value
            else:
                expected[key] = value.clone()
    assert ema.updates == 3
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(value.float(), expected[key].float(), rtol=1e-6, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert int(ema.module[1].num_batches_tracked) == 3
    restored = ModelEMA(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3
    assert all(torch.equal(a, b) for a, b in zip(restored.module.state_dict().values(),
                                                 ema.module.state_dict().values()))


def test_ema_ramp_follows_united_perception_exp_ema():
    """ExpEMA (up/utils/model/ema_helper.py) after the runner's 0-based step i:
    decay * (1 - exp(-i / 2000)); the first update copies the weights."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.9998, ramp_iters=2000)
    assert ema.current_decay(1) == 0.0
    assert ema.current_decay(2001) == pytest.approx(0.9998 * (1 - math.exp(-1.0)))
    assert ema.current_decay(10**6) == pytest.approx(0.9998)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1, 4):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param))
        ema.update(model)
        decay = 0.9998 * (1 - math.exp(-(step - 1) / 2000))
        for key, value in model.state_dict().items():
            expected[key] = decay * expected[key] + (1 - decay) * value
        if step == 1:
            assert all(torch.equal(ema.module.state_dict()[k], v)
                       for k, v in model.state_dict().items())
    for key, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7)


def test_ema_ramp_recipe_field_reaches_the_average():
    model = nn.Linear(3, 2)
    train = TrainConfig(batch_size=1, ema_decay=0.9998, ema_ramp_iters=2000)
    ema = build_ema(model, train)
    assert ema is not None and (ema.decay, ema.ramp_iters) == (0.9998, 2000)
    constant = build_ema(model, TrainConfig(batch_size=1, ema_decay=0.9))
    assert constant.ramp_iters is None and constant.current_decay(1) == 0.9
    assert build_ema(model, TrainConfig(batch_size=1)) is None
    with pytest.raises(ValueError, match="ema_ramp_iters needs ema_decay"):
        TrainConfig(batch_size=1, ema_ramp_iters=2000)
    with pytest.raises(ValueError):
        TrainConfig(batch_size=1, ema_decay=0.9, ema_ramp_iters=0)


@pytest.mark.slow
def test_resume_with_ema_continues_exactly(cityscapes_frame_root, tracking_uri, tmp_path):
    recipe = _tiny(cityscapes_frame_root, tracking_uri, train={"batch_size": 2, "seed": 0,
                                                   "deterministic": True, "ema_decay": 0.5})
    straight = make_run_dir(tmp_path / "straight", recipe)
    run_training(straight)
    resumed = make_run_dir(tmp_path / "resumed", recipe)
    assert not run_training(resumed, stop_after=2)["finished"]
    assert "ema" in ckpt.load_training_state(ckpt.latest_checkpoint(resumed))
    assert run_training(resumed)["finished"]

    for name in ("final.pt", "final_raw.pt"):
        a = torch.load(ckpt.checkpoint_dir(straight) / name, weights_only=True)
        b = torch.load(ckpt.checkpoint_dir(resumed) / name, weights_only=True)
        assert a.keys() == b.keys()
        assert not [k for k in a if not torch.equal(a[k], b[k])], name
    final = torch.load(ckpt.final_path(straight), weights_only=True)
    raw = torch.load(ckpt.checkpoint_dir(straight) / "final_raw.pt", weights_only=True)
    assert any(not torch.equal(final[k], raw[k]) for k in final)  # final.pt is the average


# --- 3. SyncBN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "processes", "enabled", "synced"),
    [("cuda", 2, True, True), ("cuda", 2, False, False), ("cpu", 2, True, False),
     ("cuda", 1, True, False)],
)
def test_sync_bn_follows_the_recipe_flag(device, processes, enabled, synced):
    accelerator = SimpleNamespace(device=torch.device(device), num_processes=processes)
    model = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),
                                   accelerator, enabled)
    assert isinstance(model[1], nn.SyncBatchNorm) == synced


# --- 4. OHEM --------------------------------------------------------------------------------------


def test_ohem_matches_a_hand_computation():
    # 1 image, 2 classes, 1x4 pixels; logits chosen so that p(true class) is known
    probs_true = torch.tensor([0.95, 0.6, 0.8, 0.3])
    logit = torch.log(probs_true / (1 - probs_true))  # class-1 logit vs 0 for class 0
    logits = torch.stack([torch.zeros(4), logit]).reshape(1, 2, 1, 4)
    labels = torch.tensor([[[1, 1, 1, 255]]])  # last pixel ignored
    # thresh 0.7, min_kept 1: sorted valid p = [0.6, 0.8, 0.95]; p_sorted[1] = 0.8 > 0.7 ->
    # threshold 0.8: keep p < 0.8 -> only the 0.6 pixel (ties at 0.8 dropped)
    weights = ohem_pixel_weights(logits, labels, thresh=0.7, min_kept=1, ignore_index=255)
    assert weights.tolist() == [[[0.0, 1.0, 0.0, 0.0]]]
    expected = -np.log(0.6) / 4  # mmseg: weighted sum over all N*H*W pixels
    loss = ohem_cross_entropy(logits, labels, 0.7, 1, ignore_index=255)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # min_kept 0: threshold stays 0.7 -> still only 0.6 kept; thresh 0.9: 0.6 and 0.8 kept
    assert ohem_pixel_weights(logits, labels, 0.9, 0, 255).tolist() == [[[0.0, 1.0, 1.0, 0.0]]]
    # min_kept larger than the valid pixels: every valid pixel below the largest p is kept
    assert ohem_pixel_weights(logits, labels, 0.1, 10, 255).tolist() == [[[0.0, 1.0, 1.0, 0.0]]]
    # the decode head uses OHEM, auxiliary heads plain CE
    outputs = {"decode": logits, "aux": logits}
    total, parts = segmentation_loss(outputs, labels, weights={"aux": 0.4}, ohem=(0.7, 1))
    plain = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255,
                                              reduction="none").mean()
    assert parts["decode"].item() == pytest.approx(expected, rel=1e-5)
    assert parts["aux"].item() == pytest.approx(0.4 * plain.item(), rel=1e-5)


def _up_ohem_reference(logits, labels, thresh, min_kept, ignore_index=255):
    """United-Perception OhemCrossEntropy2dTensor.forward, step by step in numpy."""
    n, c, h, w = logits.shape
    target = labels.reshape(-1).numpy().copy()
    valid = target != ignore_index
    target = target * valid
    prob = torch.softmax(logits, 1).transpose(0, 1).reshape(c, -1).numpy()
    if min_kept > valid.sum():
        pass
    elif valid.sum() > 0:
        prob = np.where(valid[None], prob, 1.0)
        mask_prob = prob[target, np.arange(len(target))]
        threshold = thresh
        if min_kept > 0:
            index = np.argsort(mask_prob, kind="stable")
            threshold_index = index[min(len(index), min_kept) - 1]
            if mask_prob[threshold_index] > thresh:
                threshold = mask_prob[threshold_index]
            valid = valid & (mask_prob <= threshold)
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=ignore_index,
                                           reduction="none").reshape(-1).numpy()
    return ce[valid].mean()


def test_up_seg_ohem_matches_united_perception():
    probs_true = torch.tensor([0.95, 0.6, 0.8, 0.3])
    logit = torch.log(probs_true / (1 - probs_true))
    logits = torch.stack([torch.zeros(4), logit]).reshape(1, 2, 1, 4)
    labels = torch.tensor([[[1, 1, 1, 255]]])
    # min_kept 2 (whole batch): 2nd smallest valid p = 0.8 > 0.7 -> keep p <= 0.8: 0.6 and 0.8,
    # averaged over those two (mmseg's sampler would keep 0.6 only and divide by 4)
    expected = -(np.log(0.6) + np.log(0.8)) / 2
    loss = ohem_kept_cross_entropy(logits, labels, 0.7, 2, ignore_index=255)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # fewer valid pixels than min_kept: every valid pixel, mean over the 3
    every = -(np.log(0.95) + np.log(0.6) + np.log(0.8)) / 3
    assert ohem_kept_cross_entropy(logits, labels, 0.1, 10).item() == pytest.approx(every, rel=1e-5)
    # min_kept 0: no selection at all in the reference
    assert ohem_kept_cross_entropy(logits, labels, 0.1, 0).item() == pytest.approx(every, rel=1e-5)
    # random batches against the step-by-step reference
    gen = torch.Generator().manual_seed(0)
    for min_kept, thresh in [(1, 0.7), (50, 0.7), (200, 0.9), (10_000, 0.7), (0, 0.5)]:
        logits = torch.randn(2, 5, 8, 12, generator=gen) * 3
        labels = torch.randint(0, 5, (2, 8, 12), generator=gen)
        labels[torch.rand(2, 8, 12, generator=gen) < 0.2] = 255
        got = ohem_kept_cross_entropy(logits, labels, thresh, min_kept).item()
        assert got == pytest.approx(_up_ohem_reference(logits, labels, thresh, min_kept),
                                    rel=1e-5), (min_kept, thresh)
    # every head goes through it (OCR's auxiliary head at its 0.4 weight, as CriterionOhem)
    outputs = {"decode": logits, "aux": logits * 0.5}
    _, parts = segmentation_loss(outputs, labels, weights={"aux": 0.4}, ohem=(0.7, 50),
                                 ohem_style="up_seg_ohem")
    assert parts["decode"].item() == pytest.approx(_up_ohem_reference(logits, labels, 0.7, 50),
                                                   rel=1e-5)
    assert parts["aux"].item() == pytest.approx(
        0.4 * _up_ohem_reference(logits * 0.5, labels, 0.7, 50), rel=1e-5)
    with pytest.raises(ValueError, match="ohem_style"):
        segmentation_loss(outputs, labels, ohem=(0.7, 50), ohem_style="other")


def test_united_perception_recipes_use_its_ohem():
    from segctl.recipe import load_recipe

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    users = sorted(p for p in recipes.rglob("*.yaml") if load_recipe(p).recipe.train.loss == "ohem")
    assert len(users) == 6
    for path in users:
        train = load_recipe(path).recipe.train
        assert (train.ohem_style, train.ohem_thresh, train.ohem_min_kept) == (
            "up_seg_ohem", 0.9, 100000), path
        assert "United-Perception" in path.read_text(), path


@pytest.mark.slow
def test_train_step_uses_ohem_on_the_decode_head(tmp_path):
    from trainer.distributed import build_accelerator, teardown
    from trainer.engine import train_step

    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          model={"name": "ocr_hrnetv2_w18_small"},
                          train={"loss": "ohem", "ohem_thresh": 0.9, "ohem_min_kept": 10})
    torch.manual_seed(0)
    model = build_segmentor("ocr_hrnetv2_w18_small", num_classes=19).train()
    images, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    with torch.no_grad():
        expected, _ = segmentation_loss(model(images), labels, weights={"aux": 0.4},
                                        ohem=(0.9, 10))
    accelerator = build_accelerator("fp32")
    try:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss = train_step(model, optimizer, {"image": images, "label": labels}, accelerator,
                          recipe)
    finally:
        teardown(accelerator)
    torch.testing.assert_close(loss, expected)


# --- 5. aux_loss_weight and options ---------------------------------------------------------------


def test_aux_loss_weight_and_builder_options(tmp_path):
    from trainer.models.build import build_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with torch.device("meta"):
        model = build_model(small_recipe(tmp_path, uri, model={
            "name": "deeplabv3_mcibi_vit_large", "aux_loss_weight": 0.25,
            "options": {"momentum_base_lr": 0.02, "use_memory_loss": False},
        }))
    assert model.loss_weights == {"stage1": 0.4, "aux0": 0.25, "aux1": 0.25, "aux2": 0.25}
    assert model.momentum_base_lr == 0.02 and model.use_memory_loss is False

    with torch.device("meta"):
        model = build_model(small_recipe(tmp_path, uri, model={
            "name": "segformer_mit_b0", "options": {"decoder_channels": 64}}))
    assert model.decode_head.conv_seg.in_channels == 64
    with pytest.raises(ValueError, match=r"model.options \['bogus'\].*'segformer_mit_b0'"):
        build_model(small_recipe(tmp_path, uri, model={
            "name": "segformer_mit_b0", "options": {"bogus": 1}}))
    with pytest.raises(ValueError, match="no auxiliary head"):
        build_model(small_recipe(tmp_path, uri, model={
            "name": "segformer_mit_b0", "aux_loss_weight": 0.4}))


def test_mcibi_reference_options_follow_the_dataset(tmp_path):
    from trainer.models.build import builder_options

    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          model={"name": "deeplabv3_mcibi_r50",
                                 "options": {"momentum_base_lr": 0.5}})
    # cityscapes row: use_memory_loss False; the recipe's option wins over the reference
    assert builder_options(recipe) == {"momentum_base_lr": 0.5, "use_memory_loss": False}


# --- 6. MCIBI training step -----------------------------------------------------------------------


@pytest.mark.slow
def test_mcibi_training_step_updates_the_memory(tmp_path):
    from trainer.distributed import build_accelerator, teardown
    from trainer.engine import train_step

    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          model={"name": "deeplabv3_mcibi_r50",
                                 "options": {"use_memory_loss": True}},
                          optim={"type": "sgd", "lr": 0.01})
    torch.manual_seed(0)
    model = build_segmentor("deeplabv3_mcibi_r50", num_classes=19, use_memory_loss=True).train()
    memory = model.decode_head.memory_module.memory
    assert not memory.any()
    images = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 3, (2, 64, 64))
    accelerator = build_accelerator("fp32")
    try:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        loss = train_step(model, optimizer, {"image": images, "label": labels}, accelerator,
                          recipe, lr=0.01, epoch=1)
        assert torch.isfinite(loss)
        assert memory[:3].abs().sum(dim=-1).gt(0).all()  # the classes seen are stored
        assert not memory[3:].any()
        # epoch 2: the memory classification loss joins in
        loss2 = train_step(model, optimizer, {"image": images, "label": labels}, accelerator,
                           recipe, lr=0.01, epoch=2)
        assert torch.isfinite(loss2)
        with pytest.raises(ValueError, match="learning rate"):
            train_step(model, optimizer, {"image": images, "label": labels}, accelerator,
                       recipe)
    finally:
        teardown(accelerator)


# --- 8. Cityscapes submission ---------------------------------------------------------------------

LABEL_IDS = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


def test_cityscapes_submission_zip(cityscapes_frame_root, tracking_uri, tmp_path):
    from trainer.cityscapes_export import train_ids_to_label_ids

    assert train_ids_to_label_ids(np.arange(19)).tolist() == sorted(LABEL_IDS)
    recipe = _tiny(cityscapes_frame_root, tracking_uri)
    run_dir = make_run_dir(tmp_path / "run", recipe)
    torch.manual_seed(0)
    ckpt.save_final_weights(run_dir, build_segmentor("segformer_mit_b0", 19).state_dict())
    result = run_evaluation(run_dir, EvalRequest(ms_flip=recipe.eval.ms_flip, label="test",
                                                 output_format="cityscapes-submission"))
    zip_path = run_dir / "eval" / "test-cityscapes-submission.zip"
    assert result["zip"] == str(zip_path) and result["images"] == 1
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert names == ["frankfurt_000000_000294_leftImg8bit.png"]
        png = np.frombuffer(archive.read(names[0]), dtype=np.uint8)
    pred = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    image = next((cityscapes_frame_root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    assert pred.dtype == np.uint8 and pred.shape == cv2.imread(str(image)).shape[:2]
    assert set(np.unique(pred).tolist()) <= LABEL_IDS
    assert not (run_dir / "eval" / "test.json").exists()  # nothing scored
    with pytest.raises(ValueError, match="output_format"):
        run_evaluation(run_dir, EvalRequest(ms_flip=recipe.eval.ms_flip, output_format="bogus"))

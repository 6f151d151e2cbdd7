"""Test-time inference (whole, slide, multi-scale + flip) and sharded dataset evaluation."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from segctl.recipe import MS_FLIP_RATIOS
from trainer.data.geometry import rescale_size
from trainer.evaluate import (
    InferenceSettings,
    evaluate_dataset,
    predict_probs,
    slide_inference,
    whole_inference,
)
from trainer.metrics import ConfusionMatrix

NUM_CLASSES = 5


class ScaleDependentConvModel(torch.nn.Module):
    """A fixed random 3x3 conv whose logits also depend on the input size and on the column.

    The size factor makes each scale give a different answer, the horizontal ramp makes the
    flipped view differ from the plain one.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, num_classes, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=gen))
        self.ramp_weight = torch.randn(num_classes, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        out = self.conv(x) * (h * w) ** 0.25 / 6.0
        ramp = torch.linspace(-1.0, 1.0, w)
        return out + self.ramp_weight.view(1, -1, 1, 1) * ramp.view(1, 1, 1, w)


def pointwise_model(num_classes: int = NUM_CLASSES) -> torch.nn.Module:
    """A 1x1 conv: translation-equivariant, so every window sees the same per-pixel logits."""
    gen = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(3, num_classes, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen))
    return conv.eval()


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- rescale_size


def test_rescale_size_examples():
    assert rescale_size(1024, 2048, (2048, 1024), 0.5) == (512, 1024)
    assert rescale_size(512, 683, (2048, 512), 1.0) == (512, 683)
    assert rescale_size(1024, 2048, (2048, 1024), 0.75) == (768, 1536)
    # ADE20K at 0.75: bounds (1536, 384); the short edge limits: 683 * 0.75 = 512.25 -> 512
    assert rescale_size(512, 683, (2048, 512), 0.75) == (384, 512)
    # bound order does not matter
    assert rescale_size(512, 683, (512, 2048), 0.75) == (384, 512)
    with pytest.raises(ValueError):
        rescale_size(512, 683, (2048, 512), 0.0)


# ---------------------------------------------------------------- whole and slide


def test_slide_with_crop_covering_image_equals_whole():
    model = ScaleDependentConvModel().eval()
    image = _image(21, 30)
    whole = whole_inference(model, image)
    slide = slide_inference(model, image, (32, 32), (16, 16), NUM_CLASSES)
    assert whole.shape == (1, NUM_CLASSES, 21, 30) and whole.dtype == torch.float32
    torch.testing.assert_close(slide, whole, rtol=0, atol=0)


def test_slide_with_overlapping_windows_equals_whole_for_pointwise_model():
    model = pointwise_model()
    image = _image(37, 50)
    slide = slide_inference(model, image, (16, 20), (10, 12), NUM_CLASSES)
    torch.testing.assert_close(slide, whole_inference(model, image), rtol=1e-6, atol=1e-6)


class _RecordingModel:
    def __init__(self, inner):
        self.inner = inner
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        return self.inner(x)


@pytest.mark.parametrize(
    "size, crop, stride",
    [((37, 50), (16, 20), (10, 12)), ((10, 50), (16, 20), (10, 15)), ((64, 64), (32, 32), (32, 32))],
)
def test_slide_window_count_follows_mmseg_grid(size, crop, stride):
    (h, w), (hc, wc), (hs, ws) = size, crop, stride
    model = _RecordingModel(pointwise_model())
    slide_inference(model, _image(h, w), crop, stride, NUM_CLASSES)
    h_grids = max(h - hc + hs - 1, 0) // hs + 1
    w_grids = max(w - wc + ws - 1, 0) // ws + 1
    assert len(model.shapes) == h_grids * w_grids
    # windows are clamped to the image: never larger than the crop nor the image
    assert set(model.shapes) == {(min(h, hc), min(w, wc))}


def test_model_output_of_wrong_size_is_rejected():
    with pytest.raises(ValueError, match="input size"):
        whole_inference(lambda x: x[:, :, ::2], _image(8, 8))


# ---------------------------------------------------------------- multi-scale + flip


def test_ms_flip_equals_hand_computed_mean_of_twelve_views():
    model = ScaleDependentConvModel().eval()
    h, w = 20, 36
    image = _image(h, w, seed=3)
    test_scale = (80, 30)
    # keep-ratio sizes worked out by hand: bounds (int(80 r), int(30 r)),
    # factor = min(long / 36, short / 20), size = round-half-up(20 f, 36 f)
    expected_sizes = [(15, 27), (22, 40), (30, 54), (37, 67), (45, 81), (52, 94)]
    assert [rescale_size(h, w, test_scale, r) for r in MS_FLIP_RATIOS] == expected_sizes

    total = torch.zeros(1, NUM_CLASSES, h, w)
    n_views = 0
    with torch.no_grad():
        for size in expected_sizes:
            for do_flip in [False, True]:
                x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
                if do_flip:
                    x = torch.flip(x, dims=[3])
                logits = model(x)
                if do_flip:
                    logits = torch.flip(logits, dims=[3])
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                total = total + torch.softmax(logits, dim=1)
                n_views += 1
    expected = total / n_views
    assert n_views == 12

    got = predict_probs(
        model, image,
        InferenceSettings(test_scale=test_scale, scales=MS_FLIP_RATIOS, flip=True, mode="whole"),
        num_classes=NUM_CLASSES,
    )
    assert got.shape == (1, NUM_CLASSES, h, w) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(1, h, w))
    # the views really differ, so the test would catch a missing scale or flip
    single = predict_probs(
        model, image, InferenceSettings(test_scale=test_scale), num_classes=NUM_CLASSES,
    )
    assert not torch.allclose(single, got, atol=1e-3)


def test_single_scale_without_test_scale_is_softmax_of_whole():
    model = ScaleDependentConvModel().eval()
    image = _image(19, 26)
    probs = predict_probs(
        model, image, InferenceSettings(test_scale=None), num_classes=NUM_CLASSES,
    )
    torch.testing.assert_close(probs, whole_inference(model, image).softmax(dim=1))


def test_slide_mode_ms_flip_runs_and_matches_whole_for_pointwise_model():
    model = pointwise_model()
    image = _image(24, 33)
    kwargs = dict(test_scale=None, scales=(0.75, 1.0, 1.5), flip=True)
    slide = predict_probs(
        model, image, InferenceSettings(mode="slide", crop_size=(16, 16), stride=(8, 8), **kwargs),
        num_classes=NUM_CLASSES,
    )
    whole = predict_probs(
        model, image, InferenceSettings(mode="whole", **kwargs), num_classes=NUM_CLASSES,
    )
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-6)


def test_autocast_bf16_returns_float32_probabilities():
    model = ScaleDependentConvModel().eval()
    image = _image(16, 16)
    probs = predict_probs(
        model, image, InferenceSettings(test_scale=None), num_classes=NUM_CLASSES,
        autocast_dtype=torch.bfloat16,
    )
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 16, 16))


def test_invalid_settings_report_every_problem():
    with pytest.raises(ValueError) as err:
        InferenceSettings(mode="slide", scales=())
    message = str(err.value)
    assert "crop_size" in message and "stride" in message and "scales" in message
    with pytest.raises(ValueError, match="mode"):
        predict_probs(
            pointwise_model(), _image(8, 8), InferenceSettings(test_scale=None, mode="tile"),
            num_classes=NUM_CLASSES,
        )


# ---------------------------------------------------------------- dataset evaluation


def _dataset(n: int = 5) -> list[dict]:
    gen = torch.Generator().manual_seed(7)
    samples = []
    for i in range(n):
        h, w = 12 + i, 18 - i  # different sizes per sample
        label = torch.randint(0, NUM_CLASSES, (h, w), generator=gen)
        label[torch.rand(h, w, generator=gen) < 0.1] = 255
        samples.append({"image": torch.randn(3, h, w, generator=gen), "label": label})
    return samples


SETTINGS = InferenceSettings(mode="whole", test_scale=None, scales=(0.75, 1.0), flip=True)


def _evaluate(rank: int = 0, world_size: int = 1, progress=None):
    return evaluate_dataset(
        ScaleDependentConvModel().eval(), _dataset(), num_classes=NUM_CLASSES,
        ignore_index=255, settings=SETTINGS, device="cpu", rank=rank, world_size=world_size,
        progress=progress,
    )


def test_evaluate_dataset_matches_manual_loop():
    calls = []
    metrics, cm = _evaluate(progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]

    model = ScaleDependentConvModel().eval()
    manual = ConfusionMatrix(NUM_CLASSES)
    for sample in _dataset():
        probs = predict_probs(
            model, sample["image"][None],
            InferenceSettings(test_scale=None, scales=(0.75, 1.0), flip=True),
            num_classes=NUM_CLASSES,
        )
        manual.update(probs.argmax(1)[0], sample["label"])
    assert torch.equal(cm.matrix, manual.matrix)
    assert metrics.to_dict() == pytest.approx(manual.compute().to_dict(), nan_ok=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        _, cm = _evaluate(rank=rank, world_size=world_size)
        torch.save(cm.matrix, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_reduce_to_single_process_matrix(tmp_path):
    _, single = _evaluate()
    world_size = 2
    mp.spawn(
        _distributed_worker, args=(world_size, _free_port(), str(tmp_path)),
        nprocs=world_size, join=True,
    )
    for rank in range(world_size):
        reduced = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(reduced, single.matrix)
    # without a process group a rank keeps only its own shard's counts
    _, shard = _evaluate(rank=0, world_size=world_size)
    assert 0 < int(shard.matrix.sum()) < int(single.matrix.sum())


class HandedModel(torch.nn.Module):
    """Scores class 0 by the image's horizontal gradient and class 1 by its negation.

    Mirroring the image negates the gradient, so the flipped view scores as class 1 what the
    plain view scores as class 0: a "left"/"right" pair, as LIP's arms and legs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grad = (torch.roll(x, -1, dims=3) - torch.roll(x, 1, dims=3)).sum(1, keepdim=True)
        return torch.cat([grad, -grad, torch.zeros_like(grad)], dim=1)


def test_flipped_views_exchange_handed_classes():
    image = _image(16, 24, seed=3)
    plain = predict_probs(HandedModel(), image, InferenceSettings(test_scale=None), num_classes=3)
    swapped = predict_probs(
        HandedModel(), image,
        InferenceSettings(test_scale=None, flip=True, flip_swap_pairs=[(0, 1)]), num_classes=3,
    )
    torch.testing.assert_close(swapped, plain)  # both views agree once the pair is exchanged
    unswapped = predict_probs(
        HandedModel(), image, InferenceSettings(test_scale=None, flip=True), num_classes=3,
    )
    assert (unswapped - plain).abs().max() > 0.1  # without it, the flipped view contradicts
    with pytest.raises(ValueError, match="names class 3 of 3"):
        predict_probs(
            HandedModel(), image,
            InferenceSettings(test_scale=None, flip=True, flip_swap_pairs=[(0, 3)]), num_classes=3,
        )
    with pytest.raises(ValueError, match="each at most once"):
        InferenceSettings(flip=True, flip_swap_pairs=((0, 1), (1, 2)))


def test_recipe_flip_swap_pairs_reach_the_inference_settings():
    from pathlib import Path

    from segctl.recipe import load_recipe

    recipe = next((Path(__file__).resolve().parents[1] / "recipes" / "lip").glob("*.yaml"))
    loaded = load_recipe(recipe).recipe
    assert loaded.data.flip_swap_pairs, recipe
    settings = InferenceSettings.from_recipe(loaded, ms_flip=True)
    assert settings.flip_swap_pairs == tuple(tuple(p) for p in loaded.data.flip_swap_pairs)
    assert InferenceSettings.from_recipe(loaded, ms_flip=False).flip is False


def test_stretch_size_ignores_the_aspect_ratio():
    from trainer.data.geometry import stretch_size

    assert stretch_size(300, 200, (473, 473)) == (473, 473)
    assert stretch_size(200, 300, (600, 400), 0.5) == (200, 300)  # longer edge stays the width
    assert stretch_size(300, 200, (600, 400), 0.5) == (300, 200)
    with pytest.raises(ValueError):
        stretch_size(300, 200, (473, 473), 0.001)


def test_keep_ratio_false_runs_the_model_at_test_scale_exactly():
    seen = []

    def model(x):
        seen.append(tuple(x.shape[2:]))
        return torch.zeros(x.shape[0], 3, *x.shape[2:])

    probs = predict_probs(
        model, _image(30, 20),
        InferenceSettings(test_scale=(47, 47), scales=(1.0, 0.5), keep_ratio=False), num_classes=3,
    )
    assert seen == [(47, 47), (23, 23)] and probs.shape == (1, 3, 30, 20)
    seen.clear()
    predict_probs(model, _image(30, 20), InferenceSettings(test_scale=(47, 47)), num_classes=3)
    assert seen == [(47, 31)]  # keep-ratio: the long edge bounded by 47
    with pytest.raises(ValueError, match="keep_ratio False needs test_scale"):
        InferenceSettings(keep_ratio=False)


def test_lip_recipes_test_at_473_without_keeping_the_ratio():
    from pathlib import Path

    from segctl.recipe import load_recipe

    for path in (Path(__file__).resolve().parents[1] / "recipes" / "lip").glob("*.yaml"):
        settings = InferenceSettings.from_recipe(load_recipe(path).recipe, ms_flip=False)
        assert settings.keep_ratio is False and settings.test_scale == (473, 473), path


def test_views_can_average_logits_instead_of_probabilities():
    """sssegmentation's Tester averages the views' resized logits (no softmax)."""
    model = ScaleDependentConvModel()
    image = _image(12, 16, seed=5)
    got = predict_probs(
        model, image,
        InferenceSettings(test_scale=None, scales=(0.5, 1.0), flip=True, average="logits"),
        num_classes=NUM_CLASSES,
    )
    views = []
    with torch.no_grad():
        for ratio in (0.5, 1.0):
            size = rescale_size(12, 16, (16, 12), ratio)
            x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            for flipped in (False, True):
                logits = model(x.flip(-1) if flipped else x)
                logits = logits.flip(-1) if flipped else logits
                views.append(F.interpolate(logits, size=(12, 16), mode="bilinear",
                                           align_corners=False))
    torch.testing.assert_close(got, sum(views) / 4)
    probs = predict_probs(
        model, image, InferenceSettings(test_scale=None, scales=(0.5, 1.0), flip=True),
        num_classes=NUM_CLASSES,
    )
    torch.testing.assert_close(probs, sum(v.softmax(1) for v in views) / 4)
    with pytest.raises(ValueError, match="average must be"):
        InferenceSettings(average="median")


def test_recipe_view_average_reaches_the_inference_settings():
    """eval.average travels to the inference settings; the mmseg-based recipes average
    probabilities (mmseg aug_test). Which sssegmentation recipes average logits is their
    parity test's business (the config's use_probs_before_resize)."""
    from pathlib import Path

    from segctl.recipe import load_recipe

    for path in (Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"):
        recipe = load_recipe(path).recipe
        assert InferenceSettings.from_recipe(recipe, False).average == recipe.eval.average, path
        ms_flip_average = recipe.eval.ms_flip_average or recipe.eval.average
        assert InferenceSettings.from_recipe(recipe, True).average == ms_flip_average, path
        ssseg = recipe.reference is not None and "sssegmentation" in recipe.reference.source
        if not ssseg:
            assert recipe.eval.average == "probs", path


# ---------------------------------------------------------------- resize to a multiple


def test_size_to_multiple_rounds_each_edge_up():
    """mmseg ResizeToMultiple / mmcv imresize_to_multiple: ceil(edge / d) * d, worked by hand."""
    from trainer.data.geometry import size_to_multiple

    assert size_to_multiple(512, 683, 32) == (512, 704)  # 683 / 32 = 21.3 -> 22 * 32
    assert size_to_multiple(384, 512, 32) == (384, 512)  # already multiples: unchanged
    assert size_to_multiple(1, 33, 32) == (32, 64)
    assert size_to_multiple(15, 27, 8) == (16, 32)
    with pytest.raises(ValueError):
        size_to_multiple(512, 683, 0)
    with pytest.raises(ValueError, match="size_divisor"):
        InferenceSettings(size_divisor=0)


def test_size_divisor_runs_each_view_at_a_multiple_and_scores_at_the_original_size():
    """The InternImage test pipeline: keep-ratio Resize, then ResizeToMultiple(32), then the
    model; the views' logits go back to the original resolution."""
    seen = []

    def model(x):
        seen.append(tuple(x.shape[2:]))
        return ScaleDependentConvModel()(x)

    h, w = 50, 70
    image = _image(h, w, seed=2)
    # test_scale (140, 40): ratio 1.0 -> factor min(140/70, 40/50) = 0.8 -> (40, 56) -> (64, 64);
    # ratio 0.5 -> bounds (70, 20), factor 0.4 -> (20, 28) -> (32, 32) (the flip adds views of
    # the same sizes)
    probs = predict_probs(
        model, image,
        InferenceSettings(test_scale=(140, 40), scales=(1.0, 0.5), flip=True, size_divisor=32),
        num_classes=NUM_CLASSES,
    )
    assert seen == [(64, 64), (64, 64), (32, 32), (32, 32)]
    assert probs.shape == (1, NUM_CLASSES, h, w)

    # by hand: two bilinear resizes (test scale, then the multiple), the model, back to (h, w)
    expected = torch.zeros(1, NUM_CLASSES, h, w)
    with torch.no_grad():
        for size, multiple in (((40, 56), (64, 64)), ((20, 28), (32, 32))):
            x = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            x = F.interpolate(x, size=multiple, mode="bilinear", align_corners=False)
            for flipped in (False, True):
                logits = ScaleDependentConvModel()(x.flip(-1) if flipped else x)
                logits = logits.flip(-1) if flipped else logits
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                expected += logits.softmax(dim=1)
    torch.testing.assert_close(probs, expected / 4, rtol=1e-5, atol=1e-6)

    # an image whose resized size is already a multiple is not resized again
    seen.clear()
    plain = predict_probs(
        model, _image(64, 96), InferenceSettings(test_scale=None), num_classes=NUM_CLASSES,
    )
    rounded = predict_probs(
        model, _image(64, 96), InferenceSettings(test_scale=None, size_divisor=32),
        num_classes=NUM_CLASSES,
    )
    assert seen == [(64, 96), (64, 96)]
    torch.testing.assert_close(rounded, plain, rtol=0, atol=0)
    # without a test scale the original size itself is rounded: (45, 70) -> (64, 96)
    seen.clear()
    predict_probs(
        model, _image(45, 70), InferenceSettings(test_scale=None, size_divisor=32),
        num_classes=NUM_CLASSES,
    )
    assert seen == [(64, 96)]


def test_recipe_size_divisor_reaches_the_inference_settings():
    """eval.size_divisor travels with the other eval settings (training validation, `segctl
    eval`, the Cityscapes submission all build them with InferenceSettings.from_recipe)."""
    from pathlib import Path

    from segctl.recipe import load_recipe

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    for path in sorted(recipes.glob("ade20k/upernet_internimage_*.yaml")):
        recipe = load_recipe(path).recipe
        assert InferenceSettings.from_recipe(recipe, ms_flip=False).size_divisor == 32, path
        assert InferenceSettings.from_recipe(recipe, ms_flip=True).size_divisor == 32, path
    quick = load_recipe(recipes / "quickstart.yaml").recipe
    assert InferenceSettings.from_recipe(quick, ms_flip=False).size_divisor is None


# ---------------------------------------------------------------- sssegmentation's order


class CoarseModel(torch.nn.Module):
    """Logits at a quarter of the input resolution (ceil(h / 4), ceil(w / 4)), as a decode
    head's before any resize; a strided random conv whose output also depends on the input
    size and on the column, so every scale, window and flip gives a different answer."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(4)
        self.conv = torch.nn.Conv2d(3, num_classes, 3, stride=4, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=gen))
        self.ramp_weight = torch.randn(num_classes, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        out = self.conv(x) * (h * w) ** 0.25 / 4.0
        ramp = torch.linspace(-2.0, 2.0, out.shape[3])
        return out + self.ramp_weight.view(1, -1, 1, 1) * ramp.view(1, 1, 1, -1)


class SsSegReference:
    """sssegmentation's test-time inference, rewritten line by line from
    SegmentationBLWX/sssegmentation@eb1878c112402e86a92ee6958778272065bf59b9:
    ``ssseg/modules/models/segmentors/base/base.py`` ``BaseSegmentor.inference`` (lines 52-87)
    and ``auginference`` (lines 89-117), and ``ssseg/test.py`` ``Tester.start`` (lines
    129-131: each view resized to the image's height and width, summed, divided by their
    number). ``net`` stands for the segmentor's forward in TEST mode, which returns
    ``seg_logits`` at the decode head's resolution (e.g. ``mcibi/mcibi.py`` line 125)."""

    def __init__(self, net, *, mode, cropsize=None, stride=None, multiscale=(1,), flip=False,
                 use_probs_before_resize, fixed_seg_target_pairs=None, align_corners=False,
                 num_classes=NUM_CLASSES):
        self.net, self.align_corners = net, align_corners
        self.cfg = {
            "num_classes": num_classes,
            "inference": {
                "forward": {"mode": mode, "cropsize": cropsize, "stride": stride},
                "tta": {"multiscale": list(multiscale), "flip": flip,
                        "use_probs_before_resize": use_probs_before_resize,
                        "fixed_seg_target_pairs": fixed_seg_target_pairs},
            },
        }

    def inference(self, images):  # base.py lines 52-87
        inference_cfg = self.cfg["inference"]
        use_probs_before_resize = inference_cfg["tta"]["use_probs_before_resize"]
        if inference_cfg["forward"]["mode"] == "whole":
            seg_logits = self.net(images)
            if use_probs_before_resize:
                seg_logits = F.softmax(seg_logits, dim=1)
        else:
            stride_h, stride_w = inference_cfg["forward"]["stride"]
            cropsize_h, cropsize_w = inference_cfg["forward"]["cropsize"]
            batch_size, _, image_h, image_w = images.size()
            num_grids_h = max(image_h - cropsize_h + stride_h - 1, 0) // stride_h + 1
            num_grids_w = max(image_w - cropsize_w + stride_w - 1, 0) // stride_w + 1
            seg_logits = images.new_zeros((batch_size, self.cfg["num_classes"], image_h, image_w))
            count_mat = images.new_zeros((batch_size, 1, image_h, image_w))
            for h_idx in range(num_grids_h):
                for w_idx in range(num_grids_w):
                    x1, y1 = w_idx * stride_w, h_idx * stride_h
                    x2, y2 = min(x1 + cropsize_w, image_w), min(y1 + cropsize_h, image_h)
                    x1, y1 = max(x2 - cropsize_w, 0), max(y2 - cropsize_h, 0)
                    crop_images = images[:, :, y1:y2, x1:x2]
                    seg_logits_crop = self.net(crop_images)
                    seg_logits_crop = F.interpolate(
                        seg_logits_crop, size=crop_images.size()[2:], mode="bilinear",
                        align_corners=self.align_corners)
                    if use_probs_before_resize:
                        seg_logits_crop = F.softmax(seg_logits_crop, dim=1)
                    seg_logits += F.pad(seg_logits_crop, (int(x1), int(seg_logits.shape[3] - x2),
                                                          int(y1), int(seg_logits.shape[2] - y2)))
                    count_mat[:, :, y1:y2, x1:x2] += 1
            assert (count_mat == 0).sum() == 0
            seg_logits = seg_logits / count_mat
        return seg_logits

    def auginference(self, images):  # base.py lines 89-117
        infer_tta_cfg, seg_logits_list = self.cfg["inference"]["tta"], []
        for scale_factor in infer_tta_cfg["multiscale"]:
            images_scale = F.interpolate(images, scale_factor=scale_factor, mode="bilinear",
                                         align_corners=self.align_corners)
            seg_logits = self.inference(images=images_scale).cpu()
            seg_logits_list.append(seg_logits)
            if infer_tta_cfg["flip"]:
                images_scale_flip = torch.from_numpy(
                    np.flip(images_scale.cpu().numpy(), axis=3).copy())
                seg_logits_flip = self.inference(images=images_scale_flip)
                fixed_seg_target_pairs = infer_tta_cfg.get("fixed_seg_target_pairs", None)
                if fixed_seg_target_pairs is not None:
                    seg_logits_flip_clone = seg_logits_flip.data.clone()
                    for (pair_a, pair_b) in fixed_seg_target_pairs:
                        seg_logits_flip[:, pair_a, :, :] = seg_logits_flip_clone[:, pair_b, :, :]
                        seg_logits_flip[:, pair_b, :, :] = seg_logits_flip_clone[:, pair_a, :, :]
                seg_logits_flip = torch.from_numpy(
                    np.flip(seg_logits_flip.cpu().numpy(), axis=3).copy()).type_as(seg_logits)
                seg_logits_list.append(seg_logits_flip)
        return seg_logits_list

    def test(self, test_image, height, width):  # test.py lines 128-131, one image
        with torch.no_grad():
            seg_logits_list = self.auginference(test_image)
            seg_logit_list = [
                F.interpolate(seg_logits[0:1], size=(height, width), mode="bilinear",
                              align_corners=self.align_corners)
                for seg_logits in seg_logits_list
            ]
            return sum(seg_logit_list) / len(seg_logit_list)


def _ssseg_test_image(image, test_scale, keep_ratio=True):
    """The dataset's test Resize (ssseg Resize, scale_range None) of the normalised image: the
    stand-in for its cv2.resize of the uint8 image, as predict_probs does."""
    from trainer.data.geometry import stretch_size

    h, w = image.shape[2:]
    size = (rescale_size if keep_ratio else stretch_size)(h, w, test_scale, 1.0)
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


# ADE20K-like: the test size (40, 59) is not the image's, and the ratios give sizes whose
# product with the ratio is not whole (59 x 0.75 = 44.25), where scale_factor and size differ.
SSSEG_IMAGE = (30, 44)
SSSEG_TEST_SCALE = (100, 40)


@pytest.mark.parametrize("mode, crop, stride", [("whole", None, None),
                                                ("slide", (16, 16), (11, 11))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_probs_before_resize_equals_sssegmentation(mode, crop, stride, align_corners):
    """eval.average probs_before_resize (use_probs_before_resize True), ms+flip, whole images
    and sliding windows, with a swapped class pair: bit for bit sssegmentation's order."""
    model = CoarseModel().eval()
    image = _image(*SSSEG_IMAGE, seed=11)
    reference = SsSegReference(
        model, mode=mode, cropsize=crop, stride=stride, multiscale=MS_FLIP_RATIOS, flip=True,
        use_probs_before_resize=True, fixed_seg_target_pairs=[(1, 0)],
        align_corners=align_corners,
    ).test(_ssseg_test_image(image, SSSEG_TEST_SCALE), *SSSEG_IMAGE)
    got = predict_probs(
        model, image,
        InferenceSettings(
            test_scale=SSSEG_TEST_SCALE, scales=MS_FLIP_RATIOS, flip=True, mode=mode,
            crop_size=crop, stride=stride, flip_swap_pairs=[(1, 0)],
            average="probs_before_resize",
        ),
        num_classes=NUM_CLASSES, align_corners=align_corners,
    )
    assert got.shape == (1, NUM_CLASSES, *SSSEG_IMAGE) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference, rtol=0, atol=0)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(1, *SSSEG_IMAGE))
    # the softmax's place matters: mmseg's order (after the resizes) gives other scores
    mmseg = predict_probs(
        lambda x: F.interpolate(model(x), size=x.shape[2:], mode="bilinear",
                                align_corners=align_corners),
        image,
        InferenceSettings(
            test_scale=SSSEG_TEST_SCALE, scales=MS_FLIP_RATIOS, flip=True, mode=mode,
            crop_size=crop, stride=stride, flip_swap_pairs=[(1, 0)],
        ),
        num_classes=NUM_CLASSES,
    )
    assert (mmseg - got).abs().max() > 1e-3


def test_single_scale_probs_before_resize_softmaxes_at_the_model_resolution():
    """One view: softmax of the quarter-resolution logits, then one resize to the image (the
    ViT and Cityscapes configs' single scale); the logits' average differs from it."""
    model = CoarseModel().eval()
    image = _image(*SSSEG_IMAGE, seed=12)
    probs = predict_probs(
        model, image, InferenceSettings(test_scale=None, average="probs_before_resize"),
        num_classes=NUM_CLASSES,
    )
    with torch.no_grad():
        expected = F.interpolate(model(image).softmax(dim=1), size=SSSEG_IMAGE,
                                 mode="bilinear", align_corners=False)
    torch.testing.assert_close(probs, expected, rtol=0, atol=0)
    logits = predict_probs(
        model, image, InferenceSettings(test_scale=None, average="logits"),
        num_classes=NUM_CLASSES,
    )
    assert (logits.softmax(dim=1) - probs).abs().max() > 1e-3


def test_logits_average_equals_sssegmentation_for_lip():
    """eval.average logits (use_probs_before_resize False) with LIP's test: stretched to
    473x473 (here 47x47), one scale, flipped with the handed pairs exchanged, the logits at the
    model's resolution resized once to the image (not model -> input -> image)."""
    model = CoarseModel(num_classes=6).eval()
    image = _image(30, 21, seed=13)
    pairs = [(5, 4), (3, 2)]  # as LIP's (15, 14), (17, 16), (19, 18)
    reference = SsSegReference(
        model, mode="whole", multiscale=[1], flip=True, use_probs_before_resize=False,
        fixed_seg_target_pairs=pairs, num_classes=6,
    ).test(_ssseg_test_image(image, (47, 47), keep_ratio=False), 30, 21)
    settings = InferenceSettings(test_scale=(47, 47), keep_ratio=False, flip=True,
                                 flip_swap_pairs=pairs, average="logits")
    got = predict_probs(model, image, settings, num_classes=6)
    torch.testing.assert_close(got, reference, rtol=0, atol=0)
    # logits at the input size (encode_decode) are resized twice: not sssegmentation's numbers
    twice = predict_probs(
        lambda x: F.interpolate(model(x), size=x.shape[2:], mode="bilinear", align_corners=False),
        image, settings, num_classes=6)
    assert (twice - reference).abs().max() > 1e-4


def test_segmentor_logits_picks_the_resolution_the_order_needs():
    from trainer.evaluate import segmentor_logits
    from trainer.models.segmentor import EncoderDecoder

    head = CoarseModel()
    net = EncoderDecoder(torch.nn.Identity(), head).eval()
    image = _image(20, 28)
    mmseg = segmentor_logits(net, InferenceSettings(average="probs"))
    ssseg = segmentor_logits(net, InferenceSettings(average="probs_before_resize"))
    with torch.no_grad():
        assert mmseg(image).shape[2:] == (20, 28)
        torch.testing.assert_close(ssseg(image), head(image), rtol=0, atol=0)
    assert segmentor_logits(net, InferenceSettings(average="logits"))(image).shape[2:] == (5, 7)
    assert InferenceSettings(average="logits").order == "sssegmentation"
    assert InferenceSettings().order == "mmseg"


def test_sssegmentation_order_has_no_resize_to_multiple():
    with pytest.raises(ValueError, match="size_divisor"):
        InferenceSettings(average="probs_before_resize", size_divisor=32)


def test_stretch_size_gives_a_square_image_the_wider_target():
    """ssseg Resize(keep_ratio=False): only h > w takes the larger value as the height."""
    from trainer.data.geometry import stretch_size

    assert stretch_size(100, 100, (600, 400)) == (400, 600)
    assert stretch_size(101, 100, (400, 600)) == (600, 400)  # the target's order does not matter


# ---------------------------------------------------------------- ms+flip settings of a recipe


def test_ms_flip_settings_may_differ_from_single_scale():
    """eval.ms_flip_mode / ms_flip_crop_size / ms_flip_stride / ms_flip_average replace the
    single-scale values in the ms+flip settings only (the MCIBI HRNet ADE20K config: whole
    images and averaged logits at single scale, 512x512 windows and probabilities before the
    resize for ms+flip)."""
    from pathlib import Path

    from segctl.recipe import load_recipe

    path = (Path(__file__).resolve().parents[1] / "recipes" / "ade20k"
            / "deeplabv3_mcibi_hrnetv2_w48_512x512_180e.yaml")
    recipe = load_recipe(path).recipe
    single = InferenceSettings.from_recipe(recipe, ms_flip=False)
    assert (single.mode, single.crop_size, single.stride, single.average) == (
        "whole", None, None, "logits")
    assert (single.scales, single.flip) == ((1.0,), False)
    ms = InferenceSettings.from_recipe(recipe, ms_flip=True)
    assert (ms.mode, ms.crop_size, ms.stride, ms.average) == (
        "slide", (512, 512), (341, 341), "probs_before_resize")
    assert (ms.scales, ms.flip, ms.test_scale) == (MS_FLIP_RATIOS, True, single.test_scale)
    # unset, the ms+flip evaluation runs as the single scale does
    plain = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={
        "ms_flip_mode": None, "ms_flip_crop_size": None, "ms_flip_stride": None,
        "ms_flip_average": None})})
    ms = InferenceSettings.from_recipe(plain, ms_flip=True)
    assert (ms.mode, ms.crop_size, ms.stride, ms.average) == ("whole", None, None, "logits")


def test_ms_flip_window_errors_say_how_to_fix():
    from pydantic import ValidationError

    from segctl.recipe.schema import EvalConfig

    with pytest.raises(ValidationError, match="set ms_flip_crop_size and ms_flip_stride"):
        EvalConfig(ms_flip_mode="slide")
    with pytest.raises(ValidationError) as err:
        EvalConfig(ms_flip_crop_size=(512, 512), ms_flip_stride=(341, 341))
    message = str(err.value)  # both problems, each with its fix
    assert "ms_flip_crop_size is set but the ms+flip evaluation runs whole images" in message
    assert "ms_flip_stride is set" in message and "set ms_flip_mode: slide" in message
    with pytest.raises(ValidationError, match="two positive integers"):
        EvalConfig(ms_flip_mode="slide", ms_flip_crop_size=(0, 512), ms_flip_stride=(341, 341))
    with pytest.raises(ValidationError, match="size_divisor"):
        EvalConfig(size_divisor=32, ms_flip_average="probs_before_resize")
    # a window inherited from the single-scale slide, or given for the ms+flip one, is fine
    EvalConfig(mode="slide", crop_size=(512, 512), stride=(341, 341), ms_flip_mode="slide")
    EvalConfig(ms_flip_mode="slide", ms_flip_crop_size=(512, 512), ms_flip_stride=(341, 341))
    EvalConfig(mode="slide", crop_size=(512, 512), stride=(341, 341), ms_flip_mode="whole")


def test_mcibi_segmentor_in_sssegmentation_order():
    """The MCIBI segmentor through segmentor_logits: the stage-2 logits at 1/8 of the input
    (those encode_decode resizes), scored in sssegmentation's order as the reference does,
    without touching the memory."""
    from tests.test_models_deeplab import tiny_mcibi
    from trainer.evaluate import segmentor_logits

    net = tiny_mcibi().eval()
    memory = net.decode_head.memory_module.memory.clone()
    settings = InferenceSettings(average="probs_before_resize")
    logits = segmentor_logits(net, settings)
    image = _image(40, 56, seed=14)
    with torch.no_grad():
        coarse = logits(image)
        assert coarse.shape == (1, 5, 5, 7)
        torch.testing.assert_close(
            F.interpolate(coarse, size=(40, 56), mode="bilinear", align_corners=False),
            net.encode_decode(image), rtol=0, atol=0)
    got = predict_probs(
        logits, image,
        InferenceSettings(test_scale=(80, 40), scales=(0.75, 1.0), flip=True,
                          average="probs_before_resize"),
        num_classes=5,
    )
    reference = SsSegReference(
        logits, mode="whole", multiscale=(0.75, 1.0), flip=True, use_probs_before_resize=True,
        num_classes=5,
    ).test(_ssseg_test_image(image, (80, 40)), 40, 56)
    torch.testing.assert_close(got, reference, rtol=0, atol=0)
    assert torch.equal(net.decode_head.memory_module.memory, memory)

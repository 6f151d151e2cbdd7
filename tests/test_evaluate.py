"""Test-time inference (whole, slide, multi-scale + flip) and sharded dataset evaluation."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from trainer.evaluate import (
    MS_FLIP_RATIOS,
    InferenceSettings,
    evaluate_dataset,
    predict_probs,
    rescale_size,
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
        model, image, test_scale=test_scale, scales=MS_FLIP_RATIOS, flip=True,
        mode="whole", num_classes=NUM_CLASSES,
    )
    assert got.shape == (1, NUM_CLASSES, h, w) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(1, h, w))
    # the views really differ, so the test would catch a missing scale or flip
    single = predict_probs(model, image, test_scale=test_scale, num_classes=NUM_CLASSES)
    assert not torch.allclose(single, got, atol=1e-3)


def test_single_scale_without_test_scale_is_softmax_of_whole():
    model = ScaleDependentConvModel().eval()
    image = _image(19, 26)
    probs = predict_probs(model, image, test_scale=None, num_classes=NUM_CLASSES)
    torch.testing.assert_close(probs, whole_inference(model, image).softmax(dim=1))


def test_slide_mode_ms_flip_runs_and_matches_whole_for_pointwise_model():
    model = pointwise_model()
    image = _image(24, 33)
    kwargs = dict(test_scale=None, scales=(0.75, 1.0, 1.5), flip=True, num_classes=NUM_CLASSES)
    slide = predict_probs(model, image, mode="slide", crop_size=(16, 16), stride=(8, 8), **kwargs)
    whole = predict_probs(model, image, mode="whole", **kwargs)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-6)


def test_autocast_bf16_returns_float32_probabilities():
    model = ScaleDependentConvModel().eval()
    image = _image(16, 16)
    probs = predict_probs(
        model, image, test_scale=None, num_classes=NUM_CLASSES, autocast_dtype=torch.bfloat16
    )
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 16, 16))


def test_invalid_settings_report_every_problem():
    with pytest.raises(ValueError) as err:
        InferenceSettings(mode="slide", scales=())
    message = str(err.value)
    assert "crop_size" in message and "stride" in message and "scales" in message
    with pytest.raises(ValueError, match="mode"):
        predict_probs(pointwise_model(), _image(8, 8), test_scale=None, mode="tile",
                      num_classes=NUM_CLASSES)


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
            model, sample["image"][None], test_scale=None, scales=(0.75, 1.0), flip=True,
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
    plain = predict_probs(HandedModel(), image, test_scale=None, num_classes=3)
    swapped = predict_probs(HandedModel(), image, test_scale=None, flip=True, num_classes=3,
                            flip_swap_pairs=[(0, 1)])
    torch.testing.assert_close(swapped, plain)  # both views agree once the pair is exchanged
    unswapped = predict_probs(HandedModel(), image, test_scale=None, flip=True, num_classes=3)
    assert (unswapped - plain).abs().max() > 0.1  # without it, the flipped view contradicts
    with pytest.raises(ValueError, match="names class 3 of 3"):
        predict_probs(HandedModel(), image, test_scale=None, flip=True, num_classes=3,
                      flip_swap_pairs=[(0, 3)])
    with pytest.raises(ValueError, match="each at most once"):
        InferenceSettings(flip=True, flip_swap_pairs=((0, 1), (1, 2)))


def test_recipe_flip_swap_pairs_reach_the_inference_settings():
    from pathlib import Path

    from segctl.recipe import load_recipe
    from trainer.engine import inference_settings

    recipe = next((Path(__file__).resolve().parents[1] / "recipes" / "lip").glob("*.yaml"))
    loaded = load_recipe(recipe).recipe
    assert loaded.data.flip_swap_pairs, recipe
    settings = inference_settings(loaded, ms_flip=True)
    assert settings.flip_swap_pairs == tuple(tuple(p) for p in loaded.data.flip_swap_pairs)
    assert inference_settings(loaded, ms_flip=False).flip is False


def test_stretch_size_ignores_the_aspect_ratio():
    from trainer.evaluate import stretch_size

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

    probs = predict_probs(model, _image(30, 20), test_scale=(47, 47), scales=(1.0, 0.5),
                          num_classes=3, keep_ratio=False)
    assert seen == [(47, 47), (23, 23)] and probs.shape == (1, 3, 30, 20)
    seen.clear()
    predict_probs(model, _image(30, 20), test_scale=(47, 47), num_classes=3)
    assert seen == [(47, 31)]  # keep-ratio: the long edge bounded by 47
    with pytest.raises(ValueError, match="keep_ratio False needs test_scale"):
        InferenceSettings(keep_ratio=False)


def test_lip_recipes_test_at_473_without_keeping_the_ratio():
    from pathlib import Path

    from segctl.recipe import load_recipe
    from trainer.engine import inference_settings

    for path in (Path(__file__).resolve().parents[1] / "recipes" / "lip").glob("*.yaml"):
        settings = inference_settings(load_recipe(path).recipe, ms_flip=False)
        assert settings.keep_ratio is False and settings.test_scale == (473, 473), path


def test_views_can_average_logits_instead_of_probabilities():
    """sssegmentation's Tester averages the views' resized logits (no softmax)."""
    model = ScaleDependentConvModel()
    image = _image(12, 16, seed=5)
    got = predict_probs(model, image, test_scale=None, scales=(0.5, 1.0), flip=True,
                        num_classes=NUM_CLASSES, average="logits")
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
    probs = predict_probs(model, image, test_scale=None, scales=(0.5, 1.0), flip=True,
                          num_classes=NUM_CLASSES)
    torch.testing.assert_close(probs, sum(v.softmax(1) for v in views) / 4)
    with pytest.raises(ValueError, match="average must be"):
        InferenceSettings(average="median")


def test_recipe_view_average_reaches_the_inference_settings():
    """eval.average travels to the inference settings; the mmseg-based recipes average
    probabilities (mmseg aug_test). Which sssegmentation recipes average logits is their
    parity test's business (the config's use_probs_before_resize)."""
    from pathlib import Path

    from segctl.recipe import load_recipe
    from trainer.engine import inference_settings

    for path in (Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"):
        recipe = load_recipe(path).recipe
        assert inference_settings(recipe, True).average == recipe.eval.average, path
        ssseg = recipe.reference is not None and "sssegmentation" in recipe.reference.source
        if not ssseg:
            assert recipe.eval.average == "probs", path


# ---------------------------------------------------------------- resize to a multiple


def test_size_to_multiple_rounds_each_edge_up():
    """mmseg ResizeToMultiple / mmcv imresize_to_multiple: ceil(edge / d) * d, worked by hand."""
    from trainer.evaluate import size_to_multiple

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
    probs = predict_probs(model, image, test_scale=(140, 40), scales=(1.0, 0.5), flip=True,
                          num_classes=NUM_CLASSES, size_divisor=32)
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
    plain = predict_probs(model, _image(64, 96), test_scale=None, num_classes=NUM_CLASSES)
    rounded = predict_probs(model, _image(64, 96), test_scale=None, num_classes=NUM_CLASSES,
                            size_divisor=32)
    assert seen == [(64, 96), (64, 96)]
    torch.testing.assert_close(rounded, plain, rtol=0, atol=0)
    # without a test scale the original size itself is rounded: (45, 70) -> (64, 96)
    seen.clear()
    predict_probs(model, _image(45, 70), test_scale=None, num_classes=NUM_CLASSES, size_divisor=32)
    assert seen == [(64, 96)]


def test_recipe_size_divisor_reaches_the_inference_settings():
    """eval.size_divisor travels with the other eval settings (training validation, `segctl
    eval`, the Cityscapes submission all build them with inference_settings)."""
    from pathlib import Path

    from segctl.recipe import load_recipe
    from trainer.engine import inference_settings

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    for path in sorted(recipes.glob("ade20k/upernet_internimage_*.yaml")):
        recipe = load_recipe(path).recipe
        assert inference_settings(recipe, ms_flip=False).size_divisor == 32, path
        assert inference_settings(recipe, ms_flip=True).size_divisor == 32, path
    quick = load_recipe(recipes / "quickstart.yaml").recipe
    assert inference_settings(quick, ms_flip=False).size_divisor is None

"""Training and evaluation transforms: sizes, crop rule, padding, dtypes, determinism."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trainer.data.geometry import rescale_size
from trainer.data.layouts import build_dataset
from trainer.data.transforms import (
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomBrightnessShift,
    RandomResize,
    RandomRotation,
    ToTensor,
    UPColorJitter,
    eval_pipeline,
    train_pipeline,
)

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


class FixedRatio:
    """A stand-in generator whose ``random()`` returns a chosen value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def _sample(h: int, w: int) -> dict:
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "label": rng.integers(0, 19, (h, w), dtype=np.uint8), "path": "x"}


@pytest.mark.parametrize(
    ("h", "w", "u", "expected_wh"),
    [
        # ratio = 0.5 + u * 1.5; target = (int(2048 r), int(1024 r)); factor = min(long/.., short/..)
        (1024, 2048, 0.0, (1024, 512)),      # r=0.5: target (1024, 512)
        (1024, 2048, 1.0, (4096, 2048)),     # r=2.0
        (1024, 2048, 0.5, (2560, 1280)),     # r=1.25
        (512, 683, 1 / 3, (1366, 1024)),     # r=1.0, short edge binds: 1024/512 = 2
        (300, 400, 0.2, (1092, 819)),        # r=0.8: target (1638, 819); factor 819/300 = 2.73
    ],
)
def test_random_resize_follows_rescale_rule(h, w, u, expected_wh):
    resize = RandomResize(scale=(2048, 1024), ratio_range=(0.5, 2.0))
    out = resize(_sample(h, w), FixedRatio(u))
    assert out["image"].shape == (expected_wh[1], expected_wh[0], 3)
    assert out["label"].shape == (expected_wh[1], expected_wh[0])


def test_rescale_size_limits_both_edges():
    # (h, w) in and out: a 2048x1024 (w x h) image fits 512x512 as 512x256
    assert rescale_size(1024, 2048, (512, 512)) == (256, 512)
    assert rescale_size(400, 100, (2048, 256)) == (1024, 256)  # short edge binds
    assert rescale_size(512, 683, (512, 2048)) == (512, 683)


def test_random_resize_label_nearest_keeps_values():
    sample = _sample(64, 128)
    sample["label"][:] = 7
    sample["label"][:, 64:] = 255
    out = RandomResize((256, 128), (0.9, 1.7))(sample, np.random.default_rng(1))
    assert set(np.unique(out["label"]).tolist()) == {7, 255}


def _two_region_label(h=100, w=400) -> np.ndarray:
    """Left 90% class 1, right 10% class 2: most 100x100 crops are single-class."""
    label = np.ones((h, w), np.uint8)
    label[:, int(w * 0.9):] = 2
    return label


def test_random_crop_respects_cat_max_ratio():
    crop = RandomCrop((100, 100), cat_max_ratio=0.75)
    accepted = 0
    for seed in range(50):
        sample = {"image": np.zeros((100, 400, 3), np.uint8), "label": _two_region_label()}
        out = crop(sample, np.random.default_rng(seed))
        assert out["image"].shape == (100, 100, 3) and out["label"].shape == (100, 100)
        counts = np.bincount(out["label"].ravel())
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < 0.75:
            accepted += 1
    # a uniform crop meets the rule with p = 16/301 (~5%); 11 tries lift that to ~45%
    assert accepted >= 12


def test_random_crop_ignores_ignore_index():
    crop = RandomCrop((10, 10), cat_max_ratio=0.75)
    label = np.full((10, 10), 255, np.uint8)
    label[:, :2] = 3
    label[:, 2:4] = 4
    assert crop.acceptable(label)  # 3 and 4 each 50% of the counted pixels
    label[:, 2:4] = 255
    assert not crop.acceptable(label)  # one class only


def test_random_crop_smaller_image_keeps_size():
    out = RandomCrop((64, 64))(_sample(30, 100), np.random.default_rng(0))
    assert out["image"].shape == (30, 64, 3)


def test_pad_fills_label_with_ignore():
    sample = _sample(30, 40)
    out = Pad((64, 48), pad_val=0, seg_pad_val=255)(sample)
    assert out["image"].shape == (64, 48, 3) and out["label"].shape == (64, 48)
    assert (out["label"][30:, :] == 255).all() and (out["label"][:, 40:] == 255).all()
    assert (out["image"][30:, :] == 0).all()
    with pytest.raises(ValueError, match="already larger"):
        Pad((16, 16))(_sample(30, 40))


def test_pad_centre_puts_the_odd_pixel_after():
    """sssegmentation Padding: top = (h_out - h) // 2, left = (w_out - w) // 2."""
    sample = _sample(30, 41)
    out = Pad((64, 48), pad_val=0, seg_pad_val=255, position="center")(
        {"image": sample["image"].copy(), "label": sample["label"].copy()})
    assert out["image"].shape == (64, 48, 3)
    np.testing.assert_array_equal(out["label"][17:47, 3:44], sample["label"])
    np.testing.assert_array_equal(out["image"][17:47, 3:44], sample["image"])
    assert (out["label"][:17] == 255).all() and (out["label"][47:] == 255).all()
    assert (out["label"][:, :3] == 255).all() and (out["label"][:, 44:] == 255).all()
    with pytest.raises(ValueError, match="position"):
        Pad((64, 48), position="top")


def test_normalize_and_to_tensor():
    sample = _sample(8, 6)
    expected = (sample["image"].astype(np.float32) - np.array(MEAN, np.float32)) / np.array(
        STD, np.float32)
    out = ToTensor()(Normalize(MEAN, STD)(sample))
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 8, 6)
    assert out["label"].dtype == torch.int64 and out["label"].shape == (8, 6)
    np.testing.assert_allclose(out["image"].permute(1, 2, 0).numpy(), expected, rtol=1e-5)


def test_flip_is_horizontal():
    sample = _sample(4, 5)
    image, label = sample["image"].copy(), sample["label"].copy()
    out = RandomFlip(prob=1.0)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], image[:, ::-1])
    np.testing.assert_array_equal(out["label"], label[:, ::-1])


def _reference_photometric(image, draws, pmd):
    """Per-pixel float arithmetic as mmseg writes it, driven by the same generator."""
    def convert(img, alpha=1, beta=0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
    img = image
    if draws.integers(2):
        img = convert(img, beta=draws.uniform(-pmd.brightness_delta, pmd.brightness_delta))
    mode = draws.integers(2)

    def contrast(img):
        if draws.integers(2):
            img = convert(img, alpha=draws.uniform(*pmd.contrast_range))
        return img
    if mode == 1:
        img = contrast(img)
    if draws.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = convert(hsv[..., 1], alpha=draws.uniform(*pmd.saturation_range))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if draws.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        delta = draws.integers(-pmd.hue_delta, pmd.hue_delta)
        hsv[..., 0] = (hsv[..., 0].astype(int) + delta) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0:
        img = contrast(img)
    return img


@pytest.mark.parametrize("seed", range(12))
def test_photometric_lookup_tables_match_per_pixel_arithmetic(seed):
    pmd = PhotoMetricDistortion()
    image = _sample(32, 48)["image"]
    expected = _reference_photometric(image, np.random.default_rng(seed), pmd)
    out = pmd({"image": image.copy()}, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["image"], expected)


def _cityscapes_frame(real_data: Path) -> dict:
    return build_dataset("cityscapes", real_data / "cityscapes", "val").load(0)


def test_train_pipeline_on_real_frame(real_data: Path):
    pipeline = train_pipeline((512, 256), (96, 160), MEAN, STD, seed=0)
    for _ in range(5):
        out = pipeline(_cityscapes_frame(real_data))
        assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 96, 160)
        assert out["label"].dtype == torch.int64 and out["label"].shape == (96, 160)
        assert set(out["label"].unique().tolist()) <= set(range(19)) | {255}


def test_train_pipeline_pads_small_images(real_data: Path):
    # scale below the crop: every output is padded with the ignore index
    pipeline = train_pipeline((128, 64), (96, 160), MEAN, STD, ratio_range=(1.0, 1.0), seed=0)
    out = pipeline(_cityscapes_frame(real_data))
    assert out["image"].shape == (3, 96, 160)
    assert (out["label"][64:, :] == 255).all() and (out["label"][:, 128:] == 255).all()


def test_train_pipeline_is_deterministic(real_data: Path):
    def run(seed):
        pipeline = train_pipeline((512, 256), (64, 64), MEAN, STD, seed=seed)
        return [pipeline(_cityscapes_frame(real_data)) for _ in range(4)]
    first, again, other = run(3), run(3), run(4)
    for a, b in zip(first, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert any(not torch.equal(a["image"], c["image"]) for a, c in zip(first, other))


def test_eval_pipeline_keeps_resolution(real_data: Path):
    ds = build_dataset("cityscapes", real_data / "cityscapes", "val",
                       transform=eval_pipeline(MEAN, STD))
    out = ds[0]
    assert out["image"].shape == (3, 128, 256) and out["image"].dtype == torch.float32
    assert out["label"].shape == (128, 256) and out["label"].dtype == torch.int64


# --- sssegmentation's LIP options: square resize, flip with class swap, rotation -------------


def _lip_sample(real_data):
    dataset = build_dataset("lip", real_data / "lip", "train")
    return dataset.load(0)


def test_resize_without_keep_ratio_matches_the_image_orientation():
    resize = RandomResize((1024, 512), (1.0, 1.0), keep_ratio=False, match_orientation=True)
    assert resize.target_size(width=60, height=100, ratio=1.0) == (512, 1024)  # portrait
    assert resize.target_size(width=100, height=60, ratio=1.0) == (1024, 512)
    assert resize.target_size(width=80, height=80, ratio=1.0) == (1024, 512)  # square: width long
    assert RandomResize((520, 520), keep_ratio=False, match_orientation=True).target_size(
        300, 200, 0.75) == (390, 390)
    mmcv_style = RandomResize((1024, 512), (1.0, 1.0), keep_ratio=False)
    assert mmcv_style.target_size(width=60, height=100, ratio=1.0) == (1024, 512)


def test_flip_swaps_left_and_right_classes():
    label = np.array([[14, 15, 0, 16, 255]], dtype=np.uint8)
    sample = {"image": np.zeros((1, 5, 3), np.uint8), "label": label}
    out = RandomFlip(1.0, swap_pairs=[(15, 14), (17, 16)])(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["label"], [[255, 17, 0, 14, 15]])
    with pytest.raises(ValueError, match="once"):
        RandomFlip(0.5, swap_pairs=[(1, 2), (2, 3)])


def test_rotation_draws_whole_degrees_in_the_half_open_range():
    rotation = RandomRotation(30, prob=0.6)
    angles, rotated = [], 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        if rng.random() <= 0.6:
            rotated += 1
            angles.append(int(rng.integers(-30, 30)))
    assert 0.5 < rotated / 400 < 0.7 and min(angles) >= -30 and max(angles) <= 29
    # the transform draws exactly that: same seeds, same decisions
    sample = {"image": np.zeros((9, 9, 3), np.uint8), "label": np.zeros((9, 9), np.uint8)}
    changed = sum(
        int((rotation(dict(sample), np.random.default_rng(seed))["label"] == 255).any())
        for seed in range(400)
    )
    assert changed <= rotated


def _drawn_angle(seed: int) -> int:
    rng = np.random.default_rng(seed)
    rng.random()
    return int(rng.integers(-30, 30))


def test_rotation_on_real_lip_keeps_labels_and_alignment(real_data):
    sample = _lip_sample(real_data)
    image, label = sample["image"], sample["label"]
    classes = set(np.unique(label).tolist())
    assert classes <= set(range(20))
    rotation = RandomRotation(30, prob=1.0, seg_fill=255)
    height, width = label.shape
    # a label-coded image goes through the image path: where the source label is constant over
    # a 7x7 window (beyond the bicubic support and OpenCV's fixed-point rounding), the rotated
    # image holds the rotated label's class (to 1 grey level)
    coded = np.repeat(label[:, :, None] * 10, 3, axis=2).astype(np.uint8)
    kernel = np.ones((7, 7), np.uint8)
    flat_source = (cv2.dilate(label, kernel) == cv2.erode(label, kernel)).astype(np.uint8)
    flat_source[:3], flat_source[-3:], flat_source[:, :3], flat_source[:, -3:] = 0, 0, 0, 0
    for seed in range(6):
        out = rotation({"image": coded.copy(), "label": label.copy()}, np.random.default_rng(seed))
        rotated = out["label"]
        assert rotated.shape == (height, width) and rotated.dtype == label.dtype
        assert set(np.unique(rotated).tolist()) <= classes | {255}
        flat = rotation({"image": coded.copy(), "label": flat_source.copy()},
                        np.random.default_rng(seed))["label"] == 1
        assert flat.sum() > 0.2 * rotated.size and (rotated[flat] != 255).all()
        np.testing.assert_allclose(out["image"][..., 0][flat], rotated[flat] * 10.0, atol=1)
    # geometry: a marker at (x, y) lands at matrix @ (x, y, 1) in both image and label
    marker_label = np.zeros((height, width), np.uint8)
    marker_label[40:47, 100:107] = 1  # centre (103, 43) in (x, y)
    marker_image = np.repeat(marker_label[:, :, None] * 200, 3, axis=2).astype(np.uint8)
    seed = next(s for s in range(100) if abs(_drawn_angle(s)) >= 20)
    out = rotation({"image": marker_image, "label": marker_label}, np.random.default_rng(seed))
    expected = rotation.matrix(height, width, _drawn_angle(seed)) @ np.array([103.0, 43.0, 1.0])
    ys, xs = np.nonzero(out["label"] == 1)
    np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=0.75)
    weights = out["image"][..., 0].astype(float)
    ys, xs = np.mgrid[:height, :width]
    centre = [(xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()]
    np.testing.assert_allclose(centre, expected, atol=0.75)
    # a nonzero angle leaves the corners outside the source: label 255, image 0
    seed = next(s for s in range(100) if _drawn_angle(s) not in (0, -1, 1))
    out = rotation({"image": image.copy(), "label": label.copy()}, np.random.default_rng(seed))
    assert out["label"][0, 0] == 255 and out["label"][-1, -1] == 255
    assert not out["image"][0, 0].any()


def test_lip_train_pipeline_on_the_real_sample(real_data):
    sample = _lip_sample(real_data)
    pipeline = train_pipeline(
        scale=(520, 520), crop_size=(473, 473), mean=MEAN, std=STD, ratio_range=(0.75, 1.25),
        keep_ratio=False, flip_swap_pairs=[(15, 14), (17, 16), (19, 18)], rotation=(30, 0.6),
        seed=0,
    )
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names.index("RandomRotation") == names.index("RandomFlip") + 1
    assert names.index("PhotoMetricDistortion") == names.index("RandomRotation") + 1
    for _ in range(4):
        out = pipeline({k: (v.copy() if isinstance(v, np.ndarray) else v)
                        for k, v in sample.items()})
        assert out["image"].shape == (3, 473, 473) and out["label"].shape == (473, 473)
        assert set(out["label"].unique().tolist()) <= set(range(20)) | {255}


# --- United-Perception's options (up/tasks/seg/data/seg_transfomer.py) -------------------------


class Draws:
    """A stand-in generator whose ``random()`` returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def _up_seg_rand_resize_ratio(random, scale=(0.5, 2.0)) -> float:
    """SegRandResize.augment's ratio, as United-Perception writes it (``random`` = Python's)."""
    if random.random() < 0.5:
        temp_scale = scale[0] + (1. - scale[0]) * random.random()
    else:
        temp_scale = 1. + (scale[1] - 1.) * random.random()
    return temp_scale


@pytest.mark.parametrize(
    ("draws", "ratio", "expected_wh"),
    [
        # first draw < 0.5: r = 0.5 + 0.5 u; else r = 1 + u; size (int(2048 r), int(1024 r))
        ((0.3, 0.6), 0.8, (1638, 819)),
        ((0.7, 0.6), 1.6, (3276, 1638)),
        ((0.5, 0.0), 1.0, (2048, 1024)),     # 0.5 is not below 0.5: upper half
        ((0.0, 0.999), 0.9995, (2046, 1023)),
        ((0.2, 0.3), 0.65, (1331, 665)),     # 2048 * 0.65 = 1331.2, 1024 * 0.65 = 665.6
    ],
)
def test_halves_ratio_and_size_follow_up_seg_rand_resize(draws, ratio, expected_wh):
    resize = RandomResize((2048, 1024), (0.5, 2.0), keep_ratio=False, match_orientation=True,
                          ratio_sampling="halves")
    assert resize.draw_ratio(Draws(*draws)) == pytest.approx(ratio, abs=1e-12)
    assert _up_seg_rand_resize_ratio(Draws(*draws)) == resize.draw_ratio(Draws(*draws))
    out = resize(_sample(1024, 2048), Draws(*draws))
    assert out["image"].shape == (expected_wh[1], expected_wh[0], 3)
    assert out["label"].shape == (expected_wh[1], expected_wh[0])
    # UP scales the image's own size: new_w = int(w * r), new_h = int(h * r)
    assert expected_wh == (int(2048 * ratio), int(1024 * ratio))


def test_halves_ratio_distribution_with_a_seeded_generator():
    halves = RandomResize((2048, 1024), (0.5, 2.0), ratio_sampling="halves")
    uniform = RandomResize((2048, 1024), (0.5, 2.0))
    rng = np.random.default_rng(0)
    ratios = np.array([halves.draw_ratio(rng) for _ in range(20000)])
    # the same stream through United-Perception's own formula gives the same ratios
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(ratios, [_up_seg_rand_resize_ratio(rng) for _ in range(20000)])
    assert ratios.min() >= 0.5 and ratios.max() < 2.0
    below = ratios[ratios < 1.0]
    assert abs(below.size / ratios.size - 0.5) < 0.015          # 1/2 below one
    assert abs(below.mean() - 0.75) < 0.01                       # uniform in [0.5, 1)
    assert abs(ratios[ratios >= 1.0].mean() - 1.5) < 0.01        # uniform in [1, 2)
    rng = np.random.default_rng(0)
    mmcv = np.array([uniform.draw_ratio(rng) for _ in range(20000)])
    assert abs((mmcv < 1.0).mean() - 1 / 3) < 0.015              # mmcv: 1/3 below one


def test_halves_needs_a_range_around_one():
    with pytest.raises(ValueError, match="min <= 1 <= max"):
        RandomResize((2048, 1024), (1.25, 2.0), ratio_sampling="halves")
    with pytest.raises(ValueError, match="ratio_sampling"):
        RandomResize((2048, 1024), (0.5, 2.0), ratio_sampling="gauss")


def _reference_up_color_jitter(image, draws, jitter):
    """RandomColorJitterMMSeg.augment as United-Perception writes it, with ``random.randint(a,
    b)`` (both ends included) as ``draws.integers(a, b + 1)`` and ``random.uniform`` as
    ``draws.uniform``; per-pixel float arithmetic."""
    def randint(a, b):
        return int(draws.integers(a, b + 1))

    def convert(img, alpha=1, beta=0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast(img):
        if randint(0, 2):
            return convert(img, alpha=draws.uniform(*jitter.contrast_range))
        return img

    img = image
    if randint(0, 2):
        img = convert(img, beta=draws.uniform(-jitter.brightness_delta, jitter.brightness_delta))
    mode = randint(0, 2)
    if mode == 1:
        img = contrast(img)
    if randint(0, 2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=draws.uniform(*jitter.saturation_range))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if randint(0, 2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + randint(-jitter.hue_delta,
                                                           jitter.hue_delta)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0:
        img = contrast(img)
    return img


@pytest.mark.parametrize("seed", range(16))
def test_up_color_jitter_matches_the_reference_arithmetic(seed):
    jitter = UPColorJitter()
    image = _sample(32, 48)["image"]
    expected = _reference_up_color_jitter(image, np.random.default_rng(seed), jitter)
    out = jitter({"image": image.copy()}, np.random.default_rng(seed))
    np.testing.assert_array_equal(out["image"], expected)


def test_up_color_jitter_odds():
    """randint(0, 2) is non-zero 2/3 of the time; mode 2 (1/3) skips contrast."""
    jitter = UPColorJitter()
    rng = np.random.default_rng(0)
    assert abs(np.mean([jitter._applies(rng) for _ in range(30000)]) - 2 / 3) < 0.01
    modes = np.bincount([jitter._draw_mode(rng) for _ in range(30000)], minlength=3) / 30000
    np.testing.assert_allclose(modes, [1 / 3] * 3, atol=0.01)
    hues = {jitter._draw_hue_delta(rng) for _ in range(3000)}
    assert hues == set(range(-18, 19))                           # both ends, as randint
    assert max(PhotoMetricDistortion()._draw_hue_delta(rng) for _ in range(3000)) == 17


def test_brightness_shift_by_hand():
    image = np.array([[[0, 5, 250], [128, 255, 9]]], dtype=np.uint8)
    shift = RandomBrightnessShift(10, 0.5)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        applied = rng.random() < 0.5
        delta = int(rng.integers(-10, 11)) if applied else 0
        expected = np.clip(image.astype(int) + delta, 0, 255).astype(np.uint8)
        out = shift({"image": image.copy()}, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["image"], expected)
    rng = np.random.default_rng(1)
    deltas = []
    for _ in range(4000):
        out = shift({"image": np.full((1, 1, 3), 100, np.uint8)}, rng)["image"]
        deltas.append(int(out[0, 0, 0]) - 100)
    assert abs(np.mean(np.array(deltas) == 0) - (0.5 + 0.5 / 21)) < 0.02
    assert min(deltas) == -10 and max(deltas) == 10


def _small_frame() -> dict:
    """A 40x60 frame below the 64x64 crop: the crop is padded at the bottom and right."""
    sample = _sample(40, 60)
    sample["label"][:] = 3
    return sample


def test_pad_before_normalize_gives_minus_mean_over_std():
    pipeline = train_pipeline((60, 40), (64, 64), MEAN, STD, ratio_range=(1.0, 1.0),
                              cat_max_ratio=1.0, keep_ratio=False, photometric=None,
                              pad_order="before_photometric", seed=0)
    out = pipeline(_small_frame())
    image, label = out["image"].permute(1, 2, 0).numpy(), out["label"].numpy()
    expected = (0.0 - np.array(MEAN)) / np.array(STD)            # -2.1179, -2.0357, -1.8044
    np.testing.assert_allclose(image[40:, :], np.broadcast_to(expected, (24, 64, 3)), rtol=1e-6)
    np.testing.assert_allclose(image[:, 60:], np.broadcast_to(expected, (64, 4, 3)), rtol=1e-6)
    assert (label[40:, :] == 255).all() and (label[:, 60:] == 255).all()
    assert (label[:40, :60] == 3).all()
    mmseg = train_pipeline((60, 40), (64, 64), MEAN, STD, ratio_range=(1.0, 1.0),
                           cat_max_ratio=1.0, keep_ratio=False, photometric=None, seed=0)
    out = mmseg(_small_frame())
    assert (out["image"][:, 40:, :] == 0).all() and (out["label"][40:, :] == 255).all()


def test_pad_before_photometric_jitters_the_pad():
    """UP pads inside seg_crop, before seg_rand_brightness: pad pixels become the shift k in
    [0, 10] (negative shifts clip to 0), the same k on every channel, then (k - mean) / std."""
    seen = set()
    for seed in range(30):
        pipeline = train_pipeline((60, 40), (64, 64), MEAN, STD, ratio_range=(1.0, 1.0),
                                  cat_max_ratio=1.0, keep_ratio=False, photometric="up_brightness",
                                  pad_order="before_photometric", seed=seed)
        pad = pipeline(_small_frame())["image"].permute(1, 2, 0).numpy()[40:, :]
        raw = pad * np.array(STD, np.float32) + np.array(MEAN, np.float32)
        k = np.rint(raw)
        np.testing.assert_allclose(raw, k, atol=1e-3)
        assert (k == k[0, 0]).all() and 0 <= k[0, 0, 0] <= 10
        seen.add(int(k[0, 0, 0]))
    assert 0 in seen and len(seen) > 2


def test_train_pipeline_orders_the_up_options():
    up = train_pipeline((2048, 1024), (1024, 1024), MEAN, STD, cat_max_ratio=1.0,
                        keep_ratio=False, ratio_sampling="halves", photometric="up_color_jitter",
                        pad_order="before_photometric")
    assert [type(t).__name__ for t in up.transforms] == [
        "RandomResize", "RandomCrop", "RandomFlip", "Pad", "UPColorJitter", "Normalize",
        "ToTensor"]
    assert up.transforms[0].ratio_sampling == "halves" and up.transforms[3].pad_val == 0
    standard = train_pipeline((2048, 1024), (1024, 1024), MEAN, STD)
    assert [type(t).__name__ for t in standard.transforms] == [
        "RandomResize", "RandomCrop", "RandomFlip", "PhotoMetricDistortion", "Normalize", "Pad",
        "ToTensor"]
    with pytest.raises(ValueError, match="photometric"):
        train_pipeline((2048, 1024), (1024, 1024), MEAN, STD, photometric="colour")
    with pytest.raises(ValueError, match="pad_order"):
        train_pipeline((2048, 1024), (1024, 1024), MEAN, STD, pad_order="first")

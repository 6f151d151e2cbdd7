"""The standard mmsegmentation training and evaluation transforms, on sample dicts.

A sample is the dict a :class:`~trainer.data.base.SegmentationDataset` yields: ``image``
``np.uint8 (H, W, 3)`` RGB, ``label`` ``(H, W)`` integer class indices (optional: transforms
leave a missing label missing), ``path``. Each transform is a small callable class
``t(sample, rng) -> sample`` that may modify the dict in place and returns it.

Two ends: the float path (:class:`Normalize` -> :class:`Pad` -> :class:`ToTensor`, float32
``(3, H, W)`` images, as mmseg 0.x) and the uint8 path training uses (:func:`train_pipeline`
with ``normalize_on_device``: :class:`Pad` records the pad box, :class:`ToUint8Tensor` keeps
the image uint8 ``(H, W, 3)``, and :class:`BatchNormalize` casts, normalises and fills the
pad on the device, as mmseg 1.x's ``SegDataPreProcessor``). The two give the same labels and
the same float32 images, bit for bit; the uint8 path spares the CPU the float work (about a
third of the transforms' time on an ADE20K crop) and moves a quarter of the image bytes.

Randomness: every random draw comes from the ``numpy.random.Generator`` passed as ``rng``;
nothing touches numpy's or Python's global state. Training passes each sample a generator of
its own, seeded from its place in the data order (:class:`trainer.data.order.AugmentedDataset`),
so neither the worker count nor the worker a sample lands on changes its augmentation. Called
without ``rng``, :class:`Compose` uses one generator of its own (seeded by its ``seed``
argument), so a pipeline built with the same seed and fed the same samples in the same order
produces the same output.

References (behaviour matched, code written here): mmsegmentation
``mmseg/datasets/transforms/transforms.py`` (1.x) and ``mmseg/datasets/pipelines/transforms.py``
(0.x) for ``RandomCrop``, ``PhotoMetricDistortion``, ``Pad``, ``Normalize``, ``RandomFlip``;
mmcv ``mmcv/transforms/processing.py`` ``RandomResize`` and ``mmcv/image/geometric.py``
``rescale_size``/``imrescale``/``imresize`` for the resize rule and interpolation;
sssegmentation ``ssseg/modules/datasets/pipelines/transforms.py`` for ``Resize`` with
``keep_ratio=False`` (:class:`RandomResize` with ``match_orientation``), ``RandomRotation``
(:class:`RandomRotation`) and ``RandomFlip`` with ``fix_ann_pairs`` (:class:`RandomFlip` with
``swap_pairs``), which its LIP configs use; ModelTC/United-Perception
``up/tasks/seg/data/seg_transfomer.py`` (the seg benchmark's Cityscapes configs) for
``SegRandResize`` (:class:`RandomResize` with ``ratio_sampling="halves"``), ``SegCrop``'s
padding before the colour transforms (``pad_order="before_photometric"`` in
:func:`train_pipeline`), ``Random_Brightness`` (:class:`RandomBrightnessShift`) and
``RandomColorJitterMMSeg`` (:class:`UPColorJitter`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from trainer.data.geometry import rescale_size, stretch_size

Sample = dict[str, Any]

__all__ = [
    "Compose",
    "Normalize",
    "PHOTOMETRIC_TRANSFORMS",
    "Pad",
    "PhotoMetricDistortion",
    "RandomCrop",
    "RandomFlip",
    "RandomResize",
    "RandomBrightnessShift",
    "RandomRotation",
    "ToTensor",
    "ToUint8Tensor",
    "UPColorJitter",
    "BatchNormalize",
    "batch_normalize",
    "eval_pipeline",
    "to_device_batch",
    "train_pipeline",
]


# --------------------------------------------------------------------------------------------
# geometry


class RandomResize:
    """Resize by a random ratio of a base scale; image bilinear, label nearest.

    Reference: mmcv ``RandomResize(scale, ratio_range, keep_ratio=True)`` followed by its
    ``Resize``: the ratio is drawn uniformly from ``ratio_range``, the target is
    ``(int(scale[0] * ratio), int(scale[1] * ratio))`` and, with ``keep_ratio``, the image is
    rescaled by :func:`~trainer.data.geometry.rescale_size` (long edge within the long
    target, short edge within the short target). Without ``keep_ratio`` the image is resized
    to exactly that target, read as ``(width, height)`` as in mmcv; with ``match_orientation`` as well, the target's longer
    edge goes along the image's longer side (the width when the image is square), as
    sssegmentation's ``Resize(keep_ratio=False)`` does
    (:func:`~trainer.data.geometry.stretch_size`). Interpolation: OpenCV ``INTER_LINEAR``
    for the image and ``INTER_NEAREST`` for the label, as mmcv's ``bilinear``/``nearest`` with
    the cv2 backend and sssegmentation's defaults.

    Ratio sampling (:meth:`draw_ratio`): ``"uniform"`` draws one ``u = rng.random()`` and
    returns ``low + u * (high - low)`` (mmcv). ``"halves"`` is United-Perception's
    ``SegRandResize`` (``up/tasks/seg/data/seg_transfomer.py``): a first draw picks the half
    (``rng.random() < 0.5``: below one), a second ``u`` gives ``low + (1 - low) * u`` in
    ``[low, 1)`` or ``1 + (high - 1) * u`` in ``[1, high)``, so ratios below and above 1 are
    equally likely whatever the range (uniform over ``[0.5, 2]`` gives 1/3 below 1). That
    transform scales the image's own size, ``(int(w * r), int(h * r))``; with
    ``keep_ratio=False`` and ``scale`` equal to the image size (Cityscapes: every frame is
    2048x1024) :meth:`target_size` gives exactly that.

    The whole image is resized and :class:`RandomCrop` then cuts its window, as mmseg does.
    Resizing only the window the crop keeps (with a margin for the kernel's support) would
    save most of the work at large ratios, but is not exact with OpenCV, so it is not done:
    ``cv2.resize`` samples output pixel ``d`` at source ``(d + 0.5) * src / dst - 0.5``, the
    scale taken from the two sizes and the coefficients quantised per ``d``, so a window's
    output equals the whole image's only where the window starts on a whole source pixel and
    keeps the scale exactly (offsets multiple of ``dst / gcd(src, dst)``), which a random crop
    almost never does; any other window shifts every sample by a sub-pixel phase, whatever the
    margin (measured on the ADE20K sample: 200 of 200 random 256x256 windows differed, up to
    46 grey levels, in ~80% of their pixels). An exact window would need OpenCV's fixed-point
    bilinear kernel re-implemented, slower in numpy than the whole resize; the label's
    nearest-neighbour resize could be windowed exactly (an index gather) but is the cheap half.

    Args:
        scale: base scale in pixels, ``(width, height)`` (e.g. ``(2048, 1024)``).
        ratio_range: ``(min_ratio, max_ratio)``; with ``"halves"``, ``min <= 1 <= max``.
        keep_ratio: keep the aspect ratio (the standard setting).
        match_orientation: without ``keep_ratio``, orient the target like the image.
        ratio_sampling: ``"uniform"`` (mmcv) or ``"halves"`` (United-Perception).

    Raises:
        ValueError: a range with ``min > max`` or ``min <= 0``; ``"halves"`` with a range
            that does not contain 1; an unknown ``ratio_sampling``.

    Effect: ``image (H, W, 3) uint8 -> (H', W', 3) uint8``, ``label (H, W) -> (H', W')``.
    """

    def __init__(
        self,
        scale: tuple[int, int] = (2048, 1024),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        keep_ratio: bool = True,
        match_orientation: bool = False,
        ratio_sampling: str = "uniform",
    ) -> None:
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must satisfy 0 < min <= max, got {ratio_range}")
        if ratio_sampling not in ("uniform", "halves"):
            raise ValueError(
                f"ratio_sampling must be 'uniform' or 'halves', got {ratio_sampling!r}")
        if ratio_sampling == "halves" and not ratio_range[0] <= 1.0 <= ratio_range[1]:
            raise ValueError(f"ratio_sampling 'halves' needs min <= 1 <= max, got {ratio_range}")
        self.scale = tuple(scale)
        self.ratio_range = tuple(ratio_range)
        self.keep_ratio = keep_ratio
        self.match_orientation = match_orientation
        self.ratio_sampling = ratio_sampling

    def draw_ratio(self, rng: np.random.Generator) -> float:
        """One resize ratio from ``rng`` (see the class docstring for the two rules)."""
        low, high = self.ratio_range
        if self.ratio_sampling == "halves":
            if rng.random() < 0.5:
                return low + (1.0 - low) * rng.random()
            return 1.0 + (high - 1.0) * rng.random()
        return rng.random() * (high - low) + low

    def target_size(self, width: int, height: int, ratio: float) -> tuple[int, int]:
        """Output ``(width, height)`` in pixels (cv2's order) for an input size and a drawn
        ratio: the (h, w) rules of :mod:`trainer.data.geometry`, reversed."""
        if self.keep_ratio:
            new_h, new_w = rescale_size(height, width, self.scale, ratio)
            return new_w, new_h
        if self.match_orientation:
            new_h, new_w = stretch_size(height, width, self.scale, ratio)
            return new_w, new_h
        return int(self.scale[0] * ratio), int(self.scale[1] * ratio)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        ratio = self.draw_ratio(rng)
        height, width = sample["image"].shape[:2]
        size = self.target_size(width, height, ratio)
        if size != (width, height):
            sample["image"] = cv2.resize(sample["image"], size, interpolation=cv2.INTER_LINEAR)
            if sample.get("label") is not None:
                sample["label"] = cv2.resize(
                    sample["label"], size, interpolation=cv2.INTER_NEAREST
                )
        return sample

    def __repr__(self) -> str:
        return (f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, "
                f"keep_ratio={self.keep_ratio}, match_orientation={self.match_orientation}, "
                f"ratio_sampling={self.ratio_sampling!r})")


class RandomCrop:
    """Random crop that avoids crops dominated by one class.

    Reference: mmseg ``RandomCrop(crop_size, cat_max_ratio, ignore_index)``. Offsets are drawn
    uniformly in ``[0, max(H - h, 0)]`` and ``[0, max(W - w, 0)]``. With ``cat_max_ratio < 1``
    a candidate is accepted when the crop holds more than one class (``ignore_index`` not
    counted) and the largest class covers less than ``cat_max_ratio`` of the counted pixels;
    up to 10 candidates are rejected and redrawn, and the last draw is kept (as mmseg: 11 draws
    at most). An image smaller than the crop keeps its size on that axis; :class:`Pad` fills
    the rest. Class counts use ``np.bincount`` instead of ``np.unique`` (same counts, faster).

    Args:
        crop_size: ``(h, w)`` in pixels.
        cat_max_ratio: largest allowed share of one class; ``1.0`` disables the check.
        ignore_index: label value left out of the class counts.

    Effect: ``image -> (min(H, h), min(W, w), 3)``, ``label`` likewise.
    """

    max_retries = 10

    def __init__(
        self,
        crop_size: tuple[int, int],
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
    ) -> None:
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        if crop_size[0] <= 0 or crop_size[1] <= 0:
            raise ValueError(f"crop_size must be positive (h, w), got {crop_size}")
        self.crop_size = tuple(crop_size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def draw_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """Draw the top-left corner ``(y, x)`` in pixels of a crop inside ``height x width``."""
        y = int(rng.integers(0, max(height - self.crop_size[0], 0) + 1))
        x = int(rng.integers(0, max(width - self.crop_size[1], 0) + 1))
        return y, x

    def acceptable(self, label_crop: np.ndarray) -> bool:
        """Whether a label crop has >1 class and no class above ``cat_max_ratio``.

        The decision is mmseg's (class counts, ``ignore_index`` left out, ``max / sum <
        cat_max_ratio`` in float64); a uint8 crop takes :meth:`_acceptable_uint8`, which
        reaches the same decision counting a few classes instead of all.
        """
        if (label_crop.dtype == np.uint8 and label_crop.size < 2**24
                and self.cat_max_ratio <= 1.0):
            decided = self._acceptable_uint8(label_crop)
            if decided is not None:
                return decided
            # float32 counts are exact integers below 2**24 pixels
            counts = cv2.calcHist([label_crop], [0], None, [256], [0, 256]).ravel()
            counts = counts.astype(np.int64)
        else:
            counts = np.bincount(label_crop.ravel())
        if self.ignore_index < counts.size:
            counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return counts.size > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    #: classes counted exactly by :meth:`_acceptable_uint8` before it gives up
    max_candidates = 4

    def _acceptable_uint8(self, label_crop: np.ndarray) -> bool | None:
        """:meth:`acceptable` for a uint8 crop, exactly, or None when undecided.

        A full histogram of a label crop is slow (long runs of one value make every count
        wait on the previous one: ~0.8 ms for 512x512 on one core, against ~0.03 ms to count
        one value with ``cv2.compare`` + ``cv2.countNonZero``). So: count the ignored pixels,
        giving the total ``T``; rank the classes by a 1-in-16 subsample; count up to
        ``max_candidates`` of them exactly, best first. A counted class with ``n / T >=
        cat_max_ratio`` rejects (it is at most the max). Once the pixels not yet counted,
        ``R``, give ``R / T < cat_max_ratio``, every uncounted class passes too (``n <= R``
        and float division is monotonic), so the crop is accepted: the largest share is
        then below ``cat_max_ratio <= 1``, so no class holds every pixel and there are at
        least two. The subsample only orders the work; every decision rests on exact
        counts, so it is the decision of a full count.
        """
        ratio = self.cat_max_ratio
        ignore = self.ignore_index
        size = label_crop.size
        ignored = (cv2.countNonZero(cv2.compare(label_crop, ignore, cv2.CMP_EQ))
                   if 0 <= ignore <= 255 else 0)
        total = size - ignored
        if total == 0:
            return False  # no class at all
        sample = np.ascontiguousarray(label_crop[::4, ::4])
        ranked = cv2.calcHist([sample], [0], None, [256], [0, 256]).ravel()
        if 0 <= ignore <= 255:
            ranked[ignore] = 0
        remaining = total
        for value in np.argsort(-ranked, kind="stable")[:self.max_candidates]:
            if ranked[value] == 0:
                break
            count = cv2.countNonZero(cv2.compare(label_crop, int(value), cv2.CMP_EQ))
            if count / total >= ratio:
                return False
            remaining -= count
            if remaining / total < ratio:
                return True
        return None

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        height, width = sample["image"].shape[:2]
        h, w = self.crop_size
        y, x = self.draw_box(height, width, rng)
        label = sample.get("label")
        if self.cat_max_ratio < 1.0 and label is not None:
            for _ in range(self.max_retries):
                if self.acceptable(label[y:y + h, x:x + w]):
                    break
                y, x = self.draw_box(height, width, rng)
        sample["image"] = np.ascontiguousarray(sample["image"][y:y + h, x:x + w])
        if label is not None:
            sample["label"] = np.ascontiguousarray(label[y:y + h, x:x + w])
        return sample

    def __repr__(self) -> str:
        return (f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio}, "
                f"ignore_index={self.ignore_index})")


class RandomFlip:
    """Horizontal flip of image and label with probability ``prob``.

    Reference: mmseg/mmcv ``RandomFlip(prob, direction='horizontal')``: flip when a uniform draw
    in ``[0, 1)`` is below ``prob``. ``swap_pairs`` exchanges the two classes of each pair in a
    flipped label (left/right body parts in human parsing), as sssegmentation's
    ``RandomFlip(fix_ann_pairs=...)``.

    Args:
        prob: flip probability.
        swap_pairs: ``(a, b)`` class pairs exchanged after a flip; no class in two pairs.
    """

    def __init__(self, prob: float = 0.5, swap_pairs: Sequence[tuple[int, int]] = ()) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}")
        self.prob = prob
        self.swap_pairs = tuple((int(a), int(b)) for a, b in swap_pairs)
        classes = [c for pair in self.swap_pairs for c in pair]
        if len(set(classes)) != len(classes):
            raise ValueError(f"swap_pairs must name each class once, got {self.swap_pairs}")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() < self.prob:
            sample["image"] = cv2.flip(sample["image"], 1)
            label = sample.get("label")
            if label is not None:
                flipped = cv2.flip(label, 1)
                if self.swap_pairs:
                    swapped = flipped.copy()
                    for a, b in self.swap_pairs:
                        swapped[flipped == a] = b
                        swapped[flipped == b] = a
                    flipped = swapped
                sample["label"] = flipped
        return sample

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob}, swap_pairs={list(self.swap_pairs)})"


class RandomRotation:
    """Rotate image and label about the image centre by a random whole number of degrees.

    Reference: sssegmentation ``RandomRotation(angle_upper, rotation_prob)``: skipped when a
    uniform draw in ``[0, 1)`` exceeds ``prob``; otherwise the angle is an integer drawn
    uniformly from ``[-max_degrees, max_degrees)`` (``np.random.randint``'s half-open range),
    counter-clockwise for positive angles (``cv2.getRotationMatrix2D`` about ``(W / 2, H / 2)``,
    scale 1), and both are warped to their own size: the image with ``INTER_CUBIC`` and
    ``img_fill`` outside, the label with ``INTER_NEAREST`` and ``seg_fill`` (the ignore index)
    outside, so no new label value appears.

    Args:
        max_degrees: angle bound in degrees (30 in the LIP configs).
        prob: rotation probability (0.6 in the LIP configs).
        img_fill: image fill value (0).
        seg_fill: label fill value (255).

    Effect: shapes and dtypes unchanged.
    """

    def __init__(self, max_degrees: int = 30, prob: float = 0.5, img_fill: float = 0,
                 seg_fill: int = 255) -> None:
        if max_degrees <= 0:
            raise ValueError(f"max_degrees must be positive, got {max_degrees}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}")
        self.max_degrees = int(max_degrees)
        self.prob = prob
        self.img_fill = img_fill
        self.seg_fill = seg_fill

    def matrix(self, height: int, width: int, angle: float) -> np.ndarray:
        """The 2x3 affine matrix rotating a ``height x width`` image by ``angle`` degrees."""
        return cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() > self.prob:
            return sample
        angle = int(rng.integers(-self.max_degrees, self.max_degrees))
        image = sample["image"]
        height, width = image.shape[:2]
        matrix = self.matrix(height, width, angle)
        sample["image"] = cv2.warpAffine(
            image, matrix, (width, height), flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(self.img_fill,) * 3,
        )
        label = sample.get("label")
        if label is not None:
            sample["label"] = cv2.warpAffine(
                label, matrix, (width, height), flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT, borderValue=self.seg_fill,
            )
        return sample

    def __repr__(self) -> str:
        return (f"RandomRotation(max_degrees={self.max_degrees}, prob={self.prob}, "
                f"img_fill={self.img_fill}, seg_fill={self.seg_fill})")


# --------------------------------------------------------------------------------------------
# photometric


def _affine_lut(alpha: float, beta: float) -> np.ndarray:
    """256-entry uint8 table of ``uint8(clip(v * alpha + beta, 0, 255))`` computed in float32.

    Same arithmetic as mmseg's ``convert`` applied per pixel (float32, clip, truncate), so a
    table lookup gives identical results.
    """
    values = np.arange(256, dtype=np.float32) * alpha + beta
    return np.clip(values, 0, 255).astype(np.uint8)


def _channel_lut(channel: int, table: np.ndarray) -> np.ndarray:
    """A ``(256, 1, 3)`` table for ``cv2.LUT`` that applies ``table`` to one channel only."""
    identity = np.arange(256, dtype=np.uint8)
    lut = np.stack([identity, identity, identity], axis=-1).reshape(256, 1, 3)
    lut[:, 0, channel] = table
    return lut


class PhotoMetricDistortion:
    """Random brightness, contrast, saturation and hue, each applied with probability 1/2.

    Reference: mmseg ``PhotoMetricDistortion`` (defaults: brightness delta 32, contrast and
    saturation ranges 0.5..1.5, hue delta 18). Order of draws and operations as mmseg:
    brightness; a mode bit (1: contrast now, 0: contrast last); saturation; hue; contrast if
    mode 0. Brightness adds ``U(-delta, delta)``, contrast multiplies by ``U(lo, hi)``, both
    with float32 arithmetic, clipping to 0..255 and truncation to uint8; saturation multiplies
    the HSV S channel the same way; hue adds an integer in ``[-hue_delta, hue_delta)`` (numpy
    ``randint`` excludes the upper bound, kept as in mmseg) to OpenCV's H (0..179) modulo 180.
    Each HSV step is its own RGB->HSV->RGB round trip, as in mmseg.

    Differences that do not change results: the image is RGB here (mmseg holds BGR), which
    gives the same HSV values; the per-pixel arithmetic is done with 256-entry lookup tables.

    Effect: ``image (H, W, 3) uint8 -> (H, W, 3) uint8``; the label is untouched.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def _applies(self, rng: np.random.Generator) -> bool:
        """Whether one distortion is applied: ``np.random.randint(2)`` in mmseg (1/2)."""
        return bool(rng.integers(2))

    def _draw_hue_delta(self, rng: np.random.Generator) -> int:
        """The hue shift: an integer in ``[-hue_delta, hue_delta)`` (numpy's half-open range)."""
        return int(rng.integers(-self.hue_delta, self.hue_delta))

    def _brightness(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._applies(rng):
            beta = rng.uniform(-self.brightness_delta, self.brightness_delta)
            image = cv2.LUT(image, _affine_lut(1, beta))
        return image

    def _contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._applies(rng):
            alpha = rng.uniform(*self.contrast_range)
            image = cv2.LUT(image, _affine_lut(alpha, 0))
        return image

    @staticmethod
    def _in_hsv(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB)

    def _saturation(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._applies(rng):
            alpha = rng.uniform(*self.saturation_range)
            image = self._in_hsv(image, _channel_lut(1, _affine_lut(alpha, 0)))
        return image

    def _hue(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._applies(rng):
            delta = self._draw_hue_delta(rng)
            table = ((np.arange(256) + delta) % 180).astype(np.uint8)
            image = self._in_hsv(image, _channel_lut(0, table))
        return image

    def _draw_mode(self, rng: np.random.Generator) -> int:
        """Where contrast goes: 1 first (after brightness), 0 last (mmseg's bit)."""
        return int(rng.integers(2))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image = self._brightness(sample["image"], rng)
        mode = self._draw_mode(rng)
        if mode == 1:
            image = self._contrast(image, rng)
        image = self._saturation(image, rng)
        image = self._hue(image, rng)
        if mode == 0:
            image = self._contrast(image, rng)
        sample["image"] = image
        return sample

    def __repr__(self) -> str:
        return (f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, saturation_range="
                f"{self.saturation_range}, hue_delta={self.hue_delta})")


class UPColorJitter(PhotoMetricDistortion):
    """United-Perception's ``color_jitter_mmseg``: mmseg's distortion with Python's inclusive
    ``random.randint``, so every coin lands "apply" with probability 2/3.

    Reference: ModelTC/United-Perception ``up/tasks/seg/data/seg_transfomer.py``
    ``RandomColorJitterMMSeg`` (defaults: brightness delta 32, contrast and saturation
    0.5..1.5, hue delta 18; the SegFormer configs name ``color_type: RGB``). It copies mmseg's
    ``PhotoMetricDistortion`` but draws with ``random.randint(0, 2)``, which returns 0, 1 or 2:

    * brightness, saturation, hue and contrast each apply when the draw is non-zero (2/3,
      mmseg 1/2);
    * the mode draw is 0, 1 or 2: 1 puts contrast right after brightness, 0 puts it last, and
      2 (probability 1/3) skips contrast altogether, so contrast applies with probability
      2/3 x 2/3 = 4/9 (mmseg 1/2);
    * the hue shift is ``random.randint(-18, 18)``, an integer in ``[-18, 18]`` (mmseg
      excludes 18).

    The arithmetic is :class:`PhotoMetricDistortion`'s (float32, clip, truncate; HSV round
    trips), and so is the order of draws, with ``rng`` in place of Python's ``random``.

    Effect: ``image (H, W, 3) uint8 -> (H, W, 3) uint8``; the label is untouched.
    """

    def _applies(self, rng: np.random.Generator) -> bool:
        return int(rng.integers(0, 3)) != 0  # random.randint(0, 2)

    def _draw_hue_delta(self, rng: np.random.Generator) -> int:
        return int(rng.integers(-self.hue_delta, self.hue_delta + 1))  # random.randint(-d, d)

    def _draw_mode(self, rng: np.random.Generator) -> int:
        return int(rng.integers(0, 3))  # 0: contrast last, 1: first, 2: none

    def __repr__(self) -> str:
        return (f"UPColorJitter(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, saturation_range="
                f"{self.saturation_range}, hue_delta={self.hue_delta})")


class RandomBrightnessShift:
    """Add one random integer to every channel of every pixel, with probability ``prob``.

    Reference: ModelTC/United-Perception ``up/tasks/seg/data/seg_transfomer.py``
    ``Random_Brightness`` (``seg_rand_brightness``, ``shift_value=10``), the only photometric
    transform of its HRNet seg configs: skipped when ``random.random() < 0.5``; otherwise
    ``shift = random.randint(-shift_value, shift_value)`` (both ends included) is added in
    float32, rounded (a no-op on whole numbers), clipped to 0..255 and cast to uint8. Here:
    skipped when ``rng.random() >= prob`` (``prob = 0.5`` gives the same odds), and the same
    integer arithmetic by a 256-entry lookup table.

    Args:
        shift_value: largest absolute shift, in grey levels (10).
        prob: probability that the shift is applied (0.5).

    Effect: ``image (H, W, 3) uint8 -> (H, W, 3) uint8``; the label is untouched.
    """

    def __init__(self, shift_value: int = 10, prob: float = 0.5) -> None:
        if shift_value < 0:
            raise ValueError(f"shift_value must be >= 0, got {shift_value}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}")
        self.shift_value = int(shift_value)
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        shift = int(rng.integers(-self.shift_value, self.shift_value + 1))
        table = np.clip(np.arange(256) + shift, 0, 255).astype(np.uint8)
        sample["image"] = cv2.LUT(sample["image"], table)
        return sample

    def __repr__(self) -> str:
        return f"RandomBrightnessShift(shift_value={self.shift_value}, prob={self.prob})"


#: ``data.photometric`` name -> the transform it builds (None: no photometric transform).
PHOTOMETRIC_TRANSFORMS: dict[str, Callable[[], Callable[..., Sample]]] = {
    "mmseg": PhotoMetricDistortion,
    "up_color_jitter": UPColorJitter,
    "up_brightness": RandomBrightnessShift,
}


# --------------------------------------------------------------------------------------------
# formatting


class Normalize:
    """Subtract a per-channel mean and divide by a per-channel std, giving float32.

    Reference: mmseg ``Normalize`` / ``SegDataPreProcessor`` (``(x - mean) / std`` on the
    0..255 scale). ``mean`` and ``std`` are in RGB order, matching the RGB image, so there is
    no ``to_rgb`` flag.

    Effect: ``image (H, W, 3) uint8 -> (H, W, 3) float32``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        self.std = np.asarray(std, dtype=np.float32).reshape(3)
        if np.any(self.std <= 0):
            raise ValueError(f"std must be positive, got {list(std)}")
        # OpenCV per-channel scalars (4 slots, the last unused): several times faster than
        # numpy broadcasting over a trailing axis of 3, and the same float32 results.
        self._mean_scalar = (*self.mean.tolist(), 0.0)
        self._inv_std_scalar = (*(1.0 / self.std).tolist(), 0.0)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image = sample["image"].astype(np.float32)
        cv2.subtract(image, self._mean_scalar, dst=image)
        cv2.multiply(image, self._inv_std_scalar, dst=image)
        sample["image"] = image
        return sample

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


class Pad:
    """Pad image and label up to a fixed size, after the pixels or around them.

    Reference: mmseg ``Pad(size, pad_val=0, seg_pad_val=255)`` / mmcv ``impad`` (constant
    padding at the bottom and right, ``position="bottom_right"``); sssegmentation ``Padding``
    centres the image instead (``position="center"``: top = (h_out - h) // 2, left =
    (w_out - w) // 2, the odd pixel at the bottom/right). In the standard pipeline it follows
    :class:`Normalize`, so ``pad_val=0`` is zero in normalized units, as in both; in
    United-Perception's order (:func:`train_pipeline` with ``pad_order="before_photometric"``)
    it pads the uint8 image with 0 before the colour transform and Normalize.

    With ``fill_on_device`` (the uint8 pipeline, :func:`train_pipeline` with
    ``normalize_on_device``) the pad stands for ``pad_val`` in normalised units but the image is
    still uint8: it is padded with 0 as a placeholder and the box of its own pixels is recorded
    as ``sample["valid_box"] = (top, left, height, width)``; :class:`BatchNormalize` writes
    ``pad_val`` outside that box after normalising on the device, so the tensor the model sees
    is the one the float path gives. The label is padded with ``seg_pad_val`` either way.

    Args:
        size: ``(h, w)`` in pixels; an input larger than this raises ``ValueError``.
        pad_val: image fill value.
        seg_pad_val: label fill value (the ignore index).
        position: ``"bottom_right"`` (mmseg) or ``"center"`` (sssegmentation).
        fill_on_device: record the box and leave the fill to :class:`BatchNormalize`
            (``pad_val`` must then be 0, the fill the engine writes).

    Effect: ``image -> (h, w, 3)``, ``label -> (h, w)``, dtypes unchanged; with
    ``fill_on_device`` also ``valid_box``: a tuple of 4 ints, pixels.
    """

    def __init__(self, size: tuple[int, int], pad_val: float = 0, seg_pad_val: int = 255,
                 position: str = "bottom_right", fill_on_device: bool = False) -> None:
        if position not in ("bottom_right", "center"):
            raise ValueError(f"position must be 'bottom_right' or 'center', got {position!r}")
        self.size = tuple(size)
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.position = position
        if fill_on_device and pad_val != 0:
            raise ValueError(f"fill_on_device fills with 0 in normalised units (the engine's "
                             f"BatchNormalize); got pad_val={pad_val}")
        self.fill_on_device = fill_on_device

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image = sample["image"]
        height, width = image.shape[:2]
        bottom, right = self.size[0] - height, self.size[1] - width
        if bottom < 0 or right < 0:
            raise ValueError(f"cannot pad a {height}x{width} image to {self.size[0]}x"
                             f"{self.size[1]} (h x w): it is already larger")
        top = left = 0
        if self.position == "center":
            top, left = bottom // 2, right // 2
            bottom, right = bottom - top, right - left
        if self.fill_on_device:
            sample["valid_box"] = (top, left, height, width)
        if top or bottom or left or right:
            fill = 0 if self.fill_on_device else self.pad_val  # 0: a placeholder, see above
            sample["image"] = cv2.copyMakeBorder(
                image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(fill,) * 3
            )
            if sample.get("label") is not None:
                sample["label"] = cv2.copyMakeBorder(
                    sample["label"], top, bottom, left, right, cv2.BORDER_CONSTANT,
                    value=self.seg_pad_val,
                )
        return sample

    def __repr__(self) -> str:
        return (f"Pad(size={self.size}, pad_val={self.pad_val}, seg_pad_val={self.seg_pad_val}, "
                f"position={self.position!r}, fill_on_device={self.fill_on_device})")


class ToTensor:
    """Convert to torch: image ``float32 (3, H, W)``, label ``int64 (H, W)``.

    Reference: the tensor conversion in mmseg ``PackSegInputs`` (HWC -> CHW).
    """

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image = np.ascontiguousarray(sample["image"].transpose(2, 0, 1), dtype=np.float32)
        sample["image"] = torch.from_numpy(image)
        if sample.get("label") is not None:
            sample["label"] = torch.from_numpy(sample["label"].astype(np.int64))
        return sample

    def __repr__(self) -> str:
        return "ToTensor()"


class ToUint8Tensor:
    """Convert to torch without normalising: the CPU end of the uint8 training pipeline.

    The image stays as decoded and transformed, ``uint8 (H, W, 3)`` RGB, channels last (the
    HWC -> CHW transpose, ~0.45 ms for a 512x512 crop on one core, is done on the device by
    :class:`BatchNormalize`, in the same pass as the cast to float); a uint8 label stays
    uint8 (values up to 255, the ignore index included; 8x less than int64 to copy and move)
    and any other label becomes int64; ``valid_box`` (from :class:`Pad` with
    ``fill_on_device``; the whole image when absent) becomes ``int64 (4,)``, ``(top, left,
    height, width)`` in pixels. A dataset's label files share one bit depth, so a batch
    collates to one label dtype. :func:`to_device_batch` moves such a batch (4x fewer image
    bytes than float32) and normalises it there.

    Reference: mmseg 1.x ``PackSegInputs`` (``mmseg/datasets/transforms/formatting.py``)
    packs the uint8 image for ``SegDataPreProcessor`` to normalise on the device.

    Effect: ``image -> torch.uint8 (H, W, 3)``, ``label -> torch.uint8 | torch.int64 (H, W)``,
    ``valid_box -> torch.int64 (4,)``.
    """

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image = sample["image"]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"ToUint8Tensor takes a uint8 (H, W, 3) image, got {image.dtype} "
                             f"{image.shape}")
        height, width = image.shape[:2]
        sample["valid_box"] = torch.tensor(sample.get("valid_box", (0, 0, height, width)),
                                           dtype=torch.int64)
        sample["image"] = torch.from_numpy(np.ascontiguousarray(image))
        label = sample.get("label")
        if label is not None:
            label = np.ascontiguousarray(label if label.dtype == np.uint8
                                         else label.astype(np.int64))
            sample["label"] = torch.from_numpy(label)
        return sample

    def __repr__(self) -> str:
        return "ToUint8Tensor()"


class BatchNormalize:
    """The device end of the uint8 training pipeline: cast, normalise and fill the pad.

    Reference: mmseg 1.x ``SegDataPreProcessor`` (``mmseg/models/data_preprocessor.py``): the
    loader yields uint8 images; on the device each is cast to float and normalised, ``(x -
    mean) / std``, and only then ``stack_batch`` pads it with ``pad_val=0`` (so 0 in
    normalised units, as mmseg 0.x's ``Normalize`` -> ``Pad``) and the label with
    ``seg_pad_val=255``. Here the CPU has padded already, so that the batch collates (labels
    with their fill, images with a placeholder and their ``valid_box``: :class:`Pad` with
    ``fill_on_device``); the device casts, transposes to channels first, normalises, and
    writes ``pad_val`` outside each box. The result is the tensor :func:`train_pipeline`'s
    float path gives (:class:`Normalize`, :class:`Pad`, :class:`ToTensor`), bit for bit.

    Numerics: ``(x - mean) * inv_std`` in float32, ``mean`` and ``std`` rounded to float32
    and ``inv_std = float32(1 / float64(std))``: the two roundings :class:`Normalize` does
    with OpenCV, so every (channel, value) pair gives the same float32 (checked for all 3 x
    256 in ``tests/test_uint8_pipeline.py``; IEEE float32 subtraction and multiplication round
    the same on any device). mmseg divides by ``std``, which differs from this in the last bit
    for a quarter to a half of the values (none when ``std`` is 1): segctl keeps its formula.

    Constants are made once per device and cached (making them per batch would copy from
    host memory and synchronise the stream every step); use :func:`batch_normalize` for a
    shared instance.

    Args:
        mean, std: per-channel RGB, 0..255 scale.
        pad_val: the image's fill outside ``valid_box``, in normalised units (0, as mmseg).

    Call: ``images`` ``torch.uint8 (B, H, W, 3)`` on any device, ``valid_box`` ``int64 (B,
    4)`` ``(top, left, height, width)`` on the CPU (None: no pad) -> ``float32 (B, 3, H, W)``
    contiguous, on the images' device.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad_val: float = 0.0) -> None:
        normalize = Normalize(mean, std)  # the same float32 rounding of the constants
        self.mean = normalize.mean
        self.inv_std = (1.0 / normalize.std.astype(np.float64)).astype(np.float32)
        self.pad_val = float(pad_val)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, inv_std)``, float32 ``(1, 3, 1, 1)`` on ``device``, made once."""
        device = torch.device(device)
        if device not in self._constants:
            self._constants[device] = (
                torch.from_numpy(self.mean.copy()).view(1, 3, 1, 1).to(device),
                torch.from_numpy(self.inv_std.copy()).view(1, 3, 1, 1).to(device),
            )
        return self._constants[device]

    def __call__(self, images: torch.Tensor,
                 valid_box: torch.Tensor | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[3] != 3:
            raise ValueError(f"BatchNormalize takes uint8 (B, H, W, 3) images, got "
                             f"{images.dtype} {tuple(images.shape)}")
        mean, inv_std = self.constants(images.device)
        batch, height, width, _ = images.shape
        out = torch.empty((batch, 3, height, width), dtype=torch.float32, device=images.device)
        out.copy_(images.permute(0, 3, 1, 2))  # cast and transpose in one pass; exact
        out.sub_(mean).mul_(inv_std)
        if valid_box is not None:
            for i, (top, left, h, w) in enumerate(valid_box.tolist()):
                if (top, left, h, w) == (0, 0, height, width):
                    continue
                out[i, :, :top] = self.pad_val
                out[i, :, top + h:] = self.pad_val
                out[i, :, :, :left] = self.pad_val
                out[i, :, :, left + w:] = self.pad_val
        return out

    def __repr__(self) -> str:
        return (f"BatchNormalize(mean={self.mean.tolist()}, "
                f"inv_std={self.inv_std.tolist()}, pad_val={self.pad_val})")


@functools.lru_cache(maxsize=8)
def batch_normalize(mean: tuple[float, ...], std: tuple[float, ...]) -> BatchNormalize:
    """A shared :class:`BatchNormalize` (pad value 0) for ``(mean, std)`` (tuples: the cache
    key), so its device constants are made once per process."""
    return BatchNormalize(mean, std)


def to_device_batch(batch: Mapping[str, torch.Tensor], device: torch.device | str,
                    normalize: BatchNormalize) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on ``device``: images ``float32 (B, 3, H, W)`` normalised, labels
    ``int64 (B, H, W)``.

    A uint8 batch (the training loader's, :class:`ToUint8Tensor`) moves as uint8 and its
    labels in their own dtype, ``non_blocking`` (from pinned memory the copy overlaps), and is
    cast, normalised and padded there by ``normalize``; ``valid_box`` stays on the CPU (read
    there, no synchronisation). A float batch (already normalised on the CPU: the float path,
    tests, step timing) only moves. Labels become int64 on the device.

    Args:
        batch: ``{"image": uint8 (B, H, W, 3) | float32 (B, 3, H, W), "label": (B, H, W),
            "valid_box": int64 (B, 4), optional}``.
        device: where the model runs.
        normalize: the dataset's :class:`BatchNormalize` (used for uint8 batches only).
    """
    images = batch["image"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True).long()
    if images.dtype == torch.uint8:
        images = normalize(images, batch.get("valid_box"))
    return images, labels


# --------------------------------------------------------------------------------------------
# composition


class Compose:
    """Apply transforms in order, passing each one the pipeline's random generator.

    Args:
        transforms: callables ``t(sample, rng) -> sample``.
        seed: seed of the pipeline's ``numpy.random.Generator``; ``None`` seeds from the OS.

    Call as ``pipeline(sample)`` (uses the pipeline's generator) or ``pipeline(sample, rng)``
    (uses the given one).
    """

    def __init__(self, transforms: Sequence[Callable[..., Sample]], seed: int | None = None) -> None:
        self.transforms = list(transforms)
        self.rng = np.random.default_rng(seed)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = self.rng if rng is None else rng
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"


def train_pipeline(
    scale: tuple[int, int],
    crop_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
    seed: int | None = None,
    keep_ratio: bool = True,
    flip_swap_pairs: Sequence[tuple[int, int]] = (),
    rotation: tuple[int, float] | None = None,
    pad_position: str = "bottom_right",
    ratio_sampling: str = "uniform",
    photometric: str | None = "mmseg",
    pad_order: str = "after_normalize",
    normalize_on_device: bool = False,
) -> Compose:
    """The standard mmseg training pipeline, with sssegmentation's and United-Perception's
    options.

    RandomResize(scale, ratio_range, keep_ratio, ratio_sampling) -> RandomCrop(crop_size,
    cat_max_ratio) -> RandomFlip(0.5, flip_swap_pairs) [-> RandomRotation] -> photometric ->
    Normalize(mean, std) -> Pad(crop_size, 0, ignore_index) -> ToTensor (the rotation sits
    where sssegmentation's LIP pipeline has it, between the flip and the photometric
    distortion). With ``pad_order="before_photometric"`` the Pad moves to right after the flip
    (or rotation), filling the uint8 image with 0, as United-Perception's ``SegCrop`` pads
    before its colour transform and ``normalize`` (``up/tasks/seg/data/seg_transfomer.py``,
    configs ``[seg_rand_resize, seg_random_flip, seg_crop, <colour>, custom_to_tensor,
    normalize]``): pad pixels then go through the photometric transform and come out of
    Normalize as ``(jitter(0) - mean) / std`` (``-mean / std`` when not jittered), not 0. (UP
    flips before it pads and crops; flipping after the crop gives the same distribution, the
    crop offset being uniform and the padding at the bottom and right.) Output: image
    ``float32 (3, h, w)``, label ``int64 (h, w)`` with ``(h, w) = crop_size``.

    With ``normalize_on_device`` (what training uses, :func:`trainer.data.build.
    build_train_dataset`) the image stays uint8 to the end: the pipeline stops at
    ``... -> photometric -> Pad(fill_on_device) -> ToUint8Tensor`` (UP's order: ``... -> Pad
    -> photometric -> ToUint8Tensor``) and the engine's :class:`BatchNormalize` casts,
    normalises and fills the pad on the device, as mmseg 1.x's ``SegDataPreProcessor``. Output:
    image ``uint8 (h, w, 3)``, label ``uint8 (h, w)`` (int64 for wider label files),
    ``valid_box`` ``int64 (4,)``. Same draws, same labels bit for bit, and after
    :class:`BatchNormalize` the same float32 images bit for bit: the photometric transforms
    already work on uint8 (lookup tables and HSV round trips), and nothing before Normalize
    changes.

    Args:
        scale: base resize scale ``(width, height)`` in pixels, e.g. ``(2048, 1024)``.
        crop_size: ``(h, w)`` in pixels, e.g. ``(512, 1024)``.
        mean, std: RGB, 0..255 scale.
        ratio_range, cat_max_ratio, ignore_index: see the transforms.
        seed: seed of the pipeline's generator (see :class:`Compose`).
        keep_ratio: False resizes to exactly ``scale x ratio``, oriented like the image
            (:class:`RandomResize` with ``match_orientation``).
        flip_swap_pairs: class pairs exchanged by a flip (:class:`RandomFlip`).
        rotation: ``(max_degrees, prob)`` adds :class:`RandomRotation` with the label filled
            with ``ignore_index``; None leaves it out.
        pad_position: where :class:`Pad` puts a crop smaller than ``crop_size``.
        ratio_sampling: ``"uniform"`` or ``"halves"`` (:meth:`RandomResize.draw_ratio`).
        photometric: a key of :data:`PHOTOMETRIC_TRANSFORMS` (``"mmseg"``:
            :class:`PhotoMetricDistortion`, ``"up_color_jitter"``: :class:`UPColorJitter`,
            ``"up_brightness"``: :class:`RandomBrightnessShift`), or None for none.
        pad_order: ``"after_normalize"`` (mmseg: pad value 0 in normalized units) or
            ``"before_photometric"`` (United-Perception: raw 0 before the colour transform).
        normalize_on_device: end with uint8 tensors for :class:`BatchNormalize` instead of
            normalising on the CPU (see above).

    Raises:
        ValueError: an unknown ``photometric`` or ``pad_order``, or a transform's own check.
    """
    if photometric is not None and photometric not in PHOTOMETRIC_TRANSFORMS:
        raise ValueError(f"photometric must be one of {sorted(PHOTOMETRIC_TRANSFORMS)} or None, "
                         f"got {photometric!r}")
    if pad_order not in ("after_normalize", "before_photometric"):
        raise ValueError(f"pad_order must be 'after_normalize' or 'before_photometric', "
                         f"got {pad_order!r}")
    pad = Pad(crop_size, pad_val=0, seg_pad_val=ignore_index, position=pad_position,
              fill_on_device=normalize_on_device and pad_order == "after_normalize")
    transforms = [
        RandomResize(scale, ratio_range, keep_ratio=keep_ratio, match_orientation=not keep_ratio,
                     ratio_sampling=ratio_sampling),
        RandomCrop(crop_size, cat_max_ratio, ignore_index),
        RandomFlip(0.5, swap_pairs=flip_swap_pairs),
    ]
    if rotation is not None:
        transforms.append(RandomRotation(rotation[0], rotation[1], seg_fill=ignore_index))
    if pad_order == "before_photometric":
        transforms.append(pad)
    if photometric is not None:
        transforms.append(PHOTOMETRIC_TRANSFORMS[photometric]())
    if normalize_on_device:
        if pad_order == "after_normalize":
            transforms.append(pad)
        transforms.append(ToUint8Tensor())
        return Compose(transforms, seed=seed)
    transforms.append(Normalize(mean, std))
    if pad_order == "after_normalize":
        transforms.append(pad)
    transforms.append(ToTensor())
    return Compose(transforms, seed=seed)


def eval_pipeline(mean: Sequence[float], std: Sequence[float]) -> Compose:
    """The evaluation pipeline: Normalize -> ToTensor, nothing random and no resize.

    The evaluator resizes to the test scale itself and scores at the original resolution, so
    the label is left at the original size. Output: image ``float32 (3, H, W)``, label
    ``int64 (H, W)``.
    """
    return Compose([Normalize(mean, std), ToTensor()], seed=0)

"""Test-time inference (whole image, sliding window, multi-scale + flip) and dataset evaluation.

Everything here is a pure function of (model, image, settings) and runs on CPU as well as GPU.
``model`` is any callable mapping float32 images (N, 3, h, w) to class logits (N, C, h, w) at
the input size; the segmentor's ``encode_decode`` has that contract. The caller puts the model
in eval mode.

The numerics follow mmsegmentation 0.x ``mmseg/models/segmentors/encoder_decoder.py``
(``slide_inference``, ``whole_inference``, ``inference``, ``aug_test``) and the multi-scale
pipeline ``mmseg/datasets/pipelines/test_time_aug.py`` with mmcv's keep-ratio
``rescale_size`` (``mmcv/image/geometric.py``): each view's logits are resized to the original
resolution, turned into probabilities with a softmax, and the probabilities of all views are
averaged.

Configs whose test pipeline adds mmseg's ``ResizeToMultiple`` after the ``Resize`` (e.g.
InternImage's, ``size_divisor=32``) get it through ``size_divisor``: each view is resized a
second time, bilinearly, to its size rounded up to a multiple
(:func:`~trainer.data.geometry.size_to_multiple`), and its logits go from there straight back
to the original resolution.

One known difference: mmseg resizes the uint8 image with OpenCV before normalising, we resize
the normalised float image with ``torch.nn.functional.interpolate`` (bilinear,
``align_corners=False``). Normalisation is per-channel affine, so the two agree up to the
uint8 rounding of the resized image.

Glossary: a *scale* is one resize ratio, a *view* one (ratio, flip) pair; mmseg's standard
multi-scale + flip test uses the six :data:`~segctl.recipe.MS_FLIP_RATIOS`, each with and
without horizontal flip (12 views).

sssegmentation's order (``average`` ``"logits"`` or ``"probs_before_resize"``, see
:data:`SSSEG_AVERAGES`) differs from mmseg's in four places, all read from
SegmentationBLWX/sssegmentation@eb1878c1 ``ssseg/modules/models/segmentors/base/base.py``
(``BaseSegmentor.inference``, lines 52-87; ``auginference``, lines 89-117) and ``ssseg/test.py``
(``Tester.start``, lines 113-132):

1. the image is resized once to the test size (the dataset's ``Resize``), and each scale then
   resizes that image again by the ratio, ``F.interpolate(scale_factor=ratio)`` (floor of the
   size times the ratio, the ratio itself mapping the coordinates);
2. in whole mode the model's logits stay at the model's own resolution (the decode head's, e.g.
   1/8 of the input), in slide mode each window's logits are resized to the window;
3. with ``use_probs_before_resize`` the softmax is taken there: on the whole-mode logits at the
   model's resolution, on each window before the windows are summed and divided by their count;
4. each view's output (flipped back) is resized straight to the original image, and the
   views' outputs are averaged (probabilities or, without ``use_probs_before_resize``, logits).

Every resize there but the dataset's uses the segmentor's ``align_corners``. The dataset's
``Resize`` is OpenCV's on the uint8 image; here, as in mmseg's order, the normalised float image
is resized (bilinear, ``align_corners=False``, :func:`~trainer.data.geometry.rescale_size` or
:func:`~trainer.data.geometry.stretch_size` at ratio 1, which are ssseg's ``Resize`` sizes).

The job's evaluation wiring lives here too: :meth:`InferenceSettings.from_recipe` builds the
settings once from the recipe, and that one object travels to :func:`evaluate` (validation
during training and ``segctl eval``), the Cityscapes export and the prediction overlays;
:func:`reference_for` gives the published figure the table is compared with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from segctl.recipe import Recipe
from trainer import distributed
from trainer.data.geometry import rescale_size, size_to_multiple, stretch_size
from trainer.metrics import ConfusionMatrix, SegMetrics

__all__ = [
    "SSSEG_AVERAGES",
    "InferenceSettings",
    "segmentor_logits",
    "whole_inference",
    "slide_inference",
    "predict_probs",
    "evaluate_dataset",
    "evaluate",
    "reference_for",
]

Model = Callable[[torch.Tensor], torch.Tensor]

#: The ``average`` values that follow sssegmentation's test order (module docstring):
#: ``"logits"`` is its ``use_probs_before_resize: False``, ``"probs_before_resize"`` its
#: ``True``. ``"probs"`` follows mmseg's.
SSSEG_AVERAGES: tuple[str, ...] = ("logits", "probs_before_resize")

Average = Literal["probs", "logits", "probs_before_resize"]


@dataclass(frozen=True)
class InferenceSettings:
    """How to predict one image at test time.

    Attributes:
        mode: ``"whole"`` runs the model on the full (resized) image; ``"slide"`` on
            overlapping windows of ``crop_size`` moved by ``stride``.
        test_scale: mmseg ``img_scale`` (long, short) edge bounds in pixels, e.g.
            (2048, 1024) for Cityscapes, (2048, 512) for ADE20K; the image is resized with kept
            aspect ratio to fit ``test_scale * ratio``. None resizes the original size by the
            ratio.
        scales: resize ratios, e.g. ``(1.0,)`` for single scale or
            :data:`~segctl.recipe.MS_FLIP_RATIOS`.
        flip: also run every scale on the horizontally flipped image.
        crop_size: (height, width) of a sliding window in pixels; required for ``"slide"``.
        stride: (height, width) step between windows in pixels; required for ``"slide"``.
        keep_ratio: False resizes to ``test_scale`` exactly
            (:func:`~trainer.data.geometry.stretch_size`: a taller image's height, any other's
            width, to the larger value, the other edge to the smaller, times the ratio), as
            sssegmentation's LIP test ``Resize(output_size=(473, 473), keep_ratio=False)``;
            needs ``test_scale``.
        average: what the views average at the original resolution, and in which order:
            ``"probs"``: softmax scores of the logits resized to the image (mmseg 0.x
            ``aug_test``); ``"logits"``: resized logits, no softmax (sssegmentation's Tester
            with ``use_probs_before_resize: False``); ``"probs_before_resize"``: softmax scores
            taken before any resize, at the model's resolution in whole mode and per window in
            slide mode (``use_probs_before_resize: True``). The last two follow
            sssegmentation's order throughout (module docstring; :attr:`order`). Only the
            argmax is used.
        size_divisor: after the test-scale resize, resize each view again (bilinear) so that
            its height and width are multiples of this many pixels
            (:func:`~trainer.data.geometry.size_to_multiple`), as mmseg's ``ResizeToMultiple``
            in InternImage's test pipeline (32); None: no rounding.
        flip_swap_pairs: class pairs whose scores are exchanged in flipped views before they
            are flipped back (left/right body parts in LIP: a left arm seen mirrored is scored
            as a right arm). Empty for datasets without handed classes. As sssegmentation
            ``BaseSegmentor.auginference`` (``fixed_seg_target_pairs``).

    Raises:
        ValueError: listing every invalid field at once.
    """

    mode: Literal["whole", "slide"] = "whole"
    test_scale: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    flip_swap_pairs: tuple[tuple[int, int], ...] = ()
    keep_ratio: bool = True
    average: Average = "probs"
    size_divisor: int | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe, ms_flip: bool) -> InferenceSettings:
        """The recipe's test-time settings: single scale, or ``eval.scales`` with flip (flipped
        views exchange the scores of ``data.flip_swap_pairs``, as training's flips exchange the
        labels). With ``ms_flip``, ``eval.ms_flip_mode``, ``ms_flip_crop_size``,
        ``ms_flip_stride`` and ``ms_flip_average`` replace ``mode``, ``crop_size``, ``stride``
        and ``average`` where set.

        Args:
            recipe: a resolved recipe.
            ms_flip: multi-scale (``eval.scales``) + flip, else single scale without flip.

        Raises:
            ValueError: settings the class refuses (see the class docstring).
        """
        ev = recipe.eval

        def pick(field: str):
            override = getattr(ev, f"ms_flip_{field}") if ms_flip else None
            return getattr(ev, field) if override is None else override

        crop_size, stride = pick("crop_size"), pick("stride")
        return cls(
            mode=pick("mode"),
            test_scale=tuple(ev.test_scale) if ev.test_scale else None,
            scales=tuple(ev.scales) if ms_flip else (1.0,),
            flip=ms_flip,
            crop_size=tuple(crop_size) if crop_size else None,
            stride=tuple(stride) if stride else None,
            flip_swap_pairs=tuple(tuple(pair) for pair in recipe.data.flip_swap_pairs),
            keep_ratio=ev.keep_ratio,
            average=pick("average"),
            size_divisor=ev.size_divisor,
        )

    @property
    def order(self) -> Literal["mmseg", "sssegmentation"]:
        """Whose order of test-time operations ``average`` implies (module docstring)."""
        return "sssegmentation" if self.average in SSSEG_AVERAGES else "mmseg"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(
            self, "flip_swap_pairs", tuple((int(a), int(b)) for a, b in self.flip_swap_pairs)
        )
        errors = []
        swapped = [c for pair in self.flip_swap_pairs for c in pair]
        if any(c < 0 for c in swapped) or len(set(swapped)) != len(swapped):
            errors.append(
                "flip_swap_pairs must hold non-negative class indices, each at most once, "
                f"got {list(self.flip_swap_pairs)}"
            )
        if self.mode not in ("whole", "slide"):
            errors.append(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        if not self.scales or any(s <= 0 for s in self.scales):
            errors.append(f"scales must be a non-empty list of positive ratios, got {self.scales}")
        if self.test_scale is not None and (
            len(self.test_scale) != 2 or min(self.test_scale) <= 0
        ):
            errors.append(f"test_scale must be two positive ints, got {self.test_scale}")
        if self.average not in ("probs", *SSSEG_AVERAGES):
            errors.append(
                "average must be 'probs', 'logits' or 'probs_before_resize', "
                f"got {self.average!r}"
            )
        elif self.average in SSSEG_AVERAGES and self.size_divisor is not None:
            errors.append(
                f"size_divisor is mmseg's ResizeToMultiple; average {self.average!r} follows "
                "sssegmentation's test order, which has none: drop size_divisor or average "
                "'probs'"
            )
        if not self.keep_ratio and self.test_scale is None:
            errors.append("keep_ratio False needs test_scale, the size to resize to")
        if self.size_divisor is not None and (
            isinstance(self.size_divisor, bool)
            or not isinstance(self.size_divisor, int)
            or self.size_divisor <= 0
        ):
            errors.append(f"size_divisor must be a positive int or None, got {self.size_divisor!r}")
        if self.mode == "slide":
            for field in ("crop_size", "stride"):
                value = getattr(self, field)
                if value is None or len(value) != 2 or min(value) <= 0:
                    errors.append(
                        f"mode 'slide' needs {field} as two positive ints (h, w), got {value}"
                    )
        if errors:
            raise ValueError("invalid inference settings:\n  " + "\n  ".join(errors))


def whole_inference(
    model: Model, image: torch.Tensor, *, autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Run the model on the full image.

    Args:
        model: callable, float32 (N, 3, H, W) -> logits (N, C, H, W).
        image: float32 (N, 3, H, W), normalised.
        autocast_dtype: run the model under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16`` on CUDA); None runs in the input dtype.

    Returns:
        float32 logits (N, C, H, W).

    Raises:
        ValueError: if the model's output is not (N, C, H, W) at the input size.
    """
    with torch.no_grad():
        return _run(model, image, autocast_dtype)


def slide_inference(
    model: Model,
    image: torch.Tensor,
    crop_size: tuple[int, int],
    stride: tuple[int, int],
    num_classes: int,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Run the model on overlapping windows and average the logits where windows overlap.

    The grid is mmseg's: ``h_grids = max(H - hc + hs - 1, 0) // hs + 1`` (likewise for the
    width); a window starting past the border is shifted back to end at the border, and where
    the image is smaller than the window the crop is the whole extent (no padding).

    Args:
        model: callable, float32 (N, 3, h, w) -> logits (N, C, h, w).
        image: float32 (N, 3, H, W), normalised.
        crop_size: window (hc, wc) in pixels.
        stride: step (hs, ws) in pixels.
        num_classes: C, the number of logit channels.
        autocast_dtype: as in :func:`whole_inference`.

    Returns:
        float32 logits (N, C, H, W).

    Raises:
        ValueError: on non-positive crop or stride, or a model output of the wrong shape.
    """
    hc, wc = crop_size
    hs, ws = stride
    if min(hc, wc, hs, ws) <= 0:
        raise ValueError(f"crop_size {crop_size} and stride {stride} must be positive")
    n, _, h, w = image.shape
    h_grids = max(h - hc + hs - 1, 0) // hs + 1
    w_grids = max(w - wc + ws - 1, 0) // ws + 1
    logits = image.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
    with torch.no_grad():
        for i in range(h_grids):
            for j in range(w_grids):
                y2 = min(i * hs + hc, h)
                x2 = min(j * ws + wc, w)
                y1 = max(y2 - hc, 0)
                x1 = max(x2 - wc, 0)
                crop_logits = _run(model, image[:, :, y1:y2, x1:x2], autocast_dtype)
                if crop_logits.shape[1] != num_classes:
                    raise ValueError(
                        f"model returned {crop_logits.shape[1]} channels, expected {num_classes}"
                    )
                logits[:, :, y1:y2, x1:x2] += crop_logits
                count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def predict_probs(
    model: Model,
    image: torch.Tensor,
    settings: InferenceSettings,
    *,
    num_classes: int,
    autocast_dtype: torch.dtype | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Class probabilities at the original resolution, averaged over all test-time views.

    For each ratio in ``settings.scales`` the image is resized (bilinear,
    ``align_corners=False``) to ``rescale_size(H, W, test_scale, ratio)`` (or, with
    ``test_scale`` None, to ``rescale_size(H, W, (W, H), ratio)``, i.e. the original size times
    the ratio, as mmseg does without ``img_scale``), then, with ``size_divisor``, again to
    :func:`~trainer.data.geometry.size_to_multiple` of that size (mmseg ``ResizeToMultiple``: a
    second bilinear resize, not a pad); for each flip variant the input is flipped horizontally
    and the logits flipped back (after exchanging the channels of ``flip_swap_pairs``); the
    logits are resized bilinearly to (H, W), softmaxed over classes in float32, and the mean
    over views is returned (mmseg 0.x ``aug_test``). With ``keep_ratio`` False each view is
    resized with :func:`~trainer.data.geometry.stretch_size` instead of
    :func:`~trainer.data.geometry.rescale_size`.

    With ``average`` ``"logits"`` or ``"probs_before_resize"`` the views follow
    sssegmentation's order instead (module docstring): the image is resized to the test size
    once and then by each ratio with ``F.interpolate(scale_factor=ratio)``; in whole mode the
    model's output is used at its own resolution; ``"probs_before_resize"`` softmaxes it there
    (per window in slide mode); each view goes straight back to (H, W); all resizes but the
    first use ``align_corners``.

    Args:
        model: callable, float32 (N, 3, h, w) -> logits (N, C, h, w). In sssegmentation's
            order it may return the logits at its own resolution (N, C, h', w'), e.g. the
            decode head's before the resize to the input (:func:`segmentor_logits`), as
            sssegmentation's segmentors do; with logits at the input size the whole-mode view
            is resized twice (model to input, then input to image) where sssegmentation
            resizes once.
        image: float32 (1, 3, H, W), normalised, at the original resolution.
        settings: the test-time views (:class:`InferenceSettings`: test scale, ratios, flip,
            whole or slide with window and step in (h, w) pixels, flip swap pairs, keep ratio,
            ``average``, size divisor); every index of ``flip_swap_pairs`` must be
            < ``num_classes``. With ``average="logits"`` the result is mean logits, not
            probabilities.
        num_classes: C.
        autocast_dtype: run the model under ``torch.autocast`` with this dtype; resizing,
            softmax and averaging stay in float32.
        align_corners: the segmentor's ``align_corners``, used by every resize of
            sssegmentation's order but the test-size one (mmseg's order ignores it).

    Returns:
        float32 probabilities (1, C, H, W) (N, C, H, W for a batch of equal-size images), or
        mean logits with ``average="logits"``.

    Raises:
        ValueError: a flip swap pair naming a class >= ``num_classes``, or a model output of
            the wrong shape (invalid settings raise when the :class:`InferenceSettings` is
            built).
    """
    channel_order = torch.arange(num_classes, device=image.device)
    for a, b in settings.flip_swap_pairs:
        if max(a, b) >= num_classes:
            raise ValueError(f"flip_swap_pairs names class {max(a, b)} of {num_classes}")
        channel_order[a], channel_order[b] = b, a
    if settings.order == "sssegmentation":
        return _predict_sssegmentation(
            model, image, settings, num_classes, channel_order, align_corners, autocast_dtype
        )
    n, _, h, w = image.shape
    bounds = settings.test_scale if settings.test_scale is not None else (w, h)
    probs = torch.zeros((n, num_classes, h, w), dtype=torch.float32, device=image.device)
    views = 0
    with torch.no_grad():
        for ratio in settings.scales:
            size = (rescale_size if settings.keep_ratio else stretch_size)(h, w, bounds, ratio)
            resized = image
            if size != (h, w):
                resized = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            if settings.size_divisor is not None:
                multiple = size_to_multiple(*size, settings.size_divisor)
                if multiple != size:
                    resized = F.interpolate(
                        resized, size=multiple, mode="bilinear", align_corners=False
                    )
                size = multiple
            for flipped in (False, True) if settings.flip else (False,):
                x = resized.flip(-1) if flipped else resized
                if settings.mode == "slide":
                    logits = slide_inference(
                        model, x, settings.crop_size, settings.stride, num_classes,
                        autocast_dtype=autocast_dtype,
                    )
                else:
                    logits = _run(model, x, autocast_dtype)
                if flipped:
                    if settings.flip_swap_pairs:
                        logits = logits.index_select(1, channel_order)
                    logits = logits.flip(-1)
                if size != (h, w):
                    logits = F.interpolate(
                        logits, size=(h, w), mode="bilinear", align_corners=False
                    )
                probs += logits.softmax(dim=1) if settings.average == "probs" else logits
                views += 1
    return probs / views


def _predict_sssegmentation(
    model: Model,
    image: torch.Tensor,
    settings: InferenceSettings,
    num_classes: int,
    channel_order: torch.Tensor,
    align_corners: bool,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """:func:`predict_probs` in sssegmentation's order: ``auginference`` (base.py lines
    89-117) over the test-size image, then the Tester's resize of every view to the image and
    mean (test.py lines 129-131). Returns float32 (N, C, H, W)."""
    n, _, h, w = image.shape
    bounds = settings.test_scale if settings.test_scale is not None else (w, h)
    size = (rescale_size if settings.keep_ratio else stretch_size)(h, w, bounds, 1.0)
    test_image = image
    if size != (h, w):  # the dataset's test Resize
        test_image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    total = torch.zeros((n, num_classes, h, w), dtype=torch.float32, device=image.device)
    views = 0
    with torch.no_grad():
        for ratio in settings.scales:
            scaled = F.interpolate(
                test_image, scale_factor=ratio, mode="bilinear", align_corners=align_corners
            )
            for flipped in (False, True) if settings.flip else (False,):
                out = _sssegmentation_inference(
                    model, scaled.flip(-1) if flipped else scaled, settings, num_classes,
                    align_corners, autocast_dtype,
                )
                if flipped:
                    if settings.flip_swap_pairs:
                        out = out.index_select(1, channel_order)
                    out = out.flip(-1)
                total += F.interpolate(
                    out, size=(h, w), mode="bilinear", align_corners=align_corners
                )
                views += 1
    return total / views


def _sssegmentation_inference(
    model: Model,
    image: torch.Tensor,
    settings: InferenceSettings,
    num_classes: int,
    align_corners: bool,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """One view as sssegmentation's ``BaseSegmentor.inference`` (base.py lines 52-87): whole
    mode: the model's logits at its own resolution; slide mode: each window's logits resized
    to the window, summed over the windows and divided by their count at the view's size.
    With ``probs_before_resize`` the softmax comes right after the model (whole) or after the
    window resize (slide). Returns float32 (N, C, h', w')."""
    softmax = settings.average == "probs_before_resize"
    if settings.mode == "whole":
        out = _run(model, image, autocast_dtype, at_input_size=False)
        _check_classes(out, num_classes)
        return out.softmax(dim=1) if softmax else out
    (hc, wc), (hs, ws) = settings.crop_size, settings.stride
    n, _, h, w = image.shape
    h_grids = max(h - hc + hs - 1, 0) // hs + 1
    w_grids = max(w - wc + ws - 1, 0) // ws + 1
    total = image.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    count = image.new_zeros((n, 1, h, w), dtype=torch.float32)
    for i in range(h_grids):
        for j in range(w_grids):
            x1, y1 = j * ws, i * hs
            x2, y2 = min(x1 + wc, w), min(y1 + hc, h)
            x1, y1 = max(x2 - wc, 0), max(y2 - hc, 0)
            crop = image[:, :, y1:y2, x1:x2]
            out = _run(model, crop, autocast_dtype, at_input_size=False)
            _check_classes(out, num_classes)
            out = F.interpolate(
                out, size=crop.shape[2:], mode="bilinear", align_corners=align_corners
            )
            total[:, :, y1:y2, x1:x2] += out.softmax(dim=1) if softmax else out
            count[:, :, y1:y2, x1:x2] += 1
    return total / count


def _check_classes(logits: torch.Tensor, num_classes: int) -> None:
    if logits.shape[1] != num_classes:
        raise ValueError(f"model returned {logits.shape[1]} channels, expected {num_classes}")


def segmentor_logits(net: torch.nn.Module, settings: InferenceSettings) -> Model:
    """The callable :func:`predict_probs` wants from a segmentor for ``settings``.

    mmseg's order: ``net.encode_decode`` (decode-head logits resized to the input, with the
    segmentor's ``align_corners``). sssegmentation's order: the decode-head logits at the
    head's own resolution, ``net(images)["decode"]`` (every segmentor's ``forward`` returns
    them so; sssegmentation's segmentors return ``seg_logits`` so in test mode, e.g.
    ``ssseg/modules/models/segmentors/mcibi/mcibi.py`` line 125).

    Args:
        net: an ``EncoderDecoder``-like segmentor in eval mode.
        settings: the inference settings the callable is for.

    Returns:
        A callable float32 (N, 3, H, W) -> float logits (N, C, h, w).
    """
    if settings.order == "mmseg":
        return net.encode_decode
    return lambda images: net(images)["decode"]


def evaluate_dataset(
    model: Model,
    dataset,
    *,
    num_classes: int,
    ignore_index: int,
    settings: InferenceSettings,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
    align_corners: bool = False,
) -> tuple[SegMetrics, ConfusionMatrix]:
    """Evaluate this rank's shard of a dataset and reduce the confusion matrix over ranks.

    Rank ``r`` of ``world_size`` evaluates indices ``r, r + world_size, ...``. With
    ``world_size > 1`` the matrix is summed over the initialised process group (see
    :meth:`ConfusionMatrix.all_reduce`), so every rank returns the metrics of the whole split;
    with ``world_size == 1`` no collective is called.

    Args:
        model: callable, float32 (N, 3, h, w) -> logits (N, C, h, w), already on ``device``
            (in sssegmentation's order, at the model's own resolution: see
            :func:`predict_probs` and :func:`segmentor_logits`).
        dataset: supports ``len`` and indexing; each sample is a dict with ``image`` float32
            (3, H, W) normalised at the original resolution and ``label`` int64 (H, W).
        num_classes: C.
        ignore_index: label value excluded from the metrics.
        settings: test-time inference settings.
        device: where images are predicted and the confusion matrix is accumulated.
        rank, world_size: this process's shard.
        progress: called as ``progress(done, total)`` after each sample of this rank's shard.
        autocast_dtype, align_corners: as in :func:`predict_probs`.

    Returns:
        (metrics, confusion matrix), both over all ranks.

    Raises:
        ValueError: if ``rank`` is outside ``[0, world_size)``, or from :func:`predict_probs`
            and :meth:`ConfusionMatrix.update`.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    indices = range(rank, len(dataset), world_size)
    for done, index in enumerate(indices, start=1):
        sample = dataset[index]
        image = sample["image"].to(device=device, dtype=torch.float32).unsqueeze(0)
        probs = predict_probs(
            model, image, settings, num_classes=num_classes, autocast_dtype=autocast_dtype,
            align_corners=align_corners,
        )
        cm.update(probs.argmax(dim=1)[0], sample["label"])
        if progress is not None:
            progress(done, len(indices))
    if world_size > 1:
        cm.all_reduce()
    return cm.compute(), cm


def evaluate(
    model: torch.nn.Module,
    dataset,
    settings: InferenceSettings,
    accelerator,
    *,
    num_classes: int,
    ignore_index: int,
) -> SegMetrics:
    """Score the whole ``dataset`` with ``settings``, sharded over the accelerator's ranks and
    reduced (:func:`evaluate_dataset`), at the accelerator's autocast dtype and the segmentor's
    ``align_corners``; the segmentor is put in eval mode and back.

    Args:
        model: the segmentor (possibly wrapped by ``accelerator.prepare``).
        dataset: as in :func:`evaluate_dataset`.
        settings: the test-time views, e.g. :meth:`InferenceSettings.from_recipe`.
        accelerator: an ``accelerate.Accelerator`` (device, rank, world size, precision).
        num_classes, ignore_index: the dataset's class count and ignored label value.

    Returns:
        The metrics over all ranks.
    """
    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    try:
        metrics, _ = evaluate_dataset(
            segmentor_logits(net, settings),
            dataset,
            num_classes=num_classes,
            ignore_index=ignore_index,
            settings=settings,
            device=accelerator.device,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            autocast_dtype=distributed.autocast_dtype(accelerator),
            align_corners=bool(getattr(net, "align_corners", False)),
        )
    finally:
        net.train(was_training)
    return metrics


def reference_for(recipe: Recipe, ms_flip: bool) -> dict[str, Any] | None:
    """The published mIoU matching the evaluation mode, for
    :func:`~trainer.metrics.format_metrics_table`; None without one, and for test-server
    figures (``reference.split: test``), which a score on the validation split is never
    compared with."""
    ref = recipe.reference
    if ref is not None and ref.split != "val":
        return None
    miou = None if ref is None else (ref.miou_ms_flip if ms_flip else ref.miou_ss)
    if miou is None:
        return None
    label = "multi-scale + flip" if ms_flip else "single-scale"
    return {"miou": miou, "label": label, "source": ref.source}


def _run(
    model: Model, x: torch.Tensor, autocast_dtype: torch.dtype | None, *, at_input_size: bool = True
) -> torch.Tensor:
    """Call the model (under autocast when asked) and return float32 logits (N, C, h, w), of
    x's size unless ``at_input_size`` is False (then of any size: the model's resolution)."""
    ctx = (
        torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with ctx:
        logits = model(x)
    if logits.dim() != 4 or logits.shape[0] != x.shape[0] or (
        at_input_size and logits.shape[2:] != x.shape[2:]
    ):
        where = f"at input size {tuple(x.shape[2:])}" if at_input_size else "for the batch"
        raise ValueError(f"model output {tuple(logits.shape)} is not (N, C, H, W) {where}")
    return logits.float()

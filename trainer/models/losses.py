"""Training losses for segmentors.

Cross-entropy as mmsegmentation 1.x applies it in ``BaseDecodeHead.loss_by_feat`` with
``losses/cross_entropy_loss.py``: logits are resized bilinearly to the label size, with the
head's ``align_corners`` (``segmentation_loss(..., align_corners=)``; the training step passes
the segmentor's), then per-pixel cross-entropy skips ``ignore_index``. United-Perception's
heads do the same resize before their loss (``up/tasks/seg/models/decoder/ocrnet.py``:
``nn.UpsamplingBilinear2d``, align_corners True; ``decoder/segformer_decoder.py``:
``F.interpolate(..., align_corners=self.align_corners)``, False in its configs).

OHEM (online hard example mining) follows mmsegmentation's ``OHEMPixelSampler``
(1.x ``mmseg/structures/sampler/ohem_pixel_sampler.py``, 0.x
``mmseg/core/seg/sampler/ohem_pixel_sampler.py``) with a probability threshold: the sampler
gives each pixel a weight 0 or 1, the weighted cross-entropy is then reduced as the plain one
(by default summed and divided by all N*H*W pixels, dropped pixels included). mmseg configures
the sampler on the decode head only (``decode_head=dict(sampler=...)``); auxiliary heads keep
plain cross-entropy, and so does :func:`segmentation_loss`.

ModelTC/United-Perception's ``seg_ohem`` (``up/tasks/seg/models/losses/seg_loss.py``,
``CriterionOhem`` over ``OhemCrossEntropy2dTensor``), which its seg-benchmark HRNet configs
use, differs: ``min_kept`` counts pixels of the whole batch, pixels at the threshold are kept,
no pixel is dropped when the batch has fewer than ``min_kept`` valid ones, the loss is averaged
over the kept pixels only, and every head's output (OCR's auxiliary one too, at its weight)
goes through it: :func:`ohem_kept_cross_entropy`, ``style="up_seg_ohem"`` of
:func:`segmentation_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = 255,
    avg_non_ignore: bool = False,
    align_corners: bool = False,
) -> Tensor:
    """Mean per-pixel cross-entropy of ``logits`` against ``labels``.

    Args:
        logits: float (N, C, h, w); resized bilinearly to (H, W) when the sizes differ.
        labels: int64 (N, H, W) class indices in [0, C) or ``ignore_index``.
        ignore_index: label value that contributes neither loss nor gradient.
        avg_non_ignore: True divides the summed loss by the number of non-ignored pixels
            (clamped to at least 1, so an all-ignored batch gives 0, not NaN). The default,
            False, divides by all N*H*W pixels, as mmseg's ``CrossEntropyLoss`` does by default
            and as the published SegFormer/HRNet configs train.
        align_corners: passed to the bilinear resize.

    Returns:
        A float scalar tensor.

    Raises:
        ValueError: if ``labels`` is not int64 (N, H, W) with the batch size of ``logits``.
    """
    if labels.dtype != torch.int64 or labels.ndim != 3 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must be int64 (N, H, W) matching logits {tuple(logits.shape)}; "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if logits.shape[2:] != labels.shape[1:]:
        logits = F.interpolate(
            logits, size=labels.shape[1:], mode="bilinear", align_corners=align_corners
        )
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    if not avg_non_ignore:
        return per_pixel.mean()
    valid = (labels != ignore_index).sum().clamp(min=1)
    return per_pixel.sum() / valid


def ohem_pixel_weights(
    logits: Tensor,
    labels: Tensor,
    thresh: float,
    min_kept: int,
    ignore_index: int = 255,
) -> Tensor:
    """mmseg ``OHEMPixelSampler.sample`` with ``thresh``: 1.0 for the hard pixels, else 0.0.

    With ``p`` the softmax probability of each valid pixel's true class (computed in float32),
    sorted ascending, and ``kept = min_kept * N`` (mmseg's ``min_kept`` is per image)::

        threshold = max(thresh, p_sorted[min(kept, num_valid - 1)])   (thresh if no valid pixel)
        weight    = 1 where label != ignore_index and p < threshold, else 0

    so every pixel below ``thresh`` is kept, and at least the ``kept`` hardest ones when fewer
    fall below it (ties at the threshold are dropped, as in mmseg). No gradient flows through
    the weights.

    Args:
        logits: float (N, C, H, W) at the label resolution.
        labels: int64 (N, H, W) class indices or ``ignore_index``.
        thresh: probability threshold in (0, 1].
        min_kept: pixels kept at least, per image.
        ignore_index: label value that is never kept.

    Returns:
        float32 (N, H, W) weights in {0, 1}.

    Raises:
        ValueError: ``logits`` and ``labels`` differ in batch or spatial size.
    """
    if logits.shape[0] != labels.shape[0] or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(
            f"OHEM needs logits (N, C, H, W) at the label size; got {tuple(logits.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    with torch.no_grad():
        valid = labels != ignore_index
        target = labels.masked_fill(~valid, 0).unsqueeze(1)
        prob = F.softmax(logits.float(), dim=1).gather(1, target).squeeze(1)
        valid_prob = prob[valid]
        threshold = float(thresh)
        if valid_prob.numel() > 0:
            kept = min_kept * labels.shape[0]
            sorted_prob = valid_prob.sort().values
            threshold = max(threshold, float(sorted_prob[min(kept, sorted_prob.numel() - 1)]))
        return (valid & (prob < threshold)).float()


def ohem_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    thresh: float,
    min_kept: int,
    ignore_index: int = 255,
    avg_non_ignore: bool = False,
    align_corners: bool = False,
) -> Tensor:
    """Cross-entropy over the hard pixels of :func:`ohem_pixel_weights`.

    As mmseg's decode head with ``sampler=dict(type='OHEMPixelSampler', thresh, min_kept)``:
    logits are resized bilinearly to the label size, the sampler weighs pixels 0/1, and the
    weighted per-pixel loss is averaged like :func:`pixel_cross_entropy` (over all N*H*W pixels
    by default, over the non-ignored ones with ``avg_non_ignore``).

    Args:
        logits: float (N, C, h, w); labels: int64 (N, H, W); the rest as
            :func:`ohem_pixel_weights` and :func:`pixel_cross_entropy`.

    Returns:
        A float scalar tensor.

    Raises:
        ValueError: malformed ``labels``.
    """
    _check_labels(logits, labels)
    if logits.shape[2:] != labels.shape[1:]:
        logits = F.interpolate(
            logits, size=labels.shape[1:], mode="bilinear", align_corners=align_corners
        )
    weights = ohem_pixel_weights(logits, labels, thresh, min_kept, ignore_index)
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    per_pixel = per_pixel * weights
    if not avg_non_ignore:
        return per_pixel.mean()
    return per_pixel.sum() / (labels != ignore_index).sum().clamp(min=1)


def ohem_kept_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    thresh: float,
    min_kept: int,
    ignore_index: int = 255,
    align_corners: bool = False,
) -> Tensor:
    """United-Perception's ``OhemCrossEntropy2dTensor``: cross-entropy averaged over kept pixels.

    With ``p`` the softmax probability of each valid pixel's true class (float32) and ``n``
    the number of valid pixels in the batch::

        n < min_kept or min_kept == 0: keep every valid pixel
        otherwise: threshold = max(thresh, k-th smallest p, k = min_kept)
                   keep valid pixels with p <= threshold

    and the loss is the mean cross-entropy over the kept pixels (0 when none is kept). Logits
    are resized bilinearly to the label size first (the reference's heads upsample before the
    loss). No gradient flows through the selection.

    Args:
        logits: float (N, C, h, w); labels: int64 (N, H, W).
        thresh: probability threshold in (0, 1].
        min_kept: pixels kept at least, for the whole batch.
        ignore_index: label value that is never kept.
        align_corners: passed to the bilinear resize (True reproduces UP's HRNet heads,
            ``nn.UpsamplingBilinear2d``).

    Returns:
        A float scalar tensor.
    """
    _check_labels(logits, labels)
    if logits.shape[2:] != labels.shape[1:]:
        logits = F.interpolate(
            logits, size=labels.shape[1:], mode="bilinear", align_corners=align_corners
        )
    with torch.no_grad():
        valid = labels != ignore_index
        kept = valid
        num_valid = int(valid.sum())
        if 0 < min_kept <= num_valid:
            target = labels.masked_fill(~valid, 0).unsqueeze(1)
            prob = F.softmax(logits.float(), dim=1).gather(1, target).squeeze(1)
            prob = prob.masked_fill(~valid, 1.0)
            kth = float(prob.flatten().kthvalue(min(min_kept, prob.numel())).values)
            kept = valid & (prob <= max(float(thresh), kth))
    per_pixel = F.cross_entropy(logits, labels.masked_fill(~kept, ignore_index),
                                ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / kept.sum().clamp(min=1)


def _check_labels(logits: Tensor, labels: Tensor) -> None:
    if labels.dtype != torch.int64 or labels.ndim != 3 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must be int64 (N, H, W) matching logits {tuple(logits.shape)}; "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )


def segmentation_loss(
    outputs: Mapping[str, Tensor],
    labels: Tensor,
    ignore_index: int = 255,
    weights: Mapping[str, float] | None = None,
    avg_non_ignore: bool = False,
    ohem: tuple[float, int] | None = None,
    ohem_style: str = "mmseg_sampler",
    align_corners: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of :func:`pixel_cross_entropy` over a segmentor's outputs.

    Args:
        outputs: head name -> float logits (N, C, h, w), as returned by
            ``EncoderDecoder.forward``.
        labels: int64 (N, H, W) class indices or ``ignore_index``.
        ignore_index: label value that is skipped.
        weights: head name -> loss weight; heads not named weigh 1.0 (mmseg configs use e.g.
            0.4 for auxiliary heads).
        avg_non_ignore: see :func:`pixel_cross_entropy`.
        ohem: ``(thresh, min_kept)``: the ``"decode"`` output uses :func:`ohem_cross_entropy`
            (mmseg's decode-head sampler); every other output keeps plain cross-entropy.
            None: plain cross-entropy everywhere.
        ohem_style: ``"mmseg_sampler"`` (above) or ``"up_seg_ohem"``: every output uses
            :func:`ohem_kept_cross_entropy` (``avg_non_ignore`` does not apply).
        align_corners: of the bilinear resize of every output to the label size (outputs
            already at that size are not resized); pass the segmentor's ``align_corners``, as
            mmseg's ``BaseDecodeHead.loss_by_feat`` resizes with its head's.

    Returns:
        ``(total, parts)`` where ``parts[name]`` is the weighted loss of each head and
        ``total`` their sum (float scalars).

    Raises:
        ValueError: if ``outputs`` is empty, ``weights`` names a head not in ``outputs``, or
            ``labels`` is malformed.
    """
    if not outputs:
        raise ValueError("outputs is empty: no logits to compute a loss from")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(outputs))
    if unknown:
        raise ValueError(f"weights name heads {unknown} not among outputs {sorted(outputs)}")
    if ohem_style not in ("mmseg_sampler", "up_seg_ohem"):
        raise ValueError(f"unknown ohem_style {ohem_style!r}; use mmseg_sampler or up_seg_ohem")
    parts = {}
    for name, logits in outputs.items():
        if ohem is not None and ohem_style == "up_seg_ohem":
            loss = ohem_kept_cross_entropy(logits, labels, ohem[0], ohem[1], ignore_index,
                                           align_corners)
        elif ohem is not None and name == "decode":
            loss = ohem_cross_entropy(logits, labels, ohem[0], ohem[1], ignore_index,
                                      avg_non_ignore, align_corners)
        else:
            loss = pixel_cross_entropy(logits, labels, ignore_index, avg_non_ignore,
                                       align_corners)
        parts[name] = weights.get(name, 1.0) * loss
    total = torch.stack(list(parts.values())).sum()
    return total, parts

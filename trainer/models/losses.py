"""Training losses for segmentors.

Cross-entropy as mmsegmentation 1.x applies it in ``BaseDecodeHead.loss_by_feat`` with
``losses/cross_entropy_loss.py``: logits are resized bilinearly to the label size, then
per-pixel cross-entropy skips ``ignore_index``.
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


def segmentation_loss(
    outputs: Mapping[str, Tensor],
    labels: Tensor,
    ignore_index: int = 255,
    weights: Mapping[str, float] | None = None,
    avg_non_ignore: bool = False,
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
    parts = {
        name: weights.get(name, 1.0)
        * pixel_cross_entropy(logits, labels, ignore_index, avg_non_ignore)
        for name, logits in outputs.items()
    }
    total = torch.stack(list(parts.values())).sum()
    return total, parts

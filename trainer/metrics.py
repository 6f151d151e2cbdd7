"""Semantic-segmentation metrics from a confusion matrix accumulated on the device.

The numbers follow mmsegmentation's IoU metric (``mmseg/evaluation/metrics/iou_metric.py`` in
1.x, ``mmseg/core/evaluation/metrics.py`` in 0.x), computed from the per-class totals of the
whole split:

- ``intersect[c]``  pixels with ground truth ``c`` predicted as ``c`` (the diagonal),
- ``area_label[c]`` pixels with ground truth ``c`` (row sums),
- ``area_pred[c]``  pixels predicted as ``c`` (column sums),
- ``union[c] = area_label[c] + area_pred[c] - intersect[c]``.

``IoU = intersect / union`` (NaN where the class is in neither ground truth nor prediction),
``Acc = intersect / area_label`` (NaN where the class is absent from the ground truth),
``aAcc = sum(intersect) / sum(area_label)``; ``mIoU`` and ``mAcc`` are means that skip NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "SegMetrics", "format_metrics_table"]


@dataclass(frozen=True)
class SegMetrics:
    """Metrics of one evaluation; every value is a fraction in [0, 1] or NaN.

    Attributes:
        aAcc: overall pixel accuracy over non-ignored pixels.
        mIoU: mean of ``per_class_iou`` over classes whose IoU is not NaN.
        mAcc: mean of ``per_class_acc`` over classes whose accuracy is not NaN.
        per_class_iou: IoU per class; NaN for a class absent from both ground truth and
            prediction.
        per_class_acc: accuracy (recall) per class; NaN for a class absent from the ground truth.
    """

    aAcc: float
    mIoU: float
    mAcc: float
    per_class_iou: list[float]
    per_class_acc: list[float]

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, float]:
        """Flatten for logging: keys ``aAcc``, ``mIoU``, ``mAcc``, ``IoU.<name>``, ``Acc.<name>``.

        Args:
            class_names: one name per class; class indices (``"0"``, ``"1"``, ...) when None.

        Returns:
            A dict of floats in [0, 1] (NaN kept as NaN).

        Raises:
            ValueError: if ``class_names`` does not have one entry per class.
        """
        names = _class_names(class_names, len(self.per_class_iou))
        out = {"aAcc": self.aAcc, "mIoU": self.mIoU, "mAcc": self.mAcc}
        out.update({f"IoU.{n}": v for n, v in zip(names, self.per_class_iou)})
        out.update({f"Acc.{n}": v for n, v in zip(names, self.per_class_acc)})
        return out


#: The most bins the direct update counts into (``(max label + 1) * C``: 8-bit label maps
#: always stay under it); beyond, pixels are masked first.
_MAX_DIRECT_BINS = 1 << 20


class ConfusionMatrix:
    """A (C, C) int64 pixel-count matrix, rows = ground truth, columns = prediction.

    Counts are accumulated on ``device`` with one ``torch.bincount`` per update, so evaluation
    on a GPU never copies label maps to the host. Where the labels are non-negative and small
    (8-bit maps) and the ignore index is not a class, the update counts ``label * C + pred``
    of every pixel and keeps the first C x C bins: no mask, no gather (the ignored and
    out-of-range labels fall past them). Pixels whose label equals ``ignore_index``,
    or lies outside ``[0, num_classes)``, are skipped. (mmsegmentation drops only
    ``ignore_index`` pixels and still counts the prediction of a pixel with any other
    out-of-range label in the prediction area; well-formed datasets contain no such labels.)

    Args:
        num_classes: number of classes C (>= 1).
        ignore_index: label value excluded from every count.
        device: where the matrix lives (and where ``update`` inputs are moved); CPU when None.

    Raises:
        ValueError: if ``num_classes`` < 1.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device=None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(
            (num_classes, num_classes), dtype=torch.int64, device=device
        )
        self._scratch: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add one batch of predictions.

        Args:
            pred: int64 class indices, shape (N, H, W) or (H, W), values in [0, C).
            label: int64 ground truth of the same shape; ``ignore_index`` and values outside
                [0, C) are skipped.

        Raises:
            ValueError: if the shapes differ or a prediction lies outside [0, C).
        """
        if pred.shape != label.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} != label shape {tuple(label.shape)}"
            )
        device = self.matrix.device
        pred = pred.to(device=device, dtype=torch.int64).reshape(-1)
        label = label.to(device=device, dtype=torch.int64).reshape(-1)
        c = self.num_classes
        if not pred.numel():
            return
        low, high = (int(v) for v in torch.aminmax(pred))
        if low < 0 or high >= c:
            raise ValueError(f"predictions must lie in [0, {c}), got values outside")
        low, high = (int(v) for v in torch.aminmax(label))
        if low >= 0 and (high + 1) * c <= _MAX_DIRECT_BINS and not 0 <= self.ignore_index < c:
            # label * C + pred of every pixel in 16 (or 32) bits, in buffers kept between
            # updates (a fresh 32 MB tensor costs more in page faults than the arithmetic), one
            # bincount: a label >= C (the ignore index among them) lands past the first
            # C * C bins, which are the matrix
            dtype = torch.int16 if (high + 1) * c <= 1 << 15 else torch.int32
            cell, other = self._buffers(pred.numel(), dtype)
            torch.mul(other.copy_(label), c, out=cell).add_(other.copy_(pred))
            counts = torch.bincount(cell, minlength=c * c)
            self.matrix += counts[: c * c].reshape(c, c)
            return
        keep = (label != self.ignore_index) & (label >= 0) & (label < c)
        cell = label[keep] * c + pred[keep]
        self.matrix += torch.bincount(cell, minlength=c * c).reshape(c, c)

    def _buffers(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Two ``dtype`` buffers of ``n`` elements on the matrix's device, kept for the next
        update of the same size or smaller and dtype."""
        scratch = self._scratch
        if scratch is None or scratch.shape[1] < n or scratch.dtype != dtype:
            scratch = self._scratch = torch.empty((2, n), dtype=dtype, device=self.matrix.device)
        return scratch[0, :n], scratch[1, :n]

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks in place; a no-op without a process group.

        With gloo the reduction runs on a CPU copy, with NCCL on a copy on the current CUDA
        device, so the matrix may live on either device under either backend.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        backend = str(dist.get_backend()).lower()
        if backend == "gloo":
            comm_device = torch.device("cpu")
        elif backend == "nccl":
            comm_device = torch.device("cuda", torch.cuda.current_device())
        else:
            comm_device = self.matrix.device
        buf = self.matrix.to(comm_device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        self.matrix.copy_(buf)

    def compute(self) -> SegMetrics:
        """Metrics of everything accumulated so far (computed in float64 on the CPU).

        Returns:
            A :class:`SegMetrics`; aAcc/mIoU/mAcc are NaN when no pixel was counted.
        """
        m = self.matrix.detach().to("cpu", torch.float64)
        intersect = m.diagonal()
        area_label = m.sum(dim=1)
        area_pred = m.sum(dim=0)
        union = area_label + area_pred - intersect
        # 0/0 gives NaN, which is what marks a class as absent.
        iou = intersect / union
        acc = intersect / area_label
        a_acc = intersect.sum() / area_label.sum()
        return SegMetrics(
            aAcc=float(a_acc),
            mIoU=_nanmean(iou),
            mAcc=_nanmean(acc),
            per_class_iou=iou.tolist(),
            per_class_acc=acc.tolist(),
        )


def format_metrics_table(
    metrics: SegMetrics, class_names: list[str], reference: dict | None = None
) -> str:
    """A plain-text per-class table followed by a summary line, values in percent.

    Args:
        metrics: the metrics to show.
        class_names: one name per class.
        reference: optional published result, ``{"miou": 75.28, "label": "single-scale",
            "source": "..."}`` with ``miou`` in percent; ``label`` and ``source`` may be
            omitted. Adds a line with the published mIoU and our difference in points.

    Returns:
        The table as a string (no trailing newline). NaN is shown as ``nan``.

    Raises:
        ValueError: if ``class_names`` does not have one entry per class, or ``reference``
            lacks ``miou``.
    """
    names = _class_names(class_names, len(metrics.per_class_iou))
    rows = [("Class", "IoU", "Acc")]
    rows += [
        (n, _pct(i), _pct(a))
        for n, i, a in zip(names, metrics.per_class_iou, metrics.per_class_acc)
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:>{w2}}" for r in rows]
    lines.insert(1, "-" * (w0 + w1 + w2 + 4))
    lines.append(
        f"aAcc: {_pct(metrics.aAcc)}  mIoU: {_pct(metrics.mIoU)}  mAcc: {_pct(metrics.mAcc)}"
    )
    if reference is not None:
        if "miou" not in reference:
            raise ValueError(f"reference needs a 'miou' entry (percent), got {reference!r}")
        ref = float(reference["miou"])
        label = f" ({reference['label']})" if reference.get("label") else ""
        diff = metrics.mIoU * 100.0 - ref
        line = f"published mIoU{label}: {ref:.2f}  difference: {diff:+.2f} points"
        if reference.get("source"):
            line += f"  source: {reference['source']}"
        lines.append(line)
    return "\n".join(lines)


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value * 100.0:.2f}"


def _class_names(class_names: list[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"expected {num_classes} class names, got {len(class_names)}"
        )
    return list(class_names)

"""Confusion-matrix update speed against its floor, one ``torch.bincount`` (target <= 1.3x).

Measures :meth:`trainer.metrics.ConfusionMatrix.update` for a batch of 2 Cityscapes-size
maps (19 classes, 1024x2048 int64 predictions and labels, a band of ignored pixels as padded
or void regions have), against one ``torch.bincount(label * 19 + pred, minlength=19 * 19)``
of the same pixels, precomputed: the least work any update can do (it must at least count
every pixel once). Both alternate in the same process, after one warm-up each; figures are
medians in milliseconds. On CUDA (``--device cuda``) the maps live on the GPU and every
timing is bracketed by ``torch.cuda.synchronize``.

    python -m benchmarks.bench_confusion [--quick] [--device cuda] [--repeats 9]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_confusion.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.table import Row, median_seconds, row, script_main

NAME = "confusion"
CLASSES = 19
TARGET_RATIO = 1.3


def rows(quick: bool = False, device: str = "cpu", repeats: int | None = None) -> list[Row]:
    """Update of a 2 x 1024 x 2048 batch (quick: 2 x 128 x 256) against one bincount, ms."""
    from trainer.metrics import ConfusionMatrix

    dev = torch.device(device)
    height, width = (128, 256) if quick else (1024, 2048)
    repeats = repeats or (3 if quick else 9)
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, CLASSES, (2, height, width), generator=gen)
    label = torch.randint(0, CLASSES, (2, height, width), generator=gen)
    label[:, : height // 16] = 255  # ignored band
    pred, label = pred.to(dev), label.to(dev)
    keep = label != 255
    cells = (label[keep] * CLASSES + pred[keep]).reshape(-1)
    matrix = ConfusionMatrix(CLASSES, ignore_index=255, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None

    def update() -> None:
        matrix.update(pred, label)

    def floor() -> None:
        torch.bincount(cells, minlength=CLASSES * CLASSES)

    update(), floor()  # warm-up
    updates, floors = [], []
    for _ in range(repeats):  # alternate, so load from other processes falls on both alike
        updates.append(median_seconds(update, 1, sync))
        floors.append(median_seconds(floor, 1, sync))
    updates.sort(), floors.sort()
    t_update, t_floor = updates[len(updates) // 2], floors[len(floors) // 2]
    ratio = t_update / t_floor
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"cpu, {torch.get_num_threads()} threads"
    return [row(NAME, f"ConfusionMatrix.update 2x{height}x{width}, {CLASSES} classes",
                t_update * 1e3, "ms", "one torch.bincount of the kept pixels", t_floor * 1e3,
                target=f"<= {TARGET_RATIO}x", passed=ratio <= TARGET_RATIO,
                notes=f"{where}; median of {repeats}, alternating")]


def _arguments(parser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=None)


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)

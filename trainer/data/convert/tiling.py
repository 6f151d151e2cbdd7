"""Cutting large tiles into fixed-size patches, shared by the ISPRS and iSAID converters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.convert.common import atomic_write_text, marker_path, write_png


def grid_starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch start offsets (pixels) along one axis: every ``stride``, the last flush with the end.

    A length shorter than ``patch`` gives ``[0]`` (one patch, of the whole length).

    >>> grid_starts(1200, 512, 256)
    [0, 256, 512, 688]
    """
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:
        starts.append(length - patch)
    return starts


def pad_to(array: np.ndarray, height: int, width: int, value: int) -> np.ndarray:
    """Pad ``array`` at the bottom and right to at least ``height`` x ``width`` pixels."""
    h, w = array.shape[:2]
    if h >= height and w >= width:
        return array
    pad = [(0, max(height - h, 0)), (0, max(width - w, 0))] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, constant_values=value)


def write_patches(
    image: np.ndarray,
    label: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    image_path: "callable",
    label_path: "callable",
    dst: Path,
    key: str,
) -> int:
    """Write the image and label patch of every box, skipping patches already present, then
    the completion marker ``key``.

    Args:
        image: ``np.uint8 (H, W, 3)`` RGB; label: ``np.uint8 (H, W)``.
        boxes: ``(x0, y0, x1, y1)`` in pixels, end-exclusive.
        image_path, label_path: ``box -> Path`` of the outputs.
        dst, key: where the marker goes (see :func:`marker_path`).

    Returns:
        The number of patch pairs.
    """
    for box in dict.fromkeys(boxes):
        x0, y0, x1, y1 = box
        out_image, out_label = image_path(box), label_path(box)
        if not out_image.exists():
            write_png(out_image, np.ascontiguousarray(image[y0:y1, x0:x1]))
        if not out_label.exists():
            write_png(out_label, np.ascontiguousarray(label[y0:y1, x0:x1]))
    atomic_write_text(marker_path(dst, key), f"{len(set(boxes))}\n")
    return len(set(boxes))

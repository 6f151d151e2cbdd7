"""Decoding image and label files into numpy arrays.

Images go through OpenCV (the same decoder mmsegmentation's ``LoadImageFromFile`` uses by
default, flag ``color``); labels go through Pillow, as mmsegmentation's ``LoadAnnotations``
does, because OpenCV expands palette (mode ``P``) PNGs into colours instead of returning the
palette indices that such label files store. Greyscale PNG labels (the PNG colour type 0: ADE20K,
Cityscapes, LoVeDA, ...) are decoded by OpenCV instead, which returns the same array about 1.5x
faster (0.95 ms against 1.47 ms for a 683x512 ADE20K label on one core).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# OpenCV 4.10+ can decode straight to RGB; older builds decode BGR and we convert.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file as RGB.

    Greyscale files (e.g. some LIP JPEGs) are replicated to three channels, alpha is dropped,
    and the EXIF orientation is applied (OpenCV's ``IMREAD_COLOR`` behaviour, as in mmcv).

    Returns:
        ``np.uint8`` array of shape ``(H, W, 3)``, channel order RGB, values 0..255.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file exists but OpenCV cannot decode it.
    """
    path = Path(path)
    if _IMREAD_RGB is not None:
        image = cv2.imread(str(path), _IMREAD_RGB)
    else:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image is None:
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        raise ValueError(f"OpenCV could not decode image file {path}")
    return image


def read_label(path: str | Path) -> np.ndarray:
    """Decode a label map file holding one class index per pixel.

    Accepts greyscale (``L``), palette (``P``, the indices are returned, not the colours) and
    16-bit (``I;16``) PNGs.

    Returns:
        Array of shape ``(H, W)``: ``np.uint8`` for 8-bit files, ``np.uint16``/``np.int32`` for
        wider ones.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file decodes to more than one channel (a colour-coded label, which needs
            a converter to indices first).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    if _is_greyscale_png(path):
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if label is not None and label.ndim == 2:
            return label
    with Image.open(path) as pil:
        label = np.array(pil)
    if label.ndim != 2:
        raise ValueError(
            f"label file {path} has shape {label.shape} (mode {pil.mode}); expected a single-"
            "channel index map (L, P or I;16 PNG). Colour-coded labels need converting first."
        )
    return label


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_greyscale_png(path: Path) -> bool:
    """True for a PNG whose IHDR colour type is 0 (greyscale without alpha, 8 or 16 bit)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return False
    # signature (8 bytes), IHDR length and type (8), width, height (8), bit depth, colour type
    return len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[25] == 0

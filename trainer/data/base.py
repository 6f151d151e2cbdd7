"""The common dataset base: a list of (image, label) file pairs read into sample dicts.

A concrete layout (Cityscapes, ADE20K, ...) only says how to find the pairs of one split, by
implementing :meth:`SegmentationDataset.list_pairs`. Reading, the reduce-zero-label mapping and
the transform pipeline live here once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from trainer.data.io import read_image, read_label

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class DatasetLayoutError(ValueError):
    """The files on disk do not match the layout a dataset class expects.

    Raised for a missing root or split folder, a split without images, or an image without its
    label. The message names the offending path and the expected layout.
    """


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Drop class 0 ("other") and shift the rest down by one.

    Matches mmsegmentation's ``LoadAnnotations(reduce_zero_label=True)``: 0 becomes
    ``ignore_index``, ``k`` becomes ``k - 1``, and a pixel already equal to ``ignore_index``
    stays ``ignore_index``.

    Args:
        label: integer array of any shape (usually ``(H, W)``, ``np.uint8``).
        ignore_index: value that marks pixels excluded from the loss and the metrics.

    Returns:
        A new array of the same shape and dtype.
    """
    if label.dtype == np.uint8 and 0 <= ignore_index <= 255:
        lut = (np.arange(256, dtype=np.int32) - 1).astype(np.uint8)
        lut[0] = ignore_index
        lut[ignore_index] = ignore_index
        return lut[label]
    out = label.astype(np.int64) - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out.astype(label.dtype)


class SegmentationDataset(Dataset):
    """A split of a segmentation dataset stored as image files with per-pixel label files.

    Subclasses implement :meth:`list_pairs`; the pairs are listed once, at construction, so a
    broken layout fails before training starts.

    Args:
        root: dataset root folder (its meaning is defined by the subclass).
        split: split name, e.g. ``"train"`` or ``"val"``.
        transform: callable applied to each sample dict, e.g. a
            :class:`trainer.data.transforms.Compose`; ``None`` returns the decoded arrays.
        reduce_zero_label: map label 0 to ``ignore_index`` and ``k`` to ``k - 1``
            (see :func:`reduce_zero_label`).
        ignore_index: label value excluded from loss and metrics.

    Items are dicts with keys:
        ``image``: without a transform ``np.uint8 (H, W, 3)`` RGB; after the standard
            pipelines a ``torch.float32`` tensor ``(3, H, W)``.
        ``label``: without a transform ``np.uint8 (H, W)`` class indices; after the standard
            pipelines a ``torch.int64`` tensor ``(H, W)``.
        ``path``: ``str`` path of the image file.

    Raises:
        DatasetLayoutError: from the constructor, when the layout is not found or incomplete.
    """

    #: One line describing the expected folder layout, used in error messages.
    layout_description: str = ""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        reduce_zero_label: bool = False,
        ignore_index: int = 255,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        if not self.root.is_dir():
            raise self.layout_error(self.root, "dataset root folder does not exist")
        self.pairs: list[tuple[Path, Path]] = self.list_pairs()
        if not self.pairs:
            raise self.layout_error(self.root, f"split {split!r} has no images")

    def list_pairs(self) -> list[tuple[Path, Path]]:
        """Return the sorted (image path, label path) pairs of ``self.split``.

        Raises:
            DatasetLayoutError: a required folder is missing or an image has no label.
        """
        raise NotImplementedError

    def layout_error(self, path: Path, problem: str) -> DatasetLayoutError:
        """Build a :class:`DatasetLayoutError` naming ``path`` and the expected layout."""
        return DatasetLayoutError(
            f"{type(self).__name__}: {problem}: {path}\n  expected layout: {self.layout_description}"
        )

    def check_labels_exist(self, pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
        """Return ``pairs`` unchanged, or raise naming the first images without a label file."""
        missing = [(img, lbl) for img, lbl in pairs if not lbl.is_file()]
        if missing:
            img, lbl = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise self.layout_error(lbl, f"image {img} has no label file{more}")
        return pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Sample:
        """Decode pair ``index`` without applying the transform (see the class docstring)."""
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = read_label(label_path)
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"label {label_path} is {label.shape[1]}x{label.shape[0]} pixels but image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        if self.reduce_zero_label:
            label = reduce_zero_label(label, self.ignore_index)
        return {"image": image, "label": label, "path": str(image_path)}

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"

"""Looking at a prepared dataset: counts, sizes, the label histogram, problems, a contact sheet.

:func:`inspect_dataset` decodes every pair (in parallel) and is what ``segctl data inspect``
prints. :func:`quick_check` lists the splits and decodes only a handful of pairs, cheap
enough for a pre-submission check on a login node.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trainer.data.base import DatasetLayoutError, reduce_zero_label as _reduce_zero_label
from trainer.data.io import read_image, read_label
from trainer.data.layouts import DATASET_LAYOUTS, build_dataset


@dataclass
class SplitReport:
    """What one split holds.

    Attributes:
        split: split name.
        pairs: number of (image, label) pairs listed.
        inspected: pairs decoded (``pairs`` unless limited).
        min_size, max_size: smallest and largest image ``(width, height)`` in pixels, by area.
        class_pixels: pixels per class id ``0..num_classes-1`` (after ``reduce_zero_label``).
        ignore_pixels: pixels equal to the ignore index.
        other_pixels: pixels with ids outside the class set and not ignore, by id.
        problems: one line per problem, each naming its file.
    """

    split: str
    pairs: int = 0
    inspected: int = 0
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    class_pixels: list[int] = field(default_factory=list)
    ignore_pixels: int = 0
    other_pixels: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class InspectionReport:
    """The report of :func:`inspect_dataset`; ``to_dict()`` is its JSON form."""

    layout: str
    root: str
    num_classes: int
    ignore_index: int
    reduce_zero_label: bool
    splits: list[SplitReport]

    @property
    def problems(self) -> list[str]:
        """All problems of all splits."""
        return [p for s in self.splits for p in s.problems]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (``other_pixels`` keys become strings)."""
        out = asdict(self)
        for split in out["splits"]:
            split["other_pixels"] = {str(k): v for k, v in split["other_pixels"].items()}
        out["problems"] = self.problems
        return out


def _inspect_pair(
    image_path: Path, label_path: Path, num_classes: int, ignore_index: int, reduce: bool
) -> dict[str, Any]:
    """Decode one pair; return its size, label histogram and problems (never raises)."""
    result: dict[str, Any] = {"size": None, "hist": None, "ignore": 0, "other": {}, "problems": []}
    image = label = None
    try:
        image = read_image(image_path)
        result["size"] = (int(image.shape[1]), int(image.shape[0]))
    except (OSError, ValueError) as exc:
        result["problems"].append(f"unreadable image: {image_path} ({exc})")
    try:
        label = read_label(label_path)
    except (OSError, ValueError) as exc:
        result["problems"].append(f"unreadable label: {label_path} ({exc})")
    except Exception as exc:  # PIL's own decoder errors
        result["problems"].append(f"unreadable label: {label_path} ({type(exc).__name__}: {exc})")
    if label is None:
        return result
    if image is not None and label.shape != image.shape[:2]:
        result["problems"].append(
            f"size mismatch: label {label_path} is {label.shape[1]}x{label.shape[0]} pixels, "
            f"image {image_path} is {image.shape[1]}x{image.shape[0]}"
        )
    if reduce:
        label = _reduce_zero_label(label, ignore_index)
    counts = np.bincount(label.ravel().astype(np.int64), minlength=num_classes)
    result["hist"] = counts[:num_classes]
    if ignore_index < len(counts):
        result["ignore"] = int(counts[ignore_index])
    other = {
        int(i): int(c) for i, c in enumerate(counts)
        if c and i >= num_classes and i != ignore_index
    }
    if other:
        ids = ", ".join(str(i) for i in list(other)[:8])
        result["problems"].append(
            f"label ids outside the class set 0..{num_classes - 1}: {label_path} ({ids})"
        )
    result["other"] = other
    return result


def inspect_dataset(
    layout: str,
    root: str | Path,
    splits: Sequence[str],
    num_classes: int,
    ignore_index: int = 255,
    reduce_zero_label: bool | None = None,
    limit: int | None = None,
    workers: int = 1,
) -> InspectionReport:
    """Decode every pair of ``splits`` and summarise them.

    Args:
        layout: a key of :data:`trainer.data.DATASET_LAYOUTS`.
        root: dataset root.
        splits: split names to inspect; a split that does not list becomes a problem.
        num_classes: ids ``0..num_classes-1`` are classes (after zero-label reduction).
        ignore_index: the ignore label.
        reduce_zero_label: as the training setup reads the labels; ``None`` = the layout's
            default.
        limit: inspect at most this many pairs per split (evenly spaced); ``None`` = all.
        workers: processes decoding in parallel.

    Returns:
        An :class:`InspectionReport`; problems are reported in it, not raised.

    Raises:
        KeyError: unknown ``layout``.
    """
    if layout not in DATASET_LAYOUTS:
        raise KeyError(f"unknown dataset layout {layout!r}; known layouts: {sorted(DATASET_LAYOUTS)}")
    reports = []
    reduce_used = False
    for split in splits:
        report = SplitReport(split=split, class_pixels=[0] * num_classes)
        reports.append(report)
        kw = {} if reduce_zero_label is None else {"reduce_zero_label": reduce_zero_label}
        try:
            dataset = build_dataset(layout, root, split, ignore_index=ignore_index, **kw)
        except DatasetLayoutError as exc:
            report.problems.append(str(exc).splitlines()[0])
            continue
        reduce_used = dataset.reduce_zero_label
        pairs = dataset.pairs
        report.pairs = len(pairs)
        if limit is not None and len(pairs) > limit:
            idx = np.linspace(0, len(pairs) - 1, limit).round().astype(int)
            pairs = [pairs[i] for i in sorted(set(idx.tolist()))]
        args = [(img, lbl, num_classes, ignore_index, dataset.reduce_zero_label) for img, lbl in pairs]
        if workers > 1 and len(args) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_inspect_pair, *zip(*args), chunksize=8))
        else:
            results = [_inspect_pair(*a) for a in args]
        hist = np.zeros(num_classes, np.int64)
        for r in results:
            report.inspected += 1
            report.problems += r["problems"]
            if r["size"] is not None:
                area = r["size"][0] * r["size"][1]
                if report.min_size is None or area < report.min_size[0] * report.min_size[1]:
                    report.min_size = r["size"]
                if report.max_size is None or area > report.max_size[0] * report.max_size[1]:
                    report.max_size = r["size"]
            if r["hist"] is not None:
                hist += r["hist"]
                report.ignore_pixels += r["ignore"]
                for k, v in r["other"].items():
                    report.other_pixels[k] = report.other_pixels.get(k, 0) + v
        report.class_pixels = [int(v) for v in hist]
    return InspectionReport(
        layout=layout, root=str(root), num_classes=num_classes, ignore_index=ignore_index,
        reduce_zero_label=bool(reduce_zero_label if reduce_zero_label is not None else reduce_used),
        splits=reports,
    )


def quick_check(
    layout: str, root: str | Path, splits: Sequence[str], decode: int = 3, **kw: Any
) -> list[str]:
    """Cheap pre-submission check: list each split, decode ``decode`` pairs of each.

    Listing finds missing folders, split lists and labels; the decoded pairs (first, middle,
    last) catch unreadable files and image/label size mismatches. Reads no more than
    ``decode`` pairs per split, so it costs little even on network storage.

    Args:
        layout: a key of :data:`trainer.data.DATASET_LAYOUTS`.
        root: dataset root.
        splits: split names, e.g. ``(preset.train_split, preset.val_split)``.
        decode: pairs decoded per split.
        **kw: passed to the dataset class (``reduce_zero_label``, ``ignore_index``).

    Returns:
        Problems, one line each naming the split and the file; empty when all is well.
    """
    problems: list[str] = []
    for split in splits:
        try:
            dataset = build_dataset(layout, root, split, **kw)
        except KeyError as exc:
            return [str(exc.args[0]) if exc.args else str(exc)]
        except DatasetLayoutError as exc:
            problems.append(f"{split}: {str(exc).splitlines()[0]}")
            continue
        n = len(dataset)
        picks = sorted({0, n // 2, n - 1})[: max(decode, 0)] if decode else []
        for i in picks:
            try:
                dataset.load(i)
            except Exception as exc:  # any decode failure is a problem to report
                problems.append(f"{split}: {exc}")
    return problems


def colourise(label: np.ndarray, palette: Sequence[tuple[int, int, int]], ignore_index: int = 255) -> np.ndarray:
    """Colour a label map: ``(H, W)`` ids -> ``np.uint8 (H, W, 3)`` RGB; ignore and unknown
    ids are black."""
    lut = np.zeros((max(256, int(label.max()) + 1), 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    if ignore_index < len(lut):
        lut[ignore_index] = 0
    return lut[label.astype(np.int64)]


def contact_sheet(
    layout: str,
    root: str | Path,
    splits: Sequence[str],
    palette: Sequence[tuple[int, int, int]],
    out: str | Path,
    per_split: int = 4,
    cell: int = 256,
    **kw: Any,
) -> int:
    """Write a PNG grid: per row, an image and its label blended over it, ``per_split`` pairs
    of each split side by side.

    Args:
        palette: RGB colour per class id.
        out: PNG path (written atomically).
        per_split: pairs shown per split (evenly spaced).
        cell: width of each image in pixels (height follows the aspect ratio, max ``cell``).
        **kw: passed to the dataset class.

    Returns:
        The number of pairs drawn.
    """
    from trainer.data.convert.common import write_png

    tiles = []
    ignore_index = kw.get("ignore_index", 255)
    for split in splits:
        try:
            dataset = build_dataset(layout, root, split, **kw)
        except DatasetLayoutError:
            continue
        n = len(dataset)
        for i in sorted(set(np.linspace(0, n - 1, min(per_split, n)).round().astype(int).tolist())):
            try:
                sample = dataset.load(i)
            except Exception:
                continue
            image, label = sample["image"], sample["label"]
            colours = colourise(label, palette, ignore_index)
            blend = (0.5 * image + 0.5 * colours).astype(np.uint8)
            pair = np.concatenate([image, blend], axis=1)
            scale = cell * 2 / pair.shape[1]
            h = min(int(round(pair.shape[0] * scale)), cell)
            tiles.append(cv2.resize(pair, (cell * 2, h), interpolation=cv2.INTER_AREA))
    if not tiles:
        return 0
    cols = 2
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.zeros((rows * cell, cols * cell * 2, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * cell: r * cell + tile.shape[0], c * cell * 2: (c + 1) * cell * 2] = tile
    out = Path(out)
    write_png(out, sheet)
    return len(tiles)

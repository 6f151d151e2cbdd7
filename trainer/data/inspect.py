"""Looking at a prepared dataset: counts, sizes, the label histogram, problems, a contact sheet.

:func:`inspect_dataset` decodes every pair (in parallel) and is what ``segctl data inspect``
prints. :func:`quick_check` lists the splits and decodes only a handful of pairs, cheap
enough for a pre-submission check on a login node. :func:`contact_sheet` draws a few pairs
of each split as one PNG a researcher can judge by eye: images at their own aspect ratio,
labels blended over them, captions, and a legend of the classes present.
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


#: Contact sheet geometry in pixels: the margin around and between cells, and the gap between
#: an image and its overlay.
SHEET_PAD, SHEET_GAP = 8, 4
#: Height of a pair's caption in pixels.
CAPTION_ROW = 20
#: Pairs per row of a contact sheet.
SHEET_COLUMNS = 2


@dataclass(frozen=True)
class SheetCell:
    """Where one pair sits on a contact sheet.

    Attributes:
        split: the split it comes from.
        file: the image's file name (no folder).
        size: the image's ``(width, height)`` in pixels, as stored.
        caption: the text above the pair: ``"<split>: <file>  <width>x<height> px"``.
        image_box, overlay_box: ``(x, y, width, height)`` in sheet pixels of the image and of
            the label blended over it; both keep the image's aspect ratio.
    """

    split: str
    file: str
    size: tuple[int, int]
    caption: str
    image_box: tuple[int, int, int, int]
    overlay_box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ContactSheet:
    """What :func:`contact_sheet` wrote.

    Attributes:
        path: the PNG file.
        size: the sheet's ``(width, height)`` in pixels.
        cells: one :class:`SheetCell` per pair drawn, in drawing order.
        legend: ``(class id, name, RGB colour)`` of every class present in the drawn labels,
            in id order, as the legend at the bottom shows them.
    """

    path: Path
    size: tuple[int, int]
    cells: list[SheetCell]
    legend: list[tuple[int, str, tuple[int, int, int]]]


def _thumb_size(width: int, height: int, cell: int) -> tuple[int, int]:
    """``(width, height)`` scaled so that the longer side is ``cell`` pixels (aspect kept)."""
    scale = cell / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _nearest(label: np.ndarray, width: int, height: int) -> np.ndarray:
    """``label`` resized to ``(height, width)`` by nearest neighbour (ids stay ids, any dtype)."""
    rows = np.minimum(((np.arange(height) + 0.5) * label.shape[0] / height).astype(np.int64),
                      label.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * label.shape[1] / width).astype(np.int64),
                      label.shape[1] - 1)
    return label[rows[:, None], cols[None, :]]


def _sheet_samples(layout: str, root: str | Path, splits: Sequence[str], per_split: int,
                   **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(split, sample)`` of ``per_split`` evenly spaced pairs of each split that lists and
    decodes; the others are left out (the report names their problems)."""
    samples = []
    for split in splits:
        try:
            dataset = build_dataset(layout, root, split, **kw)
        except DatasetLayoutError:
            continue
        n = len(dataset)
        for i in sorted(set(np.linspace(0, n - 1, min(per_split, n)).round().astype(int).tolist())):
            try:
                samples.append((split, dataset.load(i)))
            except Exception:  # an unreadable pair is a problem of the report, not of the sheet
                continue
    return samples


def _pair_thumbs(sample: dict[str, Any], palette: Sequence[tuple[int, int, int]],
                 ignore_index: int, cell: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The image and the label blended over it, both scaled to fit ``cell`` (aspect kept)."""
    from trainer.visuals import blend_labels

    image, label = sample["image"], sample["label"]
    width, height = _thumb_size(image.shape[1], image.shape[0], cell)
    thumb = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return thumb, blend_labels(thumb, _nearest(label, width, height), palette, ignore_index,
                               alpha)


def _present(label: np.ndarray, num_ids: int, ignore_index: int) -> set[int]:
    """The ids ``0..num_ids-1`` other than ``ignore_index`` that ``label`` holds."""
    counts = np.bincount(label.ravel().astype(np.int64), minlength=num_ids)[:num_ids]
    return {i for i in np.flatnonzero(counts).tolist() if i != ignore_index}


def contact_sheet(
    layout: str,
    root: str | Path,
    splits: Sequence[str],
    palette: Sequence[tuple[int, int, int]],
    out: str | Path,
    per_split: int = 4,
    cell: int = 256,
    classes: Sequence[str] | None = None,
    alpha: float = 0.5,
    **kw: Any,
) -> ContactSheet:
    """Write a PNG grid of pairs, ``SHEET_COLUMNS`` per row: each pair is the image and, beside
    it, its label blended over it semi-transparently (so that their alignment shows), under a
    caption with the split, file name and size in pixels; a legend of the classes present
    (palette swatch, id and name) closes the sheet.

    Args:
        layout: a key of :data:`trainer.data.DATASET_LAYOUTS`.
        root: dataset root.
        splits: split names; splits that do not list and pairs that do not decode are left out.
        palette: RGB colour per class id.
        out: PNG path (written atomically); its ``Description`` text chunk repeats the
            captions and the legend, one line each.
        per_split: pairs shown per split (evenly spaced).
        cell: the longer side of each image in pixels (the aspect ratio is kept).
        classes: class names for the legend (the dataset preset's); None: ``class <id>``.
        alpha: the label colour's weight in the blend, in (0, 1]; ignored pixels (and ids
            outside the palette) show the image unchanged.
        **kw: passed to the dataset class (``ignore_index``, ``reduce_zero_label``).

    Returns:
        A :class:`ContactSheet` (``cells`` is empty and nothing is written when no pair
        decodes).

    Raises:
        ValueError: ``alpha`` outside (0, 1] or ``cell`` < 16.
        KeyError: unknown ``layout``.
    """
    from trainer.data.convert.common import atomic_write_bytes
    from trainer.visuals import legend_entries, legend_strip, png_with_text

    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if cell < 16:
        raise ValueError(f"cell must be at least 16 pixels, got {cell}")
    if layout not in DATASET_LAYOUTS:
        raise KeyError(f"unknown dataset layout {layout!r}; "
                       f"known layouts: {sorted(DATASET_LAYOUTS)}")
    ignore_index = kw.get("ignore_index", 255)
    samples = _sheet_samples(layout, root, splits, per_split, **kw)
    out = Path(out)
    if not samples:
        return ContactSheet(out, (0, 0), [], [])
    thumbs = [_pair_thumbs(sample, palette, ignore_index, cell, alpha) for _, sample in samples]
    cells, legend_top = _place_cells(samples, [image.shape[:2] for image, _ in thumbs], cell)
    present = set().union(*(_present(s["label"], len(palette), ignore_index) for _, s in samples))
    legend = legend_entries(present, palette, classes)
    sheet = _draw_sheet(cells, thumbs, legend_strip(legend, _sheet_width(cell) - 2 * SHEET_PAD),
                        legend_top, _sheet_width(cell))
    atomic_write_bytes(out, png_with_text(sheet, {
        "Title": f"contact sheet of {layout} at {root}",
        "Description": "\n".join([c.caption for c in cells]
                                 + [f"class {i}: {name} {colour}" for i, name, colour in legend]),
    }))
    return ContactSheet(out, (sheet.shape[1], sheet.shape[0]), cells, legend)


def _sheet_width(cell: int) -> int:
    """Pixels across a contact sheet of ``SHEET_COLUMNS`` pairs of ``cell``-pixel images."""
    return SHEET_PAD + SHEET_COLUMNS * (2 * cell + SHEET_GAP + SHEET_PAD)


def _place_cells(samples: Sequence[tuple[str, dict[str, Any]]],
                 sizes: Sequence[tuple[int, int]], cell: int) -> tuple[list[SheetCell], int]:
    """Where each pair goes: rows of ``SHEET_COLUMNS`` slots, each row as tall as its caption
    and its tallest thumbnail. ``sizes`` are the thumbnails' ``(height, width)``.

    Returns:
        The cells, and the sheet row (pixels from the top) where the legend starts.
    """
    slot = 2 * cell + SHEET_GAP
    cells, y = [], SHEET_PAD
    for first in range(0, len(samples), SHEET_COLUMNS):
        row = range(first, min(first + SHEET_COLUMNS, len(samples)))
        for column, k in enumerate(row):
            split, sample = samples[k]
            (h, w), x = sizes[k], SHEET_PAD + column * (slot + SHEET_PAD)
            size = (int(sample["image"].shape[1]), int(sample["image"].shape[0]))
            file = Path(str(sample["path"])).name
            caption = f"{split}: {file}  {size[0]}x{size[1]} px"
            top = y + CAPTION_ROW
            cells.append(SheetCell(split, file, size, caption, (x, top, w, h),
                                   (x + w + SHEET_GAP, top, w, h)))
        y += CAPTION_ROW + max(sizes[k][0] for k in row) + SHEET_PAD
    return cells, y


def _draw_sheet(cells: Sequence[SheetCell], thumbs: Sequence[tuple[np.ndarray, np.ndarray]],
                legend: np.ndarray, legend_top: int, width: int) -> np.ndarray:
    """Paint the captions, thumbnails (image, overlay) and legend onto paper:
    ``np.uint8 (H, width, 3)`` RGB."""
    from trainer.visuals import PAPER, text_strip

    height = legend_top + legend.shape[0] + SHEET_PAD
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[:] = PAPER
    slot = (width - SHEET_PAD) // SHEET_COLUMNS - SHEET_PAD  # a pair's width: 2 cells and a gap
    for cell, (image, overlay) in zip(cells, thumbs):
        x, top, w, h = cell.image_box
        sheet[top - CAPTION_ROW: top, x: x + slot] = text_strip(cell.caption, slot, CAPTION_ROW)
        sheet[top: top + h, x: x + w] = image
        ox = cell.overlay_box[0]
        sheet[top: top + h, ox: ox + w] = overlay
    sheet[legend_top: legend_top + legend.shape[0], SHEET_PAD: width - SHEET_PAD] = legend
    return sheet

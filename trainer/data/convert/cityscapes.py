"""Cityscapes: ``*_gtFine_labelIds.png`` (or ``*_gtFine_polygons.json``) -> ``*_labelTrainIds.png``.

Reference: cityscapesScripts ``cityscapesscripts/helpers/labels.py`` (the id -> trainId table
below) and ``preparation/json2labelImg.py`` / ``createTrainIdLabelImgs.py`` (polygons drawn in
file order onto an "unlabeled" background, ``...group`` names mapped to their base label,
``deleted`` objects skipped). Output: the layout of :class:`trainer.data.CityscapesDataset`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainer.data.convert.common import (
    ConversionError,
    Task,
    apply_lut,
    copy_file,
    read_label_file,
    remove_stale_parts,
    require_dir,
    run_tasks,
    write_png,
)

#: (name, labelId, trainId) of every Cityscapes label; trainId 255 = ignored in training.
LABELS: tuple[tuple[str, int, int], ...] = (
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12),
    ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
    ("license plate", -1, 255),
)

#: labelId -> trainId lookup table (``np.uint8``, 256 entries; undefined ids map to 255).
ID_TO_TRAIN_ID = np.full(256, 255, np.uint8)
VALID_IDS = np.zeros(256, bool)
for _name, _id, _train in LABELS:
    if _id >= 0:
        ID_TO_TRAIN_ID[_id] = _train
        VALID_IDS[_id] = True
NAME_TO_TRAIN_ID = {name: train for name, _id, train in LABELS}

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"


def label_ids_to_train_ids(label_ids: np.ndarray, name: str = "label") -> np.ndarray:
    """Map a Cityscapes ``labelIds`` map to ``trainIds``.

    Args:
        label_ids: integer array ``(H, W)`` with ids 0..33.
        name: file name used in error messages.

    Returns:
        ``np.uint8 (H, W)``: train ids 0..18, 255 for ignored labels.

    Raises:
        ConversionError: a value is not a Cityscapes label id.
    """
    return apply_lut(label_ids, ID_TO_TRAIN_ID, name, VALID_IDS)


def polygons_to_train_ids(path: Path) -> np.ndarray:
    """Rasterise a ``*_gtFine_polygons.json`` file into a ``trainIds`` map ``np.uint8 (H, W)``.

    Raises:
        ConversionError: unreadable JSON or an unknown label name.
    """
    try:
        annotation = json.loads(Path(path).read_text())
        height, width = int(annotation["imgHeight"]), int(annotation["imgWidth"])
        objects = annotation["objects"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{path}: not a Cityscapes polygons file ({exc})") from None
    canvas = Image.new("L", (width, height), NAME_TO_TRAIN_ID["unlabeled"])
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        if obj.get("deleted"):
            continue
        name = obj["label"]
        if name not in NAME_TO_TRAIN_ID and name.endswith("group"):
            name = name[: -len("group")]
        if name not in NAME_TO_TRAIN_ID:
            raise ConversionError(f"{path}: unknown label name {obj['label']!r}")
        polygon = [tuple(map(float, pt)) for pt in obj["polygon"]]
        if len(polygon) >= 2:
            draw.polygon(polygon, fill=NAME_TO_TRAIN_ID[name])
    return np.asarray(canvas)


def _convert_one(source: Path, output: Path) -> None:
    if source.name.endswith(POLYGONS_SUFFIX):
        train_ids = polygons_to_train_ids(source)
    else:
        train_ids = label_ids_to_train_ids(read_label_file(source), str(source))
    write_png(output, train_ids)


def prepare_cityscapes(
    src: Path, dst: Path, *, workers: int = 1, progress: bool = True
) -> dict[str, int]:
    """Write ``*_gtFine_labelTrainIds.png`` for every annotated frame of every split.

    Args:
        src: Cityscapes root with ``gtFine/<split>/<city>/`` (``labelIds`` PNGs, or only the
            polygons JSON) and ``leftImg8bit/<split>/<city>/``.
        dst: output root; may equal ``src`` (train ids are written beside the labelIds). When
            it differs, images and the released label files are linked or copied across.
        workers: parallel processes.
        progress: progress bar on stderr.

    Returns:
        Frames per split, e.g. ``{"train": 2975, "val": 500}``.

    Raises:
        ConversionError: no ``gtFine`` split folder, a split without annotations, unreadable
            or out-of-range labels (all failing files listed).
    """
    gt_root = require_dir(src / "gtFine", "gtFine/ folder")
    splits = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    if not splits:
        raise ConversionError(f"{gt_root}: no split folders (train/val/test)")
    same = src.resolve() == dst.resolve()
    remove_stale_parts(dst)
    tasks: list[Task] = []
    counts: dict[str, int] = {}
    for split in splits:
        frames: dict[str, Path] = {}
        for path in sorted((gt_root / split).glob("*/*" + POLYGONS_SUFFIX)):
            frames[str(path)[: -len(POLYGONS_SUFFIX)]] = path
        for path in sorted((gt_root / split).glob("*/*" + LABEL_IDS_SUFFIX)):
            frames[str(path)[: -len(LABEL_IDS_SUFFIX)]] = path  # labelIds win over polygons
        if not frames:
            raise ConversionError(
                f"{gt_root / split}: no *{LABEL_IDS_SUFFIX} or *{POLYGONS_SUFFIX} files"
            )
        counts[split] = len(frames)
        for stem, source in sorted(frames.items()):
            rel = Path(stem + TRAIN_IDS_SUFFIX).relative_to(src)
            tasks.append(Task(_convert_one, (source, dst / rel), (dst / rel,), str(source)))
            if not same:
                for released in Path(stem).parent.glob(Path(stem).name + "_gtFine_*"):
                    if released.name.endswith(TRAIN_IDS_SUFFIX):
                        continue
                    out = dst / released.relative_to(src)
                    tasks.append(Task(copy_file, (released, out), (out,), str(released)))
        if not same:
            image_dir = src / "leftImg8bit" / split
            for image in sorted(image_dir.glob("*/*" + IMAGE_SUFFIX)):
                out = dst / image.relative_to(src)
                tasks.append(Task(copy_file, (image, out), (out,), str(image)))
    run_tasks(tasks, workers, "cityscapes", progress)
    return counts

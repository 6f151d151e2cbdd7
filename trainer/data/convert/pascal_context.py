"""Pascal Context: the per-image ``.mat`` release -> 60-class label PNGs.

Reference: mmsegmentation ``tools/dataset_converters/pascal_context.py`` (the 59 class ids of
the 459-class label set, sorted, become train ids 1..59; everything else is 0 = background).
mmseg reads the masks through the Detail API JSON; we accept the per-image release instead
(``trainval.tar.gz`` from https://cs.stanford.edu/~roozbeh/pascal-context/, extracted:
``trainval/<id>.mat``, each with a ``LabelMap`` of 459-class ids 1..459, 0 unlabeled).

Accepted input::

    SRC[/VOCdevkit]/VOC2010/JPEGImages/<id>.jpg
    SRC[/VOCdevkit]/VOC2010/ImageSets/{SegmentationContext,Main}/{train,val}.txt
        (SegmentationContext lists if present, else the VOC2010 Main lists: 4998 train,
        5105 val, which are the Pascal Context splits)
    mats (``context_mats=``): the folder of ``<id>.mat`` files (``trainval/``)

Output: ``DST/VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext,
ImageSets/SegmentationContext/{train,val}.txt}``; labels 0..59 (0 background), read as 60
classes, or as 59 with ``reduce_zero_label``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.convert.common import (
    ConversionError,
    Task,
    atomic_write_text,
    copy_file,
    load_mat,
    remove_stale_parts,
    require_dir,
    run_tasks,
    write_png,
)
from trainer.data.listing import find_release_folder, read_split_list

#: The 459-class ids kept (background 0 first), sorted: position = train id.
CONTEXT_59_IDS = np.sort(np.array([
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33,
    162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68,
    326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368,
    113, 115,
]))
NUM_FULL_CLASSES = 459
#: 459-class id -> train id (0 for every class outside the 59).
FULL_TO_TRAIN_ID = np.zeros(NUM_FULL_CLASSES + 1, np.uint8)
FULL_TO_TRAIN_ID[CONTEXT_59_IDS] = np.arange(len(CONTEXT_59_IDS), dtype=np.uint8)


def context_label_to_ids(label_map: np.ndarray, name: str = "label") -> np.ndarray:
    """Map a 459-class Pascal Context ``LabelMap`` to train ids.

    Args:
        label_map: integer array ``(H, W)``, values 0..459.
        name: file name for error messages.

    Returns:
        ``np.uint8 (H, W)``: 0 background, 1..59 classes in sorted-id (alphabetical) order.

    Raises:
        ConversionError: values outside 0..459.
    """
    lo, hi = int(label_map.min()), int(label_map.max())
    if lo < 0 or hi > NUM_FULL_CLASSES:
        raise ConversionError(f"{name}: label ids outside 0..{NUM_FULL_CLASSES}: {lo}..{hi}")
    return FULL_TO_TRAIN_ID[label_map.astype(np.int64)]


def _convert(mat_path: Path, output: Path) -> None:
    mat = load_mat(mat_path)
    if "LabelMap" not in mat:
        raise ConversionError(f"{mat_path}: no LabelMap variable")
    write_png(output, context_label_to_ids(np.asarray(mat["LabelMap"]), str(mat_path)))


def prepare_pascal_context(
    src: Path,
    dst: Path,
    *,
    context_mats: Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Write the layout of :class:`trainer.data.PascalContextDataset` under ``dst``.

    Args:
        src: VOC2010 (see the module docstring).
        dst: output root (``dst/VOCdevkit/VOC2010``).
        context_mats: folder of ``<id>.mat``; default ``src/trainval``.

    Returns:
        Images per split.

    Raises:
        ConversionError: missing folders, lists or ``.mat`` files, unreadable or out-of-range
            labels (every failing file listed).
    """
    base = find_release_folder(src, ("VOCdevkit", "VOC2010"), "JPEGImages")
    if base is None:
        raise ConversionError(f"{src}: no VOCdevkit/VOC2010/JPEGImages folder")
    mats = require_dir(context_mats or src / "trainval", "Pascal Context trainval/ .mat folder")
    lists: dict[str, list[str]] = {}
    for split in ("train", "val"):
        for sets in ("SegmentationContext", "Main"):
            list_file = base / "ImageSets" / sets / f"{split}.txt"
            if list_file.is_file():
                break
        else:
            raise ConversionError(
                f"{base / 'ImageSets'}: no SegmentationContext/{split}.txt or Main/{split}.txt"
            )
        lists[split] = read_split_list(list_file)
        if not lists[split]:
            raise ConversionError(f"{list_file}: split list is empty")
    out = dst / "VOCdevkit" / "VOC2010"
    remove_stale_parts(dst)
    tasks = []
    for split, ids in lists.items():
        for name in ids:
            image, mat = base / "JPEGImages" / f"{name}.jpg", mats / f"{name}.mat"
            for path in (image, mat):
                if not path.is_file():
                    raise ConversionError(f"{path}: needed for {split} image {name} but not found")
            target = out / "SegmentationClassContext" / f"{name}.png"
            tasks.append(Task(_convert, (mat, target), (target,), str(mat)))
            tasks.append(Task(copy_file, (image, out / "JPEGImages" / image.name),
                              (out / "JPEGImages" / image.name,), str(image)))
    run_tasks(tasks, workers, "pascal_context", progress)
    for split, ids in lists.items():
        atomic_write_text(out / "ImageSets" / "SegmentationContext" / f"{split}.txt",
                          "".join(f"{i}\n" for i in ids))
    return {split: len(ids) for split, ids in lists.items()}

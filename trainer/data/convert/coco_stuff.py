"""COCO-Stuff 10k (``.mat``) and 164k (PNG) annotations -> 171 train ids.

Reference: mmsegmentation ``tools/dataset_converters/coco_stuff10k.py`` and
``coco_stuff164k.py``. COCO-Stuff uses 182 category ids (1..91 things, 92..182 stuff), of which
11 thing ids are unused (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91); the 171 used ids, in
order, become train ids 0..170 and everything unlabeled becomes 255. mmseg's 10k converter
writes 1..171 with 0 unlabeled and trains with ``reduce_zero_label``; writing 0..170/255
directly gives the same training targets and one id space for both releases.

Accepted label encodings:

* 10k ``annotations/<name>.mat``: variable ``S``, 1-based ids, 0 = unlabeled.
* 164k ``stuffthingmaps`` PNGs (``stuffthingmaps_trainval2017.zip``, what mmseg converts):
  0-based ids (category id - 1), 255 = unlabeled.
* 164k ``stuff`` pixel maps (``stuff_trainval2017_pixelmaps.zip``, cocostuffapi): 1-based
  stuff ids 92..182, 0 = unlabeled, 183 = "other" (any thing): both become 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.convert.common import (
    ConversionError,
    Task,
    apply_lut,
    atomic_write_text,
    copy_file,
    load_mat,
    read_label_file,
    remove_stale_parts,
    require_dir,
    require_files,
    run_tasks,
    write_png,
)
from trainer.data.listing import read_split_list

UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
#: The 171 COCO-Stuff category ids (1-based) in train-id order.
USED_IDS = tuple(i for i in range(1, 183) if i not in UNUSED_IDS)
LABEL_SUFFIX = "_labelTrainIds.png"
LABEL_FORMATS = ("stuffthingmaps", "stuff-pixelmaps")


def _lut(offset: int, unlabeled: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    lut = np.full(256, 255, np.uint8)
    valid = np.zeros(256, bool)
    for train_id, cat in enumerate(USED_IDS):
        lut[cat + offset] = train_id
        valid[cat + offset] = True
    for u in unlabeled:
        valid[u] = True
    return lut, valid


#: 1-based ids with 0 unlabeled (10k ``.mat``), and 183 "other" for the stuff pixel maps.
ONE_BASED_LUT, ONE_BASED_VALID = _lut(0, (0,))
PIXELMAP_LUT, PIXELMAP_VALID = _lut(0, (0, 183))
PIXELMAP_VALID[1:92] = False  # stuff-only maps hold no thing ids
#: 0-based ids with 255 unlabeled (164k stuffthingmaps).
ZERO_BASED_LUT, ZERO_BASED_VALID = _lut(-1, (255,))


def coco_stuff_to_train_ids(label: np.ndarray, encoding: str, name: str = "label") -> np.ndarray:
    """Map a COCO-Stuff label map to train ids 0..170 (255 unlabeled).

    Args:
        label: integer array ``(H, W)``.
        encoding: ``"one-based"`` (10k ``.mat``), ``"stuffthingmaps"`` (0-based, 255
            unlabeled) or ``"stuff-pixelmaps"`` (92..182 stuff, 0 and 183 unlabeled).
        name: file name for error messages.

    Returns:
        ``np.uint8 (H, W)``.

    Raises:
        ConversionError: ids that the encoding does not define (e.g. an unused thing id).
        ValueError: unknown ``encoding``.
    """
    tables = {
        "one-based": (ONE_BASED_LUT, ONE_BASED_VALID),
        "stuffthingmaps": (ZERO_BASED_LUT, ZERO_BASED_VALID),
        "stuff-pixelmaps": (PIXELMAP_LUT, PIXELMAP_VALID),
    }
    if encoding not in tables:
        raise ValueError(f"unknown COCO-Stuff label encoding {encoding!r}")
    lut, valid = tables[encoding]
    return apply_lut(label, lut, name, valid)


def _convert_mat(source: Path, output: Path) -> None:
    mat = load_mat(source)
    if "S" not in mat:
        raise ConversionError(f"{source}: no S variable (COCO-Stuff 10k annotation)")
    write_png(output, coco_stuff_to_train_ids(np.asarray(mat["S"]), "one-based", str(source)))


def _convert_png(source: Path, output: Path, encoding: str) -> None:
    write_png(output, coco_stuff_to_train_ids(read_label_file(source), encoding, str(source)))


def prepare_coco_stuff10k(
    src: Path, dst: Path, *, workers: int = 1, progress: bool = True
) -> dict[str, int]:
    """Convert the COCO-Stuff 10k release (``cocostuff-10k-v1.1.zip``, extracted).

    Input ``src/{images/<name>.jpg, annotations/<name>.mat, imageLists/{train,test}.txt}``;
    output ``dst/{images/<name>.jpg, annotations/<name>_labelTrainIds.png,
    imageLists/{train,test}.txt}`` (the layout of :class:`trainer.data.COCOStuff10kDataset`).

    Returns:
        Images per split.

    Raises:
        ConversionError: missing folders or lists, a listed file missing, unreadable or
            out-of-range labels.
    """
    require_dir(src / "images", "images/ folder")
    require_dir(src / "annotations", "annotations/ folder")
    remove_stale_parts(dst)
    tasks, counts = [], {}
    for split in ("train", "test"):
        list_file = src / "imageLists" / f"{split}.txt"
        if not list_file.is_file():
            raise ConversionError(f"{list_file}: split list not found")
        names = read_split_list(list_file)
        if not names:
            raise ConversionError(f"{list_file}: split list is empty")
        counts[split] = len(names)
        for name in names:
            image, mat = src / "images" / f"{name}.jpg", src / "annotations" / f"{name}.mat"
            for path in (image, mat):
                if not path.is_file():
                    raise ConversionError(f"{path}: listed in {list_file.name} but not found")
            target = dst / "annotations" / f"{name}{LABEL_SUFFIX}"
            tasks.append(Task(_convert_mat, (mat, target), (target,), str(mat)))
            if src.resolve() != dst.resolve():
                out = dst / "images" / image.name
                tasks.append(Task(copy_file, (image, out), (out,), str(image)))
    run_tasks(tasks, workers, "coco_stuff10k", progress)
    for split in ("train", "test"):
        text = (src / "imageLists" / f"{split}.txt").read_text()
        atomic_write_text(dst / "imageLists" / f"{split}.txt", text)
    return counts


def prepare_coco_stuff164k(
    src: Path,
    dst: Path,
    *,
    label_format: str = "stuffthingmaps",
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Convert COCO-Stuff 164k label PNGs to ``*_labelTrainIds.png``.

    Input ``src/images/{train2017,val2017}/*.jpg`` (optional) and
    ``src/annotations/{train2017,val2017}/<name>.png`` in ``label_format`` (see the module
    docstring); existing ``*_labelTrainIds.png`` there are not inputs. Output
    ``dst/annotations/<split>/<name>_labelTrainIds.png`` and, when ``dst`` differs, the images.

    Returns:
        Label maps per split.

    Raises:
        ConversionError: no annotation split folder, an empty one, unreadable or
            out-of-range labels.
    """
    if label_format not in LABEL_FORMATS:
        raise ConversionError(f"unknown label format {label_format!r}; use one of {LABEL_FORMATS}")
    ann_root = require_dir(src / "annotations", "annotations/ folder")
    splits = [s for s in ("train2017", "val2017") if (ann_root / s).is_dir()]
    if not splits:
        raise ConversionError(f"{ann_root}: no train2017/ or val2017/ folder")
    remove_stale_parts(dst)
    tasks, counts = [], {}
    for split in splits:
        labels = sorted(
            p for p in (ann_root / split).glob("*.png") if not p.name.endswith(LABEL_SUFFIX)
        )
        require_files(labels, ann_root / split, "*.png label")
        counts[split] = len(labels)
        for label in labels:
            target = dst / "annotations" / split / f"{label.stem}{LABEL_SUFFIX}"
            tasks.append(Task(_convert_png, (label, target, label_format), (target,), str(label)))
        if src.resolve() != dst.resolve():
            for image in sorted((src / "images" / split).glob("*.jpg")):
                out = dst / "images" / split / image.name
                tasks.append(Task(copy_file, (image, out), (out,), str(image)))
    run_tasks(tasks, workers, "coco_stuff164k", progress)
    return counts

"""Pascal VOC 2012 + SBD: index label PNGs and the 10582-image ``trainaug`` list.

Reference: mmsegmentation ``tools/dataset_converters/voc_aug.py`` (SBD ``dataset/cls/*.mat``
-> ``SegmentationClassAug/*.png`` from ``GTcls.Segmentation``; aug list = VOC train + SBD
train + SBD val, minus VOC val). VOC labels: 0 background, 1..20 classes, 255 void.

Accepted input (``SRC``)::

    SRC[/VOCdevkit]/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}
    SBD (optional, ``sbd=``): the ``benchmark_RELEASE`` folder or its ``dataset`` folder, with
        dataset/cls/<id>.mat and dataset/{train,val}.txt

``SegmentationClass`` files may be the released palette PNGs (the indices are kept) or RGB
colour PNGs in the VOC colours, with (224, 224, 192) as void (mapped to 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from trainer.data.convert.common import (
    ConversionError,
    Task,
    atomic_write_text,
    check_ids,
    colours_to_ids,
    copy_file,
    load_mat,
    remove_stale_parts,
    require_dir,
    run_tasks,
    write_png,
)
from trainer.data.listing import find_release_folder, read_split_list

#: VOC colour of class k at index k (the bit-interleaved VOC colour map).
VOC_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128),
    (0, 128, 128), (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0),
    (64, 0, 128), (192, 0, 128), (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0),
    (0, 192, 0), (128, 192, 0), (0, 64, 128),
)
VOID_COLOUR = (224, 224, 192)
COLOUR_TO_ID = {c: i for i, c in enumerate(VOC_COLOURS)} | {VOID_COLOUR: 255}
VALID_IDS = tuple(range(21)) + (255,)
NUM_TRAINAUG = 10582


def voc_label_to_ids(path: Path) -> np.ndarray:
    """Read a VOC label PNG (palette indices, greyscale ids or RGB colours) as ids.

    Returns:
        ``np.uint8 (H, W)``: 0..20, 255 void.

    Raises:
        ConversionError: unreadable file, a colour outside the VOC palette, or an id outside
            0..20/255.
    """
    try:
        with Image.open(path) as pil:
            pil.load()
            mode = pil.mode
            array = np.array(pil.convert("RGB") if mode in ("RGB", "RGBA") else pil)
    except Exception as exc:
        raise ConversionError(f"{path}: cannot decode label image ({exc})") from None
    if array.ndim == 3:
        ids = colours_to_ids(array, COLOUR_TO_ID, str(path))
    else:
        check_ids(array, VALID_IDS, str(path))
        ids = array.astype(np.uint8)
    return ids


def sbd_mat_to_ids(path: Path) -> np.ndarray:
    """Read SBD ``cls/<id>.mat`` (``GTcls.Segmentation``) as ids ``np.uint8 (H, W)``.

    Raises:
        ConversionError: unreadable file, no ``GTcls`` struct, or ids outside 0..20/255.
    """
    mat = load_mat(path)
    try:
        seg = np.asarray(mat["GTcls"][0, 0]["Segmentation"])
    except (KeyError, IndexError, ValueError) as exc:
        raise ConversionError(f"{path}: no GTcls.Segmentation field ({exc})") from None
    check_ids(seg, VALID_IDS, str(path))
    return seg.astype(np.uint8)


def _convert_voc(source: Path, output: Path) -> None:
    write_png(output, voc_label_to_ids(source), VOC_COLOURS)


def _convert_sbd(source: Path, output: Path) -> None:
    write_png(output, sbd_mat_to_ids(source), VOC_COLOURS)


def _sbd_dataset_folder(sbd: Path) -> Path:
    for candidate in (sbd / "dataset", sbd / "benchmark_RELEASE" / "dataset", sbd):
        if (candidate / "cls").is_dir():
            return candidate
    raise ConversionError(f"{sbd}: no SBD dataset/cls/ folder (benchmark_RELEASE/dataset/cls)")


def prepare_pascal_voc(
    src: Path, dst: Path, *, sbd: Path | None = None, workers: int = 1, progress: bool = True
) -> dict[str, int]:
    """Write the VOC 2012 (+ SBD) layout of :class:`trainer.data.PascalVOCDataset` under ``dst``.

    Outputs ``dst/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug,
    ImageSets/Segmentation/{train,val[,trainaug]}.txt}``; labels are palette PNGs whose indices
    are the ids. ``trainaug.txt`` is written (last, atomically) only with ``sbd``.

    Returns:
        Images per split list written.

    Raises:
        ConversionError: missing folders or split lists, empty splits, unreadable or
            out-of-palette labels (every failing file listed).
    """
    base = find_release_folder(src, ("VOCdevkit", "VOC2012"), "JPEGImages")
    if base is None:
        raise ConversionError(f"{src}: no VOCdevkit/VOC2012/JPEGImages folder")
    label_dir = require_dir(base / "SegmentationClass", "SegmentationClass/ folder")
    lists = {}
    for split in ("train", "val"):
        list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise ConversionError(f"{list_file}: split list not found")
        lists[split] = read_split_list(list_file)
        if not lists[split]:
            raise ConversionError(f"{list_file}: split list is empty")
    out = dst / "VOCdevkit" / "VOC2012"
    remove_stale_parts(dst)
    tasks: list[Task] = []
    voc_ids = lists["train"] + lists["val"]
    for name in voc_ids:
        image = base / "JPEGImages" / f"{name}.jpg"
        label = label_dir / f"{name}.png"
        for path in (image, label):
            if not path.is_file():
                raise ConversionError(f"{path}: listed in the split lists but not found")
        tasks.append(Task(copy_file, (image, out / "JPEGImages" / image.name),
                          (out / "JPEGImages" / image.name,), str(image)))
        target = out / "SegmentationClass" / f"{name}.png"
        tasks.append(Task(_convert_voc, (label, target), (target,), str(label)))
    trainaug: list[str] = []
    if sbd is not None:
        sbd_dir = _sbd_dataset_folder(sbd)
        sbd_ids: list[str] = []
        for split in ("train", "val"):
            list_file = sbd_dir / f"{split}.txt"
            if not list_file.is_file():
                raise ConversionError(f"{list_file}: SBD split list not found")
            sbd_ids += read_split_list(list_file)
        val = set(lists["val"])
        trainaug = sorted(set(lists["train"]) | (set(sbd_ids) - val))
        voc_set = set(voc_ids)
        for name in sorted(set(sbd_ids) - val):
            mat = sbd_dir / "cls" / f"{name}.mat"
            if not mat.is_file():
                raise ConversionError(f"{mat}: listed in the SBD split lists but not found")
            target = out / "SegmentationClassAug" / f"{name}.png"
            tasks.append(Task(_convert_sbd, (mat, target), (target,), str(mat)))
            if name not in voc_set:
                image = base / "JPEGImages" / f"{name}.jpg"
                if not image.is_file():
                    raise ConversionError(f"{image}: SBD image not in VOC2012/JPEGImages")
                tasks.append(Task(copy_file, (image, out / "JPEGImages" / image.name),
                                  (out / "JPEGImages" / image.name,), str(image)))
    run_tasks(tasks, workers, "pascal_voc", progress)
    sets = out / "ImageSets" / "Segmentation"
    counts = {}
    for split, ids in (("train", lists["train"]), ("val", lists["val"]), ("trainaug", trainaug)):
        if ids:
            atomic_write_text(sets / f"{split}.txt", "".join(f"{i}\n" for i in ids))
            counts[split] = len(ids)
    return counts

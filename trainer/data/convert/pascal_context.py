"""Pascal Context: the per-image ``.mat`` release or the Detail API JSON -> 60-class label PNGs.

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
    mats (``context_mats=``): the folder of ``<id>.mat`` files (``trainval/``), or
    json (``context_json=``): the Detail API file ``trainval_merged.json``; used without the
        option when SRC holds ``trainval_merged.json`` and no ``trainval/`` folder.

The JSON path (what mmseg's converter reads through ``detail.Detail.getMask``): ``images``
(``image_id``, ``file_name``, ``height``, ``width``) and ``annos_segmentation`` (also accepted
under ``annotations``; ``image_id``, ``category_id`` 1..459, ``segmentation``). Each image's
459-class mask starts at 0 and its annotations are painted in file order, a later annotation
overwriting an earlier one where they overlap, as ``getMask`` does. A ``segmentation`` is
COCO RLE (``{"size": [h, w], "counts": str | list}``, column-major runs; decoded and checked
here, since pycocotools' C decoder trusts the counts and a malformed file could overrun its
buffer; tests compare the result with pycocotools) or a list of polygons
``[x1, y1, x2, y2, ...]`` rasterised by pycocotools (``frPyObjects`` + ``merge`` + ``decode``),
the rasteriser the Detail API itself uses, so polygon edges match the reference pixel for
pixel. Differences from mmseg: images are chosen by the
ImageSets split lists below, not by the JSON's ``phase``; ids outside the 59 classes become
background 0 instead of failing mmseg's assertion.

Output: ``DST/VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext,
ImageSets/SegmentationContext/{train,val}.txt}``; labels 0..59 (0 background), read as 60
classes, or as 59 with ``reduce_zero_label``.
"""

from __future__ import annotations

import json
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


def decode_rle(segmentation: dict, name: str = "segmentation") -> np.ndarray:
    """Decode a COCO run-length encoding (compressed string or list of counts).

    Args:
        segmentation: ``{"size": [h, w], "counts": str | list[int]}``; runs alternate
            0s and 1s (starting with 0s) over the pixels in column-major order.
        name: for error messages.

    Returns:
        ``np.bool_ (h, w)``.

    Raises:
        ConversionError: malformed counts, or runs not covering ``h * w`` pixels exactly.
    """
    try:
        h, w = (int(v) for v in segmentation["size"])
        counts = segmentation["counts"]
    except (KeyError, TypeError, ValueError):
        raise ConversionError(f"{name}: RLE needs 'size' [h, w] and 'counts'") from None
    if isinstance(counts, (bytes, str)):
        text = counts.encode() if isinstance(counts, str) else counts
        runs: list[int] = []
        p = 0
        while p < len(text):
            value, shift, more = 0, 0, True
            while more:
                if p >= len(text):
                    raise ConversionError(f"{name}: truncated RLE string")
                c = text[p] - 48
                value |= (c & 0x1F) << shift
                more = bool(c & 0x20)
                p += 1
                shift += 5
                if not more and c & 0x10:
                    value |= -1 << shift
            if len(runs) > 2:
                value += runs[-2]
            runs.append(value)
    else:
        runs = [int(v) for v in counts]
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise ConversionError(f"{name}: RLE runs cover {sum(runs)} pixels, size is {h}x{w}")
    values = np.zeros(len(runs), np.bool_)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T


def rasterise_polygons(polygons: list, height: int, width: int,
                       name: str = "segmentation") -> np.ndarray:
    """Rasterise ``[[x1, y1, x2, y2, ...], ...]`` (pixel coordinates) into a ``bool (h, w)`` mask.

    Uses pycocotools' polygon rasteriser (``mask.frPyObjects`` then ``merge`` and ``decode``),
    as the Detail API and the COCO API do: a pixel is inside when its centre is, so the
    rectangle with corners (2, 3) and (10, 8) covers columns 2..9 and rows 3..7. Polygons with
    fewer than three vertices are skipped.

    Raises:
        ConversionError: a polygon with non-numeric or an odd number of coordinates.
    """
    from pycocotools import mask as coco_mask  # lazy: only this converter needs it

    try:
        polys = [[float(v) for v in poly] for poly in polygons]
    except (TypeError, ValueError):
        raise ConversionError(f"{name}: polygon coordinates must be numbers") from None
    if any(len(poly) % 2 for poly in polys):
        raise ConversionError(f"{name}: a polygon has an odd number of coordinates")
    polys = [poly for poly in polys if len(poly) >= 6]
    if not polys:
        return np.zeros((height, width), bool)
    rle = coco_mask.merge(coco_mask.frPyObjects(polys, height, width))
    return coco_mask.decode(rle).astype(bool)


def context_json_mask(height: int, width: int, annotations: list, name: str = "image") -> np.ndarray:
    """Paint ``(category_id, segmentation)`` pairs in order into a 459-class mask.

    Later annotations overwrite earlier ones where they overlap (as the Detail API's
    ``getMask``); unannotated pixels stay 0.
    """
    mask = np.zeros((height, width), np.uint16)
    for category, seg in annotations:
        if not 0 <= category <= NUM_FULL_CLASSES:
            raise ConversionError(f"{name}: category_id {category} outside 0..{NUM_FULL_CLASSES}")
        if isinstance(seg, dict):
            region = decode_rle(seg, name)
            if region.shape != (height, width):
                raise ConversionError(
                    f"{name}: RLE size {region.shape} differs from image size {(height, width)}"
                )
        elif isinstance(seg, list):
            region = rasterise_polygons(seg, height, width, name)
        else:
            raise ConversionError(f"{name}: unsupported segmentation {type(seg).__name__}")
        mask[region] = category
    return mask


def _convert_json(height: int, width: int, annotations: list, name: str, output: Path) -> None:
    full = context_json_mask(height, width, annotations, name)
    write_png(output, context_label_to_ids(full, name))


def load_context_json(path: Path) -> dict[str, tuple[int, int, list]]:
    """Read ``trainval_merged.json``: image stem -> ``(height, width, [(category, seg), ...])``.

    Annotations keep their order in the file.
    """
    try:
        data = json.loads(path.read_text())
        images = data["images"]
        anns = data["annos_segmentation"] if "annos_segmentation" in data else data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{path}: not a Detail API annotation file ({exc})") from None
    by_id: dict = {}
    by_stem: dict[str, tuple[int, int, list]] = {}
    try:
        for img in images:
            entry = (int(img["height"]), int(img["width"]), [])
            by_id[img["image_id"]] = entry
            by_stem[Path(img["file_name"]).stem] = entry
        for ann in anns:
            by_id[ann["image_id"]][2].append((int(ann["category_id"]), ann["segmentation"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{path}: malformed image or annotation entry ({exc!r})") from None
    return by_stem


def prepare_pascal_context(
    src: Path,
    dst: Path,
    *,
    context_mats: Path | None = None,
    context_json: Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Write the layout of :class:`trainer.data.PascalContextDataset` under ``dst``.

    Args:
        src: VOC2010 (see the module docstring).
        dst: output root (``dst/VOCdevkit/VOC2010``).
        context_mats: folder of ``<id>.mat``; default ``src/trainval``.
        context_json: Detail API ``trainval_merged.json`` (instead of ``.mat`` files); default
            ``src/trainval_merged.json`` when that exists and ``src/trainval`` does not.

    Returns:
        Images per split.

    Raises:
        ConversionError: missing folders, lists, ``.mat`` files or JSON entries, unreadable or
            out-of-range labels (every failing file listed).
    """
    base = find_release_folder(src, ("VOCdevkit", "VOC2010"), "JPEGImages")
    if base is None:
        raise ConversionError(f"{src}: no VOCdevkit/VOC2010/JPEGImages folder")
    if context_json is not None and context_mats is not None:
        raise ConversionError("give either the .mat folder or the JSON file, not both")
    if context_json is None and context_mats is None and not (src / "trainval").is_dir() \
            and (src / "trainval_merged.json").is_file():
        context_json = src / "trainval_merged.json"
    records = mats = None
    if context_json is not None:
        if not context_json.is_file():
            raise ConversionError(f"{context_json}: Pascal Context JSON not found")
        records = load_context_json(context_json)
    else:
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
            image = base / "JPEGImages" / f"{name}.jpg"
            target = out / "SegmentationClassContext" / f"{name}.png"
            if records is not None:
                if name not in records:
                    raise ConversionError(
                        f"{context_json}: no entry for {split} image {name}"
                    )
                height, width, anns = records[name]
                source = f"{context_json}:{name}"
                tasks.append(Task(_convert_json, (height, width, anns, source, target),
                                  (target,), source))
                to_check = (image,)
            else:
                mat = mats / f"{name}.mat"
                tasks.append(Task(_convert, (mat, target), (target,), str(mat)))
                to_check = (image, mat)
            for path in to_check:
                if not path.is_file():
                    raise ConversionError(f"{path}: needed for {split} image {name} but not found")
            tasks.append(Task(copy_file, (image, out / "JPEGImages" / image.name),
                              (out / "JPEGImages" / image.name,), str(image)))
    run_tasks(tasks, workers, "pascal_context", progress)
    for split, ids in lists.items():
        atomic_write_text(out / "ImageSets" / "SegmentationContext" / f"{split}.txt",
                          "".join(f"{i}\n" for i in ids))
    return {split: len(ids) for split, ids in lists.items()}

"""iSAID: raw aerial images + ``*_instance_color_RGB.png`` semantic colours -> 896x896 patches.

Reference: mmsegmentation ``tools/dataset_converters/isaid.py``: patches of 896x896 pixels with
an overlap of 384 (step 512), the last patch of a row/column flush with the border, images
smaller than a patch padded (image 0, label 255), names
``<P>_<y0>_<y1>_<x0>_<x1>.png`` / ``..._instance_color_RGB.png``, colours -> ids by the iSAID
palette (0 background, 1..15 classes).

Accepted input, per split (``train``, ``val``; ``test`` has no labels and is not converted)::

    SRC/<split>/images/P*.png                         (or zips of them: images/part*.zip)
    SRC/<split>/{images,Semantic_masks/images}/P*_instance_color_RGB.png   (or zips)
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2

from trainer.data.convert.common import (
    ConversionError,
    Task,
    colours_to_ids,
    decode_image_bytes,
    marker_path,
    remove_stale_parts,
    run_tasks,
)
from trainer.data.convert.sources import Source, scan_sources
from trainer.data.convert.tiling import grid_starts, pad_to, write_patches

ISAID_COLOURS = {
    (0, 0, 0): 0, (0, 0, 63): 1, (0, 63, 63): 2, (0, 63, 0): 3, (0, 63, 127): 4,
    (0, 63, 191): 5, (0, 63, 255): 6, (0, 127, 63): 7, (0, 127, 127): 8, (0, 0, 127): 9,
    (0, 0, 191): 10, (0, 0, 255): 11, (0, 191, 127): 12, (0, 127, 191): 13, (0, 127, 255): 14,
    (0, 100, 155): 15,
}
LABEL_SUFFIX = "_instance_color_RGB.png"


def cut_image(
    image_src: Source, label_src: Source, dst: Path, split: str, key: str,
    patch: int, overlap: int,
) -> None:
    """Decode one image pair, map colours, pad, write its patches and marker.

    Raises:
        ConversionError: undecodable files, size mismatch, colours outside the palette.
    """
    image = decode_image_bytes(image_src.read_bytes(), str(image_src), cv2.IMREAD_COLOR)
    colour = decode_image_bytes(label_src.read_bytes(), str(label_src), cv2.IMREAD_COLOR)
    if colour.shape != image.shape:
        raise ConversionError(
            f"{label_src}: label is {colour.shape[1]}x{colour.shape[0]} pixels but image "
            f"{image_src} is {image.shape[1]}x{image.shape[0]}"
        )
    label = colours_to_ids(colour, ISAID_COLOURS, str(label_src))
    image = pad_to(image, patch, patch, 0)
    label = pad_to(label, patch, patch, 255)
    h, w = label.shape
    step = patch - overlap
    boxes = [
        (x, y, x + patch, y + patch)
        for x in grid_starts(w, patch, step) for y in grid_starts(h, patch, step)
    ]

    def stem(box: tuple[int, int, int, int]) -> str:
        x0, y0, x1, y1 = box
        return f"{key}_{y0}_{y1}_{x0}_{x1}"

    write_patches(
        image, label, boxes,
        lambda b: dst / "img_dir" / split / f"{stem(b)}.png",
        lambda b: dst / "ann_dir" / split / f"{stem(b)}{LABEL_SUFFIX}",
        dst, f"{split}-{key}",
    )


def prepare_isaid(
    src: Path, dst: Path, *, patch: int = 896, overlap: int = 384, workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Cut the iSAID train and val images into patches under ``dst/{img_dir,ann_dir}/<split>``.

    Args:
        src: release root (see the module docstring).
        dst: output root.
        patch: patch size in pixels; overlap: pixels shared by neighbouring patches.

    Returns:
        Source images per split.

    Raises:
        ConversionError: a split folder missing or empty, an image without its colour label,
            undecodable files, size mismatch, unknown colours.
    """
    if overlap >= patch:
        raise ConversionError(f"overlap ({overlap}) must be smaller than the patch ({patch})")
    remove_stale_parts(dst)
    tasks, counts = [], {}
    for split in ("train", "val"):
        folder = src / split
        if not folder.is_dir():
            raise ConversionError(f"{folder}: split folder not found")
        images: dict[str, Source] = {}
        labels: dict[str, Source] = {}
        for source in scan_sources(folder, (".png",)):
            m = re.match(r"(P\d+)(_instance_color_RGB|_instance_id_RGB)?\.png$", source.name)
            if not m:
                continue
            if m.group(2) is None:
                images[m.group(1)] = source
            elif m.group(2) == "_instance_color_RGB":
                labels[m.group(1)] = source
        if not images:
            raise ConversionError(f"{folder}: no P*.png images (empty or wrong folder)")
        missing = sorted(set(images) - set(labels))
        if missing:
            raise ConversionError(
                f"{images[missing[0]]}: no {missing[0]}{LABEL_SUFFIX} label "
                f"({len(missing)} image(s) without labels)"
            )
        counts[split] = len(images)
        for key in sorted(images):
            tasks.append(Task(
                cut_image, (images[key], labels[key], dst, split, key, patch, overlap),
                (marker_path(dst, f"{split}-{key}"),), str(images[key]),
            ))
    run_tasks(tasks, workers, "isaid", progress)
    return counts

"""ISPRS Potsdam and Vaihingen: full tiles -> 512x512 patches, RGB label colours -> ids.

Reference: mmsegmentation ``tools/dataset_converters/potsdam.py`` and ``vaihingen.py``: the
train/val tile lists, patch names, and the colour table (0 = black boundary/ignore,
1 impervious surface (white), 2 building (blue), 3 low vegetation (cyan), 4 tree (green),
5 car (yellow), 6 clutter (red)); training uses ``reduce_zero_label``.

Differences from mmseg, on purpose:

* patches really step by ``stride`` (default 256, overlapping). mmseg's ``clip_big_image``
  computes the number of patches from the stride but places them at multiples of the clip
  size, so its files are the non-overlapping grid; ``stride=512`` reproduces them exactly.
* a colour outside the table is an error naming the tile (mmseg silently makes it 0);
  ``unknown_colours="ignore"`` restores mmseg's behaviour.

Accepted input: ``SRC`` holding the release zips (Potsdam ``2_Ortho_RGB.zip`` +
``5_Labels_all_noBoundary.zip``; Vaihingen ``ISPRS_semantic_labeling_Vaihingen.zip`` +
``ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip``) or their extracted
``.tif`` files, anywhere below ``SRC``.
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
from trainer.data.convert.tiling import grid_starts, write_patches

#: Label colour (RGB) -> raw id, shared by Potsdam and Vaihingen.
ISPRS_COLOURS = {
    (0, 0, 0): 0, (255, 255, 255): 1, (0, 0, 255): 2, (0, 255, 255): 3, (0, 255, 0): 4,
    (255, 255, 0): 5, (255, 0, 0): 6,
}
POTSDAM_TRAIN = frozenset({
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11",
    "5_12", "6_10", "6_11", "6_12", "6_7", "6_8", "6_9", "7_10", "7_11", "7_12", "7_7", "7_8",
    "7_9",
})
VAIHINGEN_TRAIN = frozenset({
    "area1", "area11", "area13", "area15", "area17", "area21", "area23", "area26", "area28",
    "area3", "area30", "area32", "area34", "area37", "area5", "area7",
})


def _potsdam_key(source: Source) -> tuple[str, str] | None:
    """(tile key, "image"|"label") of a Potsdam file, or None for files that are neither."""
    m = re.match(r"top_potsdam_(\d+)_(\d+)_(RGB|label(?:_noBoundary)?)\.tif$", source.name, re.I)
    if not m:
        return None
    return f"{m.group(1)}_{m.group(2)}", ("image" if m.group(3) == "RGB" else "label")


def _vaihingen_key(source: Source) -> tuple[str, str] | None:
    m = re.match(r"top_mosaic_09cm_(area\d+)(_noBoundary)?\.tif$", source.name, re.I)
    if not m:
        return None
    if m.group(2):
        return m.group(1), "label"
    if len(source.parts) >= 2 and source.parts[-2] == "top":
        return m.group(1), "image"
    return None  # full-boundary ground truth named like the image: not used


def cut_tile(
    image_src: Source, label_src: Source, out_dir: Path, split: str, key: str,
    clip: int, stride: int, unknown_id: int | None,
) -> None:
    """Decode one tile pair, check sizes, map colours, write its patches and marker.

    Patch names: ``<key>_<x0>_<y0>_<x1>_<y1>.png`` (mmseg's).

    Raises:
        ConversionError: undecodable files, size mismatch, colours outside the table.
    """
    image = decode_image_bytes(image_src.read_bytes(), str(image_src), cv2.IMREAD_COLOR)
    colour = decode_image_bytes(label_src.read_bytes(), str(label_src), cv2.IMREAD_COLOR)
    if colour.shape != image.shape:
        raise ConversionError(
            f"{label_src}: label is {colour.shape[1]}x{colour.shape[0]} pixels but image "
            f"{image_src} is {image.shape[1]}x{image.shape[0]}"
        )
    label = colours_to_ids(colour, ISPRS_COLOURS, str(label_src), unknown_id)
    h, w = label.shape
    boxes = [
        (x, y, min(x + clip, w), min(y + clip, h))
        for y in grid_starts(h, clip, stride) for x in grid_starts(w, clip, stride)
    ]

    def name(box: tuple[int, int, int, int]) -> str:
        return f"{key}_{box[0]}_{box[1]}_{box[2]}_{box[3]}.png"

    write_patches(
        image, label, boxes,
        lambda b: out_dir / "img_dir" / split / name(b),
        lambda b: out_dir / "ann_dir" / split / name(b),
        out_dir, f"{split}-{key}",
    )


def _prepare_isprs(
    dataset: str, src: Path, dst: Path, clip: int, stride: int, unknown_colours: str,
    workers: int, progress: bool,
) -> dict[str, int]:
    if not src.is_dir():
        raise ConversionError(f"{src}: source folder not found")
    if unknown_colours not in ("error", "ignore"):
        raise ConversionError(f"unknown_colours must be 'error' or 'ignore', not {unknown_colours!r}")
    keyer, train = (
        (_potsdam_key, POTSDAM_TRAIN) if dataset == "potsdam" else (_vaihingen_key, VAIHINGEN_TRAIN)
    )
    tiles: dict[str, dict[str, Source]] = {}
    for source in scan_sources(src, (".tif", ".tiff")):
        found = keyer(source)
        if found is None:
            continue
        key, kind = found
        previous = tiles.setdefault(key, {}).get(kind)
        # Potsdam: prefer the full ("noBoundary") labels over the eroded ones.
        if previous is None or "noBoundary" in source.name:
            tiles[key][kind] = source
    if not tiles:
        raise ConversionError(f"{src}: no {dataset} tiles (.tif, or .zip archives holding them)")
    missing = sorted(k for k, kinds in tiles.items() if "image" in kinds and "label" not in kinds)
    if missing:
        raise ConversionError(
            f"{tiles[missing[0]]['image']}: no label tile for {missing[0]} "
            f"({len(missing)} image tile(s) without labels: {', '.join(missing[:8])})"
        )
    remove_stale_parts(dst)
    unknown_id = 0 if unknown_colours == "ignore" else None
    tasks, counts = [], {"train": 0, "val": 0}
    for key, kinds in sorted(tiles.items()):
        if "image" not in kinds:
            continue  # labels of tiles the release has no image for (Vaihingen area9)
        split = "train" if key in train else "val"
        counts[split] += 1
        marker = marker_path(dst, f"{split}-{key}")
        tasks.append(Task(
            cut_tile,
            (kinds["image"], kinds["label"], dst, split, key, clip, stride, unknown_id),
            (marker,), str(kinds["image"]),
        ))
    run_tasks(tasks, workers, dataset, progress)
    return counts


def prepare_potsdam(
    src: Path, dst: Path, *, clip: int = 512, stride: int = 256, unknown_colours: str = "error",
    workers: int = 1, progress: bool = True,
) -> dict[str, int]:
    """Cut ISPRS Potsdam RGB tiles and labels into patches under ``dst/{img_dir,ann_dir}``.

    Args:
        src: folder with the release zips or ``top_potsdam_<i>_<j>_{RGB,label[_noBoundary]}.tif``.
        dst: output root.
        clip: patch size in pixels; stride: step in pixels (see the module docstring).
        unknown_colours: ``"error"`` or ``"ignore"`` (as mmseg: id 0).

    Returns:
        Tiles per split.

    Raises:
        ConversionError: no tiles, an image tile without its label, undecodable files, size
            mismatches, unknown colours.
    """
    return _prepare_isprs("potsdam", src, dst, clip, stride, unknown_colours, workers, progress)


def prepare_vaihingen(
    src: Path, dst: Path, *, clip: int = 512, stride: int = 256, unknown_colours: str = "error",
    workers: int = 1, progress: bool = True,
) -> dict[str, int]:
    """Cut ISPRS Vaihingen IRRG tiles (``top/top_mosaic_09cm_area<N>.tif``) and eroded labels
    (``top_mosaic_09cm_area<N>_noBoundary.tif``) into patches; see :func:`prepare_potsdam`."""
    return _prepare_isprs("vaihingen", src, dst, clip, stride, unknown_colours, workers, progress)

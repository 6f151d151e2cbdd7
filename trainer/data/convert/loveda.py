"""LoveDA: the release archives -> ``img_dir``/``ann_dir`` per split.

Reference: mmsegmentation ``tools/dataset_converters/loveda.py`` (``Train.zip``, ``Val.zip``,
``Test.zip``; each holds ``<Split>/{Urban,Rural}/{images_png,masks_png}/<n>.png`` with
file numbers unique across Urban and Rural; images go to ``img_dir/<split>``, masks to
``ann_dir/<split>``). Masks: 0 no-data, 1..7 classes; checked on the way.

Accepted input: ``SRC`` holding the zips, or the extracted ``Train``/``Val``/``Test`` folders.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.convert.common import (
    ConversionError,
    Task,
    atomic_write_bytes,
    check_ids,
    decode_image_bytes,
    decode_label_bytes,
    remove_stale_parts,
    run_tasks,
)
from trainer.data.convert.sources import Source, scan_sources

SPLITS = {"Train": "train", "Val": "val", "Test": "test"}
VALID_IDS = tuple(range(8))


def copy_image(source: Source, output: Path) -> None:
    """Check that ``source`` decodes, then write its bytes unchanged to ``output``."""
    data = source.read_bytes()
    decode_image_bytes(data, str(source))
    atomic_write_bytes(output, data)


def copy_mask(source: Source, output: Path) -> None:
    """Check a LoveDA mask (single channel, ids 0..7), then write its bytes unchanged."""
    data = source.read_bytes()
    check_ids(decode_label_bytes(data, str(source)), VALID_IDS, str(source))
    atomic_write_bytes(output, data)


def prepare_loveda(src: Path, dst: Path, *, workers: int = 1, progress: bool = True) -> dict[str, int]:
    """Gather the LoveDA splits into ``dst/img_dir/<split>`` and ``dst/ann_dir/<split>``.

    Returns:
        Images per split.

    Raises:
        ConversionError: no split found, a train/val image without its mask, file names
            clashing between Urban and Rural, undecodable files, out-of-range mask ids.
    """
    if not src.is_dir():
        raise ConversionError(f"{src}: source folder not found")
    found: dict[str, dict[str, dict[str, Source]]] = {}
    for source in scan_sources(src, (".png",)):
        parts = source.parts
        if len(parts) < 4 or parts[-2] not in ("images_png", "masks_png"):
            continue
        split = next((SPLITS[p] for p in parts if p in SPLITS), None)
        if split is None:
            continue
        kind = "image" if parts[-2] == "images_png" else "mask"
        bucket = found.setdefault(split, {}).setdefault(kind, {})
        if source.name in bucket:
            raise ConversionError(f"{source}: file name also used by {bucket[source.name]}")
        bucket[source.name] = source
    if not found:
        raise ConversionError(
            f"{src}: no LoveDA files (Train.zip/Val.zip/Test.zip or "
            "<Split>/{Urban,Rural}/images_png/*.png)"
        )
    remove_stale_parts(dst)
    tasks, counts = [], {}
    for split, kinds in sorted(found.items()):
        images, masks = kinds.get("image", {}), kinds.get("mask", {})
        if split != "test":
            missing = sorted(set(images) - set(masks))
            if missing:
                raise ConversionError(f"{images[missing[0]]}: no mask ({len(missing)} without)")
        counts[split] = len(images)
        for name, source in sorted(images.items()):
            out = dst / "img_dir" / split / name
            tasks.append(Task(copy_image, (source, out), (out,), str(source)))
        for name, source in sorted(masks.items()):
            out = dst / "ann_dir" / split / name
            tasks.append(Task(copy_mask, (source, out), (out,), str(source)))
    run_tasks(tasks, workers, "loveda", progress)
    return counts

"""Cityscapes test-server submission: PNGs of official labelIds, zipped.

The benchmark server (cityscapes-dataset.com, "Pixel-Level Semantic Labeling Task") expects,
per test image ``<city>/<stem>_leftImg8bit.png``, one single-channel 8-bit PNG of *labelIds*
(not trainIds) whose name contains the image's ``<city>_<seq>_<frame>`` stem
(cityscapesScripts ``evalPixelLevelSemanticLabeling.getPrediction`` globs
``*<city>_<seq>_<frame>*.png``); :func:`submission_name` keeps the image's own name,
``<stem>_leftImg8bit.png``.
The PNGs go into one zip, flat (no folders); the test split has no labels, so nothing is
scored.

trainId -> labelId: cityscapesScripts ``cityscapesscripts/helpers/labels.py`` (the ``labels``
table: road 7, sidewalk 8, building 11, wall 12, fence 13, pole 17, traffic light 19,
traffic sign 20, vegetation 21, terrain 22, sky 23, person 24, rider 25, car 26, truck 27,
bus 28, train 31, motorcycle 32, bicycle 33).
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

#: labelId of each Cityscapes trainId 0..18 (cityscapesScripts labels.py).
TRAIN_ID_TO_LABEL_ID = np.array(
    [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33], dtype=np.uint8
)
IMAGE_SUFFIX = "_leftImg8bit.png"


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map an (H, W) array of trainIds 0..18 to uint8 labelIds.

    Raises:
        ValueError: a value outside 0..18.
    """
    train_ids = np.asarray(train_ids)
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= len(TRAIN_ID_TO_LABEL_ID)):
        raise ValueError(
            f"trainIds must be in 0..{len(TRAIN_ID_TO_LABEL_ID) - 1}, got "
            f"{train_ids.min()}..{train_ids.max()}"
        )
    return TRAIN_ID_TO_LABEL_ID[train_ids.astype(np.int64)]


def submission_name(image_path: str | Path) -> str:
    """The PNG name for a test image: its own file name, ``<stem>_leftImg8bit.png``."""
    name = Path(image_path).name
    if not name.endswith(IMAGE_SUFFIX):
        raise ValueError(f"{image_path} is not a Cityscapes *{IMAGE_SUFFIX} image")
    return name


def list_cityscapes_images(root: str | Path, split: str) -> list[Path]:
    """``ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png``, sorted (labels not needed).

    Raises:
        FileNotFoundError: the split has no images.
    """
    folder = Path(root) / "leftImg8bit" / split
    images = sorted(folder.glob("*/*" + IMAGE_SUFFIX))
    if not images:
        raise FileNotFoundError(f"no *{IMAGE_SUFFIX} images under {folder}/<city>/")
    return images


def write_submission(
    images: list[Path],
    predict: Callable[[Path], torch.Tensor | np.ndarray],
    zip_path: str | Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Predict every image, write its labelId PNG, and zip them into ``zip_path``.

    The images are sharded over the ranks (rank ``r`` predicts ``images[r::world_size]``). Each
    PNG is written to ``<zip_path>.parts/`` under a temporary name and renamed once complete,
    so an interrupted job resumes where it stopped: PNGs already there are not predicted again.
    After ``barrier()`` rank 0 zips the PNGs (in ``images`` order) into ``<zip_path>.partial``,
    renames it to ``zip_path`` and removes the parts folder; a partial zip never takes the final
    name. Every rank must call this with the same ``images``.

    Args:
        images: the test images.
        predict: image path -> (H, W) trainIds (int tensor or array) at the image's size.
        zip_path: the zip to write.
        rank, world_size: this process's rank and the number of ranks.
        barrier: waits for every rank (``accelerator.wait_for_everyone``); called twice.

    Returns:
        ``zip_path``.

    Raises:
        ValueError: a prediction outside the trainIds; RuntimeError: PNG encoding failed, or
        (rank 0) a PNG of some image is missing after the barrier.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    zip_path = Path(zip_path)
    parts = zip_path.with_name(zip_path.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    for image in images[rank::world_size]:
        target = parts / submission_name(image)
        if target.exists():
            continue
        pred = predict(image)
        if isinstance(pred, torch.Tensor):
            pred = pred.cpu().numpy()
        ok, png = cv2.imencode(".png", train_ids_to_label_ids(pred))
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {image}")
        temporary = target.with_name(target.name + f".rank{rank}.tmp")
        temporary.write_bytes(png.tobytes())
        temporary.replace(target)
    barrier()
    if rank == 0:
        names = [submission_name(image) for image in images]
        missing = [name for name in names if not (parts / name).exists()]
        if missing:
            raise RuntimeError(
                f"{len(missing)} of {len(names)} predictions missing under {parts} "
                f"(first: {missing[0]}); run the evaluation again to complete them"
            )
        partial = zip_path.with_name(zip_path.name + ".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in names:
                archive.write(parts / name, arcname=name)
        partial.replace(zip_path)
        shutil.rmtree(parts)
    barrier()
    return zip_path

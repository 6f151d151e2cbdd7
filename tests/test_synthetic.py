"""The procedural Cityscapes-layout dataset: layout, determinism, idempotence, loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data.cityscapes import CityscapesDataset
from trainer.data.synthetic import (
    CLASSES,
    MARKER_NAME,
    SYNTHETIC_TRAIN_IDS,
    make_synthetic_cityscapes,
)

SIZE = (64, 128)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_writes_cityscapes_layout(tmp_path: Path):
    root = make_synthetic_cityscapes(tmp_path / "synth", n_train=3, n_val=2, size=SIZE, seed=0)
    images = sorted((root / "leftImg8bit" / "train" / "synth").glob("*_leftImg8bit.png"))
    assert len(images) == 3
    assert len(list((root / "leftImg8bit" / "val" / "synth").glob("*.png"))) == 2
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        label_dir = root / "gtFine" / "train" / "synth"
        train_ids = np.asarray(Image.open(label_dir / f"{stem}_gtFine_labelTrainIds.png"))
        label_ids = np.asarray(Image.open(label_dir / f"{stem}_gtFine_labelIds.png"))
        assert train_ids.shape == SIZE and Image.open(image).size == (SIZE[1], SIZE[0])
        assert set(np.unique(train_ids).tolist()) <= set(SYNTHETIC_TRAIN_IDS)
        for train_id, (_, label_id, _) in CLASSES.items():
            assert (label_ids[train_ids == train_id] == label_id).all()
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["n_train"] == 3 and marker["size"] == list(SIZE)
    assert not list(root.rglob("*.tmp*"))


def test_deterministic_for_a_seed(tmp_path: Path):
    a = make_synthetic_cityscapes(tmp_path / "a", n_train=2, n_val=1, size=SIZE, seed=5)
    b = make_synthetic_cityscapes(tmp_path / "b", n_train=2, n_val=1, size=SIZE, seed=5)
    c = make_synthetic_cityscapes(tmp_path / "c", n_train=2, n_val=1, size=SIZE, seed=6)
    assert _files(a) == _files(b)
    assert _files(a) != _files(c)


def test_idempotent_and_regenerates_on_change(tmp_path: Path):
    root = make_synthetic_cityscapes(tmp_path, n_train=2, n_val=1, size=SIZE)
    image = next((root / "leftImg8bit" / "train" / "synth").glob("*.png"))
    mtime = image.stat().st_mtime_ns
    make_synthetic_cityscapes(tmp_path, n_train=2, n_val=1, size=SIZE)
    assert image.stat().st_mtime_ns == mtime  # nothing rewritten
    # fewer frames with other parameters: stale frames are removed
    make_synthetic_cityscapes(tmp_path, n_train=1, n_val=1, size=SIZE)
    assert len(CityscapesDataset(root, "train")) == 1
    # a deleted file makes the dataset incomplete and it is rebuilt
    image = next((root / "leftImg8bit" / "train" / "synth").glob("*.png"))
    image.unlink()
    make_synthetic_cityscapes(tmp_path, n_train=1, n_val=1, size=SIZE)
    assert image.is_file()


def test_loads_through_cityscapes_dataset(tmp_path: Path):
    root = make_synthetic_cityscapes(tmp_path, n_train=4, n_val=2, size=SIZE, seed=1)
    ds = CityscapesDataset(root, "train")
    sample = ds[0]
    assert sample["image"].shape == SIZE + (3,) and sample["image"].dtype == np.uint8
    assert sample["label"].shape == SIZE
    present = set()
    for i in range(len(ds)):
        present |= set(np.unique(ds[i]["label"]).tolist())
    assert {0, 1, 2, 10, 13} <= present  # road, sidewalk, building, sky, car
    assert len(CityscapesDataset(root, "val")) == 2


def test_rejects_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="n_train"):
        make_synthetic_cityscapes(tmp_path, n_train=0)
    with pytest.raises(ValueError, match="size"):
        make_synthetic_cityscapes(tmp_path, size=(8, 8))

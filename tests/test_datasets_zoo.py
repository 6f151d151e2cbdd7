"""Dataset presets and the layouts of the model zoo's datasets, on real sample files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segctl.recipe.datasets import DATASET_PRESETS
from trainer.data.layouts import DATASET_LAYOUTS, DatasetLayoutError, build_dataset


def test_every_preset_names_a_layout_and_is_consistent():
    for name, preset in DATASET_PRESETS.items():
        assert preset.layout in DATASET_LAYOUTS, name
        assert len(preset.classes) == len(preset.palette), name
        assert len(set(preset.classes)) == len(preset.classes), name
    expected = {
        "pascal_voc": 21, "pascal_context": 60, "pascal_context_59": 59, "coco_stuff10k": 171,
        "coco_stuff164k": 171, "lip": 20, "loveda": 7, "potsdam": 6, "vaihingen": 6, "isaid": 16,
    }
    assert {k: DATASET_PRESETS[k].num_classes for k in expected} == expected
    ctx, ctx59 = DATASET_PRESETS["pascal_context"], DATASET_PRESETS["pascal_context_59"]
    assert ctx59.classes == ctx.classes[1:] and ctx59.reduce_zero_label and not ctx.reduce_zero_label
    # Pascal Context train ids follow the sorted 459-class ids: alphabetical after background.
    assert list(ctx59.classes) == sorted(ctx59.classes)


def _raw(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        return np.asarray(pil)


@pytest.mark.parametrize("sub", ["", "LIP"])
def test_lip_train_and_greyscale_val(real_data: Path, sub: str):
    root = real_data / "lip" / sub
    for split in ("train", "val"):
        ds = build_dataset("lip", root, split)
        assert len(ds) == 1
        sample = ds[0]
        assert sample["image"].ndim == 3 and sample["image"].shape[2] == 3
        assert sample["label"].shape == sample["image"].shape[:2]
        assert set(np.unique(sample["label"]).tolist()) <= set(range(20))
        np.testing.assert_array_equal(sample["label"], _raw(ds.pairs[0][1]))


def test_lip_mmseg_trainval_folders(real_data: Path, tmp_path: Path):
    import shutil

    shutil.copytree(real_data / "lip" / "LIP" / "val_images", tmp_path / "TrainVal_images" / "val_images")
    shutil.copytree(real_data / "lip" / "LIP" / "val_segmentations",
                    tmp_path / "TrainVal_parsing_annotations" / "val_segmentations")
    assert len(build_dataset("lip", tmp_path, "val")) == 1


def test_loveda_reduces_zero_label(real_data: Path):
    ds = build_dataset("loveda", real_data / "loveda", "val")
    assert len(ds) == 3
    for i in range(3):
        raw = _raw(ds.pairs[i][1])
        label = ds[i]["label"]
        assert ds[i]["image"].shape == raw.shape + (3,)  # as stored: no resize on loading
        np.testing.assert_array_equal(label[raw == 0], 255)
        np.testing.assert_array_equal(label[raw != 0], raw[raw != 0] - 1)
        assert set(np.unique(label).tolist()) <= set(range(7)) | {255}


@pytest.mark.parametrize("name", ["potsdam", "vaihingen"])
def test_isprs_patches_load(real_data: Path, name: str):
    ds = build_dataset(name, real_data / name, "val")
    assert len(ds) == 1
    sample = ds[0]
    assert sample["image"].shape == (512, 512, 3) and sample["label"].shape == (512, 512)
    raw = _raw(ds.pairs[0][1])
    assert raw.max() <= 6
    assert set(np.unique(sample["label"]).tolist()) <= set(range(6)) | {255}
    np.testing.assert_array_equal(sample["label"][raw == 0], 255)


def test_ade20k_loads(real_data: Path):
    ds = build_dataset("ade20k", real_data / "ade20k", "val")
    assert len(ds) == 3
    for i in range(3):
        assert set(np.unique(ds[i]["label"]).tolist()) <= set(range(150)) | {255}


@pytest.mark.parametrize(
    ("layout", "split"),
    [("pascal_voc", "trainaug"), ("pascal_context", "train"), ("coco_stuff10k", "train"),
     ("coco_stuff164k", "val"), ("lip", "train"), ("isaid", "val"), ("potsdam", "train")],
)
def test_missing_layout_names_the_path(tmp_path: Path, layout: str, split: str):
    with pytest.raises(DatasetLayoutError, match=str(tmp_path)):
        build_dataset(layout, tmp_path, split)


def test_unknown_split_is_a_layout_error(real_data: Path):
    with pytest.raises(DatasetLayoutError, match="unknown split"):
        build_dataset("lip", real_data / "lip", "test")

"""Dataset layouts: listing, decoding, label mapping and layout errors, on real sample files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data.base import reduce_zero_label
from trainer.data.io import read_image, read_label
from trainer.data.layouts import (
    DATASET_LAYOUTS,
    ADE20KDataset,
    CityscapesDataset,
    DatasetLayoutError,
    build_dataset,
)


def test_registry_names_both_layouts():
    assert DATASET_LAYOUTS["cityscapes"] is CityscapesDataset
    assert DATASET_LAYOUTS["ade20k"] is ADE20KDataset
    with pytest.raises(KeyError, match="known layouts"):
        build_dataset("pascal", "/nowhere", "val")


def test_cityscapes_val_loads(real_data: Path):
    ds = build_dataset("cityscapes", real_data / "cityscapes", "val")
    assert len(ds) == 1
    sample = ds[0]
    assert sample["image"].shape == (128, 256, 3) and sample["image"].dtype == np.uint8
    assert sample["label"].shape == (128, 256)
    assert set(np.unique(sample["label"]).tolist()) <= set(range(19)) | {255}
    assert sample["path"].endswith("frankfurt_000000_000294_leftImg8bit.png")


def test_cityscapes_image_is_rgb(real_data: Path):
    ds = CityscapesDataset(real_data / "cityscapes", "val")
    image_path = ds.pairs[0][0]
    with Image.open(image_path) as pil:
        expected = np.asarray(pil.convert("RGB"))
    np.testing.assert_array_equal(ds[0]["image"], expected)


@pytest.mark.parametrize("sub", ["", "ADEChallengeData2016"])
@pytest.mark.parametrize("split", ["val", "validation"])
def test_ade20k_val_reduces_zero_label(real_data: Path, sub: str, split: str):
    ds = build_dataset("ade20k", real_data / "ade20k" / sub, split)
    assert len(ds) == 3
    for i in range(3):
        sample = ds[i]
        raw = np.asarray(Image.open(ds.pairs[i][1]))
        label = sample["label"]
        assert sample["image"].shape[:2] == label.shape == raw.shape
        assert set(np.unique(label).tolist()) <= set(range(150)) | {255}
        np.testing.assert_array_equal(label[raw == 0], 255)
        np.testing.assert_array_equal(label[raw != 0], raw[raw != 0].astype(np.int64) - 1)


def test_reduce_zero_label_keeps_ignore():
    raw = np.array([[0, 1, 150, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(raw), [[255, 0, 149, 255]])
    wide = raw.astype(np.uint16)
    np.testing.assert_array_equal(reduce_zero_label(wide), [[255, 0, 149, 255]])


def test_greyscale_jpeg_decodes_as_three_channels(real_data: Path):
    path = real_data / "lip" / "LIP" / "val_images" / "86_185913.jpg"
    with Image.open(path) as pil:
        assert pil.mode == "L"
        grey = np.asarray(pil)
    image = read_image(path)
    assert image.shape == grey.shape + (3,) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_palette_label_gives_indices_not_colours(real_data: Path):
    path = next((real_data / "cocostuff_labels").glob("*.png"))
    label = read_label(path)
    with Image.open(path) as pil:
        assert pil.mode == "P"
        np.testing.assert_array_equal(label, np.asarray(pil))
    assert label.ndim == 2


def test_greyscale_labels_decode_as_pillow_does(real_data: Path, tmp_path: Path):
    """The OpenCV fast path for greyscale PNGs returns Pillow's array, for 8 and 16 bits."""
    ade = real_data / "ade20k" / "ADEChallengeData2016" / "annotations" / "validation"
    wide = np.arange(12 * 9, dtype=np.uint16).reshape(12, 9) * 600
    Image.fromarray(wide).save(tmp_path / "wide.png")
    for path in [*sorted(ade.glob("*.png")), tmp_path / "wide.png"]:
        label = read_label(path)
        with Image.open(path) as pil:
            assert pil.mode in ("L", "I;16"), path
            np.testing.assert_array_equal(label, np.asarray(pil).astype(label.dtype))
            assert label.dtype == np.asarray(pil).dtype or pil.mode == "I;16"
    assert read_label(tmp_path / "wide.png").max() == wide.max()


def test_colour_label_is_rejected(tmp_path: Path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="single-channel"):
        read_label(path)


def _touch_png(path: Path, shape=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)


def test_missing_root_names_path(tmp_path: Path):
    missing = tmp_path / "no_such_root"
    with pytest.raises(DatasetLayoutError, match="no_such_root") as info:
        build_dataset("cityscapes", missing, "val")
    assert "leftImg8bit" in str(info.value)


def test_missing_split_names_folder(tmp_path: Path):
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    (tmp_path / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"leftImg8bit[/\\]train"):
        CityscapesDataset(tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match="no \\*_leftImg8bit.png"):
        CityscapesDataset(tmp_path, "val")


def test_image_without_label_names_label_path(tmp_path: Path):
    _touch_png(tmp_path / "leftImg8bit" / "val" / "aachen" / "a_000000_000019_leftImg8bit.png")
    (tmp_path / "gtFine" / "val" / "aachen").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="a_000000_000019_gtFine_labelTrainIds.png"):
        CityscapesDataset(tmp_path, "val")


def test_ade20k_bad_layouts(tmp_path: Path):
    with pytest.raises(DatasetLayoutError, match="ADEChallengeData2016") as info:
        ADE20KDataset(tmp_path, "val")
    assert str(tmp_path) in str(info.value)
    base = tmp_path / "ADEChallengeData2016"
    (base / "images" / "validation").mkdir(parents=True)
    (base / "annotations" / "validation").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="unknown split 'test'"):
        ADE20KDataset(tmp_path, "test")
    with pytest.raises(DatasetLayoutError, match=r"images[/\\]training"):
        ADE20KDataset(tmp_path, "train")
    with pytest.raises(DatasetLayoutError, match="no \\*.jpg"):
        ADE20KDataset(tmp_path, "val")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(base / "images" / "validation" / "x.jpg")
    with pytest.raises(DatasetLayoutError, match=r"annotations[/\\]validation[/\\]x.png"):
        ADE20KDataset(tmp_path, "val")


def test_layout_error_is_value_error():
    assert issubclass(DatasetLayoutError, ValueError)


# --- Cityscapes train+val (test-server training) ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_cityscapes(tmp_path_factory) -> Path:
    from trainer.data.synthetic import make_synthetic_cityscapes

    return make_synthetic_cityscapes(tmp_path_factory.mktemp("tiny_city"), n_train=3, n_val=2,
                                     size=(32, 64))


def test_cityscapes_joins_splits_in_order(tiny_cityscapes: Path):
    train = build_dataset("cityscapes", tiny_cityscapes, "train")
    val = build_dataset("cityscapes", tiny_cityscapes, "val")
    both = build_dataset("cityscapes", tiny_cityscapes, "train+val")
    assert (len(train), len(val), len(both)) == (3, 2, 5)
    assert both.pairs == train.pairs + val.pairs
    assert [p[0].parts[-3] for p in both.pairs] == ["train"] * 3 + ["val"] * 2
    assert build_dataset("cityscapes", tiny_cityscapes, "val+train").pairs == val.pairs + train.pairs
    sample = both[4]
    assert sample["image"].shape == (32, 64, 3) and sample["label"].shape == (32, 64)
    for bad in ("train+train", "train+", "train+test"):
        with pytest.raises(DatasetLayoutError):
            build_dataset("cityscapes", tiny_cityscapes, bad)


def test_recipe_trains_on_train_plus_val(tiny_cityscapes: Path, tmp_path: Path):
    from segctl.recipe.schema import DataConfig
    from tests.trainer_runs import small_recipe
    from trainer.data.build import build_train_dataset

    recipe = small_recipe(tiny_cityscapes, f"sqlite:///{tmp_path / 'mlflow.db'}",
                          data={"train_split": "train+val", "crop_size": [32, 64],
                                "train_scale": [64, 32]})
    dataset = build_train_dataset(recipe)
    assert len(dataset) == 5
    assert dataset[(4, 0)]["label"].shape == (32, 64)
    with pytest.raises(ValueError, match="only the cityscapes layout"):
        DataConfig(dataset="ade20k", root="x", crop_size=[512, 512], train_split="train+val")
    with pytest.raises(ValueError, match="distinct"):
        DataConfig(dataset="cityscapes", root="x", crop_size=[512, 512], train_split="train+train")

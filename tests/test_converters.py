"""``segctl data prepare``: each converter on real sample files, resumability, bad input."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segctl.cli import app
from segctl.recipe.datasets import ISAID_PALETTE, VOC_PALETTE
from trainer.data.convert import CONVERTERS, ConversionError
from trainer.data.convert.common import PART_TAG
from trainer.data.layouts import build_dataset

runner = CliRunner()


def _raw(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        return np.asarray(pil)


def _write_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _prepare(*args: str):
    return runner.invoke(app, ["data", "prepare", *args, "--no-progress"])


# --- Cityscapes -------------------------------------------------------------------------------


def test_cityscapes_label_ids_to_train_ids_match_release(real_data: Path, tmp_path: Path):
    counts = CONVERTERS["cityscapes"](real_data / "cityscapes", tmp_path, progress=False)
    assert counts == {"val": 1}
    rel = Path("gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png")
    ours, given = _raw(tmp_path / rel), _raw(real_data / "cityscapes" / rel)
    assert (ours == given).mean() >= 0.99
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert len(ds) == 1 and ds[0]["label"].shape == (128, 256)


def test_cityscapes_from_polygons(tmp_path: Path):
    import json

    split = tmp_path / "src" / "gtFine" / "train" / "aachen"
    split.mkdir(parents=True)
    polygons = {"imgHeight": 20, "imgWidth": 30, "objects": [
        {"label": "road", "polygon": [[0, 10], [29, 10], [29, 19], [0, 19]]},
        {"label": "cargroup", "polygon": [[5, 12], [10, 12], [10, 16], [5, 16]]},
        {"label": "sky", "polygon": [[0, 0], [29, 0], [29, 5], [0, 5]], "deleted": 1},
    ]}
    (split / "aachen_000000_000019_gtFine_polygons.json").write_text(json.dumps(polygons))
    CONVERTERS["cityscapes"](tmp_path / "src", tmp_path / "dst", progress=False)
    out = _raw(tmp_path / "dst/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png")
    assert out.shape == (20, 30)
    assert out[18, 20] == 0 and out[14, 7] == 13 and out[2, 2] == 255


# --- Pascal VOC + SBD -------------------------------------------------------------------------


@pytest.fixture
def voc_source(real_data: Path, tmp_path: Path) -> Path:
    """A VOCdevkit built from the three real VOC samples: 2 train, 1 val."""
    base = tmp_path / "src" / "VOCdevkit" / "VOC2012"
    ids = ["1", "23", "114"]
    for name in ids:
        rgb = _raw(real_data / "voc_samples" / f"{name}_image.png")
        _write_jpg(base / "JPEGImages" / f"{name}.jpg", rgb)
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        shutil.copy(real_data / "voc_samples" / f"{name}_target.png",
                    base / "SegmentationClass" / f"{name}.png")
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("1\n23\n")
    (sets / "val.txt").write_text("114\n")
    return tmp_path / "src"


def test_voc_colour_targets_to_ids(voc_source: Path, real_data: Path, tmp_path: Path):
    counts = CONVERTERS["pascal_voc"](voc_source, tmp_path / "dst", progress=False)
    assert counts == {"train": 2, "val": 1}
    colour_to_id = {c: i for i, c in enumerate(VOC_PALETTE)} | {(224, 224, 192): 255}
    for name in ("1", "23", "114"):
        rgb = _raw(real_data / "voc_samples" / f"{name}_target.png")
        expected = np.full(rgb.shape[:2], 77, np.uint8)
        for colour, idx in colour_to_id.items():
            expected[(rgb == colour).all(-1)] = idx
        got = _raw(tmp_path / "dst/VOCdevkit/VOC2012/SegmentationClass" / f"{name}.png")
        np.testing.assert_array_equal(got, expected)
        assert 255 in got and len(np.unique(got)) >= 2
    ds = build_dataset("pascal_voc", tmp_path / "dst", "val")
    assert len(ds) == 1 and ds[0]["label"].shape == (513, 513)


def test_voc_sbd_trainaug(voc_source: Path, tmp_path: Path):
    from scipy.io import savemat

    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    seg = np.zeros((513, 513), np.uint8)
    seg[100:200, 100:200] = 15
    for name in ("1", "114"):  # 114 is VOC val: must not enter trainaug
        savemat(sbd / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": seg}})
    (sbd / "train.txt").write_text("1\n114\n")
    (sbd / "val.txt").write_text("")
    counts = CONVERTERS["pascal_voc"](voc_source, tmp_path / "dst", sbd=tmp_path / "benchmark_RELEASE",
                                      progress=False)
    assert counts["trainaug"] == 2
    aug = _raw(tmp_path / "dst/VOCdevkit/VOC2012/SegmentationClassAug/1.png")
    np.testing.assert_array_equal(aug, seg)
    assert not (tmp_path / "dst/VOCdevkit/VOC2012/SegmentationClassAug/114.png").exists()
    ds = build_dataset("pascal_voc", tmp_path / "dst", "trainaug")
    assert [p[0].stem for p in ds.pairs] == ["1", "23"]


# --- Pascal Context ---------------------------------------------------------------------------


def test_pascal_context_mat_to_60_and_59(tmp_path: Path, real_data: Path):
    from scipy.io import savemat

    base = tmp_path / "src" / "VOCdevkit" / "VOC2010"
    rgb = _raw(real_data / "voc_samples" / "1_image.png")
    label = np.zeros(rgb.shape[:2], np.uint16)
    label[:100] = 2      # aeroplane -> 1
    label[100:200] = 458  # wood -> 59
    label[200:300] = 1   # a class outside the 59 -> background 0
    for name in ("2008_000001", "2008_000002"):
        _write_jpg(base / "JPEGImages" / f"{name}.jpg", rgb)
        (tmp_path / "src" / "trainval").mkdir(parents=True, exist_ok=True)
        savemat(tmp_path / "src" / "trainval" / f"{name}.mat", {"LabelMap": label})
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "train.txt").write_text("2008_000001\n")
    (base / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n")
    CONVERTERS["pascal_context"](tmp_path / "src", tmp_path / "dst", progress=False)
    out = _raw(tmp_path / "dst/VOCdevkit/VOC2010/SegmentationClassContext/2008_000001.png")
    assert out[50, 50] == 1 and out[150, 50] == 59 and out[250, 50] == 0 and out[400, 50] == 0
    sixty = build_dataset("pascal_context", tmp_path / "dst", "train")[0]["label"]
    fifty_nine = build_dataset("pascal_context", tmp_path / "dst", "val", reduce_zero_label=True)[0]["label"]
    assert sixty[150, 50] == 59 and fifty_nine[150, 50] == 58 and fifty_nine[250, 50] == 255


# --- COCO-Stuff -------------------------------------------------------------------------------


def test_coco_stuff164k_pixelmaps_to_train_ids(real_data: Path, tmp_path: Path):
    src = tmp_path / "src"
    for label in sorted((real_data / "cocostuff_labels").glob("*.png")):
        (src / "annotations" / "val2017").mkdir(parents=True, exist_ok=True)
        shutil.copy(label, src / "annotations" / "val2017" / label.name)
        h, w = _raw(label).shape
        _write_jpg(src / "images" / "val2017" / f"{label.stem}.jpg", np.zeros((h, w, 3), np.uint8))
    result = _prepare("coco_stuff164k", str(src), str(tmp_path / "dst"), "--label-format", "stuff-pixelmaps")
    assert result.exit_code == 0, result.output
    for label in sorted((real_data / "cocostuff_labels").glob("*.png")):
        raw = _raw(label).astype(np.int64)
        # All 11 unused COCO ids are things (< 92): stuff id v is train id v - 12.
        expected = np.where((raw >= 92) & (raw <= 182), raw - 12, 255)
        got = _raw(tmp_path / "dst/annotations/val2017" / f"{label.stem}_labelTrainIds.png")
        np.testing.assert_array_equal(got, expected)
    ds = build_dataset("coco_stuff164k", tmp_path / "dst", "val")
    assert len(ds) == 2 and ds[0]["label"].max() <= 255


def test_coco_stuff_stuffthingmaps_encoding():
    from trainer.data.convert.coco_stuff import coco_stuff_to_train_ids

    raw = np.array([[0, 10, 12, 181, 255]], np.uint8)  # person, ..., id 13 (stop sign), wood
    np.testing.assert_array_equal(coco_stuff_to_train_ids(raw, "stuffthingmaps"), [[0, 10, 11, 170, 255]])
    with pytest.raises(ConversionError, match="outside the class set: 11"):
        coco_stuff_to_train_ids(np.array([[11]], np.uint8), "stuffthingmaps", "x.png")


def test_coco_stuff10k_mat(tmp_path: Path):
    from scipy.io import savemat

    src = tmp_path / "src"
    (src / "annotations").mkdir(parents=True)
    (src / "imageLists").mkdir()
    s = np.array([[0, 1, 13, 182]], np.uint8)
    for name, split in (("COCO_train2014_1", "train"), ("COCO_train2014_2", "test")):
        savemat(src / "annotations" / f"{name}.mat", {"S": s})
        _write_jpg(src / "images" / f"{name}.jpg", np.zeros((1, 4, 3), np.uint8))
        (src / "imageLists" / f"{split}.txt").write_text(name + "\n")
    CONVERTERS["coco_stuff10k"](src, tmp_path / "dst", progress=False)
    np.testing.assert_array_equal(
        _raw(tmp_path / "dst/annotations/COCO_train2014_1_labelTrainIds.png"), [[255, 0, 11, 170]]
    )
    assert len(build_dataset("coco_stuff10k", tmp_path / "dst", "test")) == 1


# --- iSAID ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_isaid_raw_to_patches(real_data: Path, tmp_path: Path):
    counts = CONVERTERS["isaid"](real_data / "isaid_raw", tmp_path, workers=2, progress=False)
    assert counts == {"train": 1, "val": 1}
    colour_to_id = {c: i for i, c in enumerate(ISAID_PALETTE)}
    # 977x884 px (width padded to 896): y at 0, 81 -> 2 patches; 1023x1147: 2 x 2 patches.
    for split, key, n in (("train", "P0005", 2), ("val", "P0003", 4)):
        colour = _raw(real_data / "isaid_raw" / split / "images" / f"{key}_instance_color_RGB.png")
        full = np.full(colour.shape[:2], 99, np.uint8)
        for c, i in colour_to_id.items():
            full[(colour == c).all(-1)] = i
        h, w = full.shape
        padded = np.full((max(h, 896), max(w, 896)), 255, np.uint8)
        padded[:h, :w] = full
        patches = sorted((tmp_path / "ann_dir" / split).glob(f"{key}_*_instance_color_RGB.png"))
        assert len(patches) == n
        for patch in patches:
            y0, y1, x0, x1 = map(int, patch.name.split("_")[1:5])
            assert (y1 - y0, x1 - x0) == (896, 896)
            np.testing.assert_array_equal(_raw(patch), padded[y0:y1, x0:x1])
            image = tmp_path / "img_dir" / split / f"{key}_{y0}_{y1}_{x0}_{x1}.png"
            assert _raw(image).shape == (896, 896, 3)
    ds = build_dataset("isaid", tmp_path, "train")
    assert len(ds) == 2 and set(np.unique(ds[0]["label"]).tolist()) <= set(range(16)) | {255}


# --- ISPRS and LoveDA (release-shaped archives built from the real patches) -------------------


def _isprs_colour(raw: np.ndarray) -> np.ndarray:
    from trainer.data.convert.isprs import ISPRS_COLOURS

    table = np.zeros((256, 3), np.uint8)
    for colour, idx in ISPRS_COLOURS.items():
        table[idx] = colour
    return table[raw]


def _tif_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".tif", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("name", "image_member", "label_member", "key"),
    [("potsdam", "2_Ortho_RGB/top_potsdam_2_10_RGB.tif",
      "top_potsdam_2_10_label_noBoundary.tif", "2_10"),
     ("vaihingen", "top/top_mosaic_09cm_area1.tif", "top_mosaic_09cm_area1_noBoundary.tif", "area1")],
)
def test_isprs_zip_to_patches(real_data: Path, tmp_path: Path, name, image_member, label_member, key):
    patch = next((real_data / name / "img_dir" / "val").glob("*.png"))
    image = _raw(patch)
    raw = _raw(real_data / name / "ann_dir" / "val" / patch.name)
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "images.zip", "w") as z:
        z.writestr(image_member, _tif_bytes(image))
    with zipfile.ZipFile(src / "labels.zip", "w") as z:
        z.writestr(label_member, _tif_bytes(_isprs_colour(raw)))
    result = _prepare(name, str(src), str(tmp_path / "dst"), "--stride", "128")
    assert result.exit_code == 0, result.output
    split = "train"  # both tiles are in mmseg's training lists
    labels = sorted((tmp_path / "dst" / "ann_dir" / split).glob("*.png"))
    assert len(labels) == 1  # a 512x512 tile is one 512x512 patch
    assert labels[0].name == f"{key}_0_0_512_512.png"
    np.testing.assert_array_equal(_raw(labels[0]), raw)
    np.testing.assert_array_equal(_raw(tmp_path / "dst" / "img_dir" / split / labels[0].name), image)
    ds = build_dataset(name, tmp_path / "dst", split)
    assert len(ds) == 1


def test_grid_starts_step_and_flush_end():
    from trainer.data.convert.tiling import grid_starts

    assert grid_starts(6000, 512, 256)[:3] == [0, 256, 512] and grid_starts(6000, 512, 256)[-1] == 5488
    assert grid_starts(6000, 512, 512)[-2:] == [5120, 5488]
    assert grid_starts(300, 512, 256) == [0]


def test_loveda_zip(real_data: Path, tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "Val.zip", "w") as z:
        for i, area in ((0, "Urban"), (1, "Rural")):
            z.write(real_data / "loveda" / "img_dir" / "val" / f"{i}.png", f"Val/{area}/images_png/{i}.png")
            z.write(real_data / "loveda" / "ann_dir" / "val" / f"{i}.png", f"Val/{area}/masks_png/{i}.png")
    assert CONVERTERS["loveda"](src, tmp_path / "dst", progress=False) == {"val": 2}
    for i in (0, 1):
        for kind in ("img_dir", "ann_dir"):
            got = (tmp_path / "dst" / kind / "val" / f"{i}.png").read_bytes()
            assert got == (real_data / "loveda" / kind / "val" / f"{i}.png").read_bytes()
    assert len(build_dataset("loveda", tmp_path / "dst", "val")) == 2


# --- resumability and bad input ---------------------------------------------------------------


def test_rerun_skips_complete_outputs_and_removes_stale_parts(real_data: Path, tmp_path: Path):
    from trainer.data.convert.common import Task, run_tasks

    CONVERTERS["isaid"](real_data / "isaid_raw", tmp_path, progress=False)
    stale = tmp_path / "ann_dir" / "train" / f"x.png{PART_TAG}123"
    stale.write_bytes(b"half")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    CONVERTERS["isaid"](real_data / "isaid_raw", tmp_path, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")} == before
    assert not stale.exists()
    done = tmp_path / "done.txt"
    done.write_text("x")
    summary = run_tasks([Task(print, ("never",), (done,), "x")], progress=False)
    assert summary.skipped == 1 and summary.done == 0


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if PART_TAG in p.name]


def test_corrupt_png_exit_2_names_file(real_data: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(real_data / "cityscapes", src)
    bad = src / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    bad.write_bytes(bad.read_bytes()[:200])
    result = _prepare("cityscapes", str(src), str(tmp_path / "dst"))
    assert result.exit_code == 2
    assert str(bad) in result.output
    assert not (tmp_path / "dst/gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png").exists()
    assert not _leftovers(tmp_path / "dst")


def test_out_of_range_ids_exit_2_names_file(real_data: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(real_data / "cityscapes", src)
    path = src / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    label = _raw(path).copy()
    label[0, 0] = 40
    Image.fromarray(label).save(path)
    (src / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png").unlink()
    result = _prepare("cityscapes", str(src), str(src))  # in place, beside the labelIds
    assert result.exit_code == 2
    assert str(path) in result.output and "40" in result.output
    assert not (path.parent / "frankfurt_000000_000294_gtFine_labelTrainIds.png").exists()
    assert not _leftovers(src)


def test_unknown_colour_exit_2_names_file(real_data: Path, tmp_path: Path):
    src = tmp_path / "src"
    shutil.copytree(real_data / "isaid_raw", src)
    path = src / "val/images/P0003_instance_color_RGB.png"
    colour = _raw(path).copy()
    colour[5, 5] = (1, 2, 3)
    Image.fromarray(colour).save(path)
    result = _prepare("isaid", str(src), str(tmp_path / "dst"))
    assert result.exit_code == 2
    assert str(path) in result.output and "RGB(1, 2, 3)" in result.output
    assert not list((tmp_path / "dst").rglob("P0003*"))
    assert not _leftovers(tmp_path / "dst")


def test_missing_split_and_empty_folder_exit_2(real_data: Path, tmp_path: Path):
    src = tmp_path / "src"
    (src / "train" / "images").mkdir(parents=True)
    result = _prepare("isaid", str(src), str(tmp_path / "dst"))
    assert result.exit_code == 2 and str(src / "train") in result.output
    (src / "val").mkdir()
    result = _prepare("isaid", str(src), str(tmp_path / "dst"))
    assert result.exit_code == 2 and "no P*.png images" in result.output
    voc = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    result = _prepare("pascal_voc", str(tmp_path / "voc"), str(tmp_path / "dst2"))
    assert result.exit_code == 2 and "train.txt" in result.output
    assert not (tmp_path / "dst2").exists() or not any((tmp_path / "dst2").rglob("*.png"))


def test_unknown_dataset_exit_2(tmp_path: Path):
    result = _prepare("nosuch", str(tmp_path), str(tmp_path / "dst"))
    assert result.exit_code == 2 and "no converter" in result.output


def _rle_string(mask: np.ndarray) -> str:
    """COCO compressed RLE of a boolean mask (column-major runs, 0s first)."""
    flat = mask.T.ravel().astype(np.uint8)
    runs, current, count = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(count)
            current, count = v, 0
        count += 1
    runs.append(count)
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def test_rle_decoding_agrees_with_pycocotools():
    """Compressed strings and uncompressed count lists, on random and edge-case masks."""
    from pycocotools import mask as coco_mask

    from trainer.data.convert.pascal_context import decode_rle

    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) < p for p in (0.02, 0.5, 0.97)]
    masks += [np.zeros((9, 7), bool), np.ones((9, 7), bool)]
    blob = np.zeros((300, 400), bool)
    blob[40:260, 17:390] = True  # long runs: multi-character counts
    masks.append(blob)
    for mask in masks:
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        np.testing.assert_array_equal(decode_rle(encoded), mask)
        as_text = {"size": encoded["size"], "counts": encoded["counts"].decode()}
        np.testing.assert_array_equal(decode_rle(as_text), mask)
        flat = mask.T.ravel().astype(int)
        edges = np.flatnonzero(np.diff(np.r_[0, flat, 0]))
        counts = np.diff(np.r_[0, edges, flat.size]).tolist()
        counts = [c for i, c in enumerate(counts) if c or i == 0]
        reference = coco_mask.decode(coco_mask.frPyObjects(
            {"size": list(mask.shape), "counts": counts}, *mask.shape))
        np.testing.assert_array_equal(decode_rle({"size": list(mask.shape), "counts": counts}),
                                      reference.astype(bool))


def test_malformed_rle_and_polygons_are_named():
    from trainer.data.convert.common import ConversionError
    from trainer.data.convert.pascal_context import decode_rle, rasterise_polygons

    with pytest.raises(ConversionError, match="img7: RLE runs cover 5 pixels"):
        decode_rle({"size": [3, 3], "counts": [2, 3]}, "img7")
    with pytest.raises(ConversionError, match="img7: truncated"):
        decode_rle({"size": [3, 3], "counts": "0`"}, "img7")
    with pytest.raises(ConversionError, match="img8: a polygon has an odd"):
        rasterise_polygons([[1, 1, 5, 1, 5]], 9, 9, "img8")
    with pytest.raises(ConversionError, match="img8: polygon coordinates"):
        rasterise_polygons([[1, 1, "x", 1, 5, 5]], 9, 9, "img8")


def test_pascal_context_from_detail_json(tmp_path: Path):
    import json

    h, w = 20, 30
    base = tmp_path / "src" / "VOCdevkit" / "VOC2010"
    for name in ("2008_000001", "2008_000002"):
        _write_jpg(base / "JPEGImages" / f"{name}.jpg", np.zeros((h, w, 3), np.uint8))
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "train.txt").write_text("2008_000001\n")
    (base / "ImageSets" / "Main" / "val.txt").write_text("2008_000002\n")

    def rect(x0, y0, x1, y1):  # inclusive pixel corners -> polygon around those pixels
        return [[x0, y0, x1 + 1, y0, x1 + 1, y1 + 1, x0, y1 + 1]]

    rle_region = np.zeros((h, w), bool)
    rle_region[5:13, 8:16] = True
    list_region = np.zeros((h, w), bool)
    list_region[10:20, 0:12] = True
    flat = list_region.T.ravel()
    edges = np.flatnonzero(np.diff(np.r_[0, flat.astype(int), 0]))
    list_counts = np.diff(np.r_[0, edges, h * w]).tolist()  # runs: 0s, 1s, 0s
    anns = [
        {"id": 1, "image_id": 2008000001, "category_id": 2, "segmentation": rect(2, 3, 10, 8)},
        {"id": 2, "image_id": 2008000001, "category_id": 458,
         "segmentation": {"size": [h, w], "counts": _rle_string(rle_region)}},
        {"id": 3, "image_id": 2008000001, "category_id": 1, "segmentation": rect(14, 11, 20, 15)},
        {"id": 4, "image_id": 2008000002, "category_id": 259,
         "segmentation": {"size": [h, w], "counts": list_counts}},
        {"id": 5, "image_id": 2008000002, "category_id": 260, "segmentation": rect(5, 0, 7, 14)},
    ]
    data = {
        "images": [
            {"image_id": 2008000001, "file_name": "2008_000001.jpg", "height": h, "width": w,
             "phase": "train"},
            {"image_id": 2008000002, "file_name": "2008_000002.jpg", "height": h, "width": w,
             "phase": "val"},
        ],
        "annos_segmentation": anns,
        "categories": [{"category_id": c, "name": str(c)} for c in (1, 2, 258, 259, 260, 458)],
    }
    json_path = tmp_path / "trainval_merged.json"
    json_path.write_text(json.dumps(data))
    # train ids: 2 -> 1, 259 -> 35, 260 -> 36, 458 -> 59, 1 (not among the 59) -> 0
    ids = {c: int(np.searchsorted(np.sort(np.array(
        [0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33,
         162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68,
         326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189,
         368, 113, 115])), c)) for c in (2, 259, 260, 458)}
    assert ids == {2: 1, 259: 35, 260: 36, 458: 59}
    first = np.zeros((h, w), np.uint8)
    first[3:9, 2:11] = 1      # polygon, drawn first
    first[5:13, 8:16] = 59    # RLE, drawn later: wins the overlap
    first[11:16, 14:21] = 0   # class outside the 59, drawn last: background
    second = np.zeros((h, w), np.uint8)
    second[10:20, 0:12] = 35  # uncompressed RLE
    second[0:15, 5:8] = 36    # polygon drawn later
    assert (first == 0).any() and (second == 0).any()

    result = _prepare("pascal_context", str(tmp_path / "src"), str(tmp_path / "dst"),
                      "--context-json", str(json_path), "--workers", "2")
    assert result.exit_code == 0, result.output
    out = tmp_path / "dst/VOCdevkit/VOC2010/SegmentationClassContext"
    np.testing.assert_array_equal(_raw(out / "2008_000001.png"), first)
    np.testing.assert_array_equal(_raw(out / "2008_000002.png"), second)
    assert len(build_dataset("pascal_context", tmp_path / "dst", "val")) == 1

    # found in SRC without the option; same files
    shutil.copy(json_path, tmp_path / "src" / "trainval_merged.json")
    CONVERTERS["pascal_context"](tmp_path / "src", tmp_path / "dst2", progress=False)
    np.testing.assert_array_equal(_raw(tmp_path / "dst2" / out.relative_to(tmp_path / "dst")
                                       / "2008_000001.png"), first)

    # an image of the split lists missing from the JSON: exit 2, named
    data["images"] = data["images"][:1]
    data["annos_segmentation"] = anns[:3]
    json_path.write_text(json.dumps(data))
    result = _prepare("pascal_context", str(tmp_path / "src"), str(tmp_path / "dst3"),
                      "--context-json", str(json_path))
    assert result.exit_code == 2 and "2008_000002" in result.output

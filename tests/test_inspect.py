"""``segctl data inspect`` and ``quick_check``: histograms against numpy, problems, outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segctl.cli import app
from trainer.data.inspect import inspect_dataset, quick_check

runner = CliRunner()


def _raw(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        return np.asarray(pil)


@pytest.mark.parametrize(("name", "num_classes"), [("loveda", 7), ("potsdam", 6)])
def test_histogram_equals_numpy_count(real_data: Path, name: str, num_classes: int):
    report = inspect_dataset(name, real_data / name, ["val"], num_classes)
    (split,) = report.splits
    labels = [_raw(p).astype(np.int64) for p in sorted((real_data / name / "ann_dir" / "val").glob("*.png"))]
    raw = np.concatenate([lbl.ravel() for lbl in labels])
    reduced = np.where(raw == 0, 255, raw - 1)  # both layouts reduce the zero label
    expected = [int((reduced == k).sum()) for k in range(num_classes)]
    assert split.class_pixels == expected
    assert split.ignore_pixels == int((reduced == 255).sum())
    assert split.pairs == split.inspected == len(labels)
    assert not report.problems


def test_problems_are_found_and_named(real_data: Path, tmp_path: Path):
    root = tmp_path / "loveda"
    shutil.copytree(real_data / "loveda", root)
    ann = root / "ann_dir" / "val"
    label = _raw(ann / "0.png").copy()
    label[0, 0] = 9  # id 8 after reduction: outside 0..6
    Image.fromarray(label).save(ann / "0.png")
    Image.fromarray(_raw(ann / "1.png")[:100]).save(ann / "1.png")  # size mismatch
    (ann / "2.png").write_bytes(b"not a png")
    report = inspect_dataset("loveda", root, ["val", "train"], 7)
    text = "\n".join(report.problems)
    assert "outside the class set" in text and str(ann / "0.png") in text
    assert "size mismatch" in text and str(ann / "1.png") in text
    assert "unreadable label" in text and str(ann / "2.png") in text
    assert "split folder for 'train' does not exist" in text
    assert report.splits[0].other_pixels == {8: 1}


def test_missing_label_is_a_problem(real_data: Path, tmp_path: Path):
    root = tmp_path / "loveda"
    shutil.copytree(real_data / "loveda", root)
    (root / "ann_dir" / "val" / "1.png").unlink()
    report = inspect_dataset("loveda", root, ["val"], 7)
    assert any("has no label file" in p and "1.png" in p for p in report.problems)
    assert quick_check("loveda", root, ["val"])


def test_cli_json_and_contact_sheet(real_data: Path, tmp_path: Path):
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(app, ["data", "inspect", "lip", str(real_data / "lip"), "--json",
                                 "--contact-sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [s["split"] for s in data["splits"]] == ["train", "val"]
    assert data["classes"][0] == "Background" and data["problems"] == []
    assert sum(data["splits"][1]["class_pixels"]) == 377 * 130  # the greyscale val image
    image = _raw(sheet)
    assert image.ndim == 3 and image.shape[2] == 3 and image.max() > 0


def test_cli_text_report_and_problem_exit(real_data: Path):
    result = runner.invoke(app, ["data", "inspect", "loveda", str(real_data / "loveda")])
    assert result.exit_code == 1  # the sample has no train split
    assert "val: 3 pairs" in result.output and "agricultural" in result.output
    result = runner.invoke(app, ["data", "inspect", "nosuch", str(real_data)])
    assert result.exit_code == 2 and "unknown dataset" in result.output


def test_quick_check(real_data: Path, tmp_path: Path):
    assert quick_check("lip", real_data / "lip", ["train", "val"]) == []
    assert quick_check("cityscapes", real_data / "cityscapes", ["val"]) == []
    problems = quick_check("cityscapes", real_data / "cityscapes", ["train", "val"])
    assert len(problems) == 1 and problems[0].startswith("train:")
    assert "unknown dataset layout" in quick_check("nosuch", tmp_path, ["val"])[0]
    root = tmp_path / "lip"
    shutil.copytree(real_data / "lip", root)
    (root / "LIP" / "val_images" / "86_185913.jpg").write_bytes(b"broken")
    problems = quick_check("lip", root, ["val"])
    assert len(problems) == 1 and "86_185913.jpg" in problems[0]


# --- the contact sheet --------------------------------------------------------------------------

def _sheet(preset_name: str, root: Path, out: Path, **kw):
    from segctl.recipe.datasets import DATASET_PRESETS
    from trainer.data.inspect import contact_sheet

    preset = DATASET_PRESETS[preset_name]
    sheet = contact_sheet(preset.layout, root, [preset.train_split, preset.val_split],
                          preset.palette, out, classes=preset.classes,
                          reduce_zero_label=preset.reduce_zero_label,
                          ignore_index=preset.ignore_index, **kw)
    return preset, sheet, _raw(out)


def _crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return rgb[y: y + h, x: x + w].astype(np.int64)


def test_contact_sheet_keeps_the_aspect_ratio_and_blends_the_labels(real_data: Path,
                                                                     tmp_path: Path):
    """The 2:1 Cityscapes frame fills a 2:1 cell (no letterbox rows of black) and its label is
    blended over it: each overlay pixel is half the image and half its class's colour."""
    import cv2

    frame = "frankfurt_000000_000294"
    root = real_data / "cityscapes"
    preset, sheet, rgb = _sheet("cityscapes", root, tmp_path / "sheet.png", cell=200)
    image = _raw(root / "leftImg8bit" / "val" / "frankfurt" / f"{frame}_leftImg8bit.png")
    label = _raw(root / "gtFine" / "val" / "frankfurt" / f"{frame}_gtFine_labelTrainIds.png")
    assert rgb.shape[:2] == (sheet.size[1], sheet.size[0])
    (cell,) = sheet.cells  # the sample has no train split
    assert cell.size == (image.shape[1], image.shape[0]) and cell.file == f"{frame}_leftImg8bit.png"

    x, y, w, h = cell.image_box
    assert w / h == pytest.approx(image.shape[1] / image.shape[0], abs=0.02)
    shown = _crop(rgb, cell.image_box)
    assert (shown.max(axis=(1, 2)) > 16).all()  # every row of the cell is picture, none black
    expected = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.int64)
    assert np.abs(shown - expected).mean() < 1.0  # the image itself, not stretched or cut

    overlay = _crop(rgb, cell.overlay_box)
    assert cell.overlay_box[2:] == (w, h)
    ids = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    palette = np.asarray(preset.palette, np.int64)
    labelled = ids != 255
    colour = palette[np.where(labelled, ids, 0)]
    blend = (shown + colour) / 2
    close = np.abs(overlay - blend).max(axis=-1) <= 2
    assert close[labelled].mean() > 0.85  # half image, half class colour (edges aside)
    far = labelled & (np.abs(shown - colour).max(axis=-1) > 40)
    assert far.sum() > 0.3 * labelled.sum()
    assert (overlay[far] != shown[far]).any(axis=-1).mean() > 0.95  # not the bare image
    assert (overlay[far] != colour[far]).any(axis=-1).mean() > 0.95  # nor opaque colour
    assert np.array_equal(overlay[~labelled], shown[~labelled])  # ignored: the image as it is


def test_contact_sheet_captions_pairs_and_has_a_legend_of_the_classes(real_data: Path,
                                                                     tmp_path: Path):
    """Each pair has a caption (split, file, size in pixels) written above it; the legend at
    the bottom shows a swatch in the palette colour of each class present, named as the
    preset names it, and of no other class."""
    preset, sheet, rgb = _sheet("lip", real_data / "lip", tmp_path / "sheet.png")
    assert [c.caption for c in sheet.cells] == [
        "train: 684_2150041.jpg  154x220 px", "val: 86_185913.jpg  130x377 px"]
    for cell in sheet.cells:
        x, y, w, h = cell.image_box
        assert w / h == pytest.approx(cell.size[0] / cell.size[1], abs=0.02)  # portraits too
        band = rgb[y - 20: y, x: x + 2 * w]
        assert (band.max(axis=-1) < 100).sum() > 40  # dark ink on the paper above the pair

    labels = [_raw(p) for p in sorted((real_data / "lip" / "LIP").glob("*_segmentations/*.png"))]
    present = sorted(set().union(*(np.unique(lbl).tolist() for lbl in labels)) - {255})
    assert [(i, name) for i, name, _ in sheet.legend] == [(i, preset.classes[i]) for i in present]
    bottom = max(c.image_box[1] + c.image_box[3] for c in sheet.cells)
    legend = rgb[bottom:]
    for ident, colour in enumerate(preset.palette):
        swatch = int(np.all(legend == np.asarray(colour, np.uint8), axis=-1).sum())
        if ident in present:
            assert swatch >= 14 * 14, preset.classes[ident]
        elif colour != (0, 0, 0):  # black is the ink; greys match a few anti-aliased pixels
            assert swatch < 14 * 14 // 4, preset.classes[ident]


def test_cli_contact_sheet_names_the_classes(real_data: Path, tmp_path: Path):
    """``segctl data inspect --contact-sheet`` draws the preset's palette and names: the PNG's
    swatches and its ``Description`` (captions, then one legend line per class present)."""
    from segctl.recipe.datasets import DATASET_PRESETS

    preset = DATASET_PRESETS["loveda"]
    root = real_data / "loveda"
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(app, ["data", "inspect", "loveda", str(root), "--split", "val",
                                 "--contact-sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    images = sorted((root / "img_dir" / "val").glob("*.png"))
    assert f"contact sheet: {sheet} ({len(images)} pairs)" in result.output
    captions = []
    for path in images:
        with Image.open(path) as pil:
            captions.append(f"val: {path.name}  {pil.size[0]}x{pil.size[1]} px")
    labels = sorted((root / "ann_dir" / "val").glob("*.png"))
    raw = np.concatenate([_raw(p).ravel() for p in labels])
    present = sorted(set(np.unique(raw).tolist()) - {0})  # loveda reduces the zero label
    legend = [f"class {i - 1}: {preset.classes[i - 1]} {tuple(preset.palette[i - 1])}"
              for i in present]
    with Image.open(sheet) as png:
        assert png.text["Description"].splitlines() == captions + legend
    rgb = _raw(sheet)
    for i in present:
        swatch = np.all(rgb == np.asarray(preset.palette[i - 1], np.uint8), axis=-1)
        assert swatch.sum() >= 14 * 14, preset.classes[i - 1]

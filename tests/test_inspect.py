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

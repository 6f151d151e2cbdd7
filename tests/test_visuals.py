"""The pictures a run's record shows (:mod:`trainer.visuals`): the per-class IoU chart, the
learning curve and the captioned prediction overlays, checked on the matplotlib figures before
they are rendered and on the decoded PNGs."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from segctl.recipe.datasets import DATASET_PRESETS
from trainer import visuals
from trainer.data.io import read_image, read_label
from trainer.visuals import (
    NA_FACE,
    image_miou,
    learning_curve_figure,
    learning_curve_png,
    overlay_caption,
    overlay_panel,
    per_class_iou_figure,
    per_class_iou_png,
)

CITYSCAPES = DATASET_PRESETS["cityscapes"]
FRAME = "frankfurt_000000_000294"


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def _colour_pixels(rgb: np.ndarray, colour) -> int:
    return int(np.all(rgb == np.asarray(colour, np.uint8), axis=-1).sum())


def _frame(real_data: Path) -> tuple[np.ndarray, np.ndarray]:
    image = read_image(real_data / "cityscapes" / "leftImg8bit" / "val" / "frankfurt"
                       / f"{FRAME}_leftImg8bit.png")
    label = read_label(real_data / "cityscapes" / "gtFine" / "val" / "frankfurt"
                       / f"{FRAME}_gtFine_labelTrainIds.png")
    return image, label


# --- per-class IoU ------------------------------------------------------------------------------

def test_per_class_iou_chart_labels_values_marks_miou_and_shows_absent_classes():
    iou = {"road": 97.25, "wall": math.nan, "sky": 40.0, "train": None}
    figure = per_class_iou_figure(iou, "per-class IoU, iteration 5", miou=68.5)
    (axes,) = figure.axes
    bars = [p for p in axes.patches]
    widths = {round(p.get_y() + p.get_height() / 2): p.get_width() for p in bars}
    assert widths == {0: 97.25, 1: 100.0, 2: 40.0, 3: 100.0}  # no zero bar for absent classes
    hatched = [p for p in bars if p.get_hatch()]
    assert sorted(round(p.get_y() + p.get_height() / 2) for p in hatched) == [1, 3]
    assert all(p.get_facecolor()[:3] == pytest.approx(to_rgb(NA_FACE)) for p in hatched)
    assert all(not p.get_hatch() for p in bars if p not in hatched)
    labels = sorted(t.get_text() for t in axes.texts)
    assert labels == ["40.0", "97.2", "n/a", "n/a"]  # one value label per bar
    (line,) = axes.get_lines()
    assert list(line.get_xdata()) == [68.5, 68.5]  # the mIoU, as a vertical line
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend[0] == "mIoU 68.5" and legend[1].startswith("n/a")
    assert [t.get_text() for t in axes.get_yticklabels()] == list(iou)

    # without a given mIoU the line marks the mean of the present classes
    (line,) = per_class_iou_figure({"a": 20.0, "b": math.nan, "c": 60.0}, "t").axes[0].get_lines()
    assert line.get_xdata()[0] == pytest.approx(40.0)


def test_per_class_iou_png_keeps_absent_classes_as_na_bars():
    metrics = {"mIoU": 50.0, "aAcc": 90.0, "IoU.road": 60.0, "IoU.wall": math.nan,
               "IoU.sky": 40.0}
    rgb = np.asarray(_decode(per_class_iou_png(metrics, 5)).convert("RGB"))
    assert rgb.shape[1] == 700  # 7 inches at 100 dpi
    na = tuple(round(255 * c) for c in to_rgb(NA_FACE))
    assert _colour_pixels(rgb, na) > 500  # the grey n/a bar is drawn, not left out
    assert per_class_iou_png({"mIoU": 50.0}, 5) is None


# --- learning curve -----------------------------------------------------------------------------

def test_learning_curve_has_legends_run_id_and_learning_rate_axis():
    history = {
        "loss": [(s, 2.0 / s) for s in range(20, 0, -1)],  # unsorted on purpose
        "lr": [(s, 1e-3 * (1 - s / 21)) for s in range(1, 21)],
        "mIoU": [(10, 31.5), (20, 44.0)],
    }
    figure = learning_curve_figure(history, run_id="cityscapes-b0-1a2b3c4d")
    top, lr_axis, bottom = figure.axes
    assert "cityscapes-b0-1a2b3c4d" in top.get_title()
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["training loss",
                                                                   "learning rate"]
    assert lr_axis.get_ylabel() == "learning rate" and lr_axis.bbox.bounds == top.bbox.bounds
    (lr_line,) = lr_axis.get_lines()
    assert list(lr_line.get_xdata()) == list(range(1, 21))
    assert list(lr_line.get_ydata()) == pytest.approx([v for _, v in history["lr"]])
    (loss_line,) = top.get_lines()
    assert list(loss_line.get_xdata()) == list(range(1, 21))  # sorted by iteration
    assert [t.get_text() for t in bottom.get_legend().get_texts()] == ["val mIoU (%)"]
    assert list(bottom.get_lines()[0].get_ydata()) == [31.5, 44.0]

    png = _decode(learning_curve_png(history, "cityscapes-b0-1a2b3c4d"))
    assert png.size == (700, 550)
    assert learning_curve_png({"loss": [], "lr": [], "mIoU": []}) is None


@pytest.mark.slow  # the tracker's first call fails
def test_the_tracker_keeps_the_learning_rate_for_the_curve(tmp_path):
    from trainer.tracking import Tracker

    blocked = tmp_path / "store"
    blocked.write_text("a file where the store's folder should be")  # the store is away
    tracker = Tracker(tmp_path / "run", uri=f"sqlite:///{blocked / 'mlflow.db'}",
                      experiment="x", cooldown_s=60.0)
    tracker.log_metrics({"loss": 1.5, "lr": 2e-4}, step=50)
    tracker.log_metrics({"mIoU": 12.5}, step=100)
    assert tracker.history == {"loss": [(50, 1.5)], "lr": [(50, 2e-4)], "mIoU": [(100, 12.5)]}


# --- prediction overlays ------------------------------------------------------------------------

def test_image_miou_follows_the_rule_of_the_split_metric():
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 2, 2]])
    prediction = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 2, 0]])
    # IoU of class 0: 3/5, 1: 4/5, 2: 1/2 (the ignored pixels predicted 2 do not count);
    # class 3 is in neither ground truth nor prediction: left out of the mean
    assert image_miou(label, prediction, num_classes=4) == pytest.approx(
        100 * (3 / 5 + 4 / 5 + 1 / 2) / 3)
    assert math.isnan(image_miou(np.full((2, 2), 255), np.zeros((2, 2)), num_classes=4))
    assert overlay_caption("a.png", 41.234) == "a.png  mIoU 41.2%"
    assert overlay_caption("a.png", math.nan) == "a.png  mIoU n/a"


def test_overlay_panel_is_captioned_with_a_legend(real_data):
    image, label = _frame(real_data)
    prediction = label.copy()
    prediction[prediction == 255] = 0
    prediction[: label.shape[0] // 2] = 10  # sky over the upper half
    miou = image_miou(label, prediction, CITYSCAPES.num_classes)
    caption = overlay_caption(f"{FRAME}_leftImg8bit.png", miou)
    png = _decode(overlay_panel(image, label, prediction, CITYSCAPES.palette, 255,
                                caption=caption, classes=CITYSCAPES.classes))
    assert png.text["Title"] == caption and f"mIoU {miou:.1f}%" in caption
    rgb = np.asarray(png.convert("RGB"))
    h, w = label.shape
    assert rgb.shape[1] == 3 * w and rgb.shape[0] > h + visuals.CAPTION_HEIGHT
    band = rgb[: visuals.CAPTION_HEIGHT]
    assert (band.max(axis=-1) < 100).sum() > 50  # dark ink: the caption is written
    panel = rgb[visuals.CAPTION_HEIGHT: visuals.CAPTION_HEIGHT + h]
    assert np.array_equal(panel[:, :w], image)  # the image itself, under the caption
    palette = np.asarray(CITYSCAPES.palette, np.uint8)
    assert np.array_equal(panel[:, 2 * w:], palette[prediction])
    legend = rgb[visuals.CAPTION_HEIGHT + h:]
    shown = set(np.unique(label).tolist()) - {255} | set(np.unique(prediction).tolist())
    for ident in range(CITYSCAPES.num_classes):
        swatch = _colour_pixels(legend, CITYSCAPES.palette[ident])
        if ident in shown:
            assert swatch >= visuals.SWATCH ** 2, CITYSCAPES.classes[ident]
        else:  # no swatch (a grey may match a few pixels of the text's anti-aliasing)
            assert swatch < visuals.SWATCH ** 2 // 4, CITYSCAPES.classes[ident]


@pytest.mark.slow  # builds a model and evaluates a frame
def test_evaluation_overlays_are_captioned_and_filed_under_the_label(
        segctl_env, cityscapes_frame_root, tmp_path):
    import torch
    from mlflow import MlflowClient

    from segctl.recipe.eval_request import EvalRequest
    from tests.trainer_runs import make_run_dir, small_recipe
    from trainer import checkpoint as ckpt
    from trainer.entry import run_evaluation
    from trainer.models import build_segmentor

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recipe = small_recipe(cityscapes_frame_root, uri, name="overlays")
    run_dir = make_run_dir(tmp_path / "run", recipe)
    torch.manual_seed(0)
    ckpt.save_final_weights(run_dir, build_segmentor("segformer_mit_b0", 19).state_dict())
    result = run_evaluation(run_dir, EvalRequest(ms_flip=False, label="night-check"))

    client = MlflowClient(uri)
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert [a.path for a in client.list_artifacts(run_id, "overlays")] == ["overlays/night-check"]
    (artifact,) = [a.path for a in client.list_artifacts(run_id, "overlays/night-check")]
    assert artifact == "overlays/night-check/sample_0.png"
    png = _decode(Path(client.download_artifacts(run_id, artifact, str(tmp_path))).read_bytes())
    # one validation frame, predicted single-scale as the evaluation did: its mIoU is the split's
    assert png.text["Title"] == overlay_caption(f"{FRAME}_leftImg8bit.png",
                                                result["metrics"]["mIoU"])
    assert not [p for p in (run_dir / "tracking-buffer").rglob("*") if p.is_file()]


def test_learning_curve_draws_the_published_curve_under_the_runs_own():
    from trainer.visuals import PUBLISHED_COLOUR, learning_curve_figure

    history = {"loss": [(1, 2.0), (2, 1.5)], "lr": [(1, 0.01), (2, 0.009)], "mIoU": [(2, 30.0)]}
    published = {"loss": [(1, 2.1), (2, 1.4)], "mIoU": [(2, 33.0)]}
    figure = learning_curve_figure(history, "run-1234abcd", published)
    top, bottom = figure.axes[0], next(a for a in figure.axes if a.get_ylabel() == "val mIoU (%)")
    labels = {line.get_label(): line for line in top.lines + bottom.lines}
    assert labels["published training loss"].get_color() == PUBLISHED_COLOUR
    assert list(labels["published val mIoU (%)"].get_ydata()) == [33.0]
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert legend[0] == "published training loss" and "training loss" in legend
    assert "published val mIoU (%)" in [t.get_text() for t in bottom.get_legend().get_texts()]
    # the run's own lines come after (over) the published ones
    assert top.lines.index(labels["training loss"]) > top.lines.index(
        labels["published training loss"])

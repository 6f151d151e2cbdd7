"""What a run's record shows as pictures: per-class IoU bar charts, the learning curve and
prediction overlays, drawn as PNG bytes.

Validation (:func:`trainer.engine.run_validation`), evaluation (:mod:`trainer.entry`) and the
end of a training job draw them here and hand the bytes to the tracker
(:meth:`trainer.tracking.Tracker.log_image`) under the artifact names of
:mod:`segctl.recipe.tracking_names`; the tracker itself draws nothing. Matplotlib is used
through its object API (no pyplot, no global backend) and imported inside the functions. A
picture is never worth a failed run: :func:`per_class_iou_png` and :func:`learning_curve_png`
log one warning and return None when drawing fails.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence

from segctl.recipe import Recipe
from segctl.recipe.tracking_names import (
    CLASS_IOU_PREFIX, LEARNING_CURVE_ARTIFACT, per_class_iou_artifact,
)

log = logging.getLogger(__name__)


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    return out.getvalue()


def per_class_iou_chart(iou: Mapping[str, float], title: str) -> bytes:
    """A horizontal bar chart (PNG) of per-class IoU in percent."""
    from matplotlib.figure import Figure

    names = list(iou)
    figure = Figure(figsize=(7, 0.25 * len(names) + 1.2))
    axes = figure.add_subplot()
    axes.barh(range(len(names)), [iou[n] for n in names], color="#4c72b0")
    axes.set_yticks(range(len(names)), labels=names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("IoU (%)")
    axes.set_title(title)
    figure.tight_layout()
    return _png(figure)


def learning_curve_chart(history: Mapping[str, Sequence[tuple[int, float]]]) -> bytes:
    """Training loss (left axis) and validation mIoU (right axis) over iterations (PNG)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    loss = sorted(history.get("loss", ()))
    if loss:
        axes.plot([s for s, _ in loss], [v for _, v in loss], color="#4c72b0", label="loss")
    axes.set_xlabel("iteration")
    axes.set_ylabel("training loss")
    miou = sorted(history.get("mIoU", ()))
    if miou:
        right = axes.twinx()
        right.plot([s for s, _ in miou], [v for _, v in miou], "o-", color="#dd8452")
        right.set_ylabel("val mIoU (%)")
    axes.set_title("learning curve")
    figure.tight_layout()
    return _png(figure)


def overlay_panel(image, label, prediction, palette: Sequence[Sequence[int]],
                  ignore_index: int = 255) -> bytes:
    """Image | ground truth | prediction side by side (PNG), labels in the dataset palette.

    Args:
        image: uint8 (H, W, 3) RGB. label, prediction: integer (H, W) class indices;
            ``ignore_index`` (and anything outside the palette) is drawn black.
    """
    import numpy as np
    from PIL import Image

    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[: len(palette)] = np.asarray(palette, dtype=np.uint8)[:256]

    def paint(indices) -> np.ndarray:
        idx = np.asarray(indices).astype(np.int64)
        out = colours[np.clip(idx, 0, 255)]
        out[(idx == ignore_index) | (idx >= len(palette)) | (idx < 0)] = 0
        return out

    image = np.asarray(image, dtype=np.uint8)
    panel = np.concatenate([image, paint(label), paint(prediction)], axis=1)
    out = io.BytesIO()
    Image.fromarray(panel).save(out, format="PNG")
    return out.getvalue()


def prediction_overlays(model, dataset, recipe: Recipe, settings, device,
                        count: int = 3) -> list[bytes]:
    """:func:`overlay_panel` PNGs of the first ``count`` samples of ``dataset`` predicted with
    ``settings`` (a :class:`trainer.evaluate.InferenceSettings`; the job passes the recipe's
    single-scale ones, ``InferenceSettings.from_recipe(recipe, ms_flip=False)``), as the
    evaluation predicts (:func:`trainer.evaluate.segmentor_logits`, the segmentor's
    ``align_corners``). ``dataset.load(i)`` must give the raw RGB image and label,
    ``dataset[i]`` the evaluation tensors (as the trainer's datasets do)."""
    import torch

    from segctl.recipe.dataset_spec import DatasetSpec
    from trainer.evaluate import predict_probs, segmentor_logits

    spec = DatasetSpec.from_recipe(recipe)
    net = getattr(model, "module", model)
    was_training = getattr(net, "training", False)
    net.eval()
    panels = []
    try:
        for index in range(min(count, len(dataset))):
            raw = dataset.load(index)
            image = dataset[index]["image"].to(device=device, dtype=torch.float32).unsqueeze(0)
            probs = predict_probs(
                segmentor_logits(net, settings), image, settings, num_classes=spec.num_classes,
                align_corners=bool(getattr(net, "align_corners", False)),
            )
            prediction = probs.argmax(dim=1)[0].cpu().numpy()
            label = dataset[index]["label"].cpu().numpy()
            panels.append(overlay_panel(raw["image"], label, prediction, spec.palette,
                                        spec.ignore_index))
    finally:
        net.train(was_training)
    return panels


def _drawn(draw: Callable[[], bytes], what: str) -> bytes | None:
    """``draw()``, or None (after one warning) when it fails."""
    try:
        return draw()
    except Exception as exc:  # a plot is never worth a failed run
        log.warning("plot %s not drawn: %s: %s", what, type(exc).__name__, exc)
        return None


def per_class_iou_png(metrics: Mapping[str, float], iteration: int) -> bytes | None:
    """The :func:`per_class_iou_chart` of the ``IoU.<class>`` entries of ``metrics`` (percent;
    non-finite values left out) titled with ``iteration``; None when there are none or the
    chart cannot be drawn."""
    iou = {k[len(CLASS_IOU_PREFIX):]: float(v) for k, v in metrics.items()
           if k.startswith(CLASS_IOU_PREFIX) and v is not None and math.isfinite(float(v))}
    if not iou:
        return None
    return _drawn(lambda: per_class_iou_chart(iou, f"per-class IoU, iteration {iteration}"),
                  per_class_iou_artifact(iteration))


def learning_curve_png(history: Mapping[str, Sequence[tuple[int, float]]]) -> bytes | None:
    """The :func:`learning_curve_chart` of ``history`` (``{"loss": [(step, value)], "mIoU":
    [...]}``, as :attr:`trainer.tracking.Tracker.history` keeps it); None when it holds no
    point or the chart cannot be drawn."""
    if not any(history.values()):
        return None
    return _drawn(lambda: learning_curve_chart(history), LEARNING_CURVE_ARTIFACT)

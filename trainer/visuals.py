"""What a run's record shows as pictures: per-class IoU bar charts, the learning curve,
captioned prediction overlays, and the captions and class legends of image sheets.

Validation (:func:`trainer.engine.run_validation`), evaluation (:mod:`trainer.entry`) and the
end of a training job draw them here and hand the bytes to the tracker
(:meth:`trainer.tracking.Tracker.log_image`) under the artifact names of
:mod:`segctl.recipe.tracking_names`; the tracker itself draws nothing. The data inspector's
contact sheet (:func:`trainer.data.inspect.contact_sheet`) uses the same captions, legends and
label blending. Charts are built by ``*_figure`` functions that return the matplotlib figure
(object API, no pyplot, no global backend; matplotlib imported inside the functions) and
rendered to PNG with the Agg canvas by the ``*_chart`` ones; text is drawn with Pillow's own
font. A picture is never worth a failed run: :func:`per_class_iou_png` and
:func:`learning_curve_png` log one warning and return None when drawing fails.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

import numpy as np

from segctl.recipe import Recipe
from segctl.recipe.tracking_names import (
    CLASS_IOU_PREFIX, LEARNING_CURVE_ARTIFACT, LOSS, LR, MIOU, per_class_iou_artifact,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]
#: Chart colours: IoU bars, the mIoU line and curve, the loss and learning-rate curves.
IOU_COLOUR, MIOU_COLOUR, LOSS_COLOUR, LR_COLOUR = "#4c72b0", "#c44e52", "#4c72b0", "#dd8452"
#: The published training curve (reference.log), drawn under the run's own.
PUBLISHED_COLOUR = "#9a9a9a"
#: How a class without an IoU (NaN: absent from ground truth and prediction) is drawn.
NA_LABEL, NA_FACE, NA_EDGE, NA_HATCH = "n/a", "#e6e6e6", "#8c8c8c", "///"
#: Background and ink of captions and legends (RGB).
PAPER: RGB = (255, 255, 255)
INK: RGB = (20, 20, 20)
#: Caption and legend geometry in pixels.
FONT_SIZE, CAPTION_HEIGHT, SWATCH, LEGEND_LINE, LEGEND_MARGIN = 13, 20, 14, 22, 6


def _png(figure) -> bytes:
    """Render a matplotlib ``figure`` with the Agg canvas into PNG bytes (100 dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    return out.getvalue()


# --- charts -------------------------------------------------------------------------------------

def per_class_iou_figure(iou: Mapping[str, float | None], title: str,
                         miou: float | None = None) -> Figure:
    """A horizontal bar chart of per-class IoU, not yet rendered.

    Each present class gets a blue bar labelled with its value (one decimal); a class whose
    IoU is NaN or None (absent from ground truth and prediction) gets a grey hatched bar across
    the axis labelled ``n/a`` instead of a zero bar. A dashed vertical line marks the mIoU, and
    the legend names it (and the ``n/a`` bars when there are any).

    Args:
        iou: class name -> IoU in percent (0..100), in the order the bars are drawn (top down).
        title: the axes title.
        miou: the mIoU in percent to mark; None: the mean of the finite values of ``iou``.

    Returns:
        A :class:`matplotlib.figure.Figure` with one axes (:func:`per_class_iou_chart`
        renders it).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(iou)
    values = [_finite(iou[n]) for n in names]
    present = [i for i, v in enumerate(values) if v is not None]
    absent = [i for i, v in enumerate(values) if v is None]
    figure = Figure(figsize=(7, 0.25 * len(names) + 1.4))
    axes = figure.add_subplot()
    handles = []
    if present:
        bars = axes.barh(present, [values[i] for i in present], color=IOU_COLOUR, label="IoU")
        axes.bar_label(bars, labels=[f"{values[i]:.1f}" for i in present], padding=2,
                       fontsize=7)
    if absent:
        bars = axes.barh(absent, [100.0] * len(absent), color=NA_FACE, edgecolor=NA_EDGE,
                         hatch=NA_HATCH, linewidth=0.5, label=NA_LABEL)
        axes.bar_label(bars, labels=[NA_LABEL] * len(absent), label_type="center", fontsize=7)
        handles.append(Patch(facecolor=NA_FACE, edgecolor=NA_EDGE, hatch=NA_HATCH,
                             label=f"{NA_LABEL} (absent from ground truth and prediction)"))
    mean = _finite(miou) if miou is not None else _mean([values[i] for i in present])
    if mean is not None:
        handles.insert(0, axes.axvline(mean, color=MIOU_COLOUR, linestyle="--", linewidth=1.2,
                                       label=f"mIoU {mean:.1f}"))
    axes.set_yticks(range(len(names)), labels=names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 110)  # room for the value labels of bars near 100
    axes.set_xticks(range(0, 101, 20))
    axes.set_xlabel("IoU (%)")
    axes.set_title(title)
    if handles:
        axes.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.9)
    figure.tight_layout()
    return figure


def per_class_iou_chart(iou: Mapping[str, float | None], title: str,
                        miou: float | None = None) -> bytes:
    """:func:`per_class_iou_figure` rendered as PNG bytes."""
    return _png(per_class_iou_figure(iou, title, miou))


def learning_curve_figure(history: Mapping[str, Sequence[tuple[int, float]]],
                          run_id: str | None = None,
                          published: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                          ) -> Figure:
    """The learning curve, not yet rendered.

    The upper axes show the training loss (left axis) and the learning rate (second, right
    axis) over iterations; the lower axes, drawn when there are validation points, the
    validation mIoU. Each axes has a legend; the upper title names ``run_id``.

    Args:
        history: ``{"loss": [(iteration, value)], "lr": [...], "mIoU": [...]}`` (mIoU in
            percent), as :attr:`trainer.tracking.Tracker.history` keeps it; missing keys or
            empty lists are left out; points need not be sorted.
        run_id: segctl's run id (``<recipe name>-<hash8>``) for the title; None: no id.
        published: the published training curve the run is compared with (``reference.log``),
            ``{"loss": [...], "mIoU": [...]}`` like ``history``, drawn in grey under the
            run's own; None: none.

    Returns:
        A :class:`matplotlib.figure.Figure` with one or two axes plus the learning-rate twin
        of the upper one (:func:`learning_curve_chart` renders it).
    """
    from matplotlib.figure import Figure

    loss, lr, miou = (sorted(history.get(key, ())) for key in (LOSS, LR, MIOU))
    published = published or {}
    published_loss, published_miou = (sorted(published.get(key, ())) for key in (LOSS, MIOU))
    figure = Figure(figsize=(7, 5.5 if miou or published_miou else 4))
    top = figure.add_subplot(2, 1, 1) if miou or published_miou else figure.add_subplot()
    lines = []
    if published_loss:
        lines += top.plot(*_xy(published_loss), color=PUBLISHED_COLOUR, linewidth=1.0,
                          label="published training loss")
    if loss:
        lines += top.plot(*_xy(loss), color=LOSS_COLOUR, label="training loss")
    top.set_ylabel("training loss")
    if lr:
        second = top.twinx()
        lines += second.plot(*_xy(lr), color=LR_COLOUR, linestyle="--", label="learning rate")
        second.set_ylabel("learning rate")
        second.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if lines:
        top.legend(handles=lines, loc="upper right", fontsize=8)
    top.set_title(f"learning curve: {run_id}" if run_id else "learning curve")
    bottom = top
    if miou or published_miou:
        bottom = figure.add_subplot(2, 1, 2, sharex=top)
        if published_miou:
            bottom.plot(*_xy(published_miou), "s--", color=PUBLISHED_COLOUR,
                        label="published val mIoU (%)")
        if miou:
            bottom.plot(*_xy(miou), "o-", color=MIOU_COLOUR, label="val mIoU (%)")
        bottom.set_ylabel("val mIoU (%)")
        bottom.legend(loc="lower right", fontsize=8)
    bottom.set_xlabel("iteration")
    figure.tight_layout()
    return figure


def learning_curve_chart(history: Mapping[str, Sequence[tuple[int, float]]],
                         run_id: str | None = None,
                         published: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                         ) -> bytes:
    """:func:`learning_curve_figure` rendered as PNG bytes."""
    return _png(learning_curve_figure(history, run_id, published))


def _finite(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _xy(points: Sequence[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [s for s, _ in points], [v for _, v in points]


# --- captions and legends of image sheets ----------------------------------------------------

def _font(size: int = FONT_SIZE):
    """Pillow's own font (no font file needed): scalable where Pillow has FreeType (10.1 and
    later), else its small bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0: no size
        return ImageFont.load_default()


def _fit_text(text: str, width: int, font) -> str:
    """``text``, cut with ``...`` so that it fits ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def text_strip(text: str, width: int, height: int = CAPTION_HEIGHT) -> np.ndarray:
    """One line of ``text`` (ink on paper, cut with ``...`` to fit) as an image.

    Returns:
        ``np.uint8`` array of shape ``(height, width, 3)``, RGB.

    Raises:
        ValueError: ``width`` or ``height`` < 1.
    """
    from PIL import Image, ImageDraw

    if width < 1 or height < 1:
        raise ValueError(f"a text strip needs a positive size, got {width}x{height}")
    strip = Image.new("RGB", (width, height), PAPER)
    font = _font()
    ImageDraw.Draw(strip).text((4, (height - FONT_SIZE) // 2 - 1),
                               _fit_text(text, width - 8, font), fill=INK, font=font)
    return np.asarray(strip)


def legend_entries(class_ids: Iterable[int], palette: Sequence[Sequence[int]],
                   classes: Sequence[str] | None = None) -> list[tuple[int, str, RGB]]:
    """``(id, name, colour)`` of each class id, in id order: the name from ``classes`` where
    it has one (else ``class <id>``), the colour from ``palette``; ids outside the palette are
    left out."""
    out = []
    for ident in sorted(set(int(i) for i in class_ids)):
        if 0 <= ident < len(palette):
            named = classes is not None and ident < len(classes)
            name = classes[ident] if named else f"class {ident}"
            out.append((ident, name, tuple(int(c) for c in palette[ident][:3])))
    return out


def legend_strip(entries: Sequence[tuple[int, str, RGB]], width: int) -> np.ndarray:
    """A legend: per entry a solid swatch of its colour (``SWATCH`` px square, framed in ink)
    and ``<id> <name>``, entries flowing left to right in as many lines as ``width`` needs.

    Args:
        entries: ``(id, name, colour)`` as :func:`legend_entries` gives them.
        width: image width in pixels.

    Returns:
        ``np.uint8`` array of shape ``(lines * LEGEND_LINE, width, 3)``, RGB (one line when
        ``entries`` is empty).
    """
    from PIL import Image, ImageDraw

    font = _font()
    places, x, line = [], LEGEND_MARGIN, 0
    for ident, name, colour in entries:
        text = _fit_text(f"{ident} {name}", width - 3 * LEGEND_MARGIN - SWATCH, font)
        step = SWATCH + 4 + int(font.getlength(text)) + 3 * LEGEND_MARGIN
        if x > LEGEND_MARGIN and x + step > width:
            x, line = LEGEND_MARGIN, line + 1
        places.append((x, line, text, colour))
        x += step
    strip = Image.new("RGB", (max(width, 1), (line + 1) * LEGEND_LINE), PAPER)
    draw = ImageDraw.Draw(strip)
    for x, line, text, colour in places:
        top = line * LEGEND_LINE + (LEGEND_LINE - SWATCH) // 2
        draw.rectangle((x - 1, top - 1, x + SWATCH, top + SWATCH), outline=INK)
        draw.rectangle((x, top, x + SWATCH - 1, top + SWATCH - 1), fill=colour)
        draw.text((x + SWATCH + 4, top + (SWATCH - FONT_SIZE) // 2 - 1), text, fill=INK,
                  font=font)
    return np.asarray(strip)


def colour_lut(palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """A 256-entry colour table (``np.uint8 (256, 3)``): class ``c`` -> ``palette[c]``; the
    ignore index and ids beyond the palette are black."""
    lut = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    lut[: len(colours)] = colours
    if 0 <= ignore_index < 256:
        lut[ignore_index] = 0
    return lut


def blend_labels(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]],
                 ignore_index: int = 255, alpha: float = 0.5) -> np.ndarray:
    """The label drawn semi-transparent over the image, so that their alignment shows.

    Args:
        image: ``np.uint8 (H, W, 3)`` RGB.
        label: integer ``(H, W)`` class ids.
        palette: RGB colour per class id.
        ignore_index: pixels with this id (and ids outside the palette) keep the image as it is.
        alpha: the colour's weight, in (0, 1]: ``(1 - alpha) * image + alpha * colour``.

    Returns:
        ``np.uint8 (H, W, 3)`` RGB.

    Raises:
        ValueError: ``alpha`` outside (0, 1], or ``label`` not the size of ``image``.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if label.shape != image.shape[:2]:
        raise ValueError(f"label {label.shape} and image {image.shape[:2]} differ in size")
    idx = np.asarray(label).astype(np.int64)
    coloured = (idx >= 0) & (idx < len(palette)) & (idx != ignore_index)
    colours = colour_lut(palette, ignore_index)[np.clip(idx, 0, 255)]
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    out = image.copy()
    out[coloured] = np.rint(mixed[coloured]).astype(np.uint8)
    return out


def png_with_text(rgb: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """Encode an image as PNG with text chunks (``Title``, ``Description``, ...), which image
    viewers and ``PIL.Image.open(...).text`` show.

    Args:
        rgb: ``np.uint8 (H, W, 3)`` RGB.
        text: chunk keyword -> text (Latin-1 keywords; empty values are left out).

    Returns:
        PNG bytes.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        if value:
            info.add_itxt(key, value)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(out, format="PNG",
                                                                    pnginfo=info)
    return out.getvalue()


# --- prediction overlays ------------------------------------------------------------------------

def overlay_panel(image, label, prediction, palette: Sequence[Sequence[int]],
                  ignore_index: int = 255, caption: str | None = None,
                  classes: Sequence[str] | None = None) -> bytes:
    """Image | ground truth | prediction side by side (PNG), labels in the dataset palette.

    With ``caption`` the panel gets it as a line of text on top (and as the PNG's ``Title``
    text chunk) and, below, a legend of the classes in the ground truth or the prediction.

    Args:
        image: uint8 (H, W, 3) RGB. label, prediction: integer (H, W) class indices;
            ``ignore_index`` (and anything outside the palette) is drawn black.
        caption: e.g. ``"<file>  mIoU 41.2%"`` (:func:`overlay_caption`); None: the bare panel.
        classes: class names for the legend (``class <id>`` where None).

    Returns:
        PNG bytes of an RGB image ``3 * W`` wide.
    """
    lut = colour_lut(palette, ignore_index)

    def paint(indices) -> np.ndarray:
        idx = np.asarray(indices).astype(np.int64)
        out = lut[np.clip(idx, 0, 255)]
        out[(idx >= len(palette)) | (idx < 0)] = 0
        return out

    image = np.asarray(image, dtype=np.uint8)
    panel = np.concatenate([image, paint(label), paint(prediction)], axis=1)
    if caption is not None:
        ids = np.union1d(np.unique(np.asarray(label)), np.unique(np.asarray(prediction)))
        ids = [i for i in ids.tolist() if i != ignore_index]
        legend = legend_strip(legend_entries(ids, palette, classes), panel.shape[1])
        panel = np.concatenate([text_strip(caption, panel.shape[1]), panel, legend], axis=0)
    return png_with_text(panel, {"Title": caption} if caption else None)


def image_miou(label, prediction, num_classes: int, ignore_index: int = 255) -> float:
    """The mIoU (percent) of one image, by the rule of the split's metric
    (:class:`trainer.metrics.ConfusionMatrix`): the mean IoU over the classes in the image's
    ground truth or prediction (pixels labelled ``ignore_index`` left out); NaN when no pixel
    is labelled.

    Args:
        label, prediction: integer (H, W) arrays or tensors; predictions in [0, num_classes).

    Raises:
        ValueError: the shapes differ, or a prediction lies outside [0, num_classes).
    """
    import torch

    from trainer.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(num_classes, ignore_index)
    matrix.update(torch.as_tensor(np.asarray(prediction), dtype=torch.int64),
                  torch.as_tensor(np.asarray(label), dtype=torch.int64))
    return matrix.compute().mIoU * 100.0


def overlay_caption(file: str, miou: float) -> str:
    """``"<file>  mIoU 41.2%"`` (``mIoU n/a`` when ``miou`` is NaN)."""
    shown = f"{miou:.1f}%" if math.isfinite(miou) else NA_LABEL
    return f"{file}  mIoU {shown}"


@dataclass(frozen=True)
class PredictionOverlay:
    """One captioned prediction overlay.

    Attributes:
        file: the image's file name (no folder).
        miou: the image's mIoU in percent (:func:`image_miou`; NaN when nothing is labelled).
        png: the :func:`overlay_panel` PNG bytes, captioned with both.
    """

    file: str
    miou: float
    png: bytes


def prediction_overlays(model, dataset, recipe: Recipe, settings, device,
                        count: int = 3) -> list[PredictionOverlay]:
    """Captioned :func:`overlay_panel` PNGs of the first ``count`` samples of ``dataset``
    predicted with ``settings`` (a :class:`trainer.evaluate.InferenceSettings`; the job passes
    the recipe's single-scale ones, ``InferenceSettings.from_recipe(recipe, ms_flip=False)``),
    as the evaluation predicts (:func:`trainer.evaluate.segmentor_logits`, the segmentor's
    ``align_corners``). Each caption names the image file and its mIoU (:func:`image_miou`);
    a legend names the classes shown. ``dataset.load(i)`` must give the raw RGB image, label
    and ``path``, ``dataset[i]`` the evaluation tensors (as the trainer's datasets do). A
    panel that cannot be drawn is left out with one warning."""
    import torch

    from segctl.recipe.dataset_spec import DatasetSpec
    from trainer.evaluate import predict_probs, segmentor_logits

    spec = DatasetSpec.from_recipe(recipe)
    net = getattr(model, "module", model)
    was_training = getattr(net, "training", False)
    net.eval()
    overlays = []
    try:
        for index in range(min(count, len(dataset))):
            raw, sample = dataset.load(index), dataset[index]
            image = sample["image"].to(device=device, dtype=torch.float32).unsqueeze(0)
            probs = predict_probs(
                segmentor_logits(net, settings), image, settings, num_classes=spec.num_classes,
                align_corners=bool(getattr(net, "align_corners", False)),
            )
            prediction = probs.argmax(dim=1)[0].cpu().numpy()
            label = sample["label"].cpu().numpy()
            file = PurePath(str(raw.get("path", f"sample_{index}"))).name
            miou = image_miou(label, prediction, spec.num_classes, spec.ignore_index)
            png = _drawn(lambda: overlay_panel(  # noqa: B023 (called at once)
                raw["image"], label, prediction, spec.palette, spec.ignore_index,
                caption=overlay_caption(file, miou), classes=spec.classes), f"overlay of {file}")
            if png is not None:
                overlays.append(PredictionOverlay(file, miou, png))
    finally:
        net.train(was_training)
    return overlays


def _drawn(draw: Callable[[], bytes], what: str) -> bytes | None:
    """``draw()``, or None (after one warning) when it fails."""
    try:
        return draw()
    except Exception as exc:  # a plot is never worth a failed run
        log.warning("plot %s not drawn: %s: %s", what, type(exc).__name__, exc)
        return None


def per_class_iou_png(metrics: Mapping[str, float], iteration: int) -> bytes | None:
    """The :func:`per_class_iou_chart` of the ``IoU.<class>`` entries of ``metrics`` (percent;
    non-finite values drawn as ``n/a`` bars) marking ``metrics["mIoU"]`` (the mean of the
    finite values when absent), titled with ``iteration``; None when there are no entries or
    the chart cannot be drawn."""
    iou = {k[len(CLASS_IOU_PREFIX):]: _finite(v) for k, v in metrics.items()
           if k.startswith(CLASS_IOU_PREFIX)}
    if not iou:
        return None
    title = f"per-class IoU, iteration {iteration}"
    return _drawn(lambda: per_class_iou_chart(iou, title, metrics.get(MIOU)),
                  per_class_iou_artifact(iteration))


def learning_curve_png(history: Mapping[str, Sequence[tuple[int, float]]],
                       run_id: str | None = None,
                       published: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                       ) -> bytes | None:
    """The :func:`learning_curve_chart` of ``history`` (``{"loss": [(step, value)], "lr":
    [...], "mIoU": [...]}``, as :attr:`trainer.tracking.Tracker.history` keeps it) titled with
    ``run_id``, with the ``published`` curve under it; None when it holds no point or the
    chart cannot be drawn."""
    if not any(history.values()):
        return None
    return _drawn(lambda: learning_curve_chart(history, run_id, published),
                  LEARNING_CURVE_ARTIFACT)

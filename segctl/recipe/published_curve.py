"""The published training curve of a recipe (``reference.log``) and a run's place against it.

A recipe that reproduces a published result may name the training log its source released
(``reference.log``): mmsegmentation 0.x and InternImage write ``*.log.json`` (mmcv's
``TextLoggerHook``), mmsegmentation 1.x writes ``scalars.json`` (mmengine's
``LocalVisBackend``). Both hold one JSON object per line:

- mmcv (``*.log.json``): a first line of run information without ``mode``; then
  ``{"mode": "train", "epoch": 1, "iter": 50, "lr": ..., "loss": ..., "time": ..., ...}``
  every ``log_config.interval`` iterations, and ``{"mode": "val", "epoch": 1, "iter": N,
  "aAcc": 0.83, "mIoU": 0.55, "mAcc": ...}`` after each evaluation. A val line's ``iter`` is
  the number of validation images (``eval_iter_num``), not the training iteration: the
  training iteration of an evaluation is that of the train line before it, rounded up to the
  evaluation interval when it is known. Scores are fractions, and every float is rounded to 5
  decimals (``TextLoggerHook._round_float``).
- mmengine (``scalars.json``): ``{"lr": ..., "loss": ..., "time": ..., "iter": 50, "step":
  50}`` and ``{"aAcc": 83.1, "mIoU": 55.2, "mAcc": ..., "step": 16000}``: scores in percent,
  full precision.

The logged ``lr`` is the learning rate of the optimizer's first parameter group, which is the
group of the model's first parameter in both libraries; ``loss`` is the mean over the logging
window (the ``interval`` iterations before the line); ``time`` is seconds per iteration.

:func:`parse_log` reads either format into a :class:`PublishedCurve`; the control plane
fetches the file into the weights cache at submission (jobs never download), and the trainer
compares its own learning rate, loss and mIoU with it (:func:`compare_lr`,
:func:`loss_gap`, :func:`miou_gap`). Both planes import this module; it imports nothing beyond
the standard library.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

#: A run is behind the published curve where its mIoU is lower by more than this many points
#: at an evaluation after warm-up.
MIOU_BEHIND_POINTS = 2.0
#: ... or where its loss (mean over the logging window) is higher than the published loss at
#: the same iteration by more than this fraction, after warm-up.
LOSS_BEHIND_FRACTION = 0.25
#: Decimal places mmcv rounds every logged float to (``TextLoggerHook._round_float``).
MMCV_DECIMALS = 5


class CurveFormatError(ValueError):
    """A training log that is not one of the formats :func:`parse_log` reads; the message
    names the line."""


@dataclass(frozen=True)
class TrainPoint:
    """One logged training window: ``iteration`` (1-based, the last of the window), ``lr``
    (first parameter group), ``loss`` (mean over the window), ``seconds_per_iter``."""

    iteration: int
    lr: float | None
    loss: float | None
    seconds_per_iter: float | None = None


@dataclass(frozen=True)
class ValPoint:
    """One evaluation: ``iteration`` of training and ``miou`` in percent."""

    iteration: int
    miou: float


@dataclass(frozen=True)
class PublishedCurve:
    """A published training curve.

    Attributes:
        source: where it came from (the recipe's ``reference.log``).
        train: the logged training windows, by iteration.
        val: the evaluations, by iteration.
        lr_decimals: the decimals the log rounded learning rates to (None: full precision).
    """

    source: str
    train: tuple[TrainPoint, ...]
    val: tuple[ValPoint, ...]
    lr_decimals: int | None = None
    _by_iteration: dict[int, TrainPoint] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_iteration.update((point.iteration, point) for point in self.train)

    @property
    def final_miou(self) -> float | None:
        """The last evaluation's mIoU (percent), None without evaluations."""
        return self.val[-1].miou if self.val else None

    @property
    def last_iteration(self) -> int:
        """The last iteration the log covers."""
        return max([p.iteration for p in self.train] + [p.iteration for p in self.val] + [0])

    def train_at(self, iteration: int) -> TrainPoint | None:
        """The training window logged at exactly ``iteration``, if any."""
        return self._by_iteration.get(iteration)

    def val_at_or_before(self, iteration: int) -> ValPoint | None:
        """The latest evaluation at or before ``iteration``."""
        earlier = [point for point in self.val if point.iteration <= iteration]
        return earlier[-1] if earlier else None

    def seconds_per_iter(self) -> float | None:
        """Median logged seconds per iteration (None where the log has no ``time``)."""
        times = [p.seconds_per_iter for p in self.train if p.seconds_per_iter is not None]
        return statistics.median(times) if times else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict, read back by :meth:`from_json`."""
        return {"source": self.source, "lr_decimals": self.lr_decimals,
                "train": [asdict(p) for p in self.train], "val": [asdict(p) for p in self.val]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublishedCurve:
        """The curve :meth:`to_json` wrote."""
        return cls(source=data["source"], lr_decimals=data.get("lr_decimals"),
                   train=tuple(TrainPoint(**p) for p in data["train"]),
                   val=tuple(ValPoint(**p) for p in data["val"]))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _lr(value: Any) -> float | None:
    if isinstance(value, dict):  # mmcv logs one lr per named optimizer: take the first
        value = next(iter(value.values()), None)
    if isinstance(value, list):
        value = value[0] if value else None
    return _number(value)


def parse_log(text: str, *, source: str = "", val_interval: int | None = None) -> PublishedCurve:
    """Read a published training log (mmcv ``*.log.json`` or mmengine ``scalars.json``).

    Args:
        text: the file's text, one JSON object per line (blank lines are skipped).
        source: recorded as :attr:`PublishedCurve.source`.
        val_interval: the evaluation interval (iterations) of the source config; used to place
            an mmcv val line, whose own ``iter`` is not the training iteration. None: at the
            iteration of the train line before it.

    Returns:
        The curve; mIoU in percent whatever the log used.

    Raises:
        CurveFormatError: a line is not a JSON object, or the file holds no training line
            (the message names the line or says what was found).
    """
    train: list[TrainPoint] = []
    val: list[ValPoint] = []
    mmcv = False
    last_train = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CurveFormatError(f"{source or 'training log'} line {number}: not JSON "
                                   f"({exc.msg})") from None
        if not isinstance(record, dict):
            raise CurveFormatError(f"{source or 'training log'} line {number}: not a JSON object")
        mode = record.get("mode")
        if mode is not None:
            mmcv = True
        miou = _number(record.get("mIoU"))
        if mode == "val" or (mode is None and miou is not None):
            if miou is None:
                continue
            if mode == "val":  # mmcv: iter counts validation images; fractions
                iteration = last_train
                if val_interval:
                    iteration = math.ceil(last_train / val_interval) * val_interval
                miou *= 100.0
            else:
                iteration = int(record.get("step") or record.get("iter") or last_train)
            val.append(ValPoint(iteration, miou))
            continue
        if mode not in (None, "train") or "loss" not in record and "lr" not in record:
            continue  # mmcv's first line (run information), or another mode
        raw = record.get("iter", record.get("step"))
        if not isinstance(raw, int) or isinstance(raw, bool):
            continue
        last_train = raw
        train.append(TrainPoint(raw, _lr(record.get("lr")), _number(record.get("loss")),
                                _number(record.get("time"))))
    if not train:
        raise CurveFormatError(f"{source or 'training log'}: no training lines (objects with "
                               "iter or step and loss or lr): not an mmcv *.log.json or an "
                               "mmengine scalars.json")
    return PublishedCurve(source=source, train=tuple(train), val=tuple(val),
                          lr_decimals=MMCV_DECIMALS if mmcv else None)


def compare_lr(curve: PublishedCurve, iteration: int, lr: float) -> str | None:
    """Where the published log has a training line at ``iteration``: None if ``lr`` (the
    learning rate of the run's first parameter group for that iteration) equals the published
    one, else a message saying both. Equal means equal after the log's own rounding (mmcv:
    5 decimals, so learning rates under about 1e-5 are compared coarsely), else within a
    relative 1e-6. None where the log has no line there."""
    point = curve.train_at(iteration)
    if point is None or point.lr is None:
        return None
    ours = round(lr, curve.lr_decimals) if curve.lr_decimals is not None else lr
    if math.isclose(ours, point.lr, rel_tol=1e-6, abs_tol=1e-12):
        return None
    return (f"learning rate at iteration {iteration} is {lr:.6g}, the published log has "
            f"{point.lr:.6g} ({curve.source}): the schedule differs from the source's")


def loss_gap(curve: PublishedCurve, iteration: int, loss: float) -> float | None:
    """``loss / published - 1`` where the log has a loss at ``iteration`` (None elsewhere):
    positive when the run's loss (the mean over the same logging window) is higher."""
    point = curve.train_at(iteration)
    if point is None or point.loss is None or point.loss <= 0:
        return None
    return loss / point.loss - 1.0


def miou_gap(curve: PublishedCurve, iteration: int, miou: float) -> tuple[float, ValPoint] | None:
    """``(miou - published, the published evaluation)`` against the latest published
    evaluation at or before ``iteration`` (points of mIoU, percent; negative: behind); None
    before the first published evaluation."""
    point = curve.val_at_or_before(iteration)
    if point is None:
        return None
    return miou - point.miou, point


def iterations_text(count: int) -> str:
    """``80k`` for 80000, ``1500`` for 1500."""
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


def describe_progress(progress: dict[str, Any]) -> str | None:
    """What ``segctl status`` shows of a run's place against its published curve, from its
    ``progress.json`` (written by the trainer's guard): e.g. ``41.20 (published 43.00 at
    80k)``, ending in ``, behind`` where the run is behind now; None where the run has not
    been compared with a published evaluation yet."""
    published = progress.get("published") or {}
    miou = progress.get("miou")
    if not isinstance(published, dict) or "miou" not in published or \
            not isinstance(miou, (int, float)):
        return None
    text = (f"{miou:.2f} (published {published['miou']:.2f} at "
            f"{iterations_text(int(published['iteration']))})")
    return text + (", behind" if progress.get("behind") else "")

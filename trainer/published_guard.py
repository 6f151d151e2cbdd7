"""A training run against its published curve (``reference.log``), while it trains.

At every logging window the guard compares the learning rate of the model's first parameter
(what mmcv and mmengine log as ``lr``) and the loss with the published log at the same
iteration; at every validation, the mIoU with the latest published evaluation. What it finds
goes to ``progress.json`` (``published``: the last comparison; ``behind``: why the run is
behind now, else None; ``fell_behind``: whether it ever was), to MLflow (the published curve
as ``published_curve/*`` metrics under the run's own, the tag ``segctl.behind_published``) and,
once, a warning in the job log. A run that falls behind keeps running.

A learning rate that differs from the published one is a configuration error when the run
follows the published schedule (its ``schedule.max_iters`` is the log's last iteration): the
guard raises :class:`ScheduleMismatchError` and the job fails saying so. A run with another
schedule (a shorter test, a scaled learning rate) is compared on loss and mIoU only.

The published log is fetched into the weights cache at submission (jobs never download); a
job that finds no cached copy trains without the comparison and says so in its log.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any

from segctl.io.weights_cache import NotCachedError, cached_path, is_remote, local_path
from segctl.recipe import Recipe
from segctl.recipe import tracking_names as names
from segctl.recipe.published_curve import (
    LOSS_BEHIND_FRACTION,
    MIOU_BEHIND_POINTS,
    CurveFormatError,
    PublishedCurve,
    compare_lr,
    iterations_text,
    loss_gap,
    miou_gap,
    parse_log,
)

log = logging.getLogger(__name__)

#: The loss is compared as the mean over this many of the last logging windows both logs have.
LOSS_WINDOWS = 5
#: At most this many points of each published series are logged to MLflow.
MAX_CURVE_POINTS = 400


class ScheduleMismatchError(RuntimeError):
    """The run's learning rate differs from the published log's at the same iteration while
    the run follows the published schedule."""


def load_curve(recipe: Recipe, weights_dir: str | Path) -> PublishedCurve | None:
    """The recipe's published curve (``reference.log``) from the weights cache (a URL) or in
    place (a local path); None where the recipe names none, or the file is not cached or
    cannot be read (a warning is logged: training goes on without the comparison)."""
    source = recipe.reference.log if recipe.reference is not None else None
    if not source:
        return None
    try:
        path = cached_path(source, weights_dir) if is_remote(source) else local_path(source)
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        return parse_log(text, source=source, val_interval=recipe.schedule.val_interval)
    except (NotCachedError, OSError, CurveFormatError) as exc:
        log.warning("published curve %s not used: %s", source, exc)
        return None


def first_parameter_lr(model: Any, optimizer: Any) -> float | None:
    """The learning rate of the optimizer group holding the model's first parameter (what
    mmcv's ``TextLoggerHook`` and mmengine log as ``lr``); None if no group holds it."""
    first = next(iter(model.parameters()), None)
    for group in optimizer.param_groups:
        if any(param is first for param in group["params"]):
            return float(group["lr"])
    return None


class CurveGuard:
    """Compares one run with its published curve and records what it finds.

    Args:
        curve: the published curve.
        max_iters: the run's ``schedule.max_iters``: equal to the log's last iteration means
            the run follows the published schedule, so learning rates must match.
        warmup_iters: the run's warm-up; nothing is judged "behind" before its end.
        progress: the run's :class:`trainer.progress.Progress`.
        tracker: the run's :class:`trainer.tracking.Tracker`.
    """

    def __init__(self, curve: PublishedCurve, *, max_iters: int, warmup_iters: int,
                 progress: Any, tracker: Any) -> None:
        self.curve = curve
        self.enforce_lr = max_iters == curve.last_iteration
        self.warmup_iters = warmup_iters
        self.progress = progress
        self.tracker = tracker
        self._losses: deque[tuple[float, float]] = deque(maxlen=LOSS_WINDOWS)
        self._warned = False
        self.fell_behind = bool(progress.state.get("fell_behind"))

    def start(self, iteration: int) -> None:
        """At the start of a job: log the published curve to MLflow (a first job only),
        tag the run with its source, and say in the log how the run will be compared."""
        how = "learning rate, loss and mIoU" if self.enforce_lr else \
            "loss and mIoU (the run's schedule is not the published one)"
        log.info("comparing with the published curve %s (%d training lines, %d evaluations, "
                 "final mIoU %s): %s", self.curve.source, len(self.curve.train),
                 len(self.curve.val), self.curve.final_miou, how)
        if iteration > 0:
            return
        self.tracker.set_tags({names.PUBLISHED_CURVE: self.curve.source,
                               names.BEHIND_PUBLISHED: "false"})
        for point in _thin(self.curve.train, MAX_CURVE_POINTS):
            metrics = {f"{names.PUBLISHED_CURVE_PREFIX}loss": point.loss,
                       f"{names.PUBLISHED_CURVE_PREFIX}lr": point.lr}
            self.tracker.log_metrics({k: v for k, v in metrics.items() if v is not None},
                                     step=point.iteration)
        for val in self.curve.val:
            self.tracker.log_metrics({f"{names.PUBLISHED_CURVE_PREFIX}mIoU": val.miou},
                                     step=val.iteration)

    def on_train_log(self, iteration: int, lr: float | None, loss: float | None) -> None:
        """After a logging window ending at ``iteration``.

        Raises:
            ScheduleMismatchError: the run follows the published schedule and ``lr`` differs
                from the published learning rate at ``iteration``.
        """
        if lr is not None and self.enforce_lr:
            mismatch = compare_lr(self.curve, iteration, lr)
            if mismatch:
                raise ScheduleMismatchError(mismatch)
        point = self.curve.train_at(iteration)
        if loss is None or point is None or loss_gap(self.curve, iteration, loss) is None:
            return
        self._losses.append((loss, point.loss))
        ours = sum(pair[0] for pair in self._losses) / len(self._losses)
        theirs = sum(pair[1] for pair in self._losses) / len(self._losses)
        behind = None
        if iteration > self.warmup_iters and ours > theirs * (1 + LOSS_BEHIND_FRACTION):
            behind = (f"loss {ours:.4f} vs published {theirs:.4f} (mean of the last "
                      f"{len(self._losses)} logging windows to iteration {iteration})")
        self._record({"iteration": iteration, "loss": round(theirs, 6)}, behind, "loss")

    def on_validation(self, iteration: int, miou: float) -> None:
        """After a validation at ``iteration`` with ``miou`` (percent)."""
        found = miou_gap(self.curve, iteration, miou)
        if found is None:
            return
        gap, point = found
        behind = None
        if iteration > self.warmup_iters and gap < -MIOU_BEHIND_POINTS:
            behind = (f"mIoU {miou:.2f} vs published {point.miou:.2f} at "
                      f"{iterations_text(point.iteration)} ({gap:+.2f})")
        self._record({"iteration": point.iteration, "miou": round(point.miou, 4),
                      "gap": round(gap, 4)}, behind, "miou")

    def _record(self, published: dict[str, Any], behind: str | None, what: str) -> None:
        state = dict(self.progress.state.get("published") or {})
        state.update(published if what == "miou" else {"loss_iteration": published["iteration"],
                                                        "loss": published["loss"]})
        state["source"] = self.curve.source
        reasons = dict(self.progress.state.get("behind_reasons") or {})
        if behind:
            reasons[what] = behind
        else:
            reasons.pop(what, None)
        now_behind = "; ".join(reasons.values()) or None
        if now_behind and not self.fell_behind:
            self.fell_behind = True
            self.tracker.set_tags({names.BEHIND_PUBLISHED: "true"})
        if now_behind and not self._warned:
            self._warned = True
            log.warning("behind the published curve: %s (training goes on)", now_behind)
        self.progress.update(published=state, behind=now_behind, behind_reasons=reasons,
                             fell_behind=self.fell_behind)


def _thin(points, limit: int) -> list:
    """At most ``limit`` of ``points``, evenly spaced, the last one kept."""
    points = list(points)
    if len(points) <= limit:
        return points
    step = len(points) / limit
    chosen = [points[int(i * step)] for i in range(limit - 1)]
    return chosen + [points[-1]]


def published_history(curve: PublishedCurve | None) -> dict[str, list[tuple[int, float]]] | None:
    """The curve as :func:`trainer.visuals.learning_curve_png` draws it under the run's own:
    ``{"loss": [(iteration, loss)], "mIoU": [(iteration, percent)]}``; None without one."""
    if curve is None:
        return None
    return {names.LOSS: [(p.iteration, p.loss) for p in curve.train if p.loss is not None],
            names.MIOU: [(p.iteration, p.miou) for p in curve.val]}

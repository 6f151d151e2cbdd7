"""``RUN_DIR/progress.json``: the run's live state, rewritten atomically by rank 0.

``segctl status`` reads this file (it works with MLflow down; both planes read it with
:meth:`segctl.recipe.rundir.RunDir.read_progress`). Fields:

- ``phase``: ``"starting" | "training" | "evaluating" | "done" | "failed"``;
- ``iteration``, ``max_iters``: optimizer steps done and planned (with
  ``train.grad_accum_steps`` N, a step is N micro-batches; ``seconds_per_iter`` covers all N);
- ``loss``: the latest logged training loss (None before the first);
- ``lr``: the latest learning rate of the base parameter group;
- ``miou``: the latest evaluation mIoU in percent (None before the first);
- ``seconds_per_iter``: moving average of wall seconds per iteration;
- ``eta_seconds``: ``seconds_per_iter * (max_iters - iteration)`` (None until measured);
- ``updated_at``: unix seconds of the write;
- ``reason``: present only with ``phase: "failed"``: why, e.g.
  ``"requeue limit (3) reached after time limit"`` or ``"RuntimeError: <message>"`` (the
  secrets of credentials inside URLs shown as ``***``);
- ``resumed_from``, ``rejected_checkpoints``: present only when the job resumed from an older
  checkpoint because newer ones were damaged: the file used, and ``"<file>: <reason>"`` for
  each one set aside (:func:`trainer.checkpoint.find_resume_state`);
- ``published``, ``behind``, ``behind_reasons``, ``fell_behind``: present only for a recipe
  with a published training log (``reference.log``): the latest comparison with it (source,
  the published mIoU and its iteration, the gap in points, the published loss), why the run
  is behind it now (None where it is not), the reasons by kind (``loss``, ``miou``), and
  whether it ever fell behind (:mod:`trainer.published_guard`).

A job continues the file an earlier job of the run left: ``iteration``, ``loss``, ``lr``,
``miou`` and the published-curve fields are kept at start (``phase: "starting"``), so a
requeued or resumed job never shows iteration 0, nor an older iteration than the file did before its first resumed iteration
(:meth:`Progress.start_training`), even when it fails first.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from segctl.io.atomic import atomic_write_json
from segctl.recipe.rundir import RunDir
from segctl.recipe.secrets import redact_url_credentials

PHASES = ("starting", "training", "evaluating", "done", "failed")
#: Fields a new job keeps from the run's existing ``progress.json``.
CARRIED = ("iteration", "loss", "lr", "miou", "published", "behind", "behind_reasons",
           "fell_behind")
#: Written by the published-curve guard (:mod:`trainer.published_guard`).
PUBLISHED_FIELDS = ("published", "behind", "behind_reasons", "fell_behind")

log = logging.getLogger(__name__)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Progress:
    """Keeps the run's state and rewrites ``progress.json`` on every :meth:`update`.

    Args:
        run_dir: the run directory (created if missing).
        max_iters: planned optimizer steps.
        enabled: False on ranks other than 0: updates are then kept in memory only.
        smoothing: weight of the newest measurement in the seconds-per-iteration moving average
            (exponential, in (0, 1]).
        clock: source of wall seconds (``time.monotonic``); ``updated_at`` uses ``time.time``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        max_iters: int,
        *,
        enabled: bool = True,
        smoothing: float = 0.1,
        clock=time.monotonic,
    ) -> None:
        run = RunDir(run_dir)
        self.path = run.progress
        self.enabled = enabled
        self.smoothing = smoothing
        self.clock = clock
        self.state: dict[str, Any] = {
            "phase": "starting",
            "iteration": 0,
            "max_iters": int(max_iters),
            "loss": None,
            "lr": None,
            "miou": None,
            "seconds_per_iter": None,
            "eta_seconds": None,
            "updated_at": None,
        }
        self._mark: tuple[int, float] | None = None
        self._write_failed = False
        earlier = run.read_progress()
        self.state.update({k: earlier[k] for k in CARRIED if k in earlier})

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` (any of the documented keys except the derived ones) and write.

        Passing ``iteration`` also updates ``seconds_per_iter`` and ``eta_seconds`` from the
        time since the previous ``iteration`` given. Passing ``phase`` other than
        ``"training"`` restarts that timing, so evaluation time is not counted per iteration.

        Raises:
            ValueError: unknown field or phase.
        """
        unknown = set(fields) - {"phase", "iteration", "loss", "lr", "miou", "reason",
                                 "resumed_from", "rejected_checkpoints", *PUBLISHED_FIELDS}
        if unknown:
            raise ValueError(f"unknown progress fields {sorted(unknown)}")
        phase = fields.get("phase")
        if phase is not None and phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if "iteration" in fields:
            self._time_iteration(int(fields["iteration"]))
        for key in ("loss", "lr", "miou"):
            if key in fields:
                fields[key] = _finite(fields[key])
        if isinstance(fields.get("reason"), str):  # may quote a URL with credentials
            fields["reason"] = redact_url_credentials(fields["reason"])
        if phase is not None and phase != "failed":
            self.state.pop("reason", None)
        self.state.update(fields)
        if phase is not None and phase != "training":
            self._mark = None
        self.write()

    def start_training(self, iteration: int) -> None:
        """``phase: "training"`` from ``iteration`` (the resume point). An older iteration than
        the file shows (a resume from an earlier checkpoint) is not written: the file keeps its
        iteration until the first resumed iteration is logged."""
        if iteration >= int(self.state.get("iteration") or 0):
            self.update(phase="training", iteration=iteration)
        else:
            self.mark(iteration)
            self.update(phase="training")

    def mark(self, iteration: int) -> None:
        """Restart the seconds-per-iteration timing at ``iteration`` without measuring, so
        one-off costs before it (data-loader start-up, the first step's allocations) are not
        counted as iteration time. Writes nothing."""
        self._mark = (int(iteration), self.clock())

    def _time_iteration(self, iteration: int) -> None:
        now = self.clock()
        if self._mark is not None and iteration > self._mark[0]:
            per_iter = (now - self._mark[1]) / (iteration - self._mark[0])
            old = self.state["seconds_per_iter"]
            self.state["seconds_per_iter"] = (
                per_iter if old is None else old + self.smoothing * (per_iter - old)
            )
        self._mark = (iteration, now)
        spi = self.state["seconds_per_iter"]
        remaining = max(self.state["max_iters"] - iteration, 0)
        self.state["eta_seconds"] = None if spi is None else spi * remaining

    def write(self) -> None:
        """Rewrite ``progress.json`` (rank 0 only). A failed write (e.g. a full disk) is
        logged, once, and never stops the job: the file keeps its previous content."""
        if not self.enabled:
            return
        self.state["updated_at"] = time.time()
        try:
            atomic_write_json(self.path, self.state)
        except OSError as exc:
            if not self._write_failed:
                log.warning("cannot write %s: %s", self.path, exc)
            self._write_failed = True
        else:
            self._write_failed = False

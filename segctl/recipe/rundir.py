"""The names of every file in a run directory: the contract between the control plane and the
trainer, written down once.

Layout of ``<runs dir>/<run id>/``::

    recipe.json                 resolved recipe (written once by the control plane, read by
                                the job); storage-option secrets only as ${VAR} references
    progress.json               rewritten atomically by rank 0 of a training job
    checkpoints/                iter_NNNNNNN.pt (everything needed to continue after
                                iteration N), final.pt, final_raw.pt (the raw weights beside
                                an EMA final.pt), iter_NNNNNNN.pt.rejected (set aside on resume)
    eval/                       <label>.json and <label>.txt per evaluation, and
                                <label>-cityscapes-submission.zip
    jobs/                       submitit folder: pickled submissions, logs, results (never read
                                by the control plane) and the JSON exit records it reads
                                (<job_id>_<task>_exit.json)
    mlflow_run_id               the MLflow run this run logs to
    tracking-buffer.jsonl       what a tracking outage held back (images under
                                tracking-buffer/), replayed by the job or ``segctl sync``
    tracking-journal.jsonl      every record logged, kept to rebuild a lost MLflow run (the
                                images delivered, moved from tracking-buffer/, under
                                tracking-journal/)
    overrides.json              how the run differs from its recipe file (``--set``,
                                ``--sweep``), secrets hidden: written once at registration,
                                tagged in MLflow by the job (absent for older runs)

Both planes import this module; it imports nothing beyond the standard library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``iter_NNNNNNN.pt``: the name of the training checkpoint after iteration N (at least seven
#: digits, zero-padded). The one definition; :mod:`trainer.checkpoint` and the control plane's
#: checkpoint copies both match names with it.
ITERATION_CHECKPOINT = re.compile(r"^iter_(\d{7,})\.pt$")


def iteration_checkpoint_name(iteration: int) -> str:
    """``iter_{iteration:07d}.pt``, e.g. ``iter_0000400.pt`` for iteration 400."""
    return f"iter_{iteration:07d}.pt"


def checkpoint_iteration(name: str) -> int | None:
    """The iteration of a checkpoint file name (``iter_0000400.pt`` -> 400), or None for any
    other name (``final.pt``, ``iter_0000400.pt.rejected``, ``iter_12.pt``)."""
    match = ITERATION_CHECKPOINT.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class RunDir:
    """A run directory and the path of each file in it (see the module text for the layout).

    Nothing is created or read on construction; the attributes are plain paths.

    Attributes:
        path: the run directory, ``<runs dir>/<run id>``.
    """

    path: Path

    RECIPE = "recipe.json"
    PROGRESS = "progress.json"
    CHECKPOINTS = "checkpoints"
    FINAL = "final.pt"
    FINAL_RAW = "final_raw.pt"
    EVAL = "eval"
    JOBS = "jobs"
    MLFLOW_RUN_ID = "mlflow_run_id"
    TRACKING_BUFFER = "tracking-buffer.jsonl"
    TRACKING_BUFFER_DIR = "tracking-buffer"
    TRACKING_JOURNAL = "tracking-journal.jsonl"
    TRACKING_JOURNAL_DIR = "tracking-journal"
    OVERRIDES = "overrides.json"

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        """The run id (the directory's name)."""
        return self.path.name

    @property
    def recipe(self) -> Path:
        """``recipe.json``: the resolved recipe."""
        return self.path / self.RECIPE

    @property
    def progress(self) -> Path:
        """``progress.json``: the training job's progress (rank 0)."""
        return self.path / self.PROGRESS

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.path / self.CHECKPOINTS

    def iteration_checkpoint(self, iteration: int) -> Path:
        """``checkpoints/iter_{iteration:07d}.pt``."""
        return self.checkpoints / iteration_checkpoint_name(iteration)

    @property
    def final(self) -> Path:
        """``checkpoints/final.pt``: the weights evaluated by default (the EMA weights when the
        recipe keeps an average)."""
        return self.checkpoints / self.FINAL

    @property
    def final_raw(self) -> Path:
        """``checkpoints/final_raw.pt``: the raw final weights beside an EMA ``final.pt``."""
        return self.checkpoints / self.FINAL_RAW

    @property
    def eval_dir(self) -> Path:
        """``eval/``: one table per evaluation."""
        return self.path / self.EVAL

    def eval_file(self, label: str, suffix: str) -> Path:
        """``eval/<label><suffix>``, e.g. ``eval_file("final-ms-flip", ".json")``."""
        return self.eval_dir / f"{label}{suffix}"

    @property
    def jobs(self) -> Path:
        """``jobs/``: the submitit folder of the run's jobs."""
        return self.path / self.JOBS

    @property
    def mlflow_run_id(self) -> Path:
        """``mlflow_run_id``: the MLflow run this run logs to."""
        return self.path / self.MLFLOW_RUN_ID

    @property
    def tracking_buffer(self) -> Path:
        """``tracking-buffer.jsonl``: records an outage held back."""
        return self.path / self.TRACKING_BUFFER

    @property
    def tracking_buffer_dir(self) -> Path:
        """``tracking-buffer/``: the images of buffered records."""
        return self.path / self.TRACKING_BUFFER_DIR

    @property
    def tracking_journal_dir(self) -> Path:
        """``tracking-journal/``: delivered images, moved here from ``tracking-buffer/``, kept
        with the journal to rebuild a lost MLflow run."""
        return self.path / self.TRACKING_JOURNAL_DIR

    @property
    def tracking_journal(self) -> Path:
        """``tracking-journal.jsonl``: every record logged, for rebuilding a lost MLflow run."""
        return self.path / self.TRACKING_JOURNAL

    @property
    def overrides(self) -> Path:
        """``overrides.json``: how the run differs from its recipe file (``--set``,
        ``--sweep``), secrets hidden; see :mod:`segctl.recipe.overrides`."""
        return self.path / self.OVERRIDES

    def read_progress(self) -> dict[str, Any]:
        """``progress.json`` as a dict; ``{}`` when it is missing, unreadable or being
        replaced (it is rewritten atomically, so a reader sees the old or the new file)."""
        try:
            value = json.loads(self.progress.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

"""The callables submitit runs inside a job. They import the trainer lazily, in the job.

Both are :class:`submitit.helpers.Checkpointable`: on preemption or an approaching time limit
submitit calls ``checkpoint`` and requeues the same callable with the same arguments; training
then resumes from the run's latest checkpoint, evaluation simply starts again.
"""

from __future__ import annotations

from pathlib import Path

import submitit


class TrainJob(submitit.helpers.Checkpointable):
    """Train (or resume) the run in ``run_dir``; returns the final metrics dict."""

    def __call__(self, run_dir: str) -> dict:
        from trainer.entry import run_training

        return run_training(Path(run_dir))


class EvalJob(submitit.helpers.Checkpointable):
    """Evaluate a run's checkpoint; writes ``eval/<label>.{json,txt}`` and returns the metrics."""

    def __call__(
        self, run_dir: str, checkpoint: str | None, ms_flip: bool | None, label: str
    ) -> dict:
        from trainer.entry import run_evaluation

        return run_evaluation(Path(run_dir), checkpoint=checkpoint, ms_flip=ms_flip, name=label)

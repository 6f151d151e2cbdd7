"""The callables submitit runs inside a job. They import the trainer lazily, in the job.

Both are :class:`submitit.helpers.Checkpointable`: on preemption or an approaching time limit
submitit calls ``checkpoint`` (the inherited one: the same callable with the same arguments)
and requeues the job with ``scontrol requeue``. A requeued job, whether submitit or an
administrator requeued it, starts the callable from the beginning.

- Training defers submitit's signal handler to a safe point: the loop stops after the current
  iteration on every rank, writes a checkpoint, tears the process group down, and only then
  submitit checkpoints the callable and requeues (``trainer.preemption``); the requeued job
  resumes from the run's latest checkpoint and continues the same MLflow run. When submitit
  refuses (more time-outs than ``cluster.max_requeues``, submitit's ``max_num_timeout``) the
  job fails and ``progress.json`` says why (``reason``).
- Evaluation keeps submitit's handler as it is: the job is requeued at once and starts again.

Both take ``weights_dir``, the pretrained-weights cache (:mod:`segctl.weights`) where the job
finds the files its recipe (or ``checkpoint``) names by URL; jobs never download them.
"""

from __future__ import annotations

from pathlib import Path

import submitit


class TrainJob(submitit.helpers.Checkpointable):
    """Train (or resume) the run in ``run_dir``; returns the final metrics dict."""

    def __call__(self, run_dir: str, weights_dir: str | None = None) -> dict:
        from trainer.entry import run_training

        return run_training(Path(run_dir), weights_dir=weights_dir)


class EvalJob(submitit.helpers.Checkpointable):
    """Evaluate a run's checkpoint; writes ``eval/<label>.{json,txt}`` and returns the metrics
    (``output_format="cityscapes-submission"``: ``eval/<label>-cityscapes-submission.zip``)."""

    def __call__(
        self, run_dir: str, checkpoint: str | None, ms_flip: bool | None, label: str,
        output_format: str = "metrics", published: bool = False, weights_dir: str | None = None,
    ) -> dict:
        from trainer.entry import run_evaluation

        return run_evaluation(Path(run_dir), checkpoint=checkpoint, ms_flip=ms_flip, name=label,
                              output_format=output_format, published=published,
                              weights_dir=weights_dir)

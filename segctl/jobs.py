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

Both write a JSON exit record when their work returns or raises (:func:`exit_record`), from
which the control plane learns a local job's outcome without unpickling submitit's result file.
Every task (rank) writes its own, ``<job_id>_<rank>_exit.json`` in the job's submitit folder
(:func:`segctl.executors.exit_record_path`); ``segctl status`` reads rank 0's.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import submitit

from segctl.recipe.eval_request import EvalRequest

#: Longest ``error`` message kept in an exit record, in characters.
ERROR_MAX_CHARS = 2000


@contextmanager
def exit_record(kind: str) -> Iterator[None]:
    """Write this task's exit record when the block returns or raises; nothing outside a
    submitit job (``SUBMITIT_FOLDER`` unset).

    The record of a previous start of the same job and task (a requeued job keeps its id) is
    removed on entry, so a record always speaks of the current start. On leaving:

    - the block returned: ``outcome: success``;
    - it raised an exception (``KeyboardInterrupt`` included: a cancelled local job):
      ``outcome: failed`` with ``error_type`` and ``error`` (the message on one line, at most
      :data:`ERROR_MAX_CHARS` characters, credentials inside URLs shown as ``user:***``), then
      the exception goes on;
    - ``SystemExit``: no record. submitit ends a job that way when it requeues it (the local
      controller then starts the task again); a task that ends without a record counts as
      failed once its controller is gone.

    The record is written atomically (a temporary file in the same folder, then
    ``os.replace``), mode 0600. Failing to write it is reported on stderr and never hides the
    job's own outcome.
    """
    if "SUBMITIT_FOLDER" not in os.environ:
        yield
        return
    from segctl.executors import exit_record_path
    from segctl.recipe.secrets import redact_url_credentials

    env = submitit.JobEnvironment()
    path = exit_record_path(env.paths.folder, env.job_id, env.global_rank)
    base = {"kind": kind, "job_id": env.job_id, "task": env.global_rank, "pid": os.getpid(),
            "host": socket.gethostname(), "started_at": time.time()}
    path.unlink(missing_ok=True)
    try:
        yield
    except SystemExit:
        raise
    except BaseException as exc:
        message = " ".join(redact_url_credentials(str(exc)).split())[:ERROR_MAX_CHARS]
        _write_record(path, {**base, "outcome": "failed", "error_type": type(exc).__name__,
                             "error": message, "ended_at": time.time()})
        raise
    _write_record(path, {**base, "outcome": "success", "ended_at": time.time()})


def _write_record(path: Path, record: dict) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        print(f"segctl: cannot write the exit record {path}: {exc}", file=sys.stderr)


class TrainJob(submitit.helpers.Checkpointable):
    """Train (or resume) the run in ``run_dir``; returns the final metrics dict."""

    def __call__(self, run_dir: str, weights_dir: str | None = None) -> dict:
        with exit_record("train"):
            from trainer.entry import run_training

            return run_training(Path(run_dir), weights_dir=weights_dir)


class EvalJob(submitit.helpers.Checkpointable):
    """Evaluate a run's checkpoint as ``request`` says (:class:`segctl.recipe.eval_request.
    EvalRequest`, resolved by :func:`segctl.submission.plan_evaluation`); writes
    ``eval/<label>.{json,txt}`` and returns the metrics (output format
    ``cityscapes-submission``: ``eval/<label>-cityscapes-submission.zip``)."""

    def __call__(
        self, run_dir: str, request: EvalRequest, weights_dir: str | None = None,
    ) -> dict:
        with exit_record("eval"):
            from trainer.entry import run_evaluation

            return run_evaluation(Path(run_dir), request, weights_dir=weights_dir)

"""Stopping training at a safe point when Slurm preempts or times out a job, then requeueing.

The signal path inside a submitit Slurm job (N tasks, one process each):

1. Slurm sends the preemption signal (submitit's ``JobEnvironment.USR_SIG``, ``SIGUSR2`` unless
   ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise) to every process of the job step: by
   ``scancel --signal=USR2 JOBID``, or ``signal_delay_s`` seconds before the time limit
   (submitit renders ``#SBATCH --signal=USR2@<delay>``).
2. submitit's job entry (``submitit/core/submission.py``, ``process_job``) installed
   ``SignalHandler.checkpoint_and_try_requeue`` (``submitit/core/job_environment.py``) for it
   before calling the job. :meth:`StopSignal.install` keeps that handler and puts in its place
   one that only records the signal, in the installing process only (a data-loader worker that
   received it must not act; workers are also started with it blocked, see
   :meth:`StopSignal.blocked`).
3. After each iteration the loop calls :meth:`StopSignal.should_stop`: every rank contributes
   its flag to one all-reduce, so all ranks stop after the same iteration. An iteration is one
   optimizer step: with gradient accumulation (``train.grad_accum_steps``) a signal that
   arrives between two micro-batches of a step is acted on once the step is complete, so the
   checkpoint never holds a half-accumulated step (none can: gradients are not stored). The
   loop writes a checkpoint (rank 0, to a temporary name then renamed: the SIGKILL that
   follows the grace time may land mid-write) and leaves; the entry point closes the tracker
   and tears the process group down (a barrier).
4. :meth:`StopSignal.hand_over` calls submitit's handler. On rank 0 it calls the job's
   ``checkpoint`` (``segctl.jobs.TrainJob``: the same call again), dumps it, runs
   ``scontrol requeue JOBID`` (so ``scontrol`` must be on the compute node's ``PATH``) and exits
   with ``sys.exit(-1)``; other ranks return and their task ends normally. The requeued job
   starts the callable from the beginning and resumes from the latest checkpoint.

submitit counts a signal as a time-out when the job has run for at least
``min(0.8 * limit, limit - 10 min)``: with ``timeout_min <= 10`` every signal is a time-out.
Time-outs use up ``max_num_timeout`` (the recipe's ``cluster.max_requeues``), preemptions do
not; past the bound submitit raises :class:`submitit.core.utils.UncompletedJobError` instead
of requeueing, which :meth:`StopSignal.hand_over` lets through for the entry point to record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from trainer.distributed import any_process

log = logging.getLogger(__name__)

#: What :meth:`StopSignal.failure_reason` says when submitit refused to requeue after time-outs.
TIMEOUT_LIMIT_REASON = "requeue limit ({limit}) reached after time limit"


def preemption_signal() -> signal.Signals:
    """The signal submitit requeues on: ``SIG`` + ``SUBMITIT_PREEMPT_SIGNAL`` (default USR2).

    Read the same way as ``submitit.JobEnvironment.USR_SIG``.

    Raises:
        ValueError: the variable names no signal.
    """
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL names no signal: {name}") from None


class StopSignal:
    """A preemption signal turned into a flag that the training loop reads at safe points.

    Use :meth:`install` (a no-op unless a Python handler, submitit's, is already installed for
    the signal, so in-process runs keep the default behaviour).

    Attributes:
        signum: the watched signal.
        received_at: ``time.time()`` of the first signal received, or None.
        stopped: whether :meth:`should_stop` said stop (on every rank alike, whichever rank
            received the signal).
        active: whether the flag handler is installed.
    """

    def __init__(self, signum: signal.Signals | None = None) -> None:
        self.signum = signum if signum is not None else preemption_signal()
        self.received_at: float | None = None
        self.stopped = False
        self.active = False
        self._previous: Any = None
        self._pid = os.getpid()

    # --- installation -------------------------------------------------------------------------

    @classmethod
    def install(cls, signum: signal.Signals | None = None) -> StopSignal:
        """Watch ``signum`` in this (main-thread) process, keeping its current handler.

        Installs nothing when the current handler is not a Python callable (``SIG_DFL``,
        ``SIG_IGN``): outside a submitit job there is nobody to hand over to.
        """
        stop = cls(signum)
        previous = signal.getsignal(stop.signum)
        if callable(previous):
            stop._previous = previous
            stop._pid = os.getpid()
            signal.signal(stop.signum, stop._record)
            stop.active = True
        return stop

    def uninstall(self) -> None:
        """Put the kept handler back (idempotent); a signal recorded stays recorded."""
        if self.active and os.getpid() == self._pid:
            signal.signal(self.signum, self._previous)
        self.active = False

    def _record(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked child inherited the handler: not ours to act
            return
        if self.received_at is None:
            self.received_at = time.time()
            log.warning(
                "received %s: stopping after this iteration to checkpoint and requeue",
                signal.Signals(signum).name,
            )

    @contextlib.contextmanager
    def blocked(self) -> Iterator[None]:
        """Block the stop signal in this thread while child processes are started.

        Slurm signals every process of the step, a spawned data-loader worker (fork + exec)
        included. A child started meanwhile inherits the blocked mask, so the signal never runs
        its default action (termination) there: stopping is the parent's business. ``SIGTERM``
        is left alone: multiprocessing and the data loader end workers with it, and a blocked
        one would hang the interpreter's exit on any worker still alive then. A signal sent to
        this process meanwhile is delivered once unblocked.
        """
        if not self.active:
            yield
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {self.signum})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    # --- the loop's question ------------------------------------------------------------------

    @property
    def received(self) -> bool:
        """Whether this process received the signal."""
        return self.received_at is not None

    def should_stop(self, accelerator) -> bool:
        """True on every rank when any rank received the signal (a collective: call it on all
        ranks after the same iteration)."""
        if not self.active:  # not in a submitit job: no rank watches, nobody to hand over to
            return False
        if any_process(self.received, accelerator):
            self.stopped = True
        return self.stopped

    # --- after the loop -----------------------------------------------------------------------

    def hand_over(self) -> None:
        """Run the kept (submitit) handler for the recorded signal: checkpoint the callable,
        ``scontrol requeue``, exit (rank 0); return (other ranks).

        Call after the training checkpoint is written and the process group is torn down.

        Raises:
            SystemExit: submitit requeued the job (rank 0).
            submitit.core.utils.UncompletedJobError: submitit would not requeue (time-outs
                beyond ``max_num_timeout``); see :meth:`failure_reason`.
        """
        self.uninstall()
        previous: Callable[[int, Any], None] | None = self._previous
        if previous is None:
            return
        log.info("handing %s over to submitit's handler", self.signum.name)
        previous(int(self.signum), None)

    @staticmethod
    def failure_reason(error: BaseException, max_requeues: int) -> str:
        """The ``progress.json`` reason for submitit's refusal to requeue (``error``)."""
        text = str(error)
        if "timed-out too many times" in text:
            return TIMEOUT_LIMIT_REASON.format(limit=max_requeues)
        return text.removeprefix("Job not requeued because: ").rstrip(".") or type(error).__name__

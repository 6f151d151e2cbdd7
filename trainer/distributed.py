"""Process groups and numerics: the only module that creates, converts for, or tears down them.

A job process calls, in order: :func:`export_submitit_env` (inside a multi-task submitit job it
turns submitit's job environment into the ``RANK``/``WORLD_SIZE``/``MASTER_*`` variables that
``torch.distributed`` reads), :func:`build_accelerator` (NCCL and bf16 autocast on CUDA; gloo
and float32 with ``cpu=True`` elsewhere), :func:`convert_sync_batchnorm` on the model, and
:func:`teardown` before returning.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Ports tried for the rendezvous are MASTER_PORT_BASE + (job id hash % MASTER_PORT_SPAN).
MASTER_PORT_BASE = 20000
MASTER_PORT_SPAN = 20000


@dataclass(frozen=True)
class JobInfo:
    """Where this process runs, for tags and logs.

    Attributes:
        executor: ``"slurm"`` or ``"local"`` inside a submitit job, ``"inprocess"`` otherwise.
        job_id: the scheduler's job id (``""`` outside submitit).
        num_tasks: tasks (processes) of the job; 1 outside submitit.
    """

    executor: str
    job_id: str
    num_tasks: int


def _submitit_environment():
    """submitit's ``JobEnvironment`` when running inside a submitit job, else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        import submitit

        return submitit.JobEnvironment()
    except Exception as exc:  # a broken or foreign environment is treated as "not submitit"
        log.warning("cannot read the submitit job environment: %s", exc)
        return None


def job_info() -> JobInfo:
    """Describe the surrounding submitit job, or an in-process run."""
    env = _submitit_environment()
    if env is None:
        return JobInfo(executor="inprocess", job_id="", num_tasks=1)
    return JobInfo(executor=env.cluster, job_id=str(env.job_id), num_tasks=env.num_tasks)


def export_submitit_env() -> bool:
    """Export ``torch.distributed`` rendezvous variables from submitit's job environment.

    Does nothing outside submitit or when the job has one task. Otherwise sets ``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` (the first node of
    the job, as submitit lists it) and ``MASTER_PORT`` (derived from the job id, so every task
    computes the same one) unless the variable is already set. Multi-node Slurm address
    resolution belongs here.

    Returns:
        True when variables were exported.
    """
    env = _submitit_environment()
    if env is None or env.num_tasks <= 1:
        return False
    port = MASTER_PORT_BASE + zlib.crc32(str(env.job_id).encode()) % MASTER_PORT_SPAN
    values = {
        "RANK": str(env.global_rank),
        "LOCAL_RANK": str(env.local_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_WORLD_SIZE": str(env.num_tasks // max(env.num_nodes, 1)),
        "MASTER_ADDR": env.hostnames[0],
        "MASTER_PORT": str(port),
    }
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return True


def mixed_precision_mode(precision: str, cuda: bool) -> str:
    """Accelerate's ``mixed_precision`` for a recipe's ``train.precision``.

    Args:
        precision: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        cuda: whether CUDA is available.

    Returns:
        ``"bf16"`` on CUDA for ``auto`` and ``bf16``; ``"no"`` otherwise (CPU runs in float32).
    """
    return "bf16" if cuda and precision in ("auto", "bf16") else "no"


def build_accelerator(precision: str = "auto"):
    """Create the run's ``accelerate.Accelerator``.

    On CUDA: one device per process, NCCL when ``WORLD_SIZE`` > 1, bf16 autocast per
    :func:`mixed_precision_mode`. Without CUDA: ``cpu=True`` (gloo when ``WORLD_SIZE`` > 1),
    float32.

    Args:
        precision: the recipe's ``train.precision``.
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    return Accelerator(cpu=not cuda, mixed_precision=mixed_precision_mode(precision, cuda))


def autocast_dtype(accelerator) -> torch.dtype | None:
    """The autocast dtype the accelerator trains with (``torch.bfloat16``), or None for fp32."""
    return torch.bfloat16 if accelerator.mixed_precision == "bf16" else None


def convert_sync_batchnorm(model: nn.Module, accelerator) -> nn.Module:
    """Replace BatchNorm by SyncBatchNorm on CUDA with more than one process; else unchanged."""
    if accelerator.device.type == "cuda" and accelerator.num_processes > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def teardown(accelerator, *, wait: bool = True) -> None:
    """Wait for every process, destroy the process group and forget accelerate's state.

    Safe to call more than once. After it, a new :func:`build_accelerator` in the same process
    starts from scratch (tests train and evaluate in one interpreter); destroying the group
    explicitly also keeps gloo from aborting at interpreter exit.

    Args:
        accelerator: the run's accelerator.
        wait: meet the other processes at a barrier first. Pass False after a failure: the
            other ranks may never reach the barrier.
    """
    import torch.distributed as dist
    from accelerate.state import AcceleratorState

    try:
        if dist.is_available() and dist.is_initialized():
            if wait:
                accelerator.wait_for_everyone()
            dist.destroy_process_group()
    finally:
        # accelerate keeps process-wide singleton state that still describes the destroyed
        # group and the old precision; clearing it lets a later Accelerator start over.
        AcceleratorState._reset_state(reset_partial_state=True)

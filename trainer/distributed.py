"""Process groups and numerics: the only module that creates, converts for, or tears down them.

A job process calls, in order: :func:`export_submitit_env` (inside a multi-task submitit job it
turns submitit's job environment into the ``RANK``/``WORLD_SIZE``/``MASTER_*`` variables that
``torch.distributed`` reads; on Slurm the master address is the first node's ``NodeAddr``, see
:func:`slurm_master_address`), :func:`build_accelerator` (NCCL, the recipe's autocast and TF32 on CUDA; gloo
and float32 with ``cpu=True`` elsewhere), :func:`convert_sync_batchnorm` on the model, and
:func:`teardown` before returning. :func:`any_process` is the one collective the preemption
check needs.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import zlib
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

#: The rendezvous port is MASTER_PORT_BASE + (hash of job id and restart count % MASTER_PORT_SPAN).
MASTER_PORT_BASE = 20000
MASTER_PORT_SPAN = 20000

#: Seconds one ``scontrol`` call may take while resolving the master address.
SCONTROL_TIMEOUT_S = 30.0

_NODE_ADDR_RE = re.compile(r"(?:^|\s)NodeAddr=(\S+)")


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


def parse_node_addr(show_node: str) -> str | None:
    """The ``NodeAddr=`` value in the output of ``scontrol show node NAME``, or None.

    Slurm prints ``NodeAddr=127.0.0.1 NodeHostName=localhost Port=17001 ...``; the address is
    what ``slurm.conf`` declares for the node (an IP address or a resolvable name), which is
    what other nodes can connect to even where the node name itself does not resolve.
    """
    match = _NODE_ADDR_RE.search(show_node)
    return match.group(1) if match else None


def _scontrol(scontrol: str, *args: str) -> str:
    try:
        done = subprocess.run(
            [scontrol, *args], capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"scontrol {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(
            f"scontrol {' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


def slurm_master_address(nodelist: str, fallback: str) -> str:
    """The address of the first node of a Slurm allocation, for ``MASTER_ADDR``.

    ``scontrol show hostnames NODELIST`` expands the list (``n[1-2]`` -> ``n1``, ``n2``);
    ``scontrol show node FIRST`` gives its ``NodeAddr`` (:func:`parse_node_addr`). Node names
    need not resolve as host names (on ``slurm/dev-cluster.sh`` neither ``n1`` nor ``n2`` does),
    so the name itself is never used where ``scontrol`` exists.

    Args:
        nodelist: ``SLURM_JOB_NODELIST``.
        fallback: returned when ``scontrol`` is not on ``PATH`` or ``nodelist`` is empty
            (submitit's first host name).

    Raises:
        RuntimeError: ``scontrol`` failed (exit status, timeout after
            :data:`SCONTROL_TIMEOUT_S` seconds) or printed no node or no ``NodeAddr``.
    """
    scontrol = shutil.which("scontrol")
    if scontrol is None or not nodelist:
        log.warning("scontrol not available: MASTER_ADDR falls back to the host name %s", fallback)
        return fallback
    names = _scontrol(scontrol, "show", "hostnames", nodelist).split()
    if not names:
        raise RuntimeError(f"scontrol show hostnames {nodelist} printed no node")
    address = parse_node_addr(_scontrol(scontrol, "show", "node", names[0]))
    if address is None:
        raise RuntimeError(f"scontrol show node {names[0]} printed no NodeAddr")
    return address


def rendezvous_port(job_id: str, restart_count: str = "0") -> int:
    """The ``MASTER_PORT`` of one run of a job: every task computes the same one.

    The restart count (``SLURM_RESTART_COUNT``, incremented by each requeue) is part of the
    hash, so a requeued job does not race with a listener of its previous run on the same node.
    """
    key = f"{job_id}.{restart_count or '0'}".encode()
    return MASTER_PORT_BASE + zlib.crc32(key) % MASTER_PORT_SPAN


def export_submitit_env() -> bool:
    """Export ``torch.distributed`` rendezvous variables from submitit's job environment.

    Does nothing outside submitit or when the job has one task. Otherwise sets ``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
    (:func:`rendezvous_port`) unless the variable is already set. ``MASTER_ADDR`` is, on Slurm,
    the ``NodeAddr`` of the allocation's first node (:func:`slurm_master_address`); elsewhere
    (submitit's local executor) the first host name submitit lists.

    Returns:
        True when variables were exported.

    Raises:
        RuntimeError: from :func:`slurm_master_address`.
    """
    env = _submitit_environment()
    if env is None or env.num_tasks <= 1:
        return False
    master = env.hostnames[0]
    if env.cluster == "slurm" and "MASTER_ADDR" not in os.environ:
        master = slurm_master_address(os.environ.get("SLURM_JOB_NODELIST", ""), master)
    port = rendezvous_port(str(env.job_id), os.environ.get("SLURM_RESTART_COUNT", "0"))
    values = {
        "RANK": str(env.global_rank),
        "LOCAL_RANK": str(env.local_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_WORLD_SIZE": str(env.num_tasks // max(env.num_nodes, 1)),
        "MASTER_ADDR": master,
        "MASTER_PORT": str(port),
    }
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return True


def mixed_precision_mode(precision: str, cuda: bool) -> str:
    """Accelerate's ``mixed_precision`` for a recipe's ``train.precision``.

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (bf16 on CUDA).
        cuda: whether CUDA is available.

    Returns:
        ``"bf16"`` on CUDA for ``auto`` and ``bf16``, ``"fp16"`` on CUDA for ``fp16`` (autocast
        with accelerate's dynamic loss scaler), ``"no"`` otherwise: fp32 everywhere else, and
        always on the CPU.
    """
    if not cuda:
        return "no"
    return {"auto": "bf16", "bf16": "bf16", "fp16": "fp16"}.get(precision, "no")


def apply_tf32(tf32: bool | None) -> None:
    """Set TensorFloat-32 for CUDA matmuls and cuDNN convolutions (``train.tf32``).

    ``None`` leaves PyTorch's defaults (``torch.backends.cuda.matmul.allow_tf32`` False,
    ``torch.backends.cudnn.allow_tf32`` True), as mmsegmentation and United-Perception
    train; ``False`` turns both off, as sssegmentation does; ``True`` turns both on, as
    InternImage's ``segmentation/train.py`` does. No effect on the CPU or on GPUs before Ampere.
    """
    if tf32 is None:
        return
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def build_accelerator(precision: str = "fp32", tf32: bool | None = None):
    """Create the run's ``accelerate.Accelerator``.

    On CUDA: one device per process, NCCL when ``WORLD_SIZE`` > 1, autocast per
    :func:`mixed_precision_mode`, TF32 per :func:`apply_tf32`. Without CUDA: ``cpu=True``
    (gloo when ``WORLD_SIZE`` > 1), float32.

    Args:
        precision: the recipe's ``train.precision``.
        tf32: the recipe's ``train.tf32``.
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    apply_tf32(tf32)
    return Accelerator(cpu=not cuda, mixed_precision=mixed_precision_mode(precision, cuda))


def autocast_dtype(accelerator) -> torch.dtype | None:
    """The autocast dtype the accelerator trains with (``torch.bfloat16`` or
    ``torch.float16``), or None for fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)


def convert_sync_batchnorm(model: nn.Module, accelerator, enabled: bool = True) -> nn.Module:
    """Replace BatchNorm by SyncBatchNorm when ``enabled`` (the recipe's ``train.sync_bn``), on
    CUDA with more than one process; otherwise return ``model`` unchanged (plain BatchNorm:
    per-process statistics, and always on the CPU, where gloo has no SyncBatchNorm kernels)."""
    if enabled and accelerator.device.type == "cuda" and accelerator.num_processes > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def any_process(flag: bool, accelerator) -> bool:
    """True on every process when ``flag`` is True on at least one of them.

    A sum all-reduce of one integer over the accelerator's group (gloo or NCCL); without a
    group (one process) no communication. Every process must call it at the same point.
    """
    if accelerator.num_processes <= 1:
        return bool(flag)
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=accelerator.device)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return bool(value.item() > 0)


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

"""The one place that turns a recipe's cluster section into submitit executors, and asks them
about jobs.

``local`` runs the job on this machine through submitit's local executor (the default where no
Slurm is found); ``slurm`` submits with sbatch through submitit's Slurm executor.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from segctl.recipe.profile import SiteProfile
from segctl.recipe.schema import ClusterConfig

ExecutorKind = Literal["local", "slurm"]

#: Seconds before the time limit at which a job is signalled to checkpoint and requeue.
SIGNAL_DELAY_S = 120

#: Time limit of a job when neither the recipe nor the profile gives one (24 hours).
DEFAULT_TIMEOUT_MIN = 24 * 60


def choose_executor(cluster: ClusterConfig, override: str | None = None) -> ExecutorKind:
    """``override`` or the recipe's choice; ``auto`` is ``slurm`` where a controller answers."""
    choice = override or cluster.executor
    if choice == "auto":
        return "slurm" if slurm_available() else "local"
    if choice not in ("local", "slurm"):
        raise ValueError(f"unknown executor {choice!r}: use local or slurm")
    return choice  # type: ignore[return-value]


def slurm_available(timeout_s: float = 5.0) -> bool:
    """True when ``sbatch`` is on PATH, a slurm.conf exists (``SLURM_CONF`` or
    ``/etc/slurm/slurm.conf``) and ``scontrol ping`` reports a controller UP.

    Without a config file Slurm's clients fall back to DNS SRV lookups; we never trigger those.
    """
    import subprocess

    config = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    if not (shutil.which("sbatch") and shutil.which("scontrol") and config.is_file()):
        return False
    try:
        out = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and " is UP" in out.stdout


def executor_parameters(
    kind: ExecutorKind,
    cluster: ClusterConfig,
    job_name: str,
    profile: SiteProfile | None = None,
) -> dict[str, Any]:
    """submitit parameters for ``kind`` (a pure function of its inputs).

    Local jobs run one process on this machine with the GPUs it has (none on a CPU machine).
    Slurm jobs get one task per GPU (``cpu_processes_per_node`` tasks per node on CPU-only
    placements), the recipe's resources, and the profile's site settings; the recipe's
    partition and time limit win over the profile's.
    """
    timeout = cluster.timeout_min or (profile.time_min if profile else None) or DEFAULT_TIMEOUT_MIN
    if kind == "local":
        return {
            "timeout_min": timeout,
            "gpus_per_node": min(cluster.gpus_per_node, local_gpu_count()),
            "tasks_per_node": 1,
            "signal_delay_s": SIGNAL_DELAY_S,
        }
    params: dict[str, Any] = {  # submitit SlurmExecutor's names, i.e. sbatch's
        "job_name": job_name,
        "nodes": cluster.nodes,
        "ntasks_per_node": cluster.gpus_per_node or cluster.cpu_processes_per_node,
        "cpus_per_task": cluster.cpus_per_task,
        "time": timeout,
        "signal_delay_s": SIGNAL_DELAY_S,
    }
    if cluster.gpus_per_node:
        params["gpus_per_node"] = cluster.gpus_per_node
    if cluster.mem_gb:
        params["mem"] = f"{int(cluster.mem_gb * 1024)}MB"
    partition = cluster.partition or (profile.partition if profile else None)
    if partition:
        params["partition"] = partition
    if profile is not None:
        for key in ("account", "qos", "constraint"):
            if getattr(profile, key):
                params[key] = getattr(profile, key)
        if profile.setup:
            params["setup"] = list(profile.setup)
    # requeue on preemption and node failure unless the site's profile says otherwise
    params["additional_parameters"] = {"requeue": True, **(profile.sbatch if profile else {})}
    return params


def render_sbatch(parameters: dict[str, Any], folder: Path, python: str) -> str:
    """The sbatch script submitit would write for ``parameters`` (Slurm only), for display
    and golden-file tests. Pure: nothing is written or submitted.
    """
    import shlex

    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, **parameters)


def make_executor(
    kind: ExecutorKind, folder: Path, parameters: dict[str, Any], max_requeues: int = 3
):
    """A configured submitit executor writing its files under ``folder``.

    ``max_requeues`` bounds the requeues after preemption or time limit (Slurm only).
    """
    import submitit

    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
    else:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    executor.update_parameters(**parameters)
    return executor


@contextmanager
def interruptible_children() -> Iterator[None]:
    """While submitting, make SIGINT interrupt processes started from here.

    A process started by a non-interactive shell in the background inherits SIGINT as
    *ignored*, and passes that on; a local job's controller would then never stop on
    ``segctl cancel`` (which interrupts it). Setting Python's default handler for the duration
    makes children start with the default disposition again. Only possible in the main thread;
    elsewhere nothing changes.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def job_environment(env: dict[str, str]) -> Iterator[None]:
    """While submitting, add ``env`` to this process's environment, which the submitted job
    inherits (submitit's local executor copies it into the job's process; ``sbatch`` exports
    it to the Slurm job unless the profile sets ``export``). Nothing of it is written to the
    sbatch script or submitit's files. Previous values come back afterwards."""
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def local_gpu_count() -> int:
    """GPUs visible to a local job: ``CUDA_VISIBLE_DEVICES``, else ``/dev/nvidia[0-9]*``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


# --- asking about jobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says of one job.

    Attributes:
        state: Slurm's vocabulary (PENDING, RUNNING, REQUEUED, COMPLETED, FAILED, CANCELLED,
            TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY); local jobs use RUNNING, COMPLETED
            and FAILED.
        nodes: the node list (Slurm only).
        requeues: how often the job was requeued (preemption, time limit, admin requeue).
        reason: Slurm's reason for a pending or failed state, where it gives one.
    """

    state: str
    nodes: str | None = None
    requeues: int = 0
    reason: str | None = None


def job_statuses(jobs: list[tuple[str, str, str]]) -> dict[str, JobStatus]:
    """Statuses of ``(executor, folder, job_id)`` jobs, keyed by job id.

    Slurm jobs are asked about in one ``sacct`` call, whatever their number; local jobs are
    judged from their result file and controller process, so this works from any process.
    Jobs the scheduler does not know (yet) are left out.
    """
    out: dict[str, JobStatus] = {}
    slurm_ids = [job_id for kind, _, job_id in jobs if kind == "slurm"]
    if slurm_ids:
        out.update(slurm_statuses(slurm_ids))
    for kind, folder, job_id in jobs:
        if kind == "local":
            out[job_id] = JobStatus(_local_state(Path(folder), job_id))
    return out


def job_state(kind: str, folder: str, job_id: str) -> str:
    """The state of one job (see :func:`job_statuses`); UNKNOWN if the scheduler has none."""
    status = job_statuses([(kind, folder, job_id)]).get(job_id)
    return status.state if status else "UNKNOWN"


SACCT_FORMAT = "JobID,State,NodeList,Reason"


def slurm_statuses(job_ids: list[str], timeout_s: float = 20.0) -> dict[str, JobStatus]:
    """One ``sacct --duplicates`` call for all ``job_ids``.

    Raises:
        RuntimeError: sacct is missing, times out or fails.
    """
    import subprocess

    command = [
        "sacct", "--duplicates", "--allocations", "--parsable2", "--noheader",
        f"--format={SACCT_FORMAT}", "--jobs", ",".join(job_ids),
    ]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"sacct failed: {exc}") from None
    if out.returncode != 0:
        raise RuntimeError(f"sacct failed: {out.stderr.strip()}")
    return parse_sacct(out.stdout)


def parse_sacct(text: str) -> dict[str, JobStatus]:
    """Parse ``sacct --duplicates --allocations --parsable2 --format=JobID,State,NodeList,Reason``.

    With ``--duplicates`` a requeued job has one row per start, oldest first; the last row is
    its current state and the rows before it count its requeues. ``CANCELLED by 0`` becomes
    ``CANCELLED``.
    """
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) >= 4 and fields[0]:
            rows.setdefault(fields[0], []).append(fields)
    statuses = {}
    for job_id, history in rows.items():
        _, state, nodes, reason = history[-1][:4]
        statuses[job_id] = JobStatus(
            state=state.split()[0] if state else "UNKNOWN",
            nodes=nodes if nodes and nodes != "None assigned" else None,
            requeues=len(history) - 1,
            reason=reason if reason and reason != "None" else None,
        )
    return statuses


def cancel_job(kind: str, folder: str, job_id: str) -> None:
    """Cancel a job: scancel on Slurm; SIGINT to a local controller that is still ours."""
    if kind == "local":
        if _local_controller_alive(job_id):
            os.kill(int(job_id), signal.SIGINT)
        return
    import submitit

    submitit.SlurmJob(folder=folder, job_id=job_id).cancel(check=False)


def job_log_paths(folder: str, job_id: str, task: int = 0) -> tuple[Path, Path]:
    """(stdout, stderr) log files of one task of a job."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=job_id, task_id=task)
    return paths.stdout, paths.stderr


def _local_state(folder: Path, job_id: str) -> str:
    from submitit.core.utils import JobPaths, pickle_load

    result = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if result.exists():
        try:
            outcome, _ = pickle_load(result)
        except Exception:  # a result being written right now
            return "RUNNING"
        return "COMPLETED" if outcome == "success" else "FAILED"
    return "RUNNING" if _local_controller_alive(job_id) else "FAILED"


def _local_controller_alive(job_id: str) -> bool:
    """True if ``job_id`` is a live submitit local controller (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
        status = Path(f"/proc/{int(job_id)}/stat").read_text()
    except (OSError, ValueError):
        return False
    zombie = status.rsplit(")", 1)[-1].split()[0] == "Z"
    return b"submitit.local._local" in cmdline and not zombie

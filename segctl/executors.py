"""The one place that turns a recipe's cluster section into submitit executors, and asks them
about jobs.

``local`` runs the job on this machine through submitit's local executor (the default where no
Slurm is found); ``slurm`` submits with sbatch through submitit's Slurm executor.

Job state is learnt without unpickling anything: Slurm jobs from ``sacct``; local jobs from the
JSON exit record the job writes itself (:func:`exit_record_path`, written by
:mod:`segctl.jobs`) and from whether their controller process is alive. submitit's own files
(``*_submitted.pkl``, ``*_result.pkl``) are written for the job and never read here; no submitit
``Job`` object is asked for its state, result or exception (those load the pickles).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from segctl import local_session
from segctl.recipe.profile import SiteProfile
from segctl.recipe.schema import ClusterConfig
from segctl.status import JobState

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


class _SubmititKeywords(Mapping[str, Any]):
    """Executor parameters read as the keyword arguments submitit takes (only the ones set),
    so a plan's parameters print, and index, as submitit's names."""

    def to_submitit(self) -> dict[str, Any]:
        """The keyword arguments for submitit's ``update_parameters`` (fields left unset, None
        or empty, are left out)."""
        out: dict[str, Any] = {}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if value is None or (item.name == "setup" and not value):
                continue
            out[item.name] = list(value) if isinstance(value, tuple) else (
                dict(value) if isinstance(value, Mapping) else value)
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_submitit()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_submitit())

    def __len__(self) -> int:
        return len(self.to_submitit())


@dataclass(frozen=True)
class LocalParams(_SubmititKeywords):
    """Parameters of a job on submitit's local executor: one process on this machine.

    Attributes:
        timeout_min: time limit in minutes.
        gpus_per_node: GPUs the process gets (0 on a CPU machine).
        tasks_per_node: processes (always 1).
        signal_delay_s: seconds before the time limit at which the job is signalled.
    """

    timeout_min: int
    gpus_per_node: int
    tasks_per_node: int = 1
    signal_delay_s: int = SIGNAL_DELAY_S

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig, profile: SiteProfile | None = None) -> LocalParams:
        """The recipe's cluster section (with the CLI's placement overrides applied) on this
        machine: the GPUs it has, at most the recipe's; the recipe's time limit, else the
        profile's, else :data:`DEFAULT_TIMEOUT_MIN`."""
        return cls(
            timeout_min=_timeout(cluster, profile),
            gpus_per_node=min(cluster.gpus_per_node, local_gpu_count()),
        )


@dataclass(frozen=True)
class SlurmParams(_SubmititKeywords):
    """Parameters of a Slurm job, under submitit ``SlurmExecutor``'s names (sbatch's).

    Attributes:
        job_name: ``--job-name``.
        nodes: ``--nodes``.
        ntasks_per_node: one task per GPU (``cpu_processes_per_node`` on CPU-only placements).
        cpus_per_task: ``--cpus-per-task``.
        time: time limit in minutes.
        signal_delay_s: seconds before the time limit at which the job is signalled to
            checkpoint and requeue.
        gpus_per_node: ``--gpus-per-node`` (None on CPU-only placements).
        mem: memory per node, e.g. ``"65536MB"`` (None: Slurm's default).
        partition, account, qos, constraint: site settings (None: not given).
        setup: shell lines run before the tasks start (the profile's).
        additional_parameters: further ``#SBATCH`` directives (``requeue`` and the profile's).
    """

    job_name: str
    nodes: int
    ntasks_per_node: int
    cpus_per_task: int
    time: int
    signal_delay_s: int = SIGNAL_DELAY_S
    gpus_per_node: int | None = None
    mem: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    additional_parameters: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_cluster(
        cls, cluster: ClusterConfig, job_name: str, profile: SiteProfile | None = None
    ) -> SlurmParams:
        """One task per GPU (``cpu_processes_per_node`` tasks per node on CPU-only
        placements), the recipe's resources (its cluster section, with the CLI's placement
        overrides applied) and the profile's site settings; the recipe's partition and time
        limit win over the profile's. Jobs requeue on preemption and node failure unless the
        profile's ``sbatch`` says otherwise."""
        return cls(
            job_name=job_name,
            nodes=cluster.nodes,
            ntasks_per_node=cluster.gpus_per_node or cluster.cpu_processes_per_node,
            cpus_per_task=cluster.cpus_per_task,
            time=_timeout(cluster, profile),
            gpus_per_node=cluster.gpus_per_node or None,
            mem=f"{int(cluster.mem_gb * 1024)}MB" if cluster.mem_gb else None,
            partition=cluster.partition or (profile.partition if profile else None) or None,
            account=(profile.account or None) if profile else None,
            qos=(profile.qos or None) if profile else None,
            constraint=(profile.constraint or None) if profile else None,
            setup=tuple(profile.setup) if profile else (),
            additional_parameters={"requeue": True, **(profile.sbatch if profile else {})},
        )


ExecutorParams = LocalParams | SlurmParams


def _timeout(cluster: ClusterConfig, profile: SiteProfile | None) -> int:
    return cluster.timeout_min or (profile.time_min if profile else None) or DEFAULT_TIMEOUT_MIN


def executor_parameters(
    kind: ExecutorKind,
    cluster: ClusterConfig,
    job_name: str,
    profile: SiteProfile | None = None,
) -> ExecutorParams:
    """The typed submitit parameters for ``kind`` (a pure function of its inputs):
    :meth:`LocalParams.from_cluster` or :meth:`SlurmParams.from_cluster`.

    Local jobs run one process on this machine with the GPUs it has (none on a CPU machine).
    Slurm jobs get one task per GPU (``cpu_processes_per_node`` tasks per node on CPU-only
    placements), the recipe's resources, and the profile's site settings; the recipe's
    partition and time limit win over the profile's.
    """
    if kind == "local":
        return LocalParams.from_cluster(cluster, profile)
    return SlurmParams.from_cluster(cluster, job_name, profile)


#: The submitit function that renders an sbatch script. It is private: submitit offers no
#: public way to render a script without an executor (``SlurmExecutor`` needs ``srun`` on PATH,
#: and its ``_make_submission_file_text`` is private too), so :func:`render_sbatch` is the one
#: place that calls it, and ``tests/test_slurm_submission.py`` fails naming submitit's version
#: when its signature or output changes.
SUBMITIT_SBATCH_RENDERER = "submitit.slurm.slurm._make_sbatch_string"


def render_sbatch(parameters: SlurmParams, folder: Path, python: str) -> str:
    """The sbatch script submitit would write for ``parameters`` (Slurm only), for display
    and golden-file tests. Pure: nothing is written or submitted.
    """
    import shlex

    from submitit.slurm.slurm import _make_sbatch_string  # see SUBMITIT_SBATCH_RENDERER

    command = " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, **parameters.to_submitit())


def make_executor(
    kind: ExecutorKind, folder: Path, parameters: ExecutorParams | Mapping[str, Any],
    max_requeues: int = 3,
):
    """A configured submitit executor writing its files under ``folder``.

    ``parameters``: :class:`LocalParams` or :class:`SlurmParams` (or submitit's keyword
    arguments as a mapping).

    ``max_requeues`` bounds the requeues after preemption or time limit (Slurm only).
    """
    import submitit

    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        # the controller gets a session of its own: Ctrl-C at the terminal stops a waiting
        # `segctl submit --wait`, never the job (see segctl/local_session.py)
        executor.update_parameters(setup=[local_session.setup_command(str(executor.folder))])
    else:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    executor.update_parameters(**dict(parameters))
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


#: Log file, in a local job's submitit folder, of what its controller process prints.
CONTROLLER_LOG = "local-controller.log"


@contextmanager
def detached_stdio(kind: str, folder: Path) -> Iterator[None]:
    """While submitting a local job, give this process's standard streams to the job instead of
    the caller's: stdin from ``/dev/null``, stdout and stderr appended to
    ``folder/local-controller.log`` (mode 0600).

    submitit's local executor starts the job's controller with this process's file
    descriptors 0, 1 and 2 and offers no option for them. A controller holding the caller's
    pipe keeps ``$(segctl submit RECIPE)`` (or ``segctl submit | tee``) waiting for the whole
    training, and one holding a terminal writes into it long after segctl has returned. So the
    descriptors are swapped around the submission, through the operating system's ``dup2``
    rather than by patching submitit, and put back afterwards; Python's buffers are flushed on
    both edges so that nothing meant for the user lands in the log. The job's tasks write to
    their own submitit logs as before. Slurm submissions (``sbatch``) hold nothing: for them
    this does nothing.
    """
    if kind != "local":
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        log = os.open(folder / CONTROLLER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        os.close(null)
        raise
    saved: dict[int, int | None] = {}
    for fd in (0, 1, 2):
        try:
            saved[fd] = os.dup(fd)
        except OSError:  # closed by the caller: leave it closed afterwards
            saved[fd] = None
    try:
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        for fd, copy in saved.items():
            if copy is None:
                os.close(fd)
            else:
                os.dup2(copy, fd)
                os.close(copy)
        os.close(null)
        os.close(log)


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
            TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY; :class:`segctl.status.JobState`);
            local jobs use RUNNING, COMPLETED and FAILED.
        nodes: the node list (Slurm only).
        requeues: how often the job was requeued (preemption, time limit, admin requeue).
        reason: Slurm's reason for a pending or failed state, where it gives one; for a
            failed local job, the exception from its exit record or :data:`NO_EXIT_RECORD`.
    """

    state: str
    nodes: str | None = None
    requeues: int = 0
    reason: str | None = None


def job_statuses(jobs: list[tuple[str, str, str]]) -> dict[str, JobStatus]:
    """Statuses of ``(executor, folder, job_id)`` jobs, keyed by job id.

    Slurm jobs are asked about in one ``sacct`` call, whatever their number; local jobs are
    judged by :func:`local_status` (their JSON exit record and controller process), so this
    works from any process. Nothing is unpickled. Jobs the scheduler does not know (yet) are
    left out.
    """
    out: dict[str, JobStatus] = {}
    slurm_ids = [job_id for kind, _, job_id in jobs if kind == "slurm"]
    if slurm_ids:
        out.update(slurm_statuses(slurm_ids))
    for kind, folder, job_id in jobs:
        if kind == "local":
            out[job_id] = local_status(Path(folder), job_id)
    return out


def job_state(kind: str, folder: str, job_id: str) -> str:
    """The state of one job (see :func:`job_statuses`); UNKNOWN if the scheduler has none."""
    status = job_statuses([(kind, folder, job_id)]).get(job_id)
    return status.state if status else JobState.UNKNOWN


SACCT_FORMAT = "JobID,State,NodeList,Reason,ExitCode,DerivedExitCode"


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
    """Parse ``sacct --duplicates --allocations --parsable2 --format=``:data:`SACCT_FORMAT`.

    With ``--duplicates`` a requeued job has one row per start, oldest first; the last row is
    its current state and the rows before it count its requeues. ``CANCELLED by 0`` becomes
    ``CANCELLED``. A FAILED job for which Slurm gives no reason gets one from its exit codes
    (:func:`exit_reason`), e.g. a task killed by ``kill -9``. Rows of four fields (no exit
    codes) are read too.
    """
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) >= 4 and fields[0]:
            rows.setdefault(fields[0], []).append(fields)
    statuses = {}
    for job_id, history in rows.items():
        current = history[-1]
        _, state, nodes, reason = current[:4]
        state = state.split()[0] if state else JobState.UNKNOWN
        reason = reason if reason and reason != "None" else None
        if state == JobState.FAILED and reason is None:
            reason = exit_reason(*current[4:6])
        statuses[job_id] = JobStatus(
            state=state,
            nodes=nodes if nodes and nodes != "None assigned" else None,
            requeues=len(history) - 1,
            reason=reason,
        )
    return statuses


def exit_reason(exit_code: str = "", derived_exit_code: str = "") -> str | None:
    """Why a job failed, from sacct's ``ExitCode`` and ``DerivedExitCode`` (``code:signal``;
    the derived one is the worst of the job's steps): the signal that killed a task where one
    did, else the non-zero exit status; None if neither says anything.

    >>> exit_reason("9:0", "0:9")
    'a task was killed by signal 9 (SIGKILL)'
    >>> exit_reason("1:0", "0:0")
    'exit code 1'
    """
    pairs = []
    for text in (derived_exit_code, exit_code):
        code, _, sig = text.partition(":")
        if code.isdigit() and sig.isdigit():
            pairs.append((int(code), int(sig)))
    for _, sig in pairs:
        if sig:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = "unknown signal"
            return f"a task was killed by signal {sig} ({name})"
    for code, _ in reversed(pairs):  # the batch script's own status first
        if code:
            return f"exit code {code}"
    return None


def cancel_job(kind: str, folder: str, job_id: str, timeout_s: float = 20.0) -> None:
    """Cancel a job: ``scancel JOBID`` on Slurm (what submitit's ``cancel`` runs; a failure is
    not checked, as there); SIGINT to a local controller that is still ours. ``folder`` is
    unused: kept so that every job is named by ``(executor, folder, job_id)``."""
    if kind == "local":
        if _local_controller_alive(job_id):
            os.kill(int(job_id), signal.SIGINT)
        return
    import subprocess

    try:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"scancel {job_id} failed: {exc}") from None


def job_log_paths(folder: str, job_id: str, task: int = 0) -> tuple[Path, Path]:
    """(stdout, stderr) log files of one task of a job."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=job_id, task_id=task)
    return paths.stdout, paths.stderr


# --- local jobs: the JSON exit record and the controller's pid --------------------------------

#: Largest exit record read, in bytes (a record is a few hundred bytes).
EXIT_RECORD_MAX_BYTES = 64 * 1024

#: Reason of a local job whose controller ended and whose task wrote no exit record.
NO_EXIT_RECORD = "ended without an exit record (killed, e.g. kill -9 or out of memory)"


def exit_record_path(folder: str | Path, job_id: str, task: int = 0) -> Path:
    """``<folder>/<job_id>_<task>_exit.json``: the exit record of one task of a job, beside
    submitit's ``<job_id>_<task>_result.pkl`` (``task`` is submitit's global rank).

    Written by the job when its callable returns or raises (:mod:`segctl.jobs`); JSON with
    ``outcome`` (``success`` or ``failed``), ``kind``, ``job_id``, ``task``, ``pid``,
    ``host``, ``started_at`` and ``ended_at`` (seconds since the epoch), and for failures
    ``error_type`` and ``error`` (the exception's message on one line).
    """
    return Path(folder) / f"{job_id}_{task}_exit.json"


def read_exit_record(path: Path) -> dict | None:
    """The exit record at ``path``; None if there is none.

    Only a regular file is read, and at most :data:`EXIT_RECORD_MAX_BYTES` of it, so a planted
    FIFO or device cannot hang or exhaust the reader. A record that is not a JSON object with a
    known ``outcome`` reads as ``{"outcome": "unreadable"}``. JSON only: nothing is unpickled.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:
        return {"outcome": "unreadable"}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {"outcome": "unreadable"}
        data = os.read(fd, EXIT_RECORD_MAX_BYTES + 1)
    except OSError:
        return {"outcome": "unreadable"}
    finally:
        os.close(fd)
    try:
        record = json.loads(data.decode("utf-8")) if len(data) <= EXIT_RECORD_MAX_BYTES else None
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("outcome") not in ("success", "failed"):
        return {"outcome": "unreadable"}
    return record


def local_status(folder: Path, job_id: str) -> JobStatus:
    """The state of a local job from task 0's exit record and its controller's pid.

    - a record with ``outcome: success``: COMPLETED;
    - a record with ``outcome: failed``: FAILED, the reason ``<error_type>: <error>``;
    - no record and the controller alive: RUNNING (a requeued task removes the record of its
      previous start when it starts again);
    - no record and the controller gone: FAILED, :data:`NO_EXIT_RECORD` (the task was killed
      before it could write one). The record is read again after the pid check, so a job that
      ends between the two reads is not taken for a killed one.
    """
    path = exit_record_path(folder, job_id)
    record = read_exit_record(path)
    if record is None:
        if _local_controller_alive(job_id):
            return JobStatus(JobState.RUNNING)
        record = read_exit_record(path)
    if record is None:
        return JobStatus(JobState.FAILED, reason=NO_EXIT_RECORD)
    if record["outcome"] == "success":
        return JobStatus(JobState.COMPLETED)
    if record["outcome"] == "failed":
        error_type = str(record.get("error_type") or "error")
        error = " ".join(str(record.get("error") or "").split())
        return JobStatus(JobState.FAILED, reason=f"{error_type}: {error}" if error else error_type)
    if _local_controller_alive(job_id):
        return JobStatus(JobState.RUNNING)
    return JobStatus(JobState.FAILED, reason=f"unreadable exit record {path}")


def _local_controller_alive(job_id: str) -> bool:
    """True if ``job_id`` is a live submitit local controller (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
        status = Path(f"/proc/{int(job_id)}/stat").read_text()
    except (OSError, ValueError):
        return False
    state, ppid = status.rsplit(")", 1)[-1].split()[:2]
    if state == "Z":
        return False
    if not cmdline:  # reads empty while an execve is under way (the controller starts through
        # two: segctl.local_session, then submitit's); kernel threads (children of kthreadd,
        # pid 2) have none either
        return ppid != "2"
    # while segctl.local_session starts the controller, its command line names that module
    names = (local_session.SUBMITIT_CONTROLLER, local_session.MODULE)
    return any(name.encode() in cmdline for name in names)

"""Fault injection for the fault suite (``tests/reliability/test_faults.py``).

Every fault here acts on something real: a Slurm job's task process (found in ``/proc`` by its
``SLURM_JOB_ID`` and ``SLURM_PROCID``), the dev cluster's controller daemon
(``slurm/dev-cluster.sh restart-ctld``), a ``segctl stage`` process, the files of a staged tree.
Processes are signalled by pid, and only those of the job or command the test itself started.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_CLUSTER = REPO_ROOT / "slurm" / "dev-cluster.sh"


class FaultError(AssertionError):
    """A fault could not be injected as planned (the target was not there, or ended first)."""


# --- when: iterations drawn at random, recorded by their seed --------------------------------------


def random_iterations(seed: int, count: int, low: int, high: int, min_gap: int) -> list[int]:
    """``count`` distinct iterations in ``[low, high]``, sorted, at least ``min_gap`` apart,
    drawn by ``random.Random(seed)``: the same seed gives the same iterations.

    Raises:
        ValueError: the range cannot hold ``count`` iterations ``min_gap`` apart.
    """
    if (count - 1) * min_gap > high - low:
        raise ValueError(f"{count} iterations {min_gap} apart do not fit in [{low}, {high}]")
    rng = random.Random(seed)
    while True:
        drawn = sorted(rng.sample(range(low, high + 1), count))
        if all(b - a >= min_gap for a, b in zip(drawn, drawn[1:])):
            return drawn


# --- Slurm jobs ------------------------------------------------------------------------------------


def slurm(*args: str, timeout: float = 60) -> str:
    """Run a Slurm client command; its stdout. Raises ``CalledProcessError`` on failure."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          check=True).stdout


def preempt(job_id: str) -> float:
    """Send the preemption signal (USR2, what Slurm sends before the time limit) to every
    process of the job, as ``scancel --signal=USR2`` does; returns the time it was sent."""
    sent = time.time()
    slurm("scancel", "--signal=USR2", job_id)
    return sent


def task_pids(job_id: str) -> dict[int, int]:
    """``{rank: pid}`` of the Python task processes of a running Slurm job on this machine
    (the dev cluster's nodes are this machine): processes whose environment holds
    ``SLURM_JOB_ID=<job_id>`` and whose program is Python (not ``srun``, not ``slurmstepd``)."""
    found: dict[int, int] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if not cmdline or not Path(cmdline[0]).name.startswith("python"):
                continue
            if "submitit.core._submit" not in cmdline:
                continue
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("SLURM_JOB_ID") == str(job_id) and "SLURM_PROCID" in env:
            rank = int(env["SLURM_PROCID"])
            # a data-loader worker is a child of its task: keep the task itself
            if rank not in found or proc.pid < found[rank]:
                found[rank] = proc.pid
    return found


def kill_task(job_id: str, rank: int = 0, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` (SIGKILL: ``kill -9``) to the task process of ``rank`` of a running job;
    returns its pid.

    Raises:
        FaultError: the job has no such task process on this machine.
    """
    pids = task_pids(job_id)
    if rank not in pids:
        raise FaultError(f"job {job_id} has no task of rank {rank} running here (found {pids})")
    os.kill(pids[rank], sig)
    return pids[rank]


def restart_slurmctld(timeout: float = 120,
                      while_running: Callable[[], None] | None = None) -> str:
    """Stop and start the dev cluster's controller (``slurm/dev-cluster.sh restart-ctld``);
    returns the script's messages once the controller answers and the nodes are ready again.

    ``while_running`` (optional) is called again and again while the script runs, e.g. to see
    what clients get while the controller is away.

    Raises:
        FaultError: the script failed or did not finish within ``timeout`` seconds.
    """
    proc = subprocess.Popen(["bash", str(DEV_CLUSTER), "restart-ctld"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if while_running is not None:
            while_running()
        time.sleep(0.2)
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait(timeout=30)
        raise FaultError(f"dev-cluster.sh restart-ctld still running after {timeout} s") from exc
    if proc.returncode != 0:
        raise FaultError(f"dev-cluster.sh restart-ctld failed ({proc.returncode}):\n{out}")
    return out


# --- a segctl command killed mid-way ---------------------------------------------------------------


def start_segctl(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
                 ) -> subprocess.Popen:
    """``python -m segctl ARGS`` as a child process of its own (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "segctl", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=cwd,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float,
              what: str, poll_s: float = 0.002) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every ``poll_s`` seconds).

    Raises:
        FaultError: ``proc`` ended first, or ``ready()`` did not hold within ``timeout`` s (the
            process is killed then too).
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise FaultError(f"the process ended (exit {proc.returncode}) before {what}:\n"
                             f"{out.decode(errors='replace')}{err.decode(errors='replace')}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            raise FaultError(f"no {what} after {timeout:.0f} s")
        time.sleep(poll_s)
    proc.kill()
    proc.wait(timeout=30)


def part_bytes(folder: Path) -> int:
    """Bytes held by the ``*.part`` files under ``folder`` (0 when none)."""
    total = 0
    for part in folder.rglob("*.part"):
        try:
            total += part.stat().st_size
        except OSError:  # renamed to its final name meanwhile
            pass
    return total


# --- a staged tree changed underneath ---------------------------------------------------------------


def flip_bytes(path: Path, count: int = 16, offset: int = 0) -> None:
    """Invert ``count`` bytes of ``path`` from ``offset`` in place: same size, other content,
    as a bad disk or a stray writer leaves it."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = handle.read(count)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in data))

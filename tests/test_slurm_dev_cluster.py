"""The development Slurm cluster of ``slurm/dev-cluster.sh``: real daemons, real jobs.

The session fixture ``slurm_cluster`` (``tests/conftest.py``, shared with the other Slurm test
modules) brings the cluster up (installing the Debian packages where they are missing) and
takes it down at the end. The module is skipped only where the packages are missing and
apt-get is not there to install them (the script's exit status 4).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "slurm" / "dev-cluster.sh"


def _run(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=check)


def _node_states() -> dict[str, str]:
    out = _run("sinfo", "--noheader", "--partition=dev", "--Node", "--format=%N %t").stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _sacct_state(job_id: str) -> str:
    out = _run("sacct", "--noheader", "--allocations", "--parsable2", "--format=State", "-j", job_id)
    return out.stdout.strip()


def test_sinfo_shows_both_nodes_idle(slurm_cluster):
    states = wait_until(
        _node_states,
        lambda s: s == {"n1": "idle", "n2": "idle"},
        timeout_s=30,
        what="n1 and n2 idle in partition dev",
    )
    assert states == {"n1": "idle", "n2": "idle"}


def test_status_exits_zero_while_up(slurm_cluster):
    status = _run("bash", str(SCRIPT), "status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    for daemon in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd n1", "slurmd n2"):
        assert re.search(rf"^\s*{daemon}\s+up\b", status.stdout, re.MULTILINE), status.stdout
    assert "dev*" in status.stdout


def test_two_node_batch_job_completes_in_accounting(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    submit = _run(
        "sbatch", "--parsable", "--wait", "--nodes=2", "--ntasks-per-node=1", "--partition=dev",
        f"--output={out}", "--time=2",
        "--wrap", "srun hostname && srun --label printenv SLURMD_NODENAME",
        timeout=120,
    )  # fmt: skip
    job_id = submit.stdout.strip().split(";")[0]
    assert job_id.isdigit(), submit.stdout
    lines = out.read_text().splitlines()
    assert sorted(line for line in lines if re.match(r"^\d+: ", line)) == ["0: n1", "1: n2"], lines
    assert len(lines) == 4, lines  # two hostname lines, two labelled node names
    state = wait_until(
        lambda: _sacct_state(job_id),
        lambda s: s == "COMPLETED",
        timeout_s=30,
        what=f"sacct to report job {job_id} COMPLETED",
    )
    assert state == "COMPLETED"


def _slurm_executor(folder: Path):
    import submitit

    executor = submitit.SlurmExecutor(folder=folder)
    # SlurmExecutor takes sbatch's names: nodes=1, tasks_per_node=1, timeout_min=5,
    # slurm_partition="dev" in submitit's generic vocabulary.
    executor.update_parameters(nodes=1, ntasks_per_node=1, time=5, partition="dev")
    return executor


def test_submitit_job_returns_its_result(slurm_cluster, tmp_path):
    job = _slurm_executor(tmp_path).submit(os.getenv, "SLURMD_NODENAME")
    assert job.result() in ("n1", "n2")

    def state() -> str:
        job.get_info(mode="force")
        return job.state

    # the result file exists before slurmdbd has recorded the end: wait for sacct to catch up
    wait_until(state, lambda s: s == "COMPLETED", timeout_s=60, what=f"sacct to show job {job.job_id} COMPLETED")


def test_scancel_makes_submitit_state_cancelled(slurm_cluster, tmp_path):
    job = _slurm_executor(tmp_path).submit(time.sleep, 300)

    def state() -> str:
        job.get_info(mode="force")
        return job.state

    wait_until(state, lambda s: s == "RUNNING", timeout_s=60, what=f"job {job.job_id} RUNNING")
    assert shutil.which("scancel")
    _run("scancel", job.job_id)
    final = wait_until(
        state,
        lambda s: s.startswith("CANCELLED"),
        timeout_s=60,
        what=f"submitit to see job {job.job_id} CANCELLED via sacct",
    )
    assert final.split()[0] == "CANCELLED"

"""The development Slurm cluster of ``slurm/dev-cluster.sh``: real daemons, real jobs.

The session fixture ``slurm_cluster`` (``tests/conftest.py``, shared with the other Slurm test
modules) brings a cluster of its own up in a fresh state directory, on ports chosen free
(installing the Debian packages where they are missing), and takes it down at the end; a
cluster someone else started is never reused. The module is skipped only where the packages
are missing and apt-get is not there to install them (the script's exit status 4).
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
#: The state directory of ``dev-cluster.sh`` when neither ``--state-dir`` nor
#: ``SEGCTL_SLURM_DIR`` names one: the cluster a person starts by hand.
DEFAULT_STATE_DIR = Path.home() / ".local" / "state" / "segctl" / "slurm-dev"


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
        timeout_s=60,  # an earlier module's last job may still be completing on a node
        what="n1 and n2 idle in partition dev",
    )
    assert states == {"n1": "idle", "n2": "idle"}


def _ports(slurm_conf: Path) -> set[int]:
    """Every TCP port a cluster's daemons listen on, read from its slurm.conf and the
    slurmdbd.conf beside it (slurmctld, each slurmd, slurmdbd, MariaDB)."""
    text = slurm_conf.read_text() + (slurm_conf.parent / "slurmdbd.conf").read_text()
    found = re.findall(r"^(?:SlurmctldPort|DbdPort|StoragePort)=(\d+)$|\bPort=(\d+)\b", text,
                       re.MULTILINE)
    return {int(a or b) for a, b in found}


def test_status_exits_zero_while_up(slurm_cluster):
    # the fixture's SEGCTL_SLURM_DIR makes a bare `status` look at the session's cluster
    status = _run("bash", str(SCRIPT), "status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"state dir: {slurm_cluster.parent.parent}\n" in status.stdout, status.stdout
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


def test_a_cluster_someone_else_started_is_not_reused(slurm_cluster, tmp_path_factory):
    """Another dev cluster up on this machine (here a second state directory; a person's
    default one, or another session's, alike) is not the session's: the session's cluster is
    in a state directory of its own, listens on none of the other's ports, its controller is
    the one of that directory, and each cluster sees only its own jobs."""
    ours = slurm_cluster.parent.parent
    assert ours != DEFAULT_STATE_DIR and DEFAULT_STATE_DIR not in ours.parents, ours
    assert (ours / "etc" / "ports").is_file()  # ports chosen when the fixture created it

    other_dir = tmp_path_factory.mktemp("someone-else")
    script = ["bash", str(SCRIPT), "--state-dir", str(other_dir)]
    try:
        up = _run(*script, "up", timeout=300, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        match = re.search(r"^export SLURM_CONF=(\S+)$", up.stdout, re.MULTILINE)
        assert match, up.stdout
        theirs = Path(match.group(1))
        assert theirs.parent.parent == other_dir.resolve(), theirs
        assert _ports(slurm_cluster) and not _ports(slurm_cluster) & _ports(theirs), (
            _ports(slurm_cluster), _ports(theirs))

        # the controller answering the session's SLURM_CONF keeps the session's state
        config = _run("scontrol", "show", "config").stdout
        assert re.search(rf"^StateSaveLocation\s*=\s*{re.escape(str(ours))}/", config,
                         re.MULTILINE), config

        name = f"someone-else-{os.getpid()}"
        env = {**os.environ, "SLURM_CONF": str(theirs)}
        held = subprocess.run(["sbatch", "--parsable", "--hold", f"--job-name={name}",
                               "--wrap", "true"], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert held.returncode == 0, held.stderr
        in_theirs = subprocess.run(["squeue", "--noheader", "--format=%j"], env=env,
                                   capture_output=True, text=True, timeout=60, check=True).stdout
        assert name in in_theirs.split()
        assert name not in _run("squeue", "--noheader", "--format=%j").stdout.split()
    finally:
        down = _run(*script, "down", "--purge", timeout=120, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    # the other cluster going down leaves the session's running
    assert _run("bash", str(SCRIPT), "status", check=False).returncode == 0

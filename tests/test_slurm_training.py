"""Multi-node training on the dev Slurm cluster: rendezvous, preemption, requeue, requeue limit.

Jobs are submitted through segctl's plan/apply (the path of ``segctl submit --executor slurm``)
on the real Cityscapes frame, with a tiny MiT-B0 recipe; two processes per test job share this
machine's cores (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from segctl.io.home import segctl_home
from segctl.recipe import load_recipe
from segctl.recipe.rundir import RunDir
from segctl.registry import Registry
from segctl.submission import SubmittedJob, apply, plan_training
from trainer.distributed import parse_node_addr, slurm_master_address
from tests.trainer_runs import frame_job_yaml
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]

#: A 2-node CPU run on the dev cluster (slurm/dev-cluster.sh), one task per node; it logs
#: every iteration to the log and progress.json (the tests count them). Filled in with
#: ``str.format``.
RECIPE = frame_job_yaml(
    "{name}", "{root}",
    command="A 2-node CPU run on the dev cluster (slurm/dev-cluster.sh), one task per node.",
    num_workers="{num_workers}", max_iters="{max_iters}", val_interval=1000,
    checkpoint_interval="{checkpoint_interval}", train="  seed: 0\n  deterministic: true\n",
    tail="""\
cluster:
  executor: slurm
  nodes: {nodes}
  gpus_per_node: 0
  cpu_processes_per_node: 1
  cpus_per_task: 1
  partition: dev
  timeout_min: {timeout_min}
  max_requeues: {max_requeues}
""")

#: Real output of ``scontrol show node n1`` on the dev cluster (Slurm 22.05).
SHOW_NODE_N1 = """\
NodeName=n1 Arch=x86_64 CoresPerSocket=1 
   CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=1.14
   AvailableFeatures=(null)
   ActiveFeatures=(null)
   Gres=(null)
   NodeAddr=127.0.0.1 NodeHostName=localhost Port=17001 Version=22.05.8
   OS=Linux 6.18.44-fc-v595 #1 SMP PREEMPT_DYNAMIC @0 
   RealMemory=12052 AllocMem=0 FreeMem=22185 Sockets=2 Boards=1
   State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=dev 
"""

_ITER_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) trainer\.engine: iter (\d+)/\d+")
_RESUMED_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) trainer\.engine: resumed from")


# --- helpers -------------------------------------------------------------------------------------


def _run(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=True
    ).stdout


def _sacct_state(job_id: str) -> str:
    """The allocation's state in accounting (the latest run of a requeued job): its first word
    (``CANCELLED by 0`` is ``CANCELLED``); UNKNOWN while sacct has no record of the job."""
    out = _run("sacct", "--noheader", "--allocations", "--parsable2", "--format=State", "-j", job_id)
    lines = [line.split() for line in out.splitlines() if line.strip()]
    return lines[-1][0] if lines else "UNKNOWN"


#: sacct states of a job that has not ended yet (it may still run, or run again).
_NOT_ENDED = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED",
              "UNKNOWN")
#: Seconds a test job may take to start again after a requeue and train to its end on a busy
#: 2-core machine (a loaded machine took over 180 s).
_END_BOUND_S = 420


def _ended(job: SubmittedJob) -> str:
    """The job's final sacct state, waiting for it to end; a wait that runs out says how far
    the run had got (its iteration and phase)."""
    def seen() -> tuple[str, object, object]:
        progress = _progress(job.plan.run_dir)
        return _sacct_state(job.job_id), progress.get("iteration"), progress.get("phase")

    return wait_until(seen, lambda s: s[0] not in _NOT_ENDED, timeout_s=_END_BOUND_S,
                      what=f"job {job.job_id} to end (state, iteration, phase)",
                      interval_s=1.0)[0]


def _progress(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def _submit(env_dir: Path, root: Path, monkeypatch, *, name: str, **fields) -> SubmittedJob:
    """Write the recipe, plan and apply it on Slurm with SEGCTL_HOME/RUNS_DIR under env_dir."""
    values = dict(nodes=2, num_workers=0, max_iters=24, checkpoint_interval=4, timeout_min=30,
                  max_requeues=3)
    values.update(fields)
    env_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SEGCTL_HOME", str(env_dir / "home"))
    monkeypatch.setenv("SEGCTL_RUNS_DIR", str(env_dir / "runs"))
    path = env_dir / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, root=root, **values))
    return apply(plan_training(load_recipe(path), "slurm"), Registry(segctl_home()))


@pytest.fixture
def job_env(slurm_cluster, segctl_env, monkeypatch):
    """segctl state under a temporary folder; jobs inherit one thread each and the repo path.

    The embedded MLflow store is created here: two jobs creating a fresh SQLite store at the
    same moment race on its schema ("table ... already exists") and one of them tracks nothing.
    """
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).search_experiments()
    return segctl_env


def _when_iteration(run_dir: Path, at_least: int, after: float, timeout: float) -> dict:
    return wait_until(
        lambda: _progress(run_dir),
        lambda p: p.get("phase") == "training" and (p.get("iteration") or 0) >= at_least
        and (p.get("updated_at") or 0) > after,
        timeout_s=timeout,
        what=f"{run_dir.name} to pass iteration {at_least}",
        interval_s=0.2,
    )


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _task0_log(submitted: SubmittedJob) -> list[str]:
    folder = RunDir(submitted.plan.run_dir).jobs
    return (folder / f"{submitted.job_id}_0_log.err").read_text(errors="replace").splitlines()


def _iterations_logged(lines: list[str]) -> list[tuple[float, int]]:
    """(time, iteration) of every ``iter N/M`` line of rank 0, in log order (all job runs)."""
    found = []
    for line in lines:
        match = _ITER_LINE.match(line)
        if match:
            found.append((_log_time(match.group(1)), int(match.group(2))))
    return found


def _first_resumed_iteration_after(lines: list[str], moment: float) -> tuple[float, float]:
    """(resume time, first iteration time) of the first job run that resumed after ``moment``."""
    resumed_at = None
    for line in lines:
        resumed = _RESUMED_LINE.match(line)
        if resumed and _log_time(resumed.group(1)) > moment:
            resumed_at = _log_time(resumed.group(1))
        it = _ITER_LINE.match(line)
        if it and resumed_at is not None:
            return resumed_at, _log_time(it.group(1))
    raise AssertionError(f"no resumed iteration after {moment}")


# --- (c) rendezvous ------------------------------------------------------------------------------


def test_node_addr_parsing_on_real_scontrol_output(slurm_cluster):
    assert parse_node_addr(SHOW_NODE_N1) == "127.0.0.1"
    assert parse_node_addr("NodeName=x Arch=x86_64\n   NodeHostName=x\n") is None
    assert parse_node_addr("NodeName=gpu7\n   NodeAddr=gpu7-ib.cluster NodeHostName=gpu7") == (
        "gpu7-ib.cluster"
    )
    live = _run("scontrol", "show", "node", "n2")
    assert parse_node_addr(live) == "127.0.0.1", live
    assert slurm_master_address("n[1-2]", fallback="unused") == "127.0.0.1"


def _gloo_probe() -> dict:
    """Inside a 2-task job: join the group the trainer would, all-reduce the ranks."""
    import torch.distributed as dist

    from trainer.distributed import build_accelerator, export_submitit_env, teardown

    export_submitit_env()
    accelerator = build_accelerator("fp32")
    value = torch.tensor([float(accelerator.process_index + 1)])
    dist.all_reduce(value)
    out = {
        "rank": accelerator.process_index,
        "world": accelerator.num_processes,
        "backend": dist.get_backend(),
        "sum": value.item(),
        "master": os.environ["MASTER_ADDR"],
        "node": os.environ["SLURMD_NODENAME"],
    }
    teardown(accelerator)
    return out


def test_gloo_group_across_two_nodes_uses_node_addr(job_env, tmp_path):
    import submitit

    executor = submitit.SlurmExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(nodes=2, ntasks_per_node=1, cpus_per_task=1, time=5,
                               partition="dev")
    job = executor.submit(_gloo_probe)
    results = sorted(job.results(), key=lambda r: r["rank"])
    assert [r["node"] for r in results] == ["n1", "n2"]
    for r in results:
        assert r["world"] == 2 and r["backend"] == "gloo" and r["sum"] == 3.0
        assert r["master"] == "127.0.0.1"  # n1's NodeAddr: "n1" itself does not resolve


# --- (a) preemption and admin requeue ------------------------------------------------------------


def test_two_node_training_survives_preemption_and_requeue(job_env, cityscapes_frame_root,
                                                           monkeypatch):
    root = cityscapes_frame_root
    # The interrupted run reads through one spawned loader worker per rank (signalled too);
    # the reference reads in-process. Worker counts are outside the run hash and the results.
    run = _submit(job_env / "interrupted", root, monkeypatch, name="preempt", num_workers=1)
    ref = _submit(job_env / "reference", root, monkeypatch, name="preempt", num_workers=0)
    assert run.plan.run_id == ref.plan.run_id and run.plan.run_dir != ref.plan.run_dir
    run_dir, interval = run.plan.run_dir, run.plan.recipe.schedule.checkpoint_interval

    _when_iteration(run_dir, 6, after=0, timeout=150)
    mlflow_run_id = (run_dir / "mlflow_run_id").read_text().strip()
    preempted_at = time.time()
    _run("scancel", "--signal=USR2", run.job_id)

    _when_iteration(run_dir, 14, after=preempted_at, timeout=_END_BOUND_S)  # requeued first
    requeued_at = time.time()
    _run("scontrol", "requeue", run.job_id)

    for job in (run, ref):
        state = _ended(job)
        assert state == "COMPLETED", (job.job_id, state, "\n".join(_task0_log(job)[-40:]))

    # Same weights as the uninterrupted run, tensor for tensor.
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)
    expected = torch.load(ref.plan.run_dir / "checkpoints" / "final.pt", weights_only=True)
    assert final.keys() == expected.keys()
    unequal = [k for k in final if not torch.equal(final[k], expected[k])]
    assert not unequal, unequal

    # Work repeated: none after the signal (checkpoint at the stop), at most one checkpoint
    # interval after the admin requeue (resume from the latest periodic checkpoint).
    lines = _task0_log(run)
    logged = _iterations_logged(lines)
    first_run = [line for line in lines if "Requeued job" in line or "killed by signal" in line]
    assert "Requeued job" in first_run[0], first_run  # USR2 left the loader workers alive
    before_requeue = [i for t, i in logged if t < requeued_at]
    assert len(before_requeue) == len(set(before_requeue)), before_requeue
    iterations = [i for _, i in logged]
    repeated = len(iterations) - len(set(iterations))
    assert sorted(set(iterations)) == list(range(1, 25))
    assert repeated <= interval, iterations
    assert (run_dir / "mlflow_run_id").read_text().strip() == mlflow_run_id
    progress = _progress(run_dir)
    assert progress["phase"] == "done" and progress["iteration"] == 24

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{job_env / 'mlflow.db'}")
    mlflow_run = client.get_run(mlflow_run_id)
    assert mlflow_run.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(mlflow_run_id, "loss")}
    assert steps == set(range(1, 25))

    for what, moment in (("USR2 preemption", preempted_at), ("scontrol requeue", requeued_at)):
        resumed, first = _first_resumed_iteration_after(lines, moment)
        print(f"\n{what}: {first - moment:.1f} s from the signal to the first resumed "
              f"iteration ({resumed - moment:.1f} s to the resume)")
    print(f"iterations repeated: {repeated} (checkpoint interval {interval})")


# --- (b) requeue limit ---------------------------------------------------------------------------


def test_requeue_limit_fails_the_job_with_a_reason(job_env, cityscapes_frame_root, monkeypatch):
    # timeout_min <= 10: submitit counts every USR2 as a time-out (guaranteed walltime
    # min(0.8 * limit, limit - 10 min) <= 0), so the second one exceeds max_requeues: 1.
    job = _submit(job_env / "limit", cityscapes_frame_root, monkeypatch, name="limit",
                  max_iters=400, timeout_min=10, max_requeues=1)
    run_dir = job.plan.run_dir

    before = _when_iteration(run_dir, 2, after=0, timeout=150)["iteration"]
    first = time.time()
    _run("scancel", "--signal=USR2", job.job_id)
    # The stopped run gets at most one more iteration done: this one is the requeued run's.
    _when_iteration(run_dir, before + 3, after=first, timeout=_END_BOUND_S)  # requeued first
    _run("scancel", "--signal=USR2", job.job_id)

    state = _ended(job)
    assert state == "FAILED", state
    progress = _progress(run_dir)
    assert progress["phase"] == "failed"
    assert progress["reason"] == "requeue limit (1) reached after time limit"
    assert progress["iteration"] < 400

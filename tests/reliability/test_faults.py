"""The fault suite: faults injected into real jobs on the dev Slurm cluster, a real moto S3
server and real ``segctl`` processes, each with the outcome segctl promises.

Every fault of the suite, where it is injected, and the outcome recorded (2 CPU cores):

==================================  ==============================================  ===========================================
fault                               injected by                                     recorded outcome
==================================  ==============================================  ===========================================
5 preemptions at random iterations  ``test_five_preemptions_at_random_iterations``  survived: USR2 at iterations 3, 11, 22, 30,
of one run (USR2; seeded draw)                                                      38 (seed 20261207); each run stopped after
                                                                                    its iteration (e.g. 6, 14, 24, 32, 39: the
                                                                                    test prints them), requeued, resumed there;
                                                                                    no iteration done twice; COMPLETED with 5
                                                                                    requeues; weights bit-identical
``scontrol requeue`` of a running   ``tests/test_slurm_training.py::test_two_``     survived: resumes from the latest periodic
job                                 ``node_training_survives_preemption_and_``      checkpoint and completes, weights
                                    ``requeue`` (not repeated here)                 bit-identical
a killed task (``kill -9`` of the   ``test_killed_task_fails_with_a_reason_and_``   survived: the job ends FAILED (sacct exit code
training process of rank 0)         ``resubmission_resumes``                        9:0, derived 0:9) and ``segctl status``
                                                                                    names the signal (read again while sacct
                                                                                    catches up with the killed step); Slurm may
                                                                                    also requeue it by itself. Submitting again
                                                                                    resumes from the latest checkpoint and ends
                                                                                    with the undisturbed run's weights
a restart of slurmctld while jobs   ``test_slurmctld_restart_while_jobs_run``       survived: restarted in ~6 s; ``segctl
run                                                                                 status`` answers (exit 0) throughout; both
                                                                                    runs COMPLETED, no requeue
the MLflow server down for part of  ``tests/test_tracking_server.py::test_``        survived: training goes on, records wait in
a run                               ``outage_mid_run_loses_nothing``                the buffer; after ``segctl sync`` every
                                    (not repeated here)                             loss/lr/mIoU step is on the server
a full disk at a checkpoint         ``tests/reliability/test_checkpoints.py``       see there
a corrupted latest checkpoint       ``tests/reliability/test_checkpoints.py``       see there
a truncated latest checkpoint       ``tests/reliability/test_checkpoints.py``       see there
staging killed mid-transfer         ``test_stage_killed_mid_transfer_then_``        survived: no partial bytes under a final
(``kill -9`` of ``segctl stage``)   ``resumed``                                     name; the next stage continues the
                                                                                    ``.part`` file (its bytes are not read
                                                                                    again) and reads no file the manifest
                                                                                    recorded (files completed in the second
                                                                                    before the kill may not be recorded yet:
                                                                                    those are copied again)
a staged tree changed underneath    ``test_staged_tree_changed_underneath_is_``     survived (since the manifest records each
(bytes flipped in place, a file     ``repaired``                                    copy's mtime; before, a same-size change
truncated, a file removed)                                                          went unnoticed): the next stage copies
                                                                                    exactly those three files again
==================================  ==============================================  ===========================================

Jobs are tiny (MiT-B0 on the one real Cityscapes frame, 64x128 crops, one CPU task per job,
``OMP_NUM_THREADS=1``) and are submitted through segctl's plan/apply or its CLI; the recipe
and the helpers come from ``tests/test_slurm_training.py``, the fault injectors from
``tests/reliability/faults.py``. Every wait is bounded and says what it waited for.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from segctl.cli import app
from segctl.io.copy import stage
from segctl.io.manifest import MANIFEST_NAME, read_manifest
from tests.reliability.faults import (
    flip_bytes,
    kill_task,
    kill_when,
    part_bytes,
    preempt,
    random_iterations,
    restart_slurmctld,
    start_segctl,
)
from tests.servers import aws_env, moto_server  # noqa: F401  (fixtures)
from tests.test_slurm_training import (  # noqa: F401  (job_env is a fixture)
    RECIPE,
    REPO_ROOT,
    _iterations_logged,
    _progress,
    _sacct_state,
    _submit,
    _task0_log,
    job_env,
)
from tests.waiting import wait_until

runner = CliRunner()

#: The recipe every training fault runs (``tests/test_slurm_training.py`` ``RECIPE``): one task
#: on one node, a periodic checkpoint every 8 of 48 iterations.
NAME = "faults"
RUN = dict(nodes=1, num_workers=0, max_iters=48, checkpoint_interval=8, timeout_min=30,
           max_requeues=3)
#: States in which a job may still run or start again (``segctl status`` vocabulary).
LIVE = ("PENDING", "RUNNING", "REQUEUED", "SUBMITTED", "SUBMITTING", "SUSPENDED", "CONFIGURING",
        "COMPLETING")
#: Seconds a tiny job may take to start, run and end on a busy 2-core machine.
JOB_BOUND_S = 240
#: Seconds a preempted job may take to be requeued, start again and resume.
RESUME_BOUND_S = 180

_RESUMED = re.compile(r"trainer\.engine: resumed from (\S+) at iteration (\d+)")


# --- helpers ---------------------------------------------------------------------------------------


def _resumes(job) -> list[int]:
    """Iterations the job's runs resumed from, in order (rank 0's log; [] before it exists)."""
    try:
        lines = _task0_log(job)
    except OSError:
        return []
    return [int(m.group(2)) for line in lines if (m := _RESUMED.search(line))]


def _while_live(job, probe, accept, timeout: float, what: str):
    """:func:`~tests.waiting.wait_until` for ``accept(probe())`` that fails at once, with the log's tail, when the
    job ends first (a job that died does not make the wait run out its bound)."""
    asked = [0.0]

    def seen():
        ended = False
        if time.monotonic() - asked[0] > 2.0:  # sacct every 2 s: the probe is polled faster
            asked[0] = time.monotonic()
            ended = _sacct_state(job.job_id) not in LIVE + ("UNKNOWN",)
        return probe(), ended

    def done(value) -> bool:
        if accept(value[0]):
            return True
        if value[1]:
            log = "\n".join(_task0_log(job)[-30:])
            pytest.fail(f"job {job.job_id} ended while waiting for {what} (last seen "
                        f"{value[0]!r}); its log ends:\n{log}")
        return False

    return wait_until(seen, done, timeout_s=timeout, what=what, interval_s=0.1)[0]


def _ended(job_id: str, timeout: float = JOB_BOUND_S) -> str:
    """The job's final accounting state, waiting for it to leave the live states."""
    return wait_until(lambda: _sacct_state(job_id), lambda s: s not in LIVE + ("UNKNOWN",),
                      timeout_s=timeout, what=f"job {job_id} to end", interval_s=1.0)


def _status_rows() -> dict[str, dict]:
    """``segctl status --json`` as ``{run_id: row}`` (exit 0 asserted)."""
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    return {row["run_id"]: row for row in json.loads(result.output)}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)


def _assert_same_weights(run_dir: Path, reference_dir: Path) -> None:
    final, expected = _weights(run_dir), _weights(reference_dir)
    assert final.keys() == expected.keys()
    unequal = [k for k in final if not torch.equal(final[k], expected[k])]
    assert not unequal, f"{len(unequal)} tensors differ from the undisturbed run: {unequal[:5]}"


class Reference:
    """The undisturbed run of the :data:`RUN` recipe, submitted once per module (on the other
    node while the first fault runs); :meth:`run_dir` waits for it to complete."""

    def __init__(self, submitted) -> None:
        self.submitted = submitted

    def run_dir(self) -> Path:
        state = _ended(self.submitted.job_id)
        assert state == "COMPLETED", (state, "\n".join(_task0_log(self.submitted)[-30:]))
        return self.submitted.plan.run_dir


@pytest.fixture(scope="module")
def reference(slurm_cluster, cityscapes_frame_root, tmp_path_factory) -> Reference:
    env_dir = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setenv("PYTHONPATH", str(REPO_ROOT))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env_dir / 'mlflow.db'}")
        submitted = _submit(env_dir, cityscapes_frame_root, patch, name=NAME, **RUN)
    return Reference(submitted)


# --- Slurm: preemption, a killed task, a controller restart ----------------------------------------

PREEMPTION_SEED = 20261207


@pytest.mark.slow
def test_five_preemptions_at_random_iterations(job_env, cityscapes_frame_root, monkeypatch,
                                               reference):
    """Five USR2 preemptions at iterations drawn by a seeded RNG: each run stops after the
    current iteration with a checkpoint, is requeued and resumes there; no iteration is done
    twice, and the weights equal the undisturbed run's bit for bit."""
    max_iters = RUN["max_iters"]
    targets = random_iterations(PREEMPTION_SEED, 5, low=3, high=max_iters - 6, min_gap=6)
    run = _submit(job_env / "preempted", cityscapes_frame_root, monkeypatch, name=NAME, **RUN)
    assert run.plan.run_id == reference.submitted.plan.run_id
    run_dir = run.plan.run_dir

    for k, target in enumerate(targets, start=1):
        _while_live(run, lambda: (len(_resumes(run)), _progress(run_dir).get("iteration") or 0),
                    lambda seen, k=k, target=target: seen[0] == k - 1 and seen[1] >= target,
                    timeout=RESUME_BOUND_S,
                    what=f"iteration {target} (preemption {k} of 5)")
        preempt(run.job_id)
        _while_live(run, lambda: len(_resumes(run)), lambda n, k=k: n == k,
                    timeout=RESUME_BOUND_S,
                    what=f"the resume after preemption {k} (at iteration {target})")

    state = _ended(run.job_id)
    assert state == "COMPLETED", (state, "\n".join(_task0_log(run)[-40:]))
    stops = _resumes(run)
    print(f"\npreemptions (seed {PREEMPTION_SEED}): signalled at iterations {targets}, "
          f"stopped and resumed at {stops}")
    assert len(stops) == 5, stops  # one stop and one resume per preemption
    assert all(target <= stop for target, stop in zip(targets, stops)), (targets, stops)
    assert stops == sorted(set(stops)) and stops[-1] < max_iters, stops
    iterations = [i for _, i in _iterations_logged(_task0_log(run))]
    assert sorted(iterations) == list(range(1, max_iters + 1)), iterations  # none done twice

    _assert_same_weights(run_dir, reference.run_dir())
    row = _status_rows()[run.plan.run_id]
    assert (row["state"], row["iteration"], row["requeues"]) == ("COMPLETED", max_iters, 5), row


@pytest.mark.slow
def test_killed_task_fails_with_a_reason_and_resubmission_resumes(
        job_env, cityscapes_frame_root, monkeypatch, reference):
    """``kill -9`` of the training process of a running job: the job ends (FAILED, with a
    reason that ``segctl status`` shows) or is requeued by itself; submitting the recipe again
    resumes from the latest checkpoint on disk and ends with the undisturbed run's weights."""
    job = _submit(job_env / "killed", cityscapes_frame_root, monkeypatch, name=NAME, **RUN)
    run_dir, interval = job.plan.run_dir, RUN["checkpoint_interval"]
    _while_live(job, lambda: _progress(run_dir).get("iteration") or 0,
                lambda i: i >= interval + 3, timeout=JOB_BOUND_S, what="its first checkpoint")
    killed_pid = kill_task(job.job_id, rank=0)
    killed_at = _progress(run_dir).get("iteration")

    row = wait_until(lambda: _status_rows()[job.plan.run_id], lambda r: r["state"] not in LIVE,
                     timeout_s=JOB_BOUND_S, what=f"segctl status to see job {job.job_id} end "
                     f"after its task (pid {killed_pid}) was killed", interval_s=1.0)
    if row["state"] == "FAILED":  # sacct may name the signal a little after the job's end
        row = wait_until(lambda: _status_rows()[job.plan.run_id],
                         lambda r: re.search(KILLED_REASON, r["reason"] or "", re.I),
                         timeout_s=90, what="segctl status to name the signal that killed "
                         f"the task of job {job.job_id}", interval_s=2.0)
    table = runner.invoke(app, ["status"]).output
    latest = max(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("iter_*.pt"))
    print(f"\nkill -9 at iteration {killed_at}: job {row['state']}, reason {row['reason']!r}, "
          f"latest checkpoint iteration {latest}")

    if row["state"] != "COMPLETED":  # not requeued by itself: the user submits again
        again = runner.invoke(app, ["submit", str(job_env / "killed" / f"{NAME}.yaml")])
        assert again.exit_code == 0, again.output
        # Slurm may requeue the job after sacct showed it ended: submit then finds it in
        # progress and submits nothing, and that job (same id, requeued) is the one to await
        requeued = "nothing submitted" in again.output
        resumed = wait_until(lambda: _status_rows()[job.plan.run_id],
                             lambda r: (requeued or r["job_id"] != job.job_id)
                             and r["state"] not in LIVE,
                             timeout_s=JOB_BOUND_S, what="the resubmitted job to end",
                             interval_s=1.0)
        assert resumed["state"] == "COMPLETED", resumed
        log = (run_dir / "jobs" / f"{resumed['job_id']}_0_log.err").read_text(errors="replace")
    else:
        assert row["requeues"] >= 1, row
        log = "\n".join(_task0_log(job))
    resumed_from = [int(m.group(2)) for m in _RESUMED.finditer(log)]
    assert resumed_from == [latest], (resumed_from, latest)
    _assert_same_weights(run_dir, reference.run_dir())

    # what happened is said, not left as a bare state with a stale "training" progress
    if row["state"] != "COMPLETED":
        assert row["state"] == "FAILED", row
        assert row["reason"] and re.search(KILLED_REASON, row["reason"], re.I), (
            f"segctl status gives no reason for a job whose task was killed: {row}")
        assert row["reason"] in table, table


#: How ``segctl status`` names the end of a job whose task ``kill -9`` hit.
KILLED_REASON = r"signal 9|SIGKILL|killed"


@pytest.mark.slow
def test_slurmctld_restart_while_jobs_run(job_env, cityscapes_frame_root):
    """The controller is stopped and started while a two-run sweep trains: ``segctl status``
    keeps answering through the restart, and both runs complete without a requeue."""
    path = job_env / "ctld.yaml"
    values = {**RUN, "max_iters": 60}
    path.write_text(RECIPE.format(name="ctld", root=cityscapes_frame_root, **values))
    submitted = runner.invoke(app, ["submit", str(path), "--sweep", "train.seed=0,1"])
    assert submitted.exit_code == 0, submitted.output
    rows = _status_rows()
    assert len(rows) == 2, rows
    wait_until(lambda: [_progress(Path(r["run_dir"])).get("iteration") or 0
                        for r in rows.values()],
               lambda its: all(i >= 3 for i in its), timeout_s=JOB_BOUND_S,
               what="both sweep runs to train", interval_s=0.2)

    during: list[tuple[int, list[str]]] = []

    def status_while_restarting() -> None:
        result = runner.invoke(app, ["status", "--json"])
        states = [r["state"] for r in json.loads(result.output)] if result.exit_code == 0 else []
        during.append((result.exit_code, states))

    started = time.monotonic()
    restart_slurmctld(while_running=status_while_restarting)
    restart_s = time.monotonic() - started
    iterations = [_progress(Path(r["run_dir"])).get("iteration") for r in rows.values()]

    final = wait_until(_status_rows, lambda rs: all(r["state"] not in LIVE for r in rs.values()),
                       timeout_s=JOB_BOUND_S, what="segctl status to show both runs ended",
                       interval_s=1.0)
    print(f"\nslurmctld restarted in {restart_s:.1f} s at iterations {iterations}; "
          f"{len(during)} status calls meanwhile; states after: "
          f"{sorted(r['state'] for r in final.values())}")
    assert during and all(code == 0 for code, _ in during), during
    assert all(set(states) <= set(LIVE) | {"COMPLETED"} for _, states in during), during
    for row in final.values():
        assert (row["state"], row["iteration"], row["requeues"]) == ("COMPLETED", 60, 0), row


# --- staging ---------------------------------------------------------------------------------------

BUCKET = "faults"
BIG = "leftImg8bit/big.bin"


def _source_tree(seed: int, big_bytes: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"leftImg8bit/train/city/f{i:02d}.png": rng.randbytes(rng.randint(200, 4000))
             for i in range(10)}
    files.update({f"gtFine/train/city/f{i:02d}_labelTrainIds.png": rng.randbytes(500)
                  for i in range(10)})
    if big_bytes:
        files[BIG] = rng.randbytes(big_bytes)
    return files


def _upload(server, files: dict[str, bytes], prefix: str) -> None:
    fs = server.filesystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.pipe({f"{BUCKET}/{prefix}/{rel}": data for rel, data in files.items()})


def _final_files(root: Path) -> dict[str, bytes]:
    """Files under their final names (no manifest, no ``.part``, no temporary file)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(MANIFEST_NAME) and p.suffix != ".part"}


def test_stage_killed_mid_transfer_then_resumed(moto_server, tmp_path):
    """``kill -9`` of ``segctl stage`` while it copies a 48 MiB object: no file holds partial
    bytes under its final name; staging again continues the ``.part`` file, reads no file the
    manifest recorded, and ends with the source's bytes."""
    files = _source_tree(seed=1)
    _upload(moto_server, files, "tree")
    src, dst = f"s3://{BUCKET}/tree", tmp_path / "staged"
    options = moto_server.storage_options()
    stage(src, dst, storage_options=options, progress=False)  # an earlier, complete stage
    added = _source_tree(seed=2, big_bytes=48 * 1024 * 1024)
    added = {f"new/{rel}": data for rel, data in added.items()}
    files.update(added)
    _upload(moto_server, added, "tree")

    proc = start_segctl("stage", src, str(dst), "--workers", "1", "--quiet",
                        "--storage-option", f"endpoint_url={moto_server.url}")
    kill_when(proc, lambda: part_bytes(dst) > 0, timeout=120,
              what="bytes of the 48 MiB object in a .part file")
    assert proc.returncode == -9

    kept = part_bytes(dst)
    parts = list(dst.rglob("*.part"))
    assert len(parts) == 1 and parts[0].name.startswith("big.bin."), parts
    assert 0 < kept < len(files[f"new/{BIG}"]), (kept, "the copy was not cut mid-transfer")
    assert parts[0].read_bytes() == files[f"new/{BIG}"][:kept]  # a prefix of the object
    for rel, data in _final_files(dst).items():
        assert data == files[rel], f"{rel} holds other bytes than the source under its final name"
    recorded = set(read_manifest(dst)["files"])
    assert recorded >= set(files) - set(added)  # the earlier stage's files stay recorded

    mark = moto_server.log_size()
    moved: list[int] = []
    result = stage(src, dst, storage_options=options, progress=False, on_bytes=moved.append)
    assert _final_files(dst) == files and not list(dst.rglob("*.part"))
    read_again = set(moto_server.object_gets(BUCKET, mark))
    assert not read_again & {f"tree/{rel}" for rel in recorded}, read_again
    assert set(result.copied) == set(files) - recorded
    rest = sum(len(files[rel]) for rel in set(files) - recorded) - kept
    assert moved and moved[-1] == rest, (moved[-1:], rest)  # the kept bytes were not read again
    print(f"\nstage killed with {kept} of {len(files[f'new/{BIG}'])} bytes in big.bin's .part "
          f"file; the next stage copied {len(result.copied)} files, {moved[-1]} bytes")


def test_staged_tree_changed_underneath_is_repaired(moto_server, tmp_path):
    """After staging, one file's bytes are flipped in place (same size), one is truncated and
    one removed: the next ``segctl stage`` finds exactly these three, copies them again from
    the source and leaves the others alone."""
    files = _source_tree(seed=3)
    _upload(moto_server, files, "tree")
    src, dst = f"s3://{BUCKET}/tree", tmp_path / "staged"
    stage(src, dst, storage_options=moto_server.storage_options(), progress=False)
    assert _final_files(dst) == files

    flipped, truncated, removed = sorted(files)[:3]
    flip_bytes(dst / flipped)
    with open(dst / truncated, "r+b") as handle:
        handle.truncate(10)
    (dst / removed).unlink()
    changed = {flipped, truncated, removed}

    mark = moto_server.log_size()
    result = runner.invoke(app, ["stage", src, str(dst), "--quiet",
                                 "--storage-option", f"endpoint_url={moto_server.url}"])
    assert result.exit_code == 0, result.output
    assert f"{len(files)} files, 3 copied" in result.output, result.output
    assert set(moto_server.object_gets(BUCKET, mark)) == {f"tree/{rel}" for rel in changed}
    assert _final_files(dst) == files
    digest = hashlib.md5(files[flipped]).hexdigest()
    assert read_manifest(dst)["files"][flipped]["md5"] == digest

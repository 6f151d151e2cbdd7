"""Training checkpoints under faults: bytes changed on disk, a file cut short, a full disk, a
checkpoint from an older segctl. Small real runs (MiT-B0 on the one real Cityscapes frame,
6 iterations, a checkpoint every 2) through :func:`trainer.entry.run_training`."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from segctl.recipe.rundir import RunDir
from tests.trainer_runs import make_run_dir, small_recipe
from trainer import checkpoint as ckpt
from trainer.entry import run_training

MAX_ITERS = 6


def _recipe(cityscapes_frame_root, tracking_uri, max_iters: int = MAX_ITERS):
    return small_recipe(
        cityscapes_frame_root, tracking_uri, name="ckpt-faults",
        data={"crop_size": [64, 128], "ratio_range": [0.5, 1.0]},
        schedule={"max_iters": max_iters, "warmup_iters": 0, "checkpoint_interval": 2,
                  "log_interval": 2, "val_interval": 1000},
    )


@pytest.fixture(scope="module")
def straight_run(cityscapes_frame_root, tracking_uri, tmp_path_factory) -> Path:
    """The run directory of an uninterrupted run (resume is exact: any resume reaches its
    ``final.pt``)."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("straight") / "run",
                           _recipe(cityscapes_frame_root, tracking_uri))
    run_training(run_dir)
    return run_dir


def _logged_losses(run_dir: Path) -> dict[int, float]:
    """Training loss by iteration, as the run's tracking journal recorded it."""
    losses = {}
    for line in RunDir(run_dir).tracking_journal.read_text().splitlines():
        record = json.loads(line)
        if record.get("op") == "metrics":
            losses.update({step: value for key, value, _, step in record["items"]
                           if key == "loss"})
    return losses


def _assert_same_weights(run_dir: Path, straight_run: Path) -> None:
    final = torch.load(ckpt.final_path(run_dir), map_location="cpu", weights_only=True)
    expected = torch.load(ckpt.final_path(straight_run), map_location="cpu", weights_only=True)
    assert final.keys() == expected.keys()
    different = [k for k in final if not torch.equal(final[k], expected[k])]
    # the losses say which run left the common path, and at which iteration
    assert not different, (
        f"final weights differ from an uninterrupted run: {different[:5]}; training loss by "
        f"iteration, uninterrupted {_logged_losses(straight_run)}, resumed "
        f"{_logged_losses(run_dir)}"
    )


def _flip_bytes(path: Path) -> None:
    """Change 16 bytes in the middle of the file, keeping its size."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def _cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _messages(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("damage, says", [(_flip_bytes, "checksum mismatch"),
                                          (_cut_short, "cut short")],
                         ids=["bytes-flipped", "truncated"])
@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(
        cityscapes_frame_root, tracking_uri, straight_run, tmp_path, caplog, damage, says):
    caplog.set_level(logging.INFO)
    run_dir = make_run_dir(tmp_path / "run", _recipe(cityscapes_frame_root, tracking_uri))
    run_training(run_dir, stop_after=4)
    latest = ckpt.iteration_path(run_dir, 4)
    size = latest.stat().st_size
    damage(latest)
    assert latest.stat().st_size == size or damage is _cut_short
    assert RunDir(run_dir).read_progress()["iteration"] == 4

    # the resumed job up to its first iteration: iteration 2 is taken, the file named
    caplog.clear()
    first = run_training(run_dir, stop_after=2)
    assert first["iteration"] == 2 and not first["finished"]
    log = _messages(caplog)
    assert re.search(rf"iter_0000004\.pt cannot be used: .*{says}", log), log
    assert "resuming from iter_0000002.pt, the newest usable checkpoint, instead of " \
           "iter_0000004.pt" in log, log
    progress = RunDir(run_dir).read_progress()
    assert progress["iteration"] == 4, "progress.json moved backwards before training resumed"
    assert progress["resumed_from"] == "iter_0000002.pt"
    (rejected,) = progress["rejected_checkpoints"]
    assert rejected.startswith("iter_0000004.pt: ") and says in rejected
    assert (ckpt.checkpoint_dir(run_dir) / "iter_0000004.pt.rejected").is_file()

    from mlflow.tracking import MlflowClient

    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    tags = MlflowClient(tracking_uri).get_run(run_id).data.tags
    assert tags["segctl.resumed_from"] == "iter_0000002.pt"
    assert "iter_0000004.pt" in tags["segctl.rejected_checkpoints"]

    # the next job trains on from iteration 2 and ends where an undisturbed run ends
    second = run_training(run_dir)
    assert second["finished"] and RunDir(run_dir).read_progress()["phase"] == "done"
    _assert_same_weights(run_dir, straight_run)
    for _, path in ckpt.iteration_checkpoints(run_dir):
        assert ckpt.verify_checksum(path)


@pytest.mark.slow
def test_the_only_checkpoint_cut_short_fails_naming_it_and_keeps_progress(
        cityscapes_frame_root, tracking_uri, tmp_path):
    run_dir = make_run_dir(tmp_path / "run", _recipe(cityscapes_frame_root, tracking_uri))
    run_training(run_dir, stop_after=2)
    _cut_short(ckpt.iteration_path(run_dir, 2))
    with pytest.raises(Exception, match=r"iter_0000002\.pt.*cut short") as caught:
        run_training(run_dir)
    assert caught.type.__name__ == "CorruptCheckpointError"
    progress = RunDir(run_dir).read_progress()
    assert progress["phase"] == "failed" and progress["iteration"] == 2
    assert "iter_0000002.pt" in progress["reason"] and "Move these files away" in \
        progress["reason"]
    assert ckpt.iteration_path(run_dir, 2).is_file()  # left for the user to look at


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at a folder of its own: room for one MiT-B0 training checkpoint (45 MB),
    not two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if "permission denied" in result.stderr.lower() or "not permitted" in result.stderr:
            pytest.skip(f"cannot mount a tmpfs here (EPERM): {result.stderr.strip()}")
        raise RuntimeError(f"mount failed: {result.stderr}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_names_path_and_bytes_and_keeps_the_previous(
        cityscapes_frame_root, tracking_uri, small_disk):
    run_dir = make_run_dir(small_disk / "run",
                           _recipe(cityscapes_frame_root, tracking_uri, max_iters=4))
    with pytest.raises(OSError) as caught:  # ENOSPC, as an OSError
        run_training(run_dir)
    previous = ckpt.iteration_path(run_dir, 2)
    needed = previous.stat().st_size  # iteration 4's file has the same layout and size
    expected = (f"No space left on device ({ckpt.iteration_path(run_dir, 4)}, {needed} bytes "
                "needed)")
    assert str(caught.value) == expected and caught.value.errno == errno.ENOSPC
    progress = RunDir(run_dir).read_progress()
    assert progress["phase"] == "failed" and progress["reason"] == expected
    assert "inline_container" not in progress["reason"]
    # the partial file is gone; the previous checkpoint is complete, verified and loads
    assert sorted(p.name for p in ckpt.checkpoint_dir(run_dir).iterdir()) == ["iter_0000002.pt"]
    assert ckpt.verify_checksum(previous)
    assert ckpt.load_training_state(previous)["iteration"] == 2


def test_checksum_is_embedded_verified_and_checked_on_load(tmp_path):
    path = ckpt.atomic_save({"iteration": 3, "model": {"w": torch.arange(1000.0)},
                             "optimizer": {}}, ckpt.iteration_path(tmp_path, 3))
    data = path.read_bytes()
    # the documented layout: SHA-256 of every byte before the 78-byte comment, in the comment
    assert data[-78:-64] == b"segctl-sha256:"
    assert hashlib.sha256(data[:-78]).hexdigest() == data[-64:].decode()
    assert ckpt.verify_checksum(path) is True
    assert ckpt.load_training_state(path)["iteration"] == 3
    assert os.listdir(path.parent) == [path.name]  # no sidecar, no temporary file

    _flip_bytes(path)
    assert torch.load(path, weights_only=True)["iteration"] == 3  # torch alone sees nothing
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"iter_0000003\.pt: checksum mismatch"):
        ckpt.load_training_state(path)
    with pytest.raises(ckpt.CorruptCheckpointError, match="checksum mismatch"):
        ckpt.load_model_weights(path)  # evaluation's load verifies too


def test_prune_never_removes_the_last_complete_checkpoint(tmp_path):
    good = ckpt.atomic_save({"i": 2}, ckpt.iteration_path(tmp_path, 2))
    for i in (4, 6):
        _cut_short(ckpt.atomic_save({"i": i, "w": torch.ones(1000)},
                                    ckpt.iteration_path(tmp_path, i)))
    assert ckpt.prune(tmp_path) == []
    assert good.is_file()
    newest = ckpt.atomic_save({"i": 8}, ckpt.iteration_path(tmp_path, 8))
    ckpt.atomic_save({"i": 10}, ckpt.iteration_path(tmp_path, 10))
    removed = ckpt.prune(tmp_path)  # two complete newer ones now: the rest may go
    assert [p.name for p in removed] == ["iter_0000002.pt", "iter_0000004.pt", "iter_0000006.pt"]
    assert newest.is_file()


@pytest.mark.slow
def test_checkpoint_from_an_older_segctl_loads_and_says_so_once(
        cityscapes_frame_root, tracking_uri, straight_run, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_dir = make_run_dir(tmp_path / "run", _recipe(cityscapes_frame_root, tracking_uri))
    run_training(run_dir, stop_after=4)
    for _, path in ckpt.iteration_checkpoints(run_dir):  # rewritten as older segctl wrote them
        state = torch.load(path, map_location="cpu", weights_only=True)
        torch.save(state, path)
        assert ckpt.verify_checksum(path) is False
    caplog.clear()
    assert run_training(run_dir)["finished"]
    notes = [r for r in caplog.records if "no checksum" in r.getMessage()]
    assert len(notes) == 1 and "iter_0000004.pt" in notes[0].getMessage()
    assert "resumed from" in _messages(caplog) and "cannot be used" not in _messages(caplog)
    _assert_same_weights(run_dir, straight_run)


@pytest.mark.slow
def test_a_resumed_job_never_moves_progress_backwards(cityscapes_frame_root, tracking_uri,
                                                      tmp_path, monkeypatch):
    """Every write of ``progress.json`` by a resumed job, in order: the first one already
    shows the resumed iteration (never ``4 -> 0 -> 6``), and none is older than the one
    before; a job re-validating a finished run (``segctl submit --rerun``) never shows less
    than the final iteration."""
    import trainer.progress

    run_dir = make_run_dir(tmp_path / "run", _recipe(cityscapes_frame_root, tracking_uri))
    run_training(run_dir, stop_after=4)
    assert RunDir(run_dir).read_progress()["iteration"] == 4

    written: list[dict] = []
    write = trainer.progress.atomic_write_json

    def recorded(path, state, *args, **kwargs):  # every write, as the job made it
        written.append(dict(state))
        return write(path, state, *args, **kwargs)

    monkeypatch.setattr(trainer.progress, "atomic_write_json", recorded)
    run_training(run_dir)
    iterations = [state["iteration"] for state in written]
    assert iterations[0] == 4, iterations
    assert iterations == sorted(iterations) and iterations[-1] == MAX_ITERS, iterations
    assert written[-1]["phase"] == "done"

    written.clear()
    run_training(run_dir)  # the finished run, re-validated
    iterations = [state["iteration"] for state in written]
    assert iterations and set(iterations) == {MAX_ITERS}, iterations
    assert written[-1]["phase"] == "done"

"""The training loop end to end on the real Cityscapes sample frame: overfit, exact resume,
progress.json, checkpoint files; plus the data order and checkpoint helpers on their own."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segctl.recipe.rundir import RunDir
from tests.trainer_runs import make_run_dir, small_recipe
from trainer import checkpoint as ckpt
from trainer.data.order import DataOrder
from trainer.entry import run_evaluation, run_training
from trainer.models import build_segmentor
from trainer.models.weights import load_segmentor_weights
from trainer.progress import Progress


# --- (a) overfit ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_overfit_one_frame(cityscapes_frame_root, tracking_uri, tmp_path):
    """MiT-B0 from scratch memorises the frame: aAcc >= 0.85 with whole inference."""
    iterations = 100  # reaches ~94% aAcc on the sample frame (tests/data/samples)
    recipe = small_recipe(
        cityscapes_frame_root, tracking_uri,
        name="overfit",
        schedule={"max_iters": iterations, "val_interval": 1000, "checkpoint_interval": 50,
                  "log_interval": 25},
        train={"deterministic": False},
    )
    run_dir = make_run_dir(tmp_path / "run", recipe)
    started = time.perf_counter()
    result = run_training(run_dir)
    train_seconds = time.perf_counter() - started
    evaluation = run_evaluation(run_dir)
    seconds = time.perf_counter() - started

    a_acc, miou = evaluation["metrics"]["aAcc"], evaluation["metrics"]["mIoU"]
    print(
        f"\nOVERFIT: {iterations} iterations (batch 2, crop 128x256) in {train_seconds:.1f} s "
        f"training, {seconds:.1f} s with evaluation; aAcc {a_acc:.2f}%, mIoU {miou:.2f}%, "
        f"{result['seconds_per_iter']:.3f} s/iter, final loss {result['loss']:.4f}"
    )
    assert result["finished"] and result["iteration"] == iterations
    assert a_acc >= 85.0
    assert result["metrics"]["aAcc"] == pytest.approx(a_acc)
    assert evaluation["name"] == "final-ss" and evaluation["checkpoint"].endswith("final.pt")
    assert (run_dir / "eval" / "final-ss.json").is_file()
    table = (run_dir / "eval" / "final-ss.txt").read_text()
    assert "aAcc" in table and "road" in table
    # final.pt holds the model alone, mmseg names, strict-loadable
    fresh = build_segmentor("segformer_mit_b0", num_classes=19)
    load_segmentor_weights(fresh, str(ckpt.final_path(run_dir)), strict=True)
    # the time is printed above, not asserted: speed belongs to benchmarks/, not to a unit test


# --- (b) resume -----------------------------------------------------------------------------------


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt.final_path(run_dir), map_location="cpu", weights_only=True)


def _resume_recipe(cityscapes_frame_root, tracking_uri, **sections):
    base = {
        "data": {"crop_size": [64, 128], "ratio_range": [0.5, 1.0]},
        "schedule": {"max_iters": 12, "warmup_iters": 3},
    }
    base.update(sections)
    return small_recipe(cityscapes_frame_root, tracking_uri, **base)


@pytest.mark.slow
def test_resume_continues_exactly(cityscapes_frame_root, tracking_uri, tmp_path):
    recipe = _resume_recipe(cityscapes_frame_root, tracking_uri)
    straight = make_run_dir(tmp_path / "straight", recipe)
    run_training(straight)

    resumed = make_run_dir(tmp_path / "resumed", recipe)
    first = run_training(resumed, stop_after=6)
    assert first["iteration"] == 6 and not first["finished"]
    assert not ckpt.final_path(resumed).exists()
    assert RunDir(resumed).read_progress()["iteration"] == 6
    second = run_training(resumed)
    assert second["iteration"] == 12 and second["finished"]

    a, b = _final_weights(straight), _final_weights(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    assert first["loss"] is not None


@pytest.mark.slow
def test_worker_count_does_not_change_results(cityscapes_frame_root, tracking_uri, tmp_path):
    zero = make_run_dir(tmp_path / "w0", _resume_recipe(cityscapes_frame_root, tracking_uri,
                                                        schedule={"max_iters": 4}))
    two = make_run_dir(tmp_path / "w2", _resume_recipe(
        cityscapes_frame_root, tracking_uri, schedule={"max_iters": 4},
        data={"crop_size": [64, 128], "ratio_range": [0.5, 1.0], "num_workers": 2},
    ))
    run_training(zero)
    run_training(two)
    a, b = _final_weights(zero), _final_weights(two)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_data_order_is_a_function_of_seed_and_iteration():
    order = DataOrder(dataset_size=10, batch_size=3, world_size=2, seed=5)
    again = DataOrder(dataset_size=10, batch_size=3, world_size=2, seed=5)
    seen = [order.sample(i, r, s) for i in range(5) for r in range(2) for s in range(3)]
    assert seen == [again.sample(i, r, s) for i in range(5) for r in range(2) for s in range(3)]
    # each epoch is a permutation; ranks read disjoint positions
    first_epoch = [idx for idx, _ in seen[:10]]
    assert sorted(first_epoch) == list(range(10))
    assert len({seed for _, seed in seen}) == len(seen)
    assert DataOrder(10, 3, 2, seed=6).sample(0, 0, 0) != order.sample(0, 0, 0) or \
        DataOrder(10, 3, 2, seed=6).permutation(0).tolist() != order.permutation(0).tolist()


# --- (c) progress.json ----------------------------------------------------------------------------


@pytest.mark.slow
def test_progress_json_after_training(cityscapes_frame_root, tracking_uri, tmp_path):
    recipe = _resume_recipe(cityscapes_frame_root, tracking_uri,
                            schedule={"max_iters": 8, "log_interval": 2})
    run_dir = make_run_dir(tmp_path / "run", recipe)
    run_training(run_dir)
    state = json.loads((run_dir / "progress.json").read_text())
    assert set(state) == {
        "phase", "iteration", "max_iters", "loss", "lr", "miou", "seconds_per_iter",
        "eta_seconds", "updated_at",
    }
    assert state["phase"] == "done" and state["iteration"] == state["max_iters"] == 8
    assert state["loss"] > 0 and state["lr"] >= 0
    assert 0 <= state["miou"] <= 100
    assert state["seconds_per_iter"] > 0 and state["eta_seconds"] == 0
    assert abs(state["updated_at"] - time.time()) < 600


def test_progress_timing_and_phases(tmp_path):
    now = [100.0]
    progress = Progress(tmp_path, max_iters=100, clock=lambda: now[0], smoothing=0.5)
    progress.update(phase="training", iteration=0)
    now[0] += 20.0
    progress.update(iteration=10, loss=1.5, lr=0.01)
    state = RunDir(tmp_path).read_progress()
    assert state["seconds_per_iter"] == pytest.approx(2.0)
    assert state["eta_seconds"] == pytest.approx(180.0)
    progress.update(phase="evaluating")
    now[0] += 1000.0  # evaluation time is not counted per iteration
    progress.update(phase="training", miou=float("nan"))
    progress.update(iteration=10)
    now[0] += 10.0
    progress.update(iteration=20)
    state = RunDir(tmp_path).read_progress()
    assert state["seconds_per_iter"] == pytest.approx(1.5)  # 2.0 + 0.5 * (1.0 - 2.0)
    assert state["miou"] is None  # non-finite values are stored as null
    with pytest.raises(ValueError):
        progress.update(phase="sleeping")
    with pytest.raises(ValueError):
        progress.update(speed=3)
    now[0] += 500.0
    progress.mark(20)  # e.g. loader start-up: not counted
    now[0] += 3.0
    progress.update(iteration=22)
    # 1.5 + 0.5 * 0
    assert RunDir(tmp_path).read_progress()["seconds_per_iter"] == pytest.approx(1.5)
    assert Progress(tmp_path / "other", 5, enabled=False).update(iteration=1) is None
    assert not (tmp_path / "other" / "progress.json").exists()


def test_progress_rewrite_is_atomic(tmp_path):
    progress = Progress(tmp_path, max_iters=10_000)
    progress.update(phase="training", iteration=0)
    stop = threading.Event()
    errors: list[Exception] = []

    def read_forever():
        while not stop.is_set():
            try:
                json.loads((tmp_path / "progress.json").read_text())
            except Exception as exc:  # a partial file would fail to parse
                errors.append(exc)

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for i in range(300):
            progress.update(iteration=i, loss=1.0 / (i + 1), lr=1e-3)
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


# --- (d) checkpoint files -------------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoints_complete_and_pruned(cityscapes_frame_root, tracking_uri, tmp_path):
    recipe = _resume_recipe(cityscapes_frame_root, tracking_uri, schedule={"max_iters": 12,
                                                              "checkpoint_interval": 2})
    run_dir = make_run_dir(tmp_path / "run", recipe)
    run_training(run_dir)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["final.pt", "iter_0000010.pt", "iter_0000012.pt"]
    assert ckpt.latest_checkpoint(run_dir).name == "iter_0000012.pt"
    state = ckpt.load_training_state(ckpt.latest_checkpoint(run_dir))
    assert state["iteration"] == 12
    assert set(state) >= {"model", "optimizer", "lr_schedule", "rng", "data", "iteration"}
    assert state["data"]["seed"] == 0 and len(state["rng"]) == 1
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert state["optimizer"]["param_groups"][0]["base_lr"] == pytest.approx(1e-3)


def test_atomic_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "checkpoints" / "iter_0000001.pt"
    ckpt.atomic_save({"x": torch.ones(2)}, target)
    with pytest.raises(Exception):
        ckpt.atomic_save({"bad": lambda: None}, target)  # not picklable: fails mid-write
    assert sorted(p.name for p in target.parent.iterdir()) == ["iter_0000001.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(2))


def test_prune_keeps_last_two(tmp_path):
    for i in (3, 10, 7, 1):
        ckpt.atomic_save({"i": i}, ckpt.iteration_path(tmp_path, i))
    ckpt.save_final_weights(tmp_path, {"w": torch.zeros(1)})
    removed = ckpt.prune(tmp_path)
    assert sorted(p.name for p in removed) == ["iter_0000001.pt", "iter_0000003.pt"]
    assert sorted(p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()) == [
        "final.pt", "iter_0000007.pt", "iter_0000010.pt",
    ]


def test_rng_state_round_trip_under_weights_only(tmp_path):
    import random

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = ckpt.capture_rng_state()
    ckpt.atomic_save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_load_model_weights_from_fsspec_url(tmp_path):
    import fsspec

    with fsspec.open("memory://weights/model.pt", "wb") as handle:
        torch.save({"state_dict": {"w": torch.arange(3)}}, handle)
    loaded = ckpt.load_model_weights("memory://weights/model.pt")
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3))
    ckpt.atomic_save({"w": torch.ones(1)}, tmp_path / "local.pt")
    assert torch.equal(ckpt.load_model_weights(tmp_path / "local.pt")["w"], torch.ones(1))


@pytest.mark.slow
def test_train_step_weighs_auxiliary_heads_as_the_model_declares(tmp_path):
    from trainer.distributed import build_accelerator
    from trainer.engine import train_step
    from trainer.models.losses import segmentation_loss

    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    torch.manual_seed(0)
    model = build_segmentor("ocr_hrnetv2_w18_small", num_classes=19).train()
    assert model.loss_weights == {"aux": 0.4}
    images = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 19, (2, 64, 64))
    labels[:, :8] = 255
    with torch.no_grad():
        outputs = model(images)
        weighted, parts = segmentation_loss(outputs, labels, weights={"aux": 0.4})
        unweighted, _ = segmentation_loss(outputs, labels)
    assert not torch.isclose(weighted, unweighted)
    accelerator = build_accelerator("fp32")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, optimizer, {"image": images, "label": labels}, accelerator, recipe)
    torch.testing.assert_close(loss, weighted)

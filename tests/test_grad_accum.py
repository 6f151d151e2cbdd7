"""Gradient accumulation (``train.grad_accum_steps``): W processes accumulating N micro-batches
train as W * N processes would.

Fast checks: the recipe field (validation, run id, MLflow params), the data order, MCIBI's
memory update once per step. Slow checks (``@pytest.mark.slow``): three steps of
``train_step`` with 2 micro-batches against one batch of twice the images; real runs on the
Cityscapes sample frame: 2 processes x N against 1 process x 2N (N = 1, 2), the learning rate
per optimizer step and the MLflow params, preemption mid-step and exact resume.

Tolerances. The fp32 comparisons below compare two computations that add the same terms in
another order (a batch of 2 images summed inside one kernel against two gradients of one image
added; two ranks' gradients all-reduced against two micro-batches' accumulated), so each
gradient element differs by a few float32 rounding steps (eps = 1.2e-7) of the terms it sums.
SGD (not AdamW) is used there: its update is linear in the gradient, so such differences stay
of that relative size, whereas AdamW divides by sqrt(v) and turns a rounding difference in a
near-zero gradient element into a difference of the full learning rate. The tests measure
max |difference of the two runs' weights| / max |how far training moved them over the same
steps| and accept up to 1e-4: about 100 times the differences observed on CPU (1.6e-6 for
2 x batch 1 against batch 2; 1.2e-6 for 2 processes x 2 against 1 x 4; exactly 0 for 2
processes x 1 against 1 x 2, where both sides compute g0 / 2 + g1 / 2), and thousands of times
smaller than a wrong scale of the loss (a missing or doubled 1 / N moves the weights by a
relative 0.5 to 1). Resume after preemption is compared bit for bit, as the existing resume
tests do.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from pydantic import ValidationError
from torch import nn

from segctl.recipe import load_recipe, run_id
from segctl.recipe.rundir import RunDir
from segctl.recipe.schema import TrainConfig
from tests.trainer_runs import make_run_dir, small_recipe
from trainer import checkpoint as ckpt
from trainer.data.order import AugmentedDataset, DataOrder, IterationSampler, resolve_schedule
from trainer.engine import AccumulatedMean, train_step
from trainer.tracking import recipe_params

#: max |difference of two runs' weights| / max |their update| accepted (see the module docstring).
RELATIVE_TOLERANCE = 1e-4


# --- (5) the recipe field ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, says", [
    (0, "greater than or equal to 1"),
    (-2, "greater than or equal to 1"),
    (1.5, "valid integer"),
    ("two", "valid integer"),
])
def test_grad_accum_steps_below_one_or_not_an_integer_is_refused(value, says):
    with pytest.raises(ValidationError, match=says) as caught:
        TrainConfig(batch_size=2, grad_accum_steps=value)
    assert caught.value.errors()[0]["loc"] == ("grad_accum_steps",)
    assert TrainConfig(batch_size=2).grad_accum_steps == 1


def test_grad_accum_steps_error_names_file_line_and_field(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: accum\ndata:\n  dataset: cityscapes\n  root: data/cityscapes\n"
        "  crop_size: [512, 1024]\nmodel:\n  name: segformer_mit_b0\nschedule:\n"
        "  max_iters: 1000\n  val_interval: 500\n  checkpoint_interval: 500\ntrain:\n"
        "  batch_size: 2\n  grad_accum_steps: 0\n"
    )
    with pytest.raises(Exception, match="grad_accum_steps") as caught:
        load_recipe(path)
    assert f"{path}:14: train.grad_accum_steps: Input should be greater than or equal to 1 " \
           "(got 0)" in str(caught.value)
    assert load_recipe(path, ["train.grad_accum_steps=4"]).recipe.train.grad_accum_steps == 4


def test_run_id_changes_only_when_accumulating_and_params_carry_it(tmp_path):
    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")

    def with_accum(n):
        return recipe.model_copy(update={"train": recipe.train.model_copy(
            update={"grad_accum_steps": n})})

    assert recipe.train.grad_accum_steps == 1
    assert run_id(with_accum(1)) == run_id(recipe)  # written out or left out: the same run
    assert len({run_id(recipe), run_id(with_accum(2)), run_id(with_accum(4))}) == 3
    assert recipe_params(with_accum(2))["train.grad_accum_steps"] == "2"


# --- the data order ---------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["none", "per_rank", "per_rank_drop_last"])
def test_micro_batches_read_what_more_processes_read(padding):
    """Rank r's micro-batch a of step k reads what rank a * W + r of a run with W * N ranks
    reads at step k; epochs are padded as for those W * N ranks."""
    accum = DataOrder(11, 2, 2, seed=3, epoch_padding=padding, grad_accum_steps=3)
    wide = DataOrder(11, 2, 6, seed=3, epoch_padding=padding)
    assert accum.epoch_positions == wide.epoch_positions
    assert accum.images_per_step == wide.images_per_step == 12
    for rank in range(2):
        sampler = IterationSampler(accum, rank, 1, 4)  # optimizer steps 1, 2, 3
        expected = [wide.sample(step, a * 2 + rank, slot)
                    for step in range(1, 4) for a in range(3) for slot in range(2)]
        assert list(sampler) == expected and len(sampler) == len(expected)
    # the N micro-batches of step k are the next N batches of the order
    assert [accum.sample(k * 3 + a, 1, 0) for k in (0, 1) for a in range(3)] == \
        [wide.sample(k, a * 2 + 1, 0) for k in (0, 1) for a in range(3)]
    assert accum.state()["grad_accum_steps"] == 3 and "grad_accum_steps" not in wide.state()


def test_one_process_micro_batches_read_what_one_larger_batch_reads():
    """1 process x N micro-batches of b reads, step by step, the images (and augmentation
    seeds) of 1 process x one batch of N * b, in the same order."""
    accum = DataOrder(7, 2, 1, seed=1, grad_accum_steps=3)
    large = DataOrder(7, 6, 1, seed=1)
    assert list(IterationSampler(accum, 0, 2, 5)) == list(IterationSampler(large, 0, 2, 5))


@pytest.mark.parametrize("padding", ["none", "per_rank", "per_rank_drop_last"])
def test_epoch_schedule_counts_optimizer_steps_of_the_larger_run(tmp_path, padding):
    def epochs_recipe(batch, accum):
        return small_recipe(tmp_path, f"sqlite:///{tmp_path / 'm.db'}",
                            schedule={"max_iters": None, "max_epochs": 3,
                                      "epoch_padding": padding},
                            train={"batch_size": batch, "grad_accum_steps": accum})

    steps = resolve_schedule(epochs_recipe(2, 4), 2975, 2).schedule.max_iters
    assert steps == resolve_schedule(epochs_recipe(2, 1), 2975, 8).schedule.max_iters
    order = DataOrder(2975, 2, 2, 0, padding, grad_accum_steps=4)
    assert steps * order.images_per_step >= 3 * 2975  # three epochs' images at least
    if padding != "none":  # a padded epoch is a whole number of steps
        assert steps * order.images_per_step == 3 * order.epoch_positions


# --- (2) one step: N micro-batches of b against one batch of N * b ------------------------------


def _tiny_segformer() -> nn.Module:
    """MiT-B0 with a narrow head, no dropout or stochastic depth, in training mode with its
    BatchNorm layers in eval mode (their batch statistics would couple the batch's images)."""
    from trainer.models import build_segmentor

    torch.manual_seed(0)
    model = build_segmentor("segformer_mit_b0", num_classes=5, drop_path_rate=0.0,
                            dropout_ratio=0.0, decoder_channels=16).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return model


def _relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                       start: dict[str, torch.Tensor]) -> float:
    """max |a - b| / max |a - start| over the float entries present in all three."""
    keys = [k for k in a if a[k].is_floating_point()]
    gap = max(float((a[k] - b[k]).abs().max()) for k in keys)
    moved = max(float((a[k] - start[k]).abs().max()) for k in keys)
    assert moved > 0, "training did not move the weights"
    return gap / moved


@pytest.mark.slow
def test_two_micro_batches_equal_one_batch_of_twice_the_images(tmp_path):
    """1 process x accumulation 2 x batch 1 against 1 process x batch 2, 3 SGD steps, through
    :func:`trainer.engine.train_step` (mean cross-entropy over a fixed pixel count, so the
    mean of the micro-batch means is the batch mean)."""
    from trainer.distributed import build_accelerator, teardown
    from trainer.optim import build_optimizer

    base = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'm.db'}",
                        optim={"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0})
    accum_recipe = base.model_copy(update={"train": base.train.model_copy(
        update={"grad_accum_steps": 2})})
    generator = torch.Generator().manual_seed(1)
    steps = [(torch.randn(2, 3, 32, 64, generator=generator),
              torch.randint(0, 5, (2, 32, 64), generator=generator)) for _ in range(3)]
    for images, labels in steps:
        labels[:, :4] = 255  # ignored pixels count in the mean's denominator (mmseg)

    accelerator = build_accelerator("fp32")
    try:
        whole, split = _tiny_segformer(), _tiny_segformer()
        start = {k: v.clone() for k, v in whole.state_dict().items()}
        opt_whole, opt_split = build_optimizer(whole, base.optim), build_optimizer(split, base.optim)
        for images, labels in steps:
            loss_whole = train_step(whole, opt_whole, {"image": images, "label": labels},
                                    accelerator, base)
            micro = ({"image": images[i:i + 1], "label": labels[i:i + 1]} for i in range(2))
            loss_split = train_step(split, opt_split, micro, accelerator, accum_recipe)
            torch.testing.assert_close(loss_split, loss_whole, rtol=1e-5, atol=0)
        distance = _relative_distance(split.state_dict(), whole.state_dict(), start)
        print(f"\nrelative weight distance, 2 x batch 1 vs batch 2: {distance:.2e}")
        assert distance < RELATIVE_TOLERANCE

        # a step given the wrong number of micro-batches is refused before the optimizer steps
        before = {k: v.clone() for k, v in split.state_dict().items()}
        with pytest.raises(ValueError, match="grad_accum_steps=2 micro-batches got 1"):
            train_step(split, opt_split, iter([{"image": images[:1], "label": labels[:1]}]),
                       accelerator, accum_recipe)
        assert all(torch.equal(before[k], v) for k, v in split.state_dict().items())
    finally:
        teardown(accelerator)


# --- MCIBI's memory: once per step, the larger run's all-reduced update -------------------------


def test_mcibi_memory_updates_once_per_step_as_more_processes_would():
    from trainer.models.mcibi import FeaturesMemory

    torch.manual_seed(0)
    memory = FeaturesMemory(num_classes=3, feats_channels=8, transform_channels=4,
                            out_channels=8)
    with torch.no_grad():
        memory.memory.normal_()  # no empty slot: the moving-average path
    start = memory.memory.clone()
    feats = [torch.randn(2, 8, 4, 4) for _ in range(2)]
    labels = [torch.randint(0, 3, (2, 4, 4)) for _ in range(2)]
    labels[1][:] = 1  # classes 0 and 2 absent from the second micro-batch

    # 2 processes: each updates from the same memory, the all-reduce takes the mean
    updates = []
    for f, y in zip(feats, labels):
        memory.memory.copy_(start)
        memory.update(f, y, 0.5, reduce=lambda t: t)
        updates.append(memory.memory.clone())
    memory.memory.copy_(start)

    reduce = AccumulatedMean(2)
    memory.update(feats[0], labels[0], 0.5, reduce=reduce)
    assert torch.equal(memory.memory, start), "the memory moved before the step's last micro-batch"
    memory.update(feats[1], labels[1], 0.5, reduce=reduce)
    torch.testing.assert_close(memory.memory, (updates[0] + updates[1]) / 2)
    assert not torch.allclose(memory.memory, updates[1])
    with pytest.raises(RuntimeError, match="called 3 times"):
        reduce(start)


# --- real runs: the Cityscapes sample frame, MiT-B0 with a narrow head ------------------------------

MAX_ITERS = 4


def _run_recipe(root: Path, tracking_uri: str, *, batch_size: int = 1, accum: int = 1):
    """SGD (see the module docstring), no dropout or stochastic depth (their random draws
    follow per-rank RNG streams), warm-up then poly, a checkpoint every 2 steps."""
    return small_recipe(
        root, tracking_uri, name="grad-accum",
        data={"crop_size": [32, 64], "ratio_range": [0.5, 1.0]},
        model={"name": "segformer_mit_b0", "drop_path_rate": 0.0,
               "options": {"dropout_ratio": 0.0, "decoder_channels": 32}},
        optim={"type": "sgd", "lr": 0.01, "momentum": 0.9},
        schedule={"max_iters": MAX_ITERS, "warmup_iters": 2, "checkpoint_interval": 2,
                  "log_interval": 1, "val_interval": 1000},
        train={"batch_size": batch_size, "grad_accum_steps": accum},
    )


def _train_recording_lr(run_dir: Path) -> list[list[float]]:
    """Train ``run_dir`` in this process; return every group's ``lr`` at each
    ``optimizer.step()`` (torch's global optimizer step hook)."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from trainer.entry import run_training

    seen: list[list[float]] = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append([g["lr"] for g in optimizer.param_groups]))
    try:
        run_training(run_dir)
    finally:
        handle.remove()
    return seen


@pytest.fixture(scope="module")
def accum_run(cityscapes_frame_root, tracking_uri, tmp_path_factory):
    """An uninterrupted 1-process run with accumulation 2 x batch 1: (run dir, lr per step)."""
    run_dir = make_run_dir(tmp_path_factory.mktemp("accum") / "run",
                           _run_recipe(cityscapes_frame_root, tracking_uri, accum=2))
    return run_dir, _train_recording_lr(run_dir)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["model"] if "model" in state else state


def _journal(run_dir: Path, op: str) -> list[dict]:
    lines = RunDir(run_dir).tracking_journal.read_text().splitlines()
    return [record for record in map(json.loads, lines) if record.get("op") == op]


def _losses(run_dir: Path) -> dict[int, float]:
    return {step: value for record in _journal(run_dir, "metrics")
            for key, value, _, step in record["items"] if key == "loss"}


@pytest.mark.slow
def test_learning_rate_follows_optimizer_steps(accum_run, cityscapes_frame_root, tracking_uri,
                                               tmp_path):
    """(4) The rates the optimizer steps with, step by step, are the same with N = 1 and
    N = 2: the schedule (warm-up, poly) counts optimizer steps; one step per N micro-batches."""
    run_dir, accum_lrs = accum_run
    plain = make_run_dir(tmp_path / "plain", _run_recipe(cityscapes_frame_root, tracking_uri))
    plain_lrs = _train_recording_lr(plain)
    assert len(accum_lrs) == len(plain_lrs) == MAX_ITERS
    assert accum_lrs == plain_lrs
    assert accum_lrs[0][0] < accum_lrs[2][0] and accum_lrs[3][0] < accum_lrs[2][0]  # warm-up, poly
    # MLflow: the field with the recipe's params, and the global batch
    params = {k: v for record in _journal(run_dir, "params") for k, v in record["items"].items()}
    assert params["train.grad_accum_steps"] == "2"
    assert params["segctl.global_batch_size"] == "2"
    assert sorted(_losses(run_dir)) == list(range(1, MAX_ITERS + 1))  # logged per step
    assert RunDir(run_dir).read_progress()["iteration"] == MAX_ITERS


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from trainer.entry import run_training

    run_training(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("accum", [1, 2], ids=["2x1-vs-1x2", "2x2-vs-1x4"])
def test_two_processes_equal_one_process_accumulating_twice_as_many(
        accum, accum_run, cityscapes_frame_root, tracking_uri, tmp_path):
    """(1) 2 processes (gloo) x N = ``accum`` against 1 process x N = 2 * ``accum``, batch 1
    each: the same micro-batches (rank r's micro-batch a is the single process's micro-batch
    2a + r), so the same losses and, up to rounding (module docstring), the same parameters.
    With ``accum`` 2 the first micro-batch of each step runs under DDP's ``no_sync``.
    BatchNorm runs in training mode on both sides, with the same per-micro-batch statistics;
    its running statistics differ (DDP keeps rank 0's, which saw its own micro-batches only;
    one process sees all), so they are left out of the comparison."""
    from trainer.entry import run_training

    if accum == 1:
        single_dir, _ = accum_run
    else:
        single_dir = make_run_dir(tmp_path / "single", _run_recipe(
            cityscapes_frame_root, tracking_uri, accum=2 * accum))
        run_training(single_dir)
    run_dir = make_run_dir(tmp_path / "two", _run_recipe(cityscapes_frame_root, tracking_uri,
                                                         accum=accum))
    context = mp.spawn(_rank_main, args=(2, _free_port(), str(run_dir)), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two ranks did not finish within 300 s")

    two_losses, single_losses = _losses(run_dir), _losses(single_dir)
    assert sorted(two_losses) == list(range(1, MAX_ITERS + 1))
    for step, loss in two_losses.items():
        assert single_losses[step] == pytest.approx(loss, rel=1e-5), step

    buffers = ("running_mean", "running_var", "num_batches_tracked")
    two = {k: v for k, v in _weights(ckpt.final_path(run_dir)).items()
           if not k.endswith(buffers)}
    single = _weights(ckpt.final_path(single_dir))
    at_two = _weights(ckpt.iteration_path(single_dir, 2))  # the update of steps 3 and 4
    distance = _relative_distance(two, single, at_two)
    print(f"\nrelative weight distance, 2 processes x {accum} vs 1 x {2 * accum}: "
          f"{distance:.2e}")
    assert distance < RELATIVE_TOLERANCE


@pytest.mark.slow
def test_preemption_mid_accumulation_checkpoints_after_the_step_and_resumes_exactly(
        accum_run, cityscapes_frame_root, tracking_uri, tmp_path, monkeypatch):
    """(3) The preemption signal arrives while step 3's second micro-batch loads (after the
    first one's backward): the step completes, ``iter_0000003.pt`` is written, nothing of step
    4 is read; the resumed job ends bit-identical to the uninterrupted run."""
    from trainer.entry import run_training

    straight, _ = accum_run
    run_dir = make_run_dir(tmp_path / "run",
                           _run_recipe(cityscapes_frame_root, tracking_uri, accum=2))
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    loaded: list[tuple[int, int]] = []
    signal_at = 2 * 2 + 2  # batch 1: step 3's micro-batches are the 5th and 6th samples read
    load = AugmentedDataset.__getitem__

    def loading(self, key):
        loaded.append(key)
        if len(loaded) == signal_at:
            os.kill(os.getpid(), signal.SIGUSR2)
        return load(self, key)

    monkeypatch.setattr(AugmentedDataset, "__getitem__", loading)
    handed_over: list[int] = []  # stands in for submitit's requeue handler
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed_over.append(signum))
    try:
        first = run_training(run_dir)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    monkeypatch.undo()

    assert handed_over == [signal.SIGUSR2]
    assert first["iteration"] == 3 and not first["finished"]
    assert len(loaded) == signal_at, "the loop read on after the step the signal arrived in"
    assert [i for i, _ in ckpt.iteration_checkpoints(run_dir)] == [2, 3]
    assert not ckpt.final_path(run_dir).exists()
    assert RunDir(run_dir).read_progress()["iteration"] == 3
    state = ckpt.load_training_state(ckpt.iteration_path(run_dir, 3))
    assert state["data"]["grad_accum_steps"] == 2

    second = run_training(run_dir)
    assert second["iteration"] == MAX_ITERS and second["finished"]
    resumed, expected = _weights(ckpt.final_path(run_dir)), _weights(ckpt.final_path(straight))
    different = [k for k in expected if not torch.equal(resumed[k], expected[k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"

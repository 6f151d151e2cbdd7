"""Process groups and precision: the accelerator settings, teardown, and a 2-rank gloo run."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.trainer_runs import make_run_dir, one_frame_cityscapes, small_recipe
from trainer.distributed import (
    apply_tf32,
    build_accelerator,
    export_submitit_env,
    job_info,
    mixed_precision_mode,
    teardown,
)


def test_mixed_precision_mode():
    assert mixed_precision_mode("auto", cuda=True) == "bf16"
    assert mixed_precision_mode("bf16", cuda=True) == "bf16"
    assert mixed_precision_mode("fp32", cuda=True) == "no"
    assert mixed_precision_mode("auto", cuda=False) == "no"
    assert mixed_precision_mode("bf16", cuda=False) == "no"
    assert mixed_precision_mode("fp16", cuda=True) == "fp16"
    assert mixed_precision_mode("fp16", cuda=False) == "no"


@pytest.mark.parametrize("tf32", [True, False])
def test_apply_tf32_sets_both_backends_and_none_leaves_them(tf32):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        apply_tf32(tf32)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
        assert torch.backends.cudnn.allow_tf32 is tf32
        apply_tf32(None)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
        assert torch.backends.cudnn.allow_tf32 is tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_precision_defaults_to_fp32_and_low_precision_changes_the_run_id(tmp_path):
    from segctl.recipe.resolve import run_id
    from segctl.recipe.schema import TrainConfig

    recipe = small_recipe(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert recipe.train.precision == "fp32" and TrainConfig(batch_size=1).precision == "fp32"
    ids = {run_id(recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"precision": p})})) for p in ("fp32", "bf16", "fp16")}
    assert len(ids) == 3


def test_outside_submitit_nothing_is_exported(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert export_submitit_env() is False
    assert job_info().executor == "inprocess"


def test_teardown_destroys_the_group_and_allows_a_new_accelerator(tmp_path):
    accelerator = build_accelerator("auto")
    assert accelerator.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0,
                            world_size=1)
    teardown(accelerator)
    assert not dist.is_initialized()
    teardown(accelerator)  # twice is fine
    build_accelerator("fp32")  # accelerate's singleton state was reset
    teardown(accelerator)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, ports: tuple[int, int], run_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]),
    )
    torch.set_num_threads(1)
    from trainer.entry import run_evaluation, run_training

    result = run_training(run_dir)
    assert not dist.is_initialized()
    # A second process group in the same processes gets its own rendezvous port, as a
    # separate job would: re-using the port right after teardown races with the old store.
    os.environ["MASTER_PORT"] = str(ports[1])
    evaluation = run_evaluation(run_dir)
    assert not dist.is_initialized()
    Path(run_dir, f"rank{rank}.txt").write_text(
        f"{result['loss']} {result['metrics']['mIoU']} {evaluation['metrics']['mIoU']}"
    )


@pytest.mark.slow
def test_two_ranks_on_gloo(real_data, tmp_path):
    """Two CPU processes: DDP, loss reduction, RNG gathering, sharded evaluation, teardown."""
    root = one_frame_cityscapes(real_data / "cityscapes", tmp_path / "data")
    recipe = small_recipe(
        root, f"sqlite:///{tmp_path / 'mlflow.db'}",
        data={"crop_size": [64, 128]},
        schedule={"max_iters": 4, "checkpoint_interval": 2, "log_interval": 2},
    )
    run_dir = make_run_dir(tmp_path / "run", recipe)
    ports = (_free_port(), _free_port())
    context = mp.spawn(_rank_main, args=(2, ports, str(run_dir)), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two ranks did not finish within 240 s")

    rank0, rank1 = ((run_dir / f"rank{r}.txt").read_text() for r in (0, 1))
    assert rank0 == rank1  # reduced loss and all-reduced metrics agree across ranks
    state = torch.load(run_dir / "checkpoints" / "iter_0000004.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["data"]["world_size"] == 2
    assert (run_dir / "checkpoints" / "final.pt").is_file()

"""Time real training steps of a recipe on this machine: seconds per iteration and peak memory.

The recipe's model (random weights: nothing is downloaded), optimizer, loss, auxiliary heads
and precision, on random images of the recipe's crop size and random labels (a strip of
ignored pixels, as padded crops have), through the trainer's own :func:`trainer.engine.train_step`.
Data loading is not timed: the figure is the model's step, which bounds the iteration time
when the input pipeline keeps up (see ``benchmarks/bench_pipeline.py`` for that side).

Used by ``segctl bench`` (figures kept for later plans) and ``benchmarks/bench_train_step.py``.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from segctl.recipe import Recipe
from segctl.recipe.dataset_spec import DatasetSpec


@dataclass(frozen=True)
class StepTiming:
    """What :func:`time_training_steps` measured.

    Attributes:
        seconds_per_iter: median wall seconds of one optimizer step (forward, loss, backward,
            step, device synchronised), over the timed iterations.
        peak_memory_gib: peak device memory (``torch.cuda.max_memory_allocated``, GiB) on a
            GPU; the process's peak resident set (GiB) on the CPU.
        device: ``cuda <name>`` or ``cpu``; ``gpu_memory_gib``: the GPU's total memory (None
            on the CPU).
        precision: the mixed precision the step ran in (``no``, ``bf16``, ``fp16``).
        batch, crop: per-process batch (images) and crop (height, width) in pixels.
        iters, warmup: timed and untimed iterations.
        threads: CPU threads torch used.
        flops_per_iter: floating-point operations of one step (forward, loss, backward) as
            ``torch.utils.flop_counter.FlopCounterMode`` counts them (matmuls, convolutions,
            attention; gathers and element-wise work are not counted), when asked for
            (``count_flops``); else None.
    """

    seconds_per_iter: float
    peak_memory_gib: float
    device: str
    gpu_memory_gib: float | None
    precision: str
    batch: int
    crop: tuple[int, int]
    iters: int
    warmup: int
    threads: int
    flops_per_iter: float | None = None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def time_training_steps(recipe: Recipe, *, iters: int, warmup: int = 2,
                        batch: int | None = None, crop: tuple[int, int] | None = None,
                        configure: Callable[[torch.nn.Module], None] | None = None,
                        configure_optimizer: Callable[[torch.optim.Optimizer],
                                                      torch.optim.Optimizer] | None = None,
                        count_flops: bool = False, seed: int = 0) -> StepTiming:
    """Time ``iters`` training steps of ``recipe`` after ``warmup`` untimed ones.

    Args:
        recipe: a resolved recipe; ``model.init_checkpoint`` is ignored (random weights).
        iters: timed iterations (at least 1).
        warmup: untimed iterations first (allocator, autotuning, first-call costs).
        batch: per-process images (default ``train.batch_size``).
        crop: (height, width) in pixels (default ``data.crop_size``).
        configure: called with the model before the optimizer is built (e.g. to choose a
            DCNv3 core, ``model.compile()``, channels-last).
        configure_optimizer: given the recipe's optimizer, returns the one to use (e.g. the
            same groups in a fused AdamW).
        count_flops: count one more (untimed) step's operations after the timed ones
            (:attr:`StepTiming.flops_per_iter`); a compiled model's count is not meaningful.
        seed: of the random images and labels.

    Raises:
        ValueError: ``iters`` < 1 or ``warmup`` < 0.
    """
    from trainer.distributed import build_accelerator
    from trainer.engine import train_step
    from trainer.models.build import build_model
    from trainer.optim import build_optimizer

    if iters < 1 or warmup < 0:
        raise ValueError(f"iters must be >= 1 and warmup >= 0, got {iters} and {warmup}")
    batch = batch or recipe.train.batch_size
    height, width = crop or tuple(recipe.data.crop_size)
    spec = DatasetSpec.from_recipe(recipe)
    accelerator = build_accelerator(recipe.train.precision, recipe.train.tf32)
    model = build_model(recipe, load_init=False)
    if configure is not None:
        configure(model)
    optimizer = build_optimizer(model, recipe.optim)
    if configure_optimizer is not None:
        optimizer = configure_optimizer(optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    device = accelerator.device
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, spec.num_classes, (batch, height, width), generator=generator)
    labels[:, :8] = spec.ignore_index  # some ignored pixels, as padded crops have
    data = {"image": torch.randn(batch, 3, height, width, generator=generator).to(device),
            "label": labels.to(device)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + iters):
        _synchronize(device)
        started = time.perf_counter()
        train_step(model, optimizer, data, accelerator, recipe, lr=recipe.optim.lr, epoch=1,
                   spec=spec)
        _synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    peak = _peak_memory_gib(device)
    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            train_step(model, optimizer, data, accelerator, recipe, lr=recipe.optim.lr,
                       epoch=1, spec=spec)
        flops = float(counter.get_total_flops())
    name = f"cuda {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"
    total = (torch.cuda.get_device_properties(device).total_memory / 2**30
             if device.type == "cuda" else None)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return StepTiming(
        seconds_per_iter=statistics.median(times), peak_memory_gib=peak, device=name,
        gpu_memory_gib=total, precision=str(accelerator.mixed_precision), batch=batch,
        crop=(int(height), int(width)), iters=iters, warmup=warmup,
        threads=torch.get_num_threads(), flops_per_iter=flops,
    )

"""Benchmark the DCNv3 operator: fused gather (``dcnv3_core``), ``grid_sample`` and, on CUDA,
the Triton kernels (``dcnv3_core_triton``).

Usage::

    python -m benchmarks.bench_dcnv3 [--quick] [--repeats 7] [--threads N] [--stages 1 3]
    python -m benchmarks.bench_dcnv3 --device cuda [--dtype bfloat16] [--batch 2] [--stages 1 2 3 4]

Shapes are InternImage-T stages at a 512x512 crop (batch ``--batch``, default 1, kernel 3, 16
channels per group): stage 1 is 128x128 with C=64, G=4; stage 2 64x64, C=128, G=8; stage 3
32x32, C=256, G=16; stage 4 16x16, C=512, G=32. Offsets are random (about one pixel), the mask
a softmax. All implementations run alternately in the same process; each figure is the median
of ``--repeats`` timings (milliseconds) after one warm-up (which also compiles the Triton
kernels); on CUDA every timing is bracketed by ``torch.cuda.synchronize``. Forward runs under
``torch.no_grad``; forward+backward backpropagates a random output gradient into input, offsets
and mask. Ratios are grid_sample's time over each implementation's (above 1: faster than the
reference). On the CPU the Triton rows are skipped with a note. ``--quick``: stage 4 only,
2 repeats.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_dcnv3.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.table import Row, row, script_main

from trainer.models.dcnv3 import dcnv3_core, dcnv3_core_grid_sample

# stage -> (H = W, channels, groups) of InternImage-T at a 512x512 input.
STAGES: dict[int, tuple[int, int, int]] = {
    1: (128, 64, 4),
    2: (64, 128, 8),
    3: (32, 256, 16),
    4: (16, 512, 32),
}
KERNEL = 3
NAME = "dcnv3"


def make_inputs(
    size: int, channels: int, groups: int, batch: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    points = KERNEL * KERNEL
    x = torch.randn(batch, size, size, channels, generator=gen)
    offset = torch.randn(batch, size, size, groups * points * 2, generator=gen)
    mask = torch.randn(batch, size, size, groups, points, generator=gen).softmax(-1)
    mask = mask.reshape(batch, size, size, groups * points)
    grad = torch.randn(batch, size, size, channels, generator=gen)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, offset, mask, grad))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(core: Callable[..., torch.Tensor], inputs, groups: int, backward: bool) -> float:
    """Seconds of one call (forward, or forward + backward), device work included."""
    x, offset, mask, grad = inputs
    channels = x.shape[-1]
    args = (KERNEL, 1, 1, 1, groups, channels // groups, 1.0)
    if backward:
        leaves = [t.detach().requires_grad_() for t in (x, offset, mask)]
        _synchronize(x.device)
        start = time.perf_counter()
        out = core(*leaves, *args)
        out.backward(grad)
    else:
        with torch.no_grad():
            _synchronize(x.device)
            start = time.perf_counter()
            core(x, offset, mask, *args)
    _synchronize(x.device)
    return time.perf_counter() - start


def bench_stage(
    stage: int,
    repeats: int,
    cores: dict[str, Callable[..., torch.Tensor]],
    skipped: dict[str, str],
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
) -> list[Row]:
    """One stage's forward and forward+backward medians (ms) of every implementation but
    ``grid_sample``, each against ``grid_sample`` (the reference, which ``cores`` must hold);
    ``skipped`` names implementations not run, with the reason (in the notes)."""
    size, channels, groups = STAGES[stage]
    inputs = make_inputs(size, channels, groups, batch, device, dtype)
    shape = f"stage {stage} N={batch} {size}x{size} C={channels} G={groups}"
    out = []
    for backward in (False, True):
        times: dict[str, list[float]] = {name: [] for name in cores}
        for core in cores.values():  # warm-up (and Triton compilation)
            run_once(core, inputs, groups, backward)
        for _ in range(repeats):
            for name, core in cores.items():
                times[name].append(run_once(core, inputs, groups, backward))
        median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        label = "fwd+bwd" if backward else "fwd"
        notes = f"{device.type} {str(dtype).removeprefix('torch.')}, median of {repeats}"
        notes += "".join(f"; {name} skipped: {why}" for name, why in skipped.items())
        for name, ms in median.items():
            if name == "grid_sample":
                continue
            out.append(row(NAME, f"{name} {label}, {shape}", ms, "ms", "grid_sample core",
                           median["grid_sample"], target="<= 1x", passed=ms <= median["grid_sample"],
                           notes=notes))
    return out


def _cores(device: torch.device) -> tuple[dict[str, Callable[..., torch.Tensor]], dict[str, str]]:
    """Implementations to time on ``device`` and those skipped there (name -> reason)."""
    cores: dict[str, Callable[..., torch.Tensor]] = {
        "fused": dcnv3_core,
        "grid_sample": dcnv3_core_grid_sample,
    }
    if device.type != "cuda":
        return cores, {"triton": "needs a CUDA device"}
    try:
        from trainer.models.dcnv3_triton import dcnv3_core_triton
    except ImportError as error:
        return cores, {"triton": f"cannot import triton: {error}"}
    cores["triton"] = dcnv3_core_triton
    return cores, {}


def rows(quick: bool = False, repeats: int | None = None, threads: int | None = None,
         stages: list[int] | None = None, device: str = "cpu", dtype: str = "float32",
         batch: int = 1) -> list[Row]:
    """Every stage's rows (:func:`bench_stage`); quick: stage 4, 2 repeats."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
        cores, skipped = _cores(dev)
        out = []
        for stage in stages or ([4] if quick else [1, 3]):
            out += bench_stage(stage, repeats or (2 if quick else 7), cores, skipped, batch, dev,
                               getattr(torch, dtype))
        return out
    finally:
        torch.set_num_threads(previous)


def _arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--stages", type=int, nargs="+", default=None, choices=sorted(STAGES))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="dtype of input, offsets and mask")
    parser.add_argument("--batch", type=int, default=1)


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)

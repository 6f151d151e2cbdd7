"""Benchmark the DCNv3 operator on CPU: fused gather (``dcnv3_core``) vs ``grid_sample``.

Usage::

    python benchmarks/bench_dcnv3.py [--repeats 7] [--threads N] [--stages 1 3]

Shapes are InternImage-T stages at a 512x512 crop (batch 1, kernel 3, 16 channels per
group): stage 1 is 128x128 with C=64, G=4; stage 2 64x64, C=128, G=8; stage 3 32x32, C=256,
G=16; stage 4 16x16, C=512, G=32. Offsets are random (about one pixel), the mask a softmax.
Both implementations run alternately in the same process; each figure is the median of
``--repeats`` timings after one warm-up. Forward runs under ``torch.no_grad``; forward+backward
backpropagates a random output gradient into input, offsets and mask.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from trainer.models.dcnv3 import dcnv3_core, dcnv3_core_grid_sample

# stage -> (H = W, channels, groups) of InternImage-T at a 512x512 input.
STAGES: dict[int, tuple[int, int, int]] = {
    1: (128, 64, 4),
    2: (64, 128, 8),
    3: (32, 256, 16),
    4: (16, 512, 32),
}
KERNEL = 3


def make_inputs(size: int, channels: int, groups: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    points = KERNEL * KERNEL
    x = torch.randn(1, size, size, channels, generator=gen)
    offset = torch.randn(1, size, size, groups * points * 2, generator=gen)
    mask = torch.randn(1, size, size, groups, points, generator=gen).softmax(-1)
    mask = mask.reshape(1, size, size, groups * points)
    grad = torch.randn(1, size, size, channels, generator=gen)
    return x, offset, mask, grad


def run_once(core: Callable[..., torch.Tensor], inputs, groups: int, backward: bool) -> float:
    x, offset, mask, grad = inputs
    channels = x.shape[-1]
    args = (KERNEL, 1, 1, 1, groups, channels // groups, 1.0)
    if backward:
        leaves = [t.detach().requires_grad_() for t in (x, offset, mask)]
        start = time.perf_counter()
        out = core(*leaves, *args)
        out.backward(grad)
    else:
        with torch.no_grad():
            start = time.perf_counter()
            core(x, offset, mask, *args)
    return time.perf_counter() - start


def bench_stage(stage: int, repeats: int) -> None:
    size, channels, groups = STAGES[stage]
    inputs = make_inputs(size, channels, groups)
    print(f"stage {stage}: N=1 {size}x{size} C={channels} G={groups} K={KERNEL * KERNEL}")
    for backward in (False, True):
        times: dict[str, list[float]] = {"fused": [], "grid_sample": []}
        cores = {"fused": dcnv3_core, "grid_sample": dcnv3_core_grid_sample}
        for core in cores.values():  # warm-up
            run_once(core, inputs, groups, backward)
        for _ in range(repeats):
            for name, core in cores.items():
                times[name].append(run_once(core, inputs, groups, backward))
        fused = statistics.median(times["fused"])
        reference = statistics.median(times["grid_sample"])
        label = "fwd+bwd" if backward else "fwd    "
        print(
            f"  {label}  fused {fused * 1e3:8.2f} ms   grid_sample {reference * 1e3:8.2f} ms   "
            f"speed-up {reference / fused:5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 3], choices=sorted(STAGES))
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for stage in args.stages:
        bench_stage(stage, args.repeats)


if __name__ == "__main__":
    main()

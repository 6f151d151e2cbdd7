"""Training-step speed and peak memory of zoo models, on the GPU where there is one.

Cases (the zoo recipes, built as ``segctl`` trains them: the recipe's model, optimizer, loss
and auxiliary heads, random weights, random images and labels):

- ``internimage_t``: UperNet + InternImage-T (``recipes/ade20k/upernet_internimage_t_512x512_160k.yaml``),
  crop 512x512, batch 2. The published A100 figure is 0.23 s/iter (InternImage README). The
  main row uses ``dcnv3_core`` (fused PyTorch gather); the case is also timed with the
  reference's ``grid_sample`` DCNv3 core and, on CUDA, with the Triton kernels
  (``dcnv3_core_triton``; skipped with a note on the CPU) in the same run; the ratios are
  against the ``grid_sample`` reference.
- ``segformer_b0``: SegFormer MiT-B0 (``recipes/cityscapes/segformer_mit_b0_1024x1024_160k.yaml``),
  crop 1024x1024, batch 2.

Precision is the recipe's (``auto``: bf16 autocast on CUDA, float32 on CPU). Each figure is the
median seconds per iteration (forward, loss, backward, optimizer step, synchronised) over
``--iters`` iterations after ``--warmup``; peak memory is ``torch.cuda.max_memory_allocated``
(GiB) on CUDA, the process's peak resident set on CPU.

    python benchmarks/bench_train_step.py                      # both cases, full size
    python benchmarks/bench_train_step.py --crop 128 --iters 3 # a quick CPU check
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from segctl.recipe import load_recipe
from segctl.recipe.resolve import dataset_preset
from trainer.distributed import build_accelerator
from trainer.engine import train_step
from trainer.models.build import build_model
from trainer.models.dcnv3 import DCNv3, dcnv3_core, dcnv3_core_grid_sample
from trainer.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_A100_S_PER_ITER = {"internimage_t": 0.23}


@dataclass(frozen=True)
class Case:
    name: str
    recipe: str
    crop: int


CASES = {
    "internimage_t": Case("internimage_t", "recipes/ade20k/upernet_internimage_t_512x512_160k.yaml", 512),
    "segformer_b0": Case("segformer_b0", "recipes/cityscapes/segformer_mit_b0_1024x1024_160k.yaml", 1024),
}


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(case: Case, crop: int, batch: int, warmup: int, iters: int,
               core=dcnv3_core) -> tuple[float, float, str]:
    """(median s/iter, peak memory GiB, precision) of ``iters`` training steps of ``case``."""
    recipe = load_recipe(ROOT / case.recipe, ["data.root=/unused"]).recipe
    recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"init_checkpoint": None})})
    num_classes = dataset_preset(recipe).num_classes
    accelerator = build_accelerator(recipe.train.precision)
    model = build_model(recipe, load_init=False)
    for module in model.modules():
        if isinstance(module, DCNv3):
            module.core = core
    optimizer = build_optimizer(model, recipe.optim)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    device = accelerator.device
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, num_classes, (batch, crop, crop), generator=gen)
    labels[:, :8] = 255  # some ignored pixels, as padded crops have
    batch_data = {"image": torch.randn(batch, 3, crop, crop, generator=gen), "label": labels}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + iters):
        _synchronize(device)
        started = time.perf_counter()
        train_step(model, optimizer, batch_data, accelerator, recipe, lr=recipe.optim.lr, epoch=1)
        _synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    peak = _peak_memory_gib(device)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times), peak, accelerator.mixed_precision


def _triton_core() -> tuple[Callable[..., torch.Tensor] | None, str]:
    """(``dcnv3_core_triton``, "") on CUDA where triton imports, else (None, the reason)."""
    if not torch.cuda.is_available():
        return None, "the Triton core needs a CUDA device"
    try:
        from trainer.models.dcnv3_triton import dcnv3_core_triton
    except ImportError as error:
        return None, f"cannot import triton: {error}"
    return dcnv3_core_triton, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--crop", type=int, default=None, help="Override every case's crop (pixels).")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--no-reference", action="store_true",
                        help="Skip the grid_sample DCNv3 reference run.")
    args = parser.parse_args()
    device = "cuda " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device: {device}; torch {torch.__version__}; batch {args.batch}; "
          f"{args.iters} timed iterations after {args.warmup}")
    print(f"{'case':<34} {'crop':>5} {'prec':>5} {'s/iter':>8} {'peak GiB':>9}  notes")
    for name in args.cases:
        case = CASES[name]
        crop = args.crop or case.crop
        seconds, peak, precision = time_steps(case, crop, args.batch, args.warmup, args.iters)
        notes = ""
        published = PUBLISHED_A100_S_PER_ITER.get(name)
        if published and crop == case.crop:
            notes = f"published A100 {published} s/iter (ratio {published / seconds:.2f}x)"
        print(f"{name:<34} {crop:>5} {precision:>5} {seconds:>8.4f} {peak:>9.2f}  {notes}")
        if name != "internimage_t":
            continue
        ref_s = None
        if not args.no_reference:
            ref_s, ref_peak, _ = time_steps(case, crop, args.batch, args.warmup, args.iters,
                                            core=dcnv3_core_grid_sample)
            print(f"{name + ' (grid_sample core)':<34} {crop:>5} {precision:>5} {ref_s:>8.4f} "
                  f"{ref_peak:>9.2f}  ours is {ref_s / seconds:.2f}x the grid_sample reference")
        triton_core, why_not = _triton_core()
        if triton_core is None:
            print(f"{name + ' (triton core)':<34} {crop:>5} {'':>5} {'-':>8} {'-':>9}  "
                  f"skipped: {why_not}")
            continue
        tri_s, tri_peak, _ = time_steps(case, crop, args.batch, args.warmup, args.iters,
                                        core=triton_core)
        notes = f"{seconds / tri_s:.2f}x the dcnv3_core run"
        if ref_s is not None:
            notes += f", {ref_s / tri_s:.2f}x the grid_sample reference"
        print(f"{name + ' (triton core)':<34} {crop:>5} {precision:>5} {tri_s:>8.4f} "
              f"{tri_peak:>9.2f}  {notes}")


if __name__ == "__main__":
    main()

"""Training-step speed and peak memory of zoo models, on the GPU where there is one.

Cases (the zoo recipes, built as ``segctl`` trains them, through
:func:`trainer.step_timing.time_training_steps`: the recipe's model, optimizer, loss,
auxiliary heads and precision, random weights, random images and labels):

- ``internimage_t``: UperNet + InternImage-T (``recipes/ade20k/upernet_internimage_t_512x512_160k.yaml``),
  crop 512x512, batch 2. The published A100 figure is 0.23 s/iter (InternImage README). The
  main row uses ``dcnv3_core`` (fused PyTorch gather) against the reference's ``grid_sample``
  DCNv3 core in the same run; on CUDA the Triton kernels (``dcnv3_core_triton``) get a row too
  (on the CPU the skip is noted).
- ``segformer_b0``: SegFormer MiT-B0 (``recipes/cityscapes/segformer_mit_b0_1024x1024_160k.yaml``),
  crop 1024x1024, batch 2, against a forward pass alone (no_grad, eval mode, same batch and
  precision) in the same run: a training step costs about three forwards.

Precision is the recipe's (``auto``: bf16 autocast on CUDA, float32 on CPU). Each figure is the
median seconds per iteration (forward, loss, backward, optimizer step, synchronised) over
``--iters`` iterations after ``--warmup`` (20 after 5 on CUDA; without a GPU 3 after 1, at a
128x128 crop unless ``--crop`` says otherwise); peak memory (in the notes) is
``torch.cuda.max_memory_allocated`` (GiB) on CUDA, the process's peak resident set on CPU.

    python -m benchmarks.bench_train_step                       # both cases, full size
    python -m benchmarks.bench_train_step --crop 128 --iters 3  # a CPU check
    python -m benchmarks.bench_train_step --quick               # segformer_b0, crop 32

``--quick`` times ``segformer_b0`` only (crop 32, one iteration after one warm-up): building
InternImage-T alone takes seconds on a loaded CPU; ``--quick --cases internimage_t`` times it.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_train_step.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.table import Row, row, script_main
from trainer.models.dcnv3 import DCNv3, dcnv3_core, dcnv3_core_grid_sample
from trainer.step_timing import StepTiming, time_training_steps

NAME = "train_step"
ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_A100_S_PER_ITER = {"internimage_t": 0.23}
#: Crop (pixels) without a GPU: a 512x512 InternImage-T step takes tens of seconds on a few cores.
CPU_CROP = 128


@dataclass(frozen=True)
class Case:
    """A zoo recipe timed at its training crop (pixels, square)."""

    name: str
    recipe: str
    crop: int


CASES = {
    "internimage_t": Case("internimage_t", "recipes/ade20k/upernet_internimage_t_512x512_160k.yaml", 512),
    "segformer_b0": Case("segformer_b0", "recipes/cityscapes/segformer_mit_b0_1024x1024_160k.yaml", 1024),
}


def case_recipe(case: Case, overrides: list[str] | None = None):
    """The case's resolved recipe, without pretrained weights (nothing is downloaded)."""
    from segctl.recipe import load_recipe

    return load_recipe(ROOT / case.recipe,
                       ["data.root=/unused", "model.init_checkpoint=null", *(overrides or [])]).recipe


def use_core(core: Callable[..., torch.Tensor] | None) -> Callable[[torch.nn.Module], None] | None:
    """A ``configure(model)`` callback for :func:`time_training_steps` that makes every DCNv3
    layer use ``core`` (None: the model's default)."""
    if core is None:
        return None

    def configure(model: torch.nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, DCNv3):
                module.core = core

    return configure


def time_case(case: Case, crop: int, batch: int, warmup: int, iters: int,
              core: Callable[..., torch.Tensor] | None = dcnv3_core) -> StepTiming:
    """:func:`time_training_steps` of ``case`` at ``crop`` x ``crop`` with the DCNv3 ``core``."""
    return time_training_steps(case_recipe(case), iters=iters, warmup=warmup, batch=batch,
                               crop=(crop, crop), configure=use_core(core))


def forward_seconds(case: Case, crop: int, batch: int, warmup: int, iters: int) -> float:
    """Median seconds of one forward pass (eval mode, no_grad, the recipe's precision) of the
    case's model on ``batch`` random ``crop`` x ``crop`` images."""
    from trainer.distributed import build_accelerator
    from trainer.models.build import build_model

    recipe = case_recipe(case)
    accelerator = build_accelerator(recipe.train.precision, recipe.train.tf32)
    model = accelerator.prepare(build_model(recipe, load_init=False)).eval()
    device = accelerator.device
    images = torch.randn(batch, 3, crop, crop, generator=torch.Generator().manual_seed(0)).to(device)
    times = []
    autocast = (accelerator.autocast() if hasattr(accelerator, "autocast")
                else contextlib.nullcontext())
    with torch.no_grad(), autocast:
        for i in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            model.encode_decode(images) if hasattr(model, "encode_decode") else model(images)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def triton_core() -> tuple[Callable[..., torch.Tensor] | None, str]:
    """(``dcnv3_core_triton``, "") on CUDA where triton imports, else (None, the reason)."""
    if not torch.cuda.is_available():
        return None, "the Triton core needs a CUDA device"
    try:
        from trainer.models.dcnv3_triton import dcnv3_core_triton
    except ImportError as error:
        return None, f"cannot import triton: {error}"
    return dcnv3_core_triton, ""


def _notes(timing: StepTiming) -> str:
    return (f"{timing.device}, {timing.precision}, batch {timing.batch}, peak "
            f"{timing.peak_memory_gib:.2f} GiB, median of {timing.iters}")


def rows(quick: bool = False, cases: list[str] | None = None, crop: int | None = None,
         batch: int = 2, warmup: int | None = None, iters: int | None = None) -> list[Row]:
    """Seconds per iteration of each case against its reference (module docstring)."""
    cuda = torch.cuda.is_available()
    warmup = warmup if warmup is not None else (1 if quick or not cuda else 5)
    iters = iters or (1 if quick else (20 if cuda else 3))
    crop_override = crop or (32 if quick else (None if cuda else CPU_CROP))
    out: list[Row] = []
    for name in cases or (["segformer_b0"] if quick else sorted(CASES)):
        case = CASES[name]
        size = crop_override or case.crop
        label = f"{name} {size}x{size} batch {batch}"
        if name != "internimage_t":
            timing = time_case(case, size, batch, warmup, iters, core=None)
            forward = forward_seconds(case, size, batch, warmup, iters)
            out.append(row(NAME, f"{label}, training step", timing.seconds_per_iter, "s/iter",
                           "forward alone (no_grad)", forward, notes=_notes(timing)))
            continue
        ours = time_case(case, size, batch, warmup, iters)
        reference = time_case(case, size, batch, warmup, iters, core=dcnv3_core_grid_sample)
        published = PUBLISHED_A100_S_PER_ITER[name]
        full = size == case.crop
        notes = _notes(ours)
        if full:
            notes += f"; published A100 {published} s/iter"
        core, why_not = triton_core()
        if core is None:
            notes += f"; triton core skipped: {why_not}"
        out.append(row(NAME, f"{label}, dcnv3_core", ours.seconds_per_iter, "s/iter",
                       "grid_sample DCNv3 core", reference.seconds_per_iter,
                       target="<= 0.08 s/iter on H100/H200" if full else "",
                       passed=(ours.seconds_per_iter <= 0.08
                               if full and ours.device.startswith("cuda") else None),
                       notes=notes))
        if core is not None:
            tri = time_case(case, size, batch, warmup, iters, core=core)
            out.append(row(NAME, f"{label}, triton core", tri.seconds_per_iter, "s/iter",
                           "grid_sample DCNv3 core", reference.seconds_per_iter,
                           target="<= 0.08 s/iter on H100/H200" if full else "",
                           passed=tri.seconds_per_iter <= 0.08 if full else None,
                           notes=_notes(tri)))
    return out


def _arguments(parser) -> None:
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None)
    parser.add_argument("--crop", type=int, default=None, help="Override every case's crop (pixels).")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=None, help="default 5 (--quick 1)")
    parser.add_argument("--iters", type=int, default=None, help="default 20 (--quick 1)")


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)

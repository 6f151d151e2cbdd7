"""Peak memory and time of a multi-scale + flip evaluation (12 views) of one image, against
its largest single view alone (target: memory <= 1.1x; the views are accumulated one at a
time by :func:`trainer.evaluate.predict_probs`, never stacked).

Model: SegFormer MiT-B0 as ``recipes/cityscapes/segformer_mit_b0_1024x1024_160k.yaml`` builds
it (random weights, eval mode, 19 classes). Image: one normalised float32 image; 1024x2048
(test scale 2048x1024) on CUDA, 128x256 (test scale 256x128) on the CPU, where the full size
takes minutes per view on a few cores, 64x128 with ``--quick``; ``--size H W`` overrides
(the test scale follows the image). Views: the six ratios of ``MS_FLIP_RATIOS``
(0.5 ... 1.75) with and without horizontal flip. Modes: ``whole``, and ``slide`` with
mmseg's Cityscapes window (1024x1024, stride 768x768, scaled with the image).

Memory is the peak above what was held before the call:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before.
- CPU: the process's peak resident set (``VmHWM`` of ``/proc/self/status``), reset to the
  current resident set before each measurement by writing ``5`` to ``/proc/self/clear_refs``
  (Linux >= 4.0), after glibc's ``malloc_trim(0)`` has returned freed memory to the system,
  minus the resident set before the call. ``tracemalloc`` cannot be used: torch allocates
  outside Python's allocator. The resident set also counts the allocator's fragmentation,
  a few MB, which shows in the ratio at the CPU's small sizes; CUDA's figure is exact. Everything runs once before measuring (oneDNN's caches for
  every shape exist in both baselines alike).

The reference is the largest single view: ratio 1.75 through the same ``predict_probs``
(so both hold the same accumulator), with its flip, which runs the two views of that scale one
after the other; their peak is the larger of the two views' (the flipped one's, whose logits
are flipped back into a copy). Time: the 12-view call against the sum of the six scales each
run alone with its flip (target ~1.0x: accumulating views costs next to nothing).

    python -m benchmarks.bench_msflip_memory [--quick] [--device cuda] [--size 1024 2048]
"""

from __future__ import annotations

import ctypes
import re
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_msflip_memory.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.table import Row, median_seconds, row, script_main

NAME = "msflip_memory"
ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/cityscapes/segformer_mit_b0_1024x1024_160k.yaml"
MEMORY_TARGET = 1.1
TIME_TARGET = 1.1


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory (bytes) ``fn`` adds above what was held before it (module docstring: CUDA
    allocator statistics, or the CPU process's peak resident set reset through
    ``/proc/self/clear_refs``).

    Raises:
        OSError: on the CPU where ``/proc/self/clear_refs`` cannot be written (not Linux).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    _trim_heap()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def fastest_seconds(fn: Callable[[], object], repeats: int,
                    synchronize: Callable[[], None] | None = None) -> float:
    """The fastest of ``repeats`` timings of ``fn`` (seconds): on a loaded machine the least
    disturbed run, for the whole call and for each part alike (a sum of medians would be
    biased low against a median of sums)."""
    return min(median_seconds(fn, 1, synchronize) for _ in range(max(1, repeats)))


def _model(device: torch.device) -> torch.nn.Module:
    from segctl.recipe import load_recipe
    from trainer.models.build import build_model

    recipe = load_recipe(RECIPE, ["data.root=/unused", "model.init_checkpoint=null"]).recipe
    return build_model(recipe, load_init=False).to(device).eval()


def rows(quick: bool = False, device: str = "cpu", size: list[int] | None = None,
         repeats: int | None = None) -> list[Row]:
    """Whole and slide rows: 12-view peak against the largest view's (GiB), and the 12-view
    time against the sum of the views alone (s)."""
    from segctl.recipe import MS_FLIP_RATIOS
    from trainer.evaluate import InferenceSettings, predict_probs, segmentor_logits

    dev = torch.device(device)
    if size:
        height, width = size
    else:
        height, width = (64, 128) if quick else ((1024, 2048) if dev.type == "cuda" else (128, 256))
    repeats = repeats or (1 if quick else 3)
    scale = height / 1024
    window = max(16, round(1024 * scale))
    stride = max(8, round(768 * scale))
    autocast = torch.bfloat16 if dev.type == "cuda" else None
    net = _model(dev)
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(dev)
    largest = max(MS_FLIP_RATIOS)
    out: list[Row] = []
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
    how = ("torch.cuda.max_memory_allocated" if dev.type == "cuda"
           else "peak RSS (VmHWM reset via /proc/self/clear_refs)")
    for mode in ("whole", "slide"):
        common = dict(mode=mode, test_scale=(width, height))
        if mode == "slide":
            common |= dict(crop_size=(window, window), stride=(stride, stride))
        ms_flip = InferenceSettings(scales=MS_FLIP_RATIOS, flip=True, **common)
        model = segmentor_logits(net, ms_flip)

        def predict(settings: InferenceSettings, x: torch.Tensor = image) -> None:
            predict_probs(model, x, settings, num_classes=19, autocast_dtype=autocast)

        single = InferenceSettings(scales=(largest,), flip=True, **common)
        predict(ms_flip)  # warm-up: every shape once
        single_peak = peak_bytes(lambda: predict(single), dev)
        ms_peak = peak_bytes(lambda: predict(ms_flip), dev)
        label = f"{mode} {height}x{width}" + (f", window {window} stride {stride}"
                                               if mode == "slide" else "")
        ratio = ms_peak / single_peak if single_peak > 0 else float("nan")
        out.append(row(NAME, f"12-view peak memory, {label}", ms_peak / 2**30, "GiB",
                       f"largest single view alone (ratio {largest}, its flip)",
                       single_peak / 2**30,
                       target=f"<= {MEMORY_TARGET}x", passed=ratio <= MEMORY_TARGET,
                       notes=f"{how}; {dev.type}"))
        ms_time = fastest_seconds(lambda: predict(ms_flip), repeats, sync)
        views = 0.0
        for ratio_ in MS_FLIP_RATIOS:
            view = InferenceSettings(scales=(ratio_,), flip=True, **common)
            views += fastest_seconds(lambda: predict(view), repeats, sync)
        time_ratio = ms_time / views
        out.append(row(NAME, f"12-view time, {label}", ms_time, "s",
                       "sum of the 6 scales run alone (each with its flip)", views,
                       target=f"<= {TIME_TARGET}x",
                       passed=time_ratio <= TIME_TARGET,
                       notes=f"fastest of {repeats}; bf16 autocast" if autocast
                       else f"fastest of {repeats}; float32"))
    return out


def _arguments(parser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=None)


if __name__ == "__main__":
    script_main(rows, __doc__, _arguments)

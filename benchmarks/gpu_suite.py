"""The GPU suite: one run on one NVIDIA GPU (under 8 minutes) that checks and times what needs a
GPU, writing ``gpu_suite.json`` and ``gpu_suite.md`` into ``--out DIR``.

    python -m benchmarks.gpu_suite --out DIR [--budget-s 450]
    python -m benchmarks.gpu_suite --quick --out DIR    # the same code on the CPU, tiny shapes

Sections, in order of priority (a hard overall budget, ``--budget-s``, skips what no longer
fits, with the reason; each row runs under its own try/except, so one failure loses nothing
else; the files are rewritten after every row, so a killed run leaves what it measured):

1. ``dcnv3``: the Triton kernels (``trainer/models/dcnv3_triton.py``) against the PyTorch core
   (``trainer/models/dcnv3.py`` ``dcnv3_core``) on InternImage-T stage shapes (512x512 crop,
   batch 2) and InternImage-H stage shapes (896x896 crop, batch 1): forward output and the
   gradients of input, offsets and mask equal within a tolerance (:func:`tolerance`: fp32 1e-5
   of the largest magnitude; bf16 derived from its 8-bit significand and the reduction
   length), then forward and forward+backward milliseconds. TF32 is off for the equality.
2. ``train``: seconds per iteration, peak memory (``torch.cuda.max_memory_allocated``) and
   model FLOPs utilisation of real training steps (:func:`trainer.step_timing.
   time_training_steps`): UperNet + InternImage-T 512x512 batch 2 (published 0.23 s/iter on an
   A100; aim <= 0.08 on an H100/H200) in fp32 with TF32 (the source config's) and bf16, with
   the PyTorch and the Triton DCNv3 core, and fused AdamW; SegFormer-B0 and -B5 1024x1024
   batch 2 in bf16 (fp32 + TF32 for B0), channels-last, fused AdamW. Each case's first row is
   its reference. Every row runs in a fresh process (its own peak memory, a crash or a hang
   cut off by a timeout).
3. ``eval``: SegFormer-B0, whole and slide, one 1024x2048 image: single view and 12-view
   multi-scale + flip, time and peak memory (:mod:`benchmarks.bench_msflip_memory`).
4. ``compile``: the ``torch.compile`` rows of section 2 (minutes of compilation each: last).

FLOPs are counted on one eager training step with ``torch.utils.flop_counter.FlopCounterMode``
(matmuls, convolutions, attention; the DCNv3 gather and element-wise work are not counted, so
InternImage's utilisation is a lower bound); MFU = FLOPs per iteration / seconds per iteration
/ the GPU's peak dense TFLOPS for the row's math (:data:`PEAK_DENSE_TFLOPS`).

``--quick`` runs every section on the CPU with tiny shapes, in process, in well under a minute
on a few cores: the Triton rows are skipped (no CUDA device) and the equality check runs the
``grid_sample`` core against ``dcnv3_core`` instead, compile rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/gpu_suite.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.table import header, machine

REPO = Path(__file__).resolve().parents[1]

#: Peak dense (no structured sparsity) tensor-core TFLOPS by GPU and math, from NVIDIA's
#: datasheets, whose headline figures are "with sparsity", twice these:
#: H100 SXM5 / H100 PCIe / H100 NVL: "NVIDIA H100 Tensor Core GPU" datasheet (2023) and the
#: "NVIDIA H100 Tensor Core GPU Architecture" whitepaper, table 3 (SXM5: BF16 989.4, TF32
#: 494.7, FP32 66.9); H200 SXM / H200 NVL: "NVIDIA H200 Tensor Core GPU" datasheet (2024; SXM:
#: the H100 SXM's compute); A100 (SXM and PCIe): "NVIDIA A100 Tensor Core GPU" datasheet
#: (BF16 312, TF32 156, FP32 19.5). ``fp32`` is the non-tensor-core rate.
PEAK_DENSE_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H100 NVL": {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "H200 SXM": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H200 NVL": {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}

#: bf16 unit roundoff: 8 significant bits (7 stored + 1 implicit), u = 2^-8.
BF16_UNIT_ROUNDOFF = 2.0 ** -8
FP32_TOLERANCE = 1e-5
KERNEL = 3
#: InternImage stage shapes (H = W of the stage, channels, groups) at the given crop; 16
#: channels per group for T (``trainer/models/internimage.py``: 64 channels, groups 4, 8, 16,
#: 32), 32 for H (320 channels, groups 10, 20, 40, 80); stage s is crop / 2^(s+1) pixels.
DCN_SHAPES: dict[str, tuple[int, int, list[tuple[int, int, int]]]] = {
    # name: (crop, batch, [(size, channels, groups) per stage])
    "T": (512, 2, [(128, 64, 4), (64, 128, 8), (32, 256, 16), (16, 512, 32)]),
    "H": (896, 1, [(224, 320, 10), (112, 640, 20), (56, 1280, 40), (28, 2560, 80)]),
}


def gpu_peak_tflops(name: str) -> tuple[str, dict[str, float]] | None:
    """(table key, peaks) for a CUDA device name (``torch.cuda.get_device_name``), or None."""
    upper = name.upper()
    for model in ("H200", "H100"):
        if model in upper:
            form = "NVL" if "NVL" in upper else ("PCIe" if "PCIE" in upper else "SXM")
            return f"{model} {form}", PEAK_DENSE_TFLOPS[f"{model} {form}"]
    if "A100" in upper:
        return "A100", PEAK_DENSE_TFLOPS["A100"]
    return None


def tolerance(dtype: torch.dtype, reduction: int, scale: float) -> float:
    """Largest absolute difference accepted between the Triton result and the reference.

    fp32: ``1e-5 * max(1, scale)``: both accumulate in fp32, so they differ by rounding only.
    bf16: the candidate reads bf16 inputs and writes a bf16 result; the reference computes in
    fp32 from the same (bf16-valued) inputs. A sum of ``n`` terms computed with unit roundoff
    u errs by at most ``n * u`` times the sum of the terms' magnitudes (Higham, *Accuracy and
    Stability of Numerical Algorithms*, 2nd ed., eq. 3.5, gamma_n ~ n u), and rounding the
    result to bf16 adds ``u`` of its magnitude; the terms' magnitudes are bounded here by the
    largest magnitude of the reference (``scale``: bilinear weights and the softmax mask sum to
    at most 1 per group), so ``(n + 1) * u * scale`` with u = 2^-8. ``reduction`` n is 4K = 36
    (four bilinear neighbours of K = 9 points) for the output and the input's gradient, 4C
    (four neighbours, C channels of the group) for the offsets' and the mask's gradients.
    """
    if dtype == torch.float32:
        return FP32_TOLERANCE * max(1.0, scale)
    return (reduction + 1) * BF16_UNIT_ROUNDOFF * scale


def _row(section: str, name: str, **fields) -> dict:
    """A suite row: :class:`benchmarks.table.Row`'s fields plus ``status`` (ok, skipped,
    failed), ``peak_gib``, ``tflops`` (achieved), ``mfu`` (fraction of the GPU's peak)."""
    base = dict(section=section, name=name, status="ok", figure=math.nan, unit="",
                reference="", reference_figure=math.nan, ratio=math.nan, target="", passed=None,
                peak_gib=None, tflops=None, mfu=None, notes="")
    base.update(fields)
    if math.isfinite(base["figure"]) and base["reference_figure"] not in (0, None) and \
            math.isfinite(base["reference_figure"]) and not fields.get("ratio"):
        base["ratio"] = base["figure"] / base["reference_figure"]
    return base


class Suite:
    """Rows, the output files (rewritten after each row) and the hard time budget."""

    def __init__(self, out: Path, budget_s: float, info: dict) -> None:
        self.out, self.info = out, info
        self.deadline = time.monotonic() + budget_s
        self.rows: list[dict] = []
        out.mkdir(parents=True, exist_ok=True)

    def remaining(self) -> float:
        """Seconds left of the budget."""
        return self.deadline - time.monotonic()

    def add(self, row: dict) -> None:
        """Keep ``row``, print it, and rewrite the JSON and Markdown files."""
        self.rows.append(row)
        value = f"{row['figure']:.4g} {row['unit']}" if math.isfinite(row["figure"]) else "-"
        print(f"[{row['section']}] {row['name']}: {row['status']} {value} "
              f"{row['notes'][:160]}", file=sys.stderr, flush=True)
        self.write()

    def guarded(self, section: str, name: str, needs_s: float,
                fn: Callable[[], list[dict]]) -> None:
        """Run ``fn`` (returning rows) unless less than ``needs_s`` seconds of budget are left
        (a skipped row says so); an exception gives a failed row with the error."""
        if self.remaining() < needs_s:
            self.add(_row(section, name, status="skipped",
                          notes=f"time budget: {self.remaining():.0f} s left, "
                                f"needs ~{needs_s:.0f} s"))
            return
        try:
            for row in fn():
                self.add(row)
        except Exception as exc:  # one failing row must not lose the others
            traceback.print_exc()
            self.add(_row(section, name, status="failed",
                          notes=f"{type(exc).__name__}: {exc}"[:300]))
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def write(self) -> None:
        clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                  for k, v in row.items()} for row in self.rows]
        (self.out / "gpu_suite.json").write_text(json.dumps(
            {"machine": self.info, "rows": clean}, indent=2))
        (self.out / "gpu_suite.md").write_text(markdown(self.rows, self.info))


def markdown(rows: list[dict], info: dict) -> str:
    """The rows as a Markdown table under the machine header."""
    def num(value, fmt="{:.4g}") -> str:
        return fmt.format(value) if isinstance(value, (int, float)) and math.isfinite(value) else ""

    lines = ["# segctl GPU suite", "", header(info), "",
             "| section | figure | status | value | unit | reference | ref value | ratio | "
             "peak GiB | TFLOPS | MFU | target | ok | notes |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        ok = {True: "yes", False: "NO", None: ""}[r["passed"]]
        cells = [r["section"], r["name"], r["status"], num(r["figure"]), r["unit"], r["reference"],
                 num(r["reference_figure"]), num(r["ratio"], "{:.2f}x"),
                 num(r["peak_gib"], "{:.2f}"), num(r["tflops"], "{:.1f}"),
                 num(r["mfu"] * 100 if r["mfu"] is not None else None, "{:.1f}%"),
                 r["target"], ok, r["notes"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# 1. DCNv3 -----------------------------------------------------------------------------------

def _forward_backward(core, inputs, groups: int) -> list[torch.Tensor]:
    """(output, grad input, grad offset, grad mask) of ``core``, as float32."""
    x, offset, mask, grad = inputs
    leaves = [t.detach().requires_grad_() for t in (x, offset, mask)]
    channels = x.shape[-1]
    out = core(*leaves, KERNEL, 1, 1, 1, groups, channels // groups, 1.0)
    out.backward(grad)
    return [t.float() for t in (out.detach(), *(leaf.grad for leaf in leaves))]


def dcnv3_equality(candidate, name: str, shape: str, size: int, channels: int, groups: int,
                   batch: int, dtype: torch.dtype, device: torch.device) -> dict:
    """One row: the candidate core's forward and gradients against ``dcnv3_core`` computed in
    float32 from the same inputs (TF32 off); figure = the worst error / its tolerance."""
    from benchmarks.bench_dcnv3 import make_inputs
    from trainer.models.dcnv3 import dcnv3_core

    inputs = make_inputs(size, channels, groups, batch, device, dtype)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        got = _forward_backward(candidate, inputs, groups)
        reference = _forward_backward(dcnv3_core, tuple(t.float() for t in inputs), groups)
        native = (_forward_backward(dcnv3_core, inputs, groups)
                  if dtype != torch.float32 else None)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    group_channels = channels // groups
    reductions = [4 * KERNEL * KERNEL, 4 * KERNEL * KERNEL, 4 * group_channels, 4 * group_channels]
    worst, parts = 0.0, []
    for label, a, b, n, i in zip(("out", "d_input", "d_offset", "d_mask"), got, reference,
                                 reductions, range(4)):
        error = float((a - b).abs().max())
        tol = tolerance(dtype, n, float(b.abs().max()))
        if not math.isfinite(error):  # NaN or inf in either: never equal (max() skips NaN)
            worst = math.inf
        elif error > 0:
            worst = max(worst, error / tol if tol > 0 else math.inf)
        part = f"{label} {error:.2e} (tol {tol:.2e}"
        if native is not None:
            part += f"; dcnv3_core {str(dtype)[6:]} {float((native[i] - b).abs().max()):.2e}"
        parts.append(part + ")")
    return _row("dcnv3", f"{name} = dcnv3_core, {str(dtype)[6:]}, {shape}",
                figure=worst, unit="error / tolerance", reference="tolerance", reference_figure=1.0,
                ratio=worst, target="<= 1x", passed=worst <= 1.0, notes="; ".join(parts))


def dcnv3_speed(candidate, name: str, shape: str, size: int, channels: int, groups: int,
                batch: int, dtype: torch.dtype, device: torch.device, repeats: int) -> list[dict]:
    """Forward and forward+backward milliseconds of the candidate against ``dcnv3_core``."""
    import statistics

    from benchmarks.bench_dcnv3 import make_inputs, run_once
    from trainer.models.dcnv3 import dcnv3_core

    inputs = make_inputs(size, channels, groups, batch, device, dtype)
    rows = []
    for backward in (False, True):
        times: dict[str, list[float]] = {"candidate": [], "reference": []}
        for core in (candidate, dcnv3_core):
            run_once(core, inputs, groups, backward)  # warm-up, Triton compilation
        for _ in range(repeats):
            times["candidate"].append(run_once(candidate, inputs, groups, backward))
            times["reference"].append(run_once(dcnv3_core, inputs, groups, backward))
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        rows.append(_row("dcnv3", f"{name} {'fwd+bwd' if backward else 'fwd'}, "
                         f"{str(dtype)[6:]}, {shape}", figure=ms["candidate"], unit="ms",
                         reference="dcnv3_core", reference_figure=ms["reference"],
                         notes=f"median of {repeats}, alternating"))
    return rows


def dcnv3_section(suite: Suite, device: torch.device, quick: bool) -> None:
    if device.type == "cuda":
        try:
            from trainer.models.dcnv3_triton import dcnv3_core_triton as candidate
            name, why_not = "triton", None
        except ImportError as exc:
            candidate, name, why_not = None, "triton", f"cannot import triton: {exc}"
    else:
        candidate, name, why_not = None, "triton", "no CUDA device"
    if candidate is None:
        suite.add(_row("dcnv3", "triton = dcnv3_core (all shapes)", status="skipped",
                       notes=why_not))
        if not quick:
            return
        # the same checks, run by the grid_sample core on the CPU: the code path stays tested
        from trainer.models.dcnv3 import dcnv3_core_grid_sample as candidate
        name = "grid_sample"
    shapes = [("T", 4)] if quick else [(m, s) for m in ("T", "H") for s in (1, 2, 3, 4)]
    dtypes = [torch.float32] if quick else [torch.float32, torch.bfloat16]
    for model, stage in shapes:
        crop, batch, stages = DCN_SHAPES[model]
        size, channels, groups = stages[stage - 1]
        if quick:
            size, batch = 8, 1
        shape = f"InternImage-{model} stage {stage} N={batch} {size}x{size} C={channels} G={groups}"
        for dtype in dtypes:
            args = (candidate, name, shape, size, channels, groups, batch, dtype, device)
            suite.guarded("dcnv3", f"{name} = dcnv3_core {shape}", 10,
                          lambda: [dcnv3_equality(*args)])
            suite.guarded("dcnv3", f"{name} speed {shape}", 10,
                          lambda: dcnv3_speed(*args, repeats=2 if quick else 10))


# 2 and 4. Training steps --------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One training-step row: a zoo case and how it runs.

    Attributes:
        case: ``internimage_t``, ``segformer_b0`` or ``segformer_b5``.
        precision: ``fp32`` or ``bf16`` (the recipe's ``train.precision``).
        tf32: TF32 matmuls and convolutions (the recipe's ``train.tf32``).
        core: DCNv3 core, ``pytorch`` (``dcnv3_core``) or ``triton``; None for SegFormer.
        compile: ``model.compile()`` before the optimizer is built.
        channels_last: the model in channels-last memory format.
        fused_adamw: the recipe's AdamW groups in ``torch.optim.AdamW(fused=True)``.
        crop, batch: pixels (square), images.
        warmup, iters: untimed and timed iterations.
    """

    case: str
    precision: str
    tf32: bool = False
    core: str | None = None
    compile: bool = False
    channels_last: bool = False
    fused_adamw: bool = False
    crop: int = 512
    batch: int = 2
    warmup: int = 5
    iters: int = 20

    @property
    def label(self) -> str:
        parts = [self.precision + ("+tf32" if self.tf32 else "")]
        if self.core:
            parts.append(f"{self.core} DCNv3")
        parts += [flag for flag, on in (("compile", self.compile),
                                        ("channels-last", self.channels_last),
                                        ("fused AdamW", self.fused_adamw)) if on]
        return f"{self.case} {self.crop}x{self.crop} b{self.batch}, " + ", ".join(parts)

    @property
    def math(self) -> str:
        """The peak-TFLOPS column this variant's matmuls run at."""
        return "bf16" if self.precision == "bf16" else ("tf32" if self.tf32 else "fp32")


RECIPES = {
    "internimage_t": "recipes/ade20k/upernet_internimage_t_512x512_160k.yaml",
    "segformer_b0": "recipes/cityscapes/segformer_mit_b0_1024x1024_160k.yaml",
    "segformer_b5": "recipes/cityscapes/segformer_mit_b5_1024x1024_160k.yaml",
}


def training_variants(quick: bool) -> tuple[list[Variant], list[Variant]]:
    """(eager rows, compile rows); each case's first eager row is its reference."""
    if quick:
        tiny = dict(crop=32, batch=2, warmup=1, iters=1)
        return ([Variant("segformer_b0", "fp32", **tiny),
                 Variant("segformer_b0", "fp32", channels_last=True, fused_adamw=True, **tiny),
                 Variant("internimage_t", "fp32", core="pytorch", **tiny)],
                [Variant("segformer_b0", "fp32", compile=True, **tiny)])
    it = dict(crop=512, batch=2)
    b = dict(crop=1024, batch=2)
    eager = [
        Variant("internimage_t", "fp32", tf32=True, core="pytorch", **it),
        Variant("internimage_t", "fp32", tf32=True, core="triton", **it),
        Variant("internimage_t", "bf16", core="pytorch", **it),
        Variant("internimage_t", "bf16", core="triton", **it),
        Variant("internimage_t", "bf16", core="triton", fused_adamw=True, **it),
        Variant("segformer_b0", "bf16", **b),
        Variant("segformer_b0", "fp32", tf32=True, **b),
        Variant("segformer_b0", "bf16", channels_last=True, **b),
        Variant("segformer_b0", "bf16", fused_adamw=True, **b),
        Variant("segformer_b5", "bf16", **b),
        Variant("segformer_b5", "bf16", fused_adamw=True, **b),
    ]
    compiled = [
        Variant("internimage_t", "bf16", core="triton", compile=True, fused_adamw=True,
                warmup=3, **it),
        Variant("segformer_b0", "bf16", compile=True, fused_adamw=True, warmup=3, **b),
        Variant("segformer_b5", "bf16", compile=True, fused_adamw=True, warmup=3, **b),
    ]
    return eager, compiled


def _fused_adamw(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same parameter groups (learning rates, weight decays) in a fused AdamW."""
    if not isinstance(optimizer, torch.optim.AdamW):
        raise ValueError(f"fused AdamW asked for, the recipe builds {type(optimizer).__name__}")
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")}
              for g in optimizer.param_groups]
    return torch.optim.AdamW(groups, lr=optimizer.defaults["lr"], fused=True)


def run_variant(variant: Variant, count_flops: bool) -> dict:
    """Time ``variant`` in this process: seconds per iteration, peak GiB, FLOPs per iteration
    (when ``count_flops``), device name."""
    from segctl.recipe import load_recipe
    from trainer.models.dcnv3 import DCNv3, dcnv3_core
    from trainer.step_timing import time_training_steps

    overrides = ["data.root=/unused", "model.init_checkpoint=null",
                 f"train.precision={variant.precision}", f"train.tf32={str(variant.tf32).lower()}"]
    recipe = load_recipe(REPO / RECIPES[variant.case], overrides).recipe
    core = None
    if variant.core == "triton":
        from trainer.models.dcnv3_triton import dcnv3_core_triton as core
    elif variant.core == "pytorch":
        core = dcnv3_core

    def configure(model: torch.nn.Module) -> None:
        if core is not None:
            for module in model.modules():
                if isinstance(module, DCNv3):
                    module.core = core
        if variant.channels_last:
            model.to(memory_format=torch.channels_last)
        if variant.compile:
            model.compile()

    timing = time_training_steps(
        recipe, iters=variant.iters, warmup=variant.warmup, batch=variant.batch,
        crop=(variant.crop, variant.crop), configure=configure,
        configure_optimizer=_fused_adamw if variant.fused_adamw else None,
        count_flops=count_flops and not variant.compile)
    return {"seconds_per_iter": timing.seconds_per_iter, "peak_gib": timing.peak_memory_gib,
            "flops": timing.flops_per_iter, "device": timing.device,
            "precision": timing.precision}


def _run_in_subprocess(variant: Variant, count_flops: bool, timeout_s: float) -> dict:
    """:func:`run_variant` in a fresh process (its own peak memory; a hang is cut off)."""
    spec = json.dumps({"variant": asdict(variant), "count_flops": count_flops})
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--variant", spec],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def training_section(suite: Suite, variants: list[Variant], quick: bool, section: str,
                     references: dict[str, dict], peaks: dict[str, float] | None,
                     row_limit_s: float) -> None:
    """A row per variant; ``references`` (case -> the reference row's result, with its FLOPs)
    is filled by each case's first variant and read by the others."""
    for variant in variants:
        if variant.core == "triton" and not torch.cuda.is_available():
            suite.add(_row(section, variant.label, status="skipped", notes="no CUDA device"))
            continue
        if variant.compile and quick:
            suite.add(_row(section, variant.label, status="skipped",
                           notes="--quick: compiling takes minutes"))
            continue

        def measure(variant: Variant = variant) -> list[dict]:
            first = variant.case not in references
            if quick:
                result = run_variant(variant, count_flops=first)
            else:
                result = _run_in_subprocess(variant, first,
                                            max(1.0, min(row_limit_s, suite.remaining())))
            if first:
                references[variant.case] = {**result, "label": variant.label}
            reference = references[variant.case]
            flops = reference["flops"]
            fields: dict = {"peak_gib": result["peak_gib"]}
            notes = [result["device"]]
            if flops:
                achieved = flops / result["seconds_per_iter"] / 1e12
                fields["tflops"] = achieved
                notes.append(f"{flops / 1e9:.4g} GFLOP/iter")
                if peaks:
                    fields["mfu"] = achieved / peaks[variant.math]
                    notes.append(f"peak {peaks[variant.math]:g} TFLOPS {variant.math}")
            target = ""
            passed = None
            if variant.case == "internimage_t" and variant.crop == 512:
                target = "<= 0.08 s/iter (H100/H200); published A100 0.23"
                passed = result["seconds_per_iter"] <= 0.08 if peaks else None
            notes.append(f"median of {variant.iters} after {variant.warmup}")
            return [_row(section, variant.label, figure=result["seconds_per_iter"],
                         unit="s/iter", reference=reference["label"],
                         reference_figure=reference["seconds_per_iter"], target=target,
                         passed=passed, notes="; ".join(notes), **fields)]

        needs = 5 if quick else (90 if variant.compile else 25)
        suite.guarded(section, variant.label, needs, measure)


# 3. Evaluation --------------------------------------------------------------------------------

def eval_section(suite: Suite, device: torch.device, quick: bool) -> None:
    """Single view and 12-view ms+flip, whole and slide: time and peak memory."""
    from benchmarks import bench_msflip_memory as msflip

    size = [64, 128] if quick else [1024, 2048]

    def single_views() -> list[dict]:
        from trainer.evaluate import InferenceSettings, predict_probs, segmentor_logits
        from benchmarks.table import median_seconds

        height, width = size
        net = msflip._model(device)
        image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
        image = image.to(device)
        autocast = torch.bfloat16 if device.type == "cuda" else None
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        rows = []
        for mode in ("whole", "slide"):
            window = max(16, round(1024 * height / 1024))
            stride = max(8, round(768 * height / 1024))
            extra = (dict(crop_size=(window, window), stride=(stride, stride))
                     if mode == "slide" else {})
            settings = InferenceSettings(mode=mode, test_scale=(width, height), **extra)
            model = segmentor_logits(net, settings)

            def predict() -> None:
                predict_probs(model, image, settings, num_classes=19, autocast_dtype=autocast)

            predict()
            peak = msflip.peak_bytes(predict, device) / 2**30
            seconds = median_seconds(predict, 1 if quick else 5, sync)
            rows.append(_row("eval", f"single view, {mode} {height}x{width}", figure=seconds,
                             unit="s", reference="", peak_gib=peak,
                             notes=f"SegFormer-B0; peak {peak:.3f} GiB above the model"))
        return rows

    def ms_flip() -> list[dict]:
        out = []
        for r in msflip.rows(quick=quick, device=device.type, size=size):
            fields = asdict(r)
            fields.pop("benchmark")
            name = fields.pop("name")
            if fields["unit"] == "GiB":
                fields["peak_gib"] = fields["figure"]
            out.append(_row("eval", name, **fields))
        return out

    suite.guarded("eval", "single view", 5 if quick else 30, single_views)
    suite.guarded("eval", "12-view ms+flip", 5 if quick else 60, ms_flip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_suite.json/.md")
    parser.add_argument("--quick", action="store_true", help="the CPU smoke run (tiny shapes)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="hard overall budget in seconds (default 450; --quick 240)")
    parser.add_argument("--row-limit-s", type=float, default=180.0,
                        help="timeout of one training row's process")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # a row's process
    options = parser.parse_args(argv)
    if options.variant:
        spec = json.loads(options.variant)
        print(json.dumps(run_variant(Variant(**spec["variant"]), spec["count_flops"])))
        return 0
    if options.out is None:
        parser.error("--out DIR is required")
    cuda = torch.cuda.is_available() and not options.quick
    if not cuda and not options.quick:
        parser.error("no CUDA device: run with --quick for the CPU smoke run")
    device = torch.device("cuda" if cuda else "cpu")
    if options.quick:
        torch.set_num_threads(1)  # a smoke run: steady on a shared machine
    info = machine()
    peaks = None
    if cuda:
        found = gpu_peak_tflops(torch.cuda.get_device_name(device))
        if found:
            info["gpu_peak_table"], peaks = found
    suite = Suite(options.out, options.budget_s or (240.0 if options.quick else 450.0), info)
    started = time.monotonic()
    eager, compiled = training_variants(options.quick)
    references: dict[str, dict] = {}
    dcnv3_section(suite, device, options.quick)
    training_section(suite, eager, options.quick, "train", references, peaks,
                     options.row_limit_s)
    eval_section(suite, device, options.quick)
    training_section(suite, compiled, options.quick, "compile", references, peaks,
                     options.row_limit_s)
    failed = [r for r in suite.rows if r["status"] == "failed"]
    print(markdown(suite.rows, info))
    print(f"{len(suite.rows)} rows ({len(failed)} failed) in {time.monotonic() - started:.0f} s; "
          f"written to {options.out}/gpu_suite.json and .md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The Triton DCNv3 kernels against ``dcnv3_core`` and the explicit loop, and the choice of
implementation (``dcnv3_core_auto``, ``SEGCTL_DCNV3_IMPL``).

Without a GPU the kernels run in Triton's interpreter, which ``triton.jit`` selects when it
decorates a kernel, i.e. from ``TRITON_INTERPRET`` as set when ``trainer.models.dcnv3_triton``
is first imported. The interpreter checks therefore run in one child process started with
``TRITON_INTERPRET=1`` (this file run as ``python -m tests.test_dcnv3_triton``), which prints
the measured errors as JSON; the tests here assert on them. Setting the variable at the top of
this module instead would change the whole pytest process: a test collected earlier that had
imported the kernels would keep compiled ones (and fail on CPU tensors), and any later
Triton code in the process would silently run interpreted.

The interpreter does not check what only the compiler checks (types of compile-time values,
layouts); a second child process compiles both kernels for sm_90 with Triton's bundled ptxas,
which needs no GPU. On a machine with CUDA the compiled kernels are also run against
``dcnv3_core``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.models.dcnv3 import (
    DCNV3_IMPL_ENV,
    DCNv3,
    dcnv3_core,
    dcnv3_core_auto,
    dcnv3_core_grid_sample,
    select_dcnv3_core,
)
from trainer.models.dcnv3_spec import dcnv3_output_size

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Triton compiles each kernel on the CPU interpreter or for a GPU target: seconds per case.
pytestmark = pytest.mark.slow

# name -> (dtype, kernel_size, stride, pad, dilation, group, group_channels, offset_scale,
#          offset_std, (H, W), compare with the loop); batch 2. Offsets of 2..6 pixels (after
#          offset_scale) put many samples partly or wholly outside the image. Sizes are kept to
#          one or two programs per launch (the interpreter runs them one after another, ~0.1 s
#          each).
CASES: dict[str, tuple] = {
    "f32_k3_s1_g2_c8": ("float32", 3, 1, 1, 1, 2, 8, 1.0, 2.0, (7, 7), False),
    "f32_k3_s2_g4_c8_scale1.5": ("float32", 3, 2, 1, 1, 4, 8, 1.5, 3.0, (9, 8), False),
    "f32_k3_d2_p2_g2_c8_scale0.5": ("float32", 3, 1, 2, 2, 2, 8, 0.5, 2.0, (8, 8), False),
    "f64_k3_s1_g2_c8_scale2": ("float64", 3, 1, 1, 1, 2, 8, 2.0, 1.5, (5, 5), True),
    "f64_k3_s2_g3_c8_far_scale0.3": ("float64", 3, 2, 1, 1, 3, 8, 0.3, 20.0, (5, 6), True),
    "f64_k5_p2_g2_c4": ("float64", 5, 1, 2, 1, 2, 4, 1.0, 1.0, (5, 5), False),
    "bf16_k3_s1_g2_c16": ("bfloat16", 3, 1, 1, 1, 2, 16, 1.0, 2.0, (5, 5), False),
}
# (atol, rtol) by input dtype; bf16: output and gradients rounded to bf16 (8 bits) once.
TOLERANCE = {"float32": (1e-5, 1e-5), "float64": (1e-12, 1e-12), "bfloat16": (2e-2, 1e-2)}
QUANTITIES = ("out", "grad_input", "grad_offset", "grad_mask")


def _inputs(case: tuple) -> tuple[torch.Tensor, ...]:
    dtype, kernel_size, stride, pad, dilation, group, gc, _, std, (h, w), _ = case
    gen = torch.Generator().manual_seed(0)
    h_out = dcnv3_output_size(h, kernel_size, stride, pad, dilation)
    w_out = dcnv3_output_size(w, kernel_size, stride, pad, dilation)
    points = kernel_size * kernel_size
    make = dict(generator=gen, dtype=torch.float64)
    x = torch.randn(2, h, w, group * gc, **make)
    offset = std * torch.randn(2, h_out, w_out, group * points * 2, **make)
    mask = torch.randn(2, h_out, w_out, group, points, **make).softmax(-1)
    grad = torch.randn(2, h_out, w_out, group * gc, **make)
    cast = getattr(torch, dtype)
    return tuple(t.to(cast) for t in (x, offset, mask.reshape(2, h_out, w_out, -1), grad))


def _run(core, inputs: tuple[torch.Tensor, ...], case: tuple, dtype=None) -> list[torch.Tensor]:
    """[out, grad_input, grad_offset, grad_mask] of ``core``; inputs cast to ``dtype``."""
    _, kernel_size, stride, pad, dilation, group, gc, scale, *_ = case
    x, offset, mask, grad = (t if dtype is None else t.to(dtype) for t in inputs)
    leaves = [t.clone().requires_grad_() for t in (x, offset, mask)]
    out = core(*leaves, kernel_size, stride, pad, dilation, group, gc, scale)
    out.backward(grad)
    return [out.detach(), *(t.grad for t in leaves)]


def _errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> dict[str, list[float]]:
    """quantity -> [max |got - want|, max |want|]."""
    return {
        name: [(g.double() - w.double()).abs().max().item(), w.double().abs().max().item()]
        for name, g, w in zip(QUANTITIES, got, want)
    }


def interpreter_report() -> dict:
    """Run in the child process (TRITON_INTERPRET=1): errors of every case, dtypes of the
    results, and the forced choice of the Triton kernels (CUDA tensors get them by default:
    ``test_compiled_kernels_match_dcnv3_core_on_cuda``)."""
    report: dict = {}
    # The default core on CPU tensors must not import triton.
    module = DCNv3(16, group=2).double()
    torch.nn.init.normal_(module.offset.weight)
    x = torch.randn(1, 5, 6, 16, dtype=torch.float64)
    default_out = module(x)
    report["triton_imported_by_cpu_default"] = "triton" in sys.modules

    from tests.test_models_internimage import dcnv3_loop
    from trainer.models.dcnv3_triton import dcnv3_core_triton

    os.environ[DCNV3_IMPL_ENV] = "triton"
    report["forced_triton_picked"] = select_dcnv3_core(x) is dcnv3_core_triton
    report["module_forced_triton_max_error"] = (module(x) - default_out).abs().max().item()
    del os.environ[DCNV3_IMPL_ENV]

    report["cases"] = {}
    for name, case in CASES.items():
        inputs = _inputs(case)
        triton_result = _run(dcnv3_core_triton, inputs, case)
        dtype = inputs[0].dtype
        # bf16: the reference runs in float32 on the same (bf16-rounded) values.
        reference_dtype = torch.float32 if dtype == torch.bfloat16 else None
        entry = {
            "dtypes": [str(t.dtype) for t in triton_result],
            "vs_core": _errors(triton_result, _run(dcnv3_core, inputs, case, reference_dtype)),
        }
        if case[-1]:
            entry["vs_loop"] = _errors(triton_result, _run(dcnv3_loop, inputs, case))
        report["cases"][name] = entry
    return report


def compile_report() -> dict:
    """Run in a child process: compile both kernels for sm_90 (H100/H200) without a GPU,
    bf16 and fp32, 16 channels per group, pointers 16-byte aligned and stride = pad =
    dilation = 1 as the JIT specialises them at launch; count the global memory instructions
    of each PTX."""
    import re
    from collections import Counter

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from trainer.models import dcnv3_triton as kernels

    report = {}
    for dtype in ("fp32", "bf16"):
        pointers = {"input_ptr": dtype, "offset_ptr": dtype, "mask_ptr": dtype, "out_ptr": dtype,
                    "grad_out_ptr": dtype,
                    "grad_input_ptr": "fp32", "grad_offset_ptr": dtype, "grad_mask_ptr": dtype}
        constexprs = dict(GROUP=4, CHANNELS=16, KERNEL=3, BLOCK_R=64, BLOCK_C=16,
                          COMPUTE=tl.float32, INDEX_64=False, stride=1, pad=1, dilation=1,
                          NEED_GRAD_INPUT=True, NEED_GRAD_SAMPLING=True)
        for name, kernel in (("forward", kernels._dcnv3_forward_kernel),
                             ("backward", kernels._dcnv3_backward_kernel)):
            names = kernel.arg_names
            signature = {
                a: f"*{pointers[a]}" if a in pointers
                else "fp32" if a.startswith("scale_")
                else "constexpr" if a in constexprs
                else "i32"
                for a in names
            }
            source = ASTSource(
                fn=kernel, signature=signature,
                constexprs={a: v for a, v in constexprs.items() if a in names},
                attrs={(i,): [["tt.divisibility", 16]] for i, a in enumerate(names)
                       if a in pointers},
            )
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                      options={"num_warps": 4})
            ops = Counter(re.findall(r"(?:ld|st|red|atom)\.global[a-z0-9.]*", compiled.asm["ptx"]))
            report[f"{name}_{dtype}"] = {"cubin_bytes": len(compiled.asm["cubin"]), "ptx_ops": ops}
    return report


needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


@pytest.fixture(scope="module")
def report() -> dict:
    env = {k: v for k, v in os.environ.items() if k != DCNV3_IMPL_ENV}
    env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_dcnv3_triton"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_triton_kernels_match_dcnv3_core_and_the_loop(report, name) -> None:
    entry = report["cases"][name]
    dtype = CASES[name][0]
    assert entry["dtypes"] == [f"torch.{dtype}"] * 4
    atol, rtol = TOLERANCE[dtype]
    for reference in ("vs_core", "vs_loop"):
        for quantity, (error, scale) in entry.get(reference, {}).items():
            assert error <= atol + rtol * scale, f"{name} {reference} {quantity}: {error:.3g}"
    assert ("vs_loop" in entry) == CASES[name][-1]


@needs_triton
def test_implementation_choice_with_triton_imported(report) -> None:
    assert not report["triton_imported_by_cpu_default"]
    assert report["forced_triton_picked"]
    assert report["module_forced_triton_max_error"] < 1e-12


@needs_triton
def test_kernels_compile_for_hopper_without_a_gpu(tmp_path) -> None:
    """The interpreter does not type-check like the compiler; this builds the real sm_90
    binaries (Triton's bundled ptxas, no GPU needed) and checks that the channel tiles are
    read with vector loads and the input gradient summed with vector atomics."""
    if tuple(int(p) for p in importlib.metadata.version("triton").split(".")[:2]) < (3, 3):
        pytest.skip("ASTSource API of Triton >= 3.3")
    env = {k: v for k, v in os.environ.items() if k not in (DCNV3_IMPL_ENV, "TRITON_INTERPRET")}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_dcnv3_triton", "compile"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, entry in report.items():
        assert entry["cubin_bytes"] > 0, name
        assert any(op.startswith("ld.global.v4") for op in entry["ptx_ops"]), (name, entry)
        if name.startswith("backward"):
            assert any(op.startswith("red.global") and ".v4." in op for op in entry["ptx_ops"])


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compiled_kernels_match_dcnv3_core_on_cuda(dtype) -> None:
    """The compiled kernels (not the interpreter) at an InternImage-T stage-1 group layout
    (64 channels, 4 groups of 16), against ``dcnv3_core`` in float32 on the same device."""
    from trainer.models.dcnv3_triton import dcnv3_core_triton

    case = (dtype, 3, 1, 1, 1, 4, 16, 1.0, 2.0, (33, 40), False)
    inputs = tuple(t.cuda() for t in _inputs(case))
    got = _run(dcnv3_core_triton, inputs, case)
    want = _run(dcnv3_core, inputs, case, torch.float32)
    assert [t.dtype for t in got] == [getattr(torch, dtype)] * 4
    atol, rtol = {"float32": (1e-4, 1e-5), "bfloat16": TOLERANCE["bfloat16"]}[dtype]
    for name, (error, scale) in _errors(got, want).items():
        assert error <= atol + rtol * scale, f"{dtype} {name}: {error:.3g}"
    if not os.environ.get(DCNV3_IMPL_ENV):
        assert select_dcnv3_core(inputs[0]) is dcnv3_core_triton


def test_cpu_tensors_get_the_pytorch_core_unless_forced(monkeypatch) -> None:
    x = torch.zeros(1, 3, 3, 4)
    monkeypatch.delenv(DCNV3_IMPL_ENV, raising=False)
    assert select_dcnv3_core(x) is dcnv3_core
    assert DCNv3(4, group=2).core is dcnv3_core_auto
    monkeypatch.setenv(DCNV3_IMPL_ENV, "grid_sample")
    assert select_dcnv3_core(x) is dcnv3_core_grid_sample
    monkeypatch.setenv(DCNV3_IMPL_ENV, " PyTorch ")
    assert select_dcnv3_core(x) is dcnv3_core
    monkeypatch.setenv(DCNV3_IMPL_ENV, "cuda")
    with pytest.raises(ValueError, match="pytorch, triton, grid_sample"):
        select_dcnv3_core(x)


def test_auto_core_forced_to_grid_sample_gives_its_result(monkeypatch) -> None:
    case = CASES["f64_k3_s1_g2_c8_scale2"]
    x, offset, mask, _ = _inputs(case)
    args = case[1:8]
    monkeypatch.setenv(DCNV3_IMPL_ENV, "grid_sample")
    torch.testing.assert_close(
        dcnv3_core_auto(x, offset, mask, *args), dcnv3_core_grid_sample(x, offset, mask, *args),
        atol=0, rtol=0,
    )
    with pytest.raises(ValueError, match="offset"):
        dcnv3_core_auto(x, offset[..., :-2], mask, *args)


if __name__ == "__main__":
    print(json.dumps(compile_report() if sys.argv[1:] == ["compile"] else interpreter_report()))

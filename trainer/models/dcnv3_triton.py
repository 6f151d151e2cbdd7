"""DCNv3 as fused Triton kernels (forward and backward), for CUDA tensors.

Same operator, arguments, dtype rules and errors as :func:`trainer.models.dcnv3.dcnv3_core`
(see that module's docstring for the formula and the coordinate conventions); the kernels follow
the structure of OpenGVLab/InternImage ``ops_dcnv3/src/cuda/dcnv3_im2col_cuda.cuh``
(``dcnv3_im2col_gpu_kernel`` for the forward, ``dcnv3_col2im_bilinear`` and the
``dcnv3_col2im_gpu_kernel_*`` reductions for the backward) and the reference PyTorch path
``ops_dcnv3/functions/dcnv3_func.py`` (``dcnv3_core_pytorch``). Triton compiles the kernels at
their first call, so nothing is built at install time.

Work decomposition: a *row* is one (image, output pixel, group), ``r = ((n * H_out + i) *
W_out + j) * group + g``; the offsets, mask and output of row ``r`` are contiguous
(``offset[r * 2K : (r + 1) * 2K]``, ``mask[r * K : (r + 1) * K]``, ``out[r * C : (r + 1) * C]``
with ``C = group_channels``). One program handles ``BLOCK_R`` rows and all ``C`` channels of
their group (``BLOCK_C = next_power_of_2(C)``):

- forward: for each of the K kernel points, the sampling position (in the compute dtype), its
  four bilinear neighbours read as (BLOCK_R, BLOCK_C) tiles (zero outside the input), weighted by
  bilinear weight times mask and accumulated in the compute dtype; stored in the input dtype.
- backward: ``grad_input`` by ``atomic_add`` of ``mask * bilinear_weight * grad_out`` into a
  compute-dtype buffer (cast to the input dtype at the end); for each (row, point) the four
  ``<input[neighbour], grad_out[row]>`` dot products over the group's channels give
  ``grad_mask`` and, through the bilinear weights, ``grad_offset`` (times ``offset_scale``), as
  the CUDA col2im kernel's per-channel terms reduced over channels.

``grad_input`` is summed by atomics, so its float rounding (not its value) depends on the order
in which programs run: not bitwise deterministic, as the CUDA reference.

The compute dtype is float64 when any of input, offset or mask is float64, else float32 (bf16
and fp16 inputs are read as such and accumulated in float32). A sampling position outside
``[-1, W) x [-1, H)`` meets only zeros and contributes nothing, with zero gradient (the CUDA
kernel tests ``loc_h > -1``; at exactly -1 the value is zero either way, and the gradient here is
the right derivative, as at every integer position and as in ``dcnv3_core``).

Verified with the Triton interpreter only (``TRITON_INTERPRET=1``, CPU tensors), against
:func:`~trainer.models.dcnv3.dcnv3_core` and an explicit loop (``tests/test_dcnv3_triton.py``),
until the kernels run on a GPU; the same tests compile them for sm_90 (no spills, vector loads
and vector atomics in the PTX) but do not run them. Block sizes and warp counts are untuned.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from trainer.models.dcnv3_spec import check_core_args

# The K kernel points are a runtime loop, not tl.static_range: unrolled, the compiler hoists
# all K points' neighbour loads and the forward needs ~140 registers per thread for sm_90
# (bf16 and fp32, 16 channels per group) against ~56 as a loop, which keeps occupancy up for
# this gather-bound kernel.
# Elements of one (BLOCK_R, BLOCK_C) tile: 64 rows of 16 channels (InternImage's group width),
# 32 rows of 32 channels, and so on; with 4 warps that is 8 elements per thread and tile.
_TILE_ELEMENTS = 1024
_NUM_WARPS = 4


def _interpreter_mode() -> bool:
    """Whether ``triton.jit`` builds interpreted kernels (``TRITON_INTERPRET``; ``triton.knobs``
    from Triton 3.4, the variable itself before)."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


# Whether the kernels below were decorated in interpreter mode (read when triton.jit runs, i.e.
# at this module's import): then they take CPU tensors.
_INTERPRETED = _interpreter_mode()


@triton.jit
def _sampling_setup(
    offset_ptr,
    mask_ptr,
    rows_idx,
    row_ok,
    cx,
    cy,
    k,
    dilation,
    half,
    scale,
    height,
    width,
    KERNEL: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """Kernel point ``k`` of each row: bilinear fractions, top-left neighbour, mask (zeroed
    where the position is outside ``[-1, W) x [-1, H)``) and the inside flag."""
    points: tl.constexpr = KERNEL * KERNEL
    dx = tl.load(offset_ptr + rows_idx * (2 * points) + 2 * k, mask=row_ok, other=0.0)
    dy = tl.load(offset_ptr + rows_idx * (2 * points) + 2 * k + 1, mask=row_ok, other=0.0)
    m = tl.load(mask_ptr + rows_idx * points + k, mask=row_ok, other=0.0).to(COMPUTE)
    # Point k = ix * KERNEL + iy (x-major, as meshgrid(x, y) flattened in the reference).
    # tl.cast, not .to: these can be compile-time ints (dilation specialised to 1).
    point_x = tl.cast((k // KERNEL) * dilation - half, COMPUTE)
    point_y = tl.cast((k % KERNEL) * dilation - half, COMPUTE)
    x = cx + (point_x + dx.to(COMPUTE)) * scale
    y = cy + (point_y + dy.to(COMPUTE)) * scale
    # [-1, W) x [-1, H): at exactly -1 the value is 0 but the right derivative is not, which
    # is the floor convention at every integer position (and dcnv3_core's).
    inside = row_ok & (x >= -1.0) & (y >= -1.0) & (x < width) & (y < height)
    # Outside positions are replaced by 0 so that floor() and the int conversion stay in range.
    x = tl.where(inside, x, 0.0)
    y = tl.where(inside, y, 0.0)
    x0 = tl.floor(x)
    y0 = tl.floor(y)
    m = tl.where(inside, m, 0.0)
    return x - x0, y - y0, x0.to(tl.int32), y0.to(tl.int32), m, inside


@triton.jit
def _dcnv3_forward_kernel(
    input_ptr,
    offset_ptr,
    mask_ptr,
    scale_hi,
    scale_lo,
    out_ptr,
    rows,
    height,
    width,
    height_out,
    width_out,
    stride,
    pad,
    dilation,
    GROUP: tl.constexpr,
    CHANNELS: tl.constexpr,
    KERNEL: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    COMPUTE: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    rows_idx = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    if INDEX_64:
        rows_idx = rows_idx.to(tl.int64)
    row_ok = rows_idx < rows
    g = rows_idx % GROUP
    pixel = rows_idx // GROUP
    j = pixel % width_out
    i = (pixel // width_out) % height_out
    n = pixel // (width_out * height_out)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < CHANNELS
    half = dilation * (KERNEL - 1) // 2
    cx = (j * stride - pad + half).to(COMPUTE)
    cy = (i * stride - pad + half).to(COMPUTE)
    # offset_scale arrives as two float32 arguments (hi + lo), exact enough for float64.
    scale = tl.cast(scale_hi, COMPUTE) + tl.cast(scale_lo, COMPUTE)
    pixel_stride: tl.constexpr = GROUP * CHANNELS  # elements between horizontal neighbours
    image = n * height
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=COMPUTE)
    for k in range(KERNEL * KERNEL):
        fx, fy, x0, y0, m, inside = _sampling_setup(
            offset_ptr, mask_ptr, rows_idx, row_ok, cx, cy, k, dilation, half, scale,
            height, width, KERNEL, COMPUTE,
        )
        top = ((image + y0) * width + x0) * pixel_stride + g * CHANNELS
        below = width * pixel_stride
        ok_l = inside & (x0 >= 0)
        ok_r = inside & (x0 + 1 < width)
        ok_t = y0 >= 0
        ok_b = y0 + 1 < height
        p = input_ptr + top[:, None] + cols[None, :]
        v00 = tl.load(p, mask=(ok_t & ok_l)[:, None] & col_ok[None, :], other=0.0)
        v01 = tl.load(p + pixel_stride, mask=(ok_t & ok_r)[:, None] & col_ok[None, :], other=0.0)
        v10 = tl.load(p + below, mask=(ok_b & ok_l)[:, None] & col_ok[None, :], other=0.0)
        v11 = tl.load(
            p + below + pixel_stride, mask=(ok_b & ok_r)[:, None] & col_ok[None, :], other=0.0
        )
        upper = m * (1.0 - fy)
        lower = m * fy
        acc += (upper * (1.0 - fx))[:, None] * v00.to(COMPUTE)
        acc += (upper * fx)[:, None] * v01.to(COMPUTE)
        acc += (lower * (1.0 - fx))[:, None] * v10.to(COMPUTE)
        acc += (lower * fx)[:, None] * v11.to(COMPUTE)
    out = out_ptr + rows_idx[:, None] * CHANNELS + cols[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _dcnv3_backward_kernel(
    input_ptr,
    offset_ptr,
    mask_ptr,
    scale_hi,
    scale_lo,
    grad_out_ptr,
    grad_input_ptr,
    grad_offset_ptr,
    grad_mask_ptr,
    rows,
    height,
    width,
    height_out,
    width_out,
    stride,
    pad,
    dilation,
    GROUP: tl.constexpr,
    CHANNELS: tl.constexpr,
    KERNEL: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    COMPUTE: tl.constexpr,
    INDEX_64: tl.constexpr,
    NEED_GRAD_INPUT: tl.constexpr,
    NEED_GRAD_SAMPLING: tl.constexpr,
):
    rows_idx = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    if INDEX_64:
        rows_idx = rows_idx.to(tl.int64)
    row_ok = rows_idx < rows
    g = rows_idx % GROUP
    pixel = rows_idx // GROUP
    j = pixel % width_out
    i = (pixel // width_out) % height_out
    n = pixel // (width_out * height_out)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < CHANNELS
    half = dilation * (KERNEL - 1) // 2
    cx = (j * stride - pad + half).to(COMPUTE)
    cy = (i * stride - pad + half).to(COMPUTE)
    # offset_scale arrives as two float32 arguments (hi + lo), exact enough for float64.
    scale = tl.cast(scale_hi, COMPUTE) + tl.cast(scale_lo, COMPUTE)
    pixel_stride: tl.constexpr = GROUP * CHANNELS
    points: tl.constexpr = KERNEL * KERNEL
    image = n * height
    tile_ok = row_ok[:, None] & col_ok[None, :]
    go = tl.load(
        grad_out_ptr + rows_idx[:, None] * CHANNELS + cols[None, :], mask=tile_ok, other=0.0
    ).to(COMPUTE)
    for k in range(points):
        fx, fy, x0, y0, m, inside = _sampling_setup(
            offset_ptr, mask_ptr, rows_idx, row_ok, cx, cy, k, dilation, half, scale,
            height, width, KERNEL, COMPUTE,
        )
        top = ((image + y0) * width + x0) * pixel_stride + g * CHANNELS
        below = width * pixel_stride
        ok_l = inside & (x0 >= 0)
        ok_r = inside & (x0 + 1 < width)
        ok_t = y0 >= 0
        ok_b = y0 + 1 < height
        ok00 = (ok_t & ok_l)[:, None] & col_ok[None, :]
        ok01 = (ok_t & ok_r)[:, None] & col_ok[None, :]
        ok10 = (ok_b & ok_l)[:, None] & col_ok[None, :]
        ok11 = (ok_b & ok_r)[:, None] & col_ok[None, :]
        gx = 1.0 - fx
        gy = 1.0 - fy
        offsets = top[:, None] + cols[None, :]
        if NEED_GRAD_INPUT:
            upper = m * gy
            lower = m * fy
            dst = grad_input_ptr + offsets
            tl.atomic_add(dst, (upper * gx)[:, None] * go, mask=ok00, sem="relaxed")
            tl.atomic_add(dst + pixel_stride, (upper * fx)[:, None] * go, mask=ok01,
                          sem="relaxed")
            tl.atomic_add(dst + below, (lower * gx)[:, None] * go, mask=ok10, sem="relaxed")
            tl.atomic_add(dst + below + pixel_stride, (lower * fx)[:, None] * go, mask=ok11,
                          sem="relaxed")
        if NEED_GRAD_SAMPLING:
            p = input_ptr + offsets
            # <input[neighbour], grad_out[row]> over the group's channels, per row.
            d00 = tl.sum(tl.load(p, mask=ok00, other=0.0).to(COMPUTE) * go, axis=1)
            d01 = tl.sum(tl.load(p + pixel_stride, mask=ok01, other=0.0).to(COMPUTE) * go, axis=1)
            d10 = tl.sum(tl.load(p + below, mask=ok10, other=0.0).to(COMPUTE) * go, axis=1)
            d11 = tl.sum(
                tl.load(p + below + pixel_stride, mask=ok11, other=0.0).to(COMPUTE) * go, axis=1
            )
            top_dot = d00 + fx * (d01 - d00)  # (1 - fx) d00 + fx d01
            bottom_dot = d10 + fx * (d11 - d10)
            grad_m = top_dot + fy * (bottom_dot - top_dot)
            grad_x = m * (gy * (d01 - d00) + fy * (d11 - d10)) * scale
            grad_y = m * (bottom_dot - top_dot) * scale
            grad_m = tl.where(inside, grad_m, 0.0)
            off = grad_offset_ptr + rows_idx * (2 * points) + 2 * k
            tl.store(off, grad_x.to(grad_offset_ptr.dtype.element_ty), mask=row_ok)
            tl.store(off + 1, grad_y.to(grad_offset_ptr.dtype.element_ty), mask=row_ok)
            tl.store(
                grad_mask_ptr + rows_idx * points + k,
                grad_m.to(grad_mask_ptr.dtype.element_ty),
                mask=row_ok,
            )


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _block_sizes(group_channels: int) -> tuple[int, int]:
    block_c = triton.next_power_of_2(group_channels)
    return max(1, _TILE_ELEMENTS // block_c), block_c


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


class _DCNv3Triton(torch.autograd.Function):
    """Autograd wrapper of the two kernels; saves input, offset and mask (no intermediates).
    Not twice differentiable."""

    @staticmethod
    def forward(ctx, input, offset, mask, kernel_size, stride, pad, dilation, group,
                group_channels, offset_scale, h_out, w_out):  # type: ignore[override]
        input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
        n, h, w, _ = input.shape
        compute = _compute_dtype(input, offset, mask)
        # Python floats reach kernels as float32; the rest of offset_scale rides in a second one.
        # (A device tensor would cost a host-to-device copy per call.)
        scale_hi = float(torch.tensor(offset_scale, dtype=torch.float32))
        scale = (scale_hi, offset_scale - scale_hi)
        out = input.new_empty((n, h_out, w_out, group * group_channels))
        rows = n * h_out * w_out * group
        geometry = (h, w, h_out, w_out, stride, pad, dilation)
        ctx.save_for_backward(input, offset, mask)
        ctx.scale = scale
        ctx.compute = compute
        ctx.geometry = geometry
        ctx.meta = (kernel_size, group, group_channels)
        if rows == 0:
            return out
        block_r, block_c = _block_sizes(group_channels)
        with _on_device(input):
            _dcnv3_forward_kernel[(triton.cdiv(rows, block_r),)](
                input, offset, mask, *scale, out, rows, *geometry,
                GROUP=group, CHANNELS=group_channels, KERNEL=kernel_size,
                BLOCK_R=block_r, BLOCK_C=block_c, COMPUTE=_TL_DTYPES[compute],
                INDEX_64=_needs_int64(input, offset, out), num_warps=_NUM_WARPS,
            )
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        input, offset, mask = ctx.saved_tensors
        kernel_size, group, group_channels = ctx.meta
        need_input = ctx.needs_input_grad[0]
        need_sampling = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad_input = grad_offset = grad_mask = None
        if not (need_input or need_sampling):
            return (None,) * 12
        grad_out = grad_out.contiguous()
        compute = ctx.compute
        # The accumulation buffer always exists (the kernel needs a pointer); 1 element when unused.
        grad_input_acc = torch.zeros(
            input.shape if need_input else (1,), dtype=compute, device=input.device
        )
        grad_offset = torch.empty_like(offset)
        grad_mask = torch.empty_like(mask)
        rows = grad_out.numel() // group_channels
        if rows > 0:
            block_r, block_c = _block_sizes(group_channels)
            with _on_device(input):
                _dcnv3_backward_kernel[(triton.cdiv(rows, block_r),)](
                    input, offset, mask, *ctx.scale, grad_out, grad_input_acc, grad_offset,
                    grad_mask,
                    rows, *ctx.geometry,
                    GROUP=group, CHANNELS=group_channels, KERNEL=kernel_size,
                    BLOCK_R=block_r, BLOCK_C=block_c, COMPUTE=_TL_DTYPES[compute],
                    INDEX_64=_needs_int64(input, offset, grad_out),
                    NEED_GRAD_INPUT=need_input, NEED_GRAD_SAMPLING=need_sampling,
                    num_warps=_NUM_WARPS,
                )
        if need_input:
            grad_input = grad_input_acc.to(input.dtype)
        if not ctx.needs_input_grad[1]:
            grad_offset = None
        if not ctx.needs_input_grad[2]:
            grad_mask = None
        return grad_input, grad_offset, grad_mask, *(None,) * 9


def _needs_int64(*tensors: Tensor) -> bool:
    """Whether element offsets may exceed int32 (the kernels then index in int64)."""
    return max(t.numel() for t in tensors) + 2 * max(t.shape[-1] for t in tensors) >= 2**31


def _on_device(tensor: Tensor) -> contextlib.AbstractContextManager:
    """Makes ``tensor``'s CUDA device current for the launch (Triton launches on the current
    device); nothing for CPU tensors (interpreter)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def dcnv3_core_triton(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    kernel_size: int,
    stride: int,
    pad: int,
    dilation: int,
    group: int,
    group_channels: int,
    offset_scale: float,
) -> Tensor:
    """The DCNv3 operator (formula in :mod:`trainer.models.dcnv3`) as fused Triton kernels.

    Args:
        input: float (N, H, W, group * group_channels), channels-last, *unpadded*; channel
            ``g * group_channels + c`` belongs to group ``g``. float32, float64, bfloat16 or
            float16.
        offset: float (N, H_out, W_out, group * K * 2), K = kernel_size ** 2, ordered group,
            kernel point, (dx, dy), in pixels (before ``offset_scale``).
        mask: float (N, H_out, W_out, group * K), softmax-normalised over each group's K points
            (not checked).
        kernel_size, stride, pad, dilation: square kernel geometry; ``pad`` zero pixels on every
            side; H_out = (H + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1.
        group, group_channels: channel groups, each with its own offsets and mask.
        offset_scale: multiplies both the kernel-point positions and the offsets.

    Returns:
        (N, H_out, W_out, group * group_channels), the dtype of ``input``. Differentiable
        (once) in ``input``, ``offset`` and ``mask``; each gradient has its tensor's dtype.
        Positions, bilinear weights and sums are computed in float32 (float64 when any of the
        three tensors is float64).

    Raises:
        ValueError: inconsistent shapes or kernel geometry (as :func:`dcnv3_core`); tensors not
            on one CUDA device (CPU tensors only under ``TRITON_INTERPRET=1``).

    Source: OpenGVLab/InternImage ``ops_dcnv3/src/cuda/dcnv3_im2col_cuda.cuh`` and
    ``ops_dcnv3/functions/dcnv3_func.py``.
    """
    h_out, w_out = check_core_args(
        input, offset, mask, kernel_size, stride, pad, dilation, group, group_channels
    )
    devices = {input.device, offset.device, mask.device}
    if len(devices) != 1:
        raise ValueError(
            f"input, offset and mask must be on one device, got {sorted(map(str, devices))}"
        )
    if input.device.type != "cuda" and not _INTERPRETED:
        raise ValueError(
            f"dcnv3_core_triton needs CUDA tensors, got {input.device} (CPU tensors run only "
            "under the Triton interpreter, TRITON_INTERPRET=1 set before triton is imported)"
        )
    return _DCNv3Triton.apply(
        input, offset, mask, kernel_size, stride, pad, dilation, group, group_channels,
        float(offset_scale), h_out, w_out,
    )

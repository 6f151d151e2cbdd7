"""DCNv3, the deformable convolution operator of InternImage, in plain PyTorch.

Architecture: Wang et al. 2023, "InternImage: Exploring Large-Scale Vision Foundation Models
with Deformable Convolutions" (CVPR 2023, arXiv 2211.05778). Semantics and parameter names
follow OpenGVLab/InternImage ``segmentation/ops_dcnv3/functions/dcnv3_func.py``
(``dcnv3_core_pytorch``, the reference's CPU path) and ``segmentation/ops_dcnv3/modules/dcnv3.py``
(``DCNv3``), so released InternImage checkpoints load with ``strict=True``.

The operator (per output pixel, group ``g`` and kernel point ``k``)::

    out[n, i, j, g, :] = sum_k mask[n, i, j, g, k] * bilinear(input[n, :, :, g, :], y, x)
    x = j * stride - pad + half + (px_k + dx[n, i, j, g, k]) * offset_scale
    y = i * stride - pad + half + (py_k + dy[n, i, j, g, k]) * offset_scale

with ``half = dilation * (kernel_size - 1) // 2``, kernel point ``k = ix * kernel_size + iy``
(x-major, as ``meshgrid(x, y)`` in the reference) at ``px_k = ix * dilation - half``,
``py_k = iy * dilation - half``; ``x``/``y`` are in pixel-index units of the *unpadded* input
(pixel centres at integer positions, i.e. ``i + 0.5`` in continuous coordinates), and the
bilinear interpolation reads zeros outside the input, which is the same as reading the
zero-padded input the reference builds. Offsets come per output pixel ordered group, then
kernel point, then ``(dx, dy)``; the mask is already softmax-normalised over each group's
kernel points.

Two implementations with the same numerics:

- :func:`dcnv3_core` (the default): the four bilinear neighbours of every (group, point) are
  turned into flat row indices and weights (mask folded in) and reduced by one
  ``F.embedding_bag(mode="sum", per_sample_weights=...)`` call, a fused gather + weighted sum
  that never materialises the (points x channels) sample tensor; autograd gives the gradients
  of input, offsets and mask.
- :func:`dcnv3_core_grid_sample`: the reference approach (pad, normalised grid, one
  ``grid_sample`` over ``N * group`` images, multiply by the mask, sum), kept for testing and
  benchmarking.

A third, :func:`trainer.models.dcnv3_triton.dcnv3_core_triton` (fused Triton kernels, CUDA
only), is imported lazily; :func:`dcnv3_core_auto`, the :class:`DCNv3` default, picks one per
call (see :func:`select_dcnv3_core`): the Triton kernels only where ``SEGCTL_DCNV3_IMPL=triton``
asks for them, until they are checked on a GPU.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.dcnv3_spec import check_core_args

LAYER_NORM_EPS = 1e-6

CoreFn = Callable[..., Tensor]


def _sampling_positions(
    offset: Tensor,
    kernel_size: int,
    stride: int,
    pad: int,
    dilation: int,
    group: int,
    offset_scale: float,
) -> tuple[Tensor, Tensor]:
    """Sampling positions ``(x, y)``, each (N, H_out, W_out, group, K), in pixel-index units of
    the unpadded input (integer = pixel centre). Computed in at least float32."""
    n, h_out, w_out, _ = offset.shape
    dtype = torch.promote_types(offset.dtype, torch.float32)
    device = offset.device
    points = kernel_size * kernel_size
    off = offset.to(dtype).reshape(n, h_out, w_out, group, points, 2)
    half = dilation * (kernel_size - 1) // 2
    k = torch.arange(points, device=device)
    # Point k = ix * kernel_size + iy: x-major, as meshgrid(x, y) flattened in the reference.
    point_x = ((k // kernel_size) * dilation - half).to(dtype)
    point_y = ((k % kernel_size) * dilation - half).to(dtype)
    centre_x = (torch.arange(w_out, device=device) * stride - pad + half).to(dtype)
    centre_y = (torch.arange(h_out, device=device) * stride - pad + half).to(dtype)
    x = centre_x.view(1, 1, w_out, 1, 1) + (point_x + off[..., 0]) * offset_scale
    y = centre_y.view(1, h_out, 1, 1, 1) + (point_y + off[..., 1]) * offset_scale
    return x, y


def _neighbour_weights(fx: Tensor, fy: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, K) fractions and mask -> (B, 4, K) weights of the neighbours (dy, dx) in the order
    (0, 0), (0, 1), (1, 0), (1, 1). Written as four contiguous products: broadcasting over
    trailing size-2 dimensions is several times slower on CPU."""
    gx = 1 - fx
    lower = mask * fy
    upper = mask - lower
    out = torch.empty((fx.shape[0], 4, fx.shape[1]), dtype=dtype, device=fx.device)
    torch.mul(upper, gx, out=out[:, 0])
    torch.mul(upper, fx, out=out[:, 1])
    torch.mul(lower, gx, out=out[:, 2])
    torch.mul(lower, fx, out=out[:, 3])
    return out


def _neighbour_rows(base: Tensor, shifts: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """(B, K) top-left rows -> (B, 4, K) rows of the four neighbours, in ``dtype``."""
    out = torch.empty((base.shape[0], len(shifts), base.shape[1]), dtype=dtype, device=base.device)
    for corner, shift in enumerate(shifts):
        torch.add(base, shift, out=out[:, corner])
    return out


class _DeformableGather(torch.autograd.Function):
    """Bilinear deformable gather with the mask and the sum over kernel points fused.

    forward(table float (R, C), base int (B, K), fx, fy, mask float (B, K), shifts: 4 ints)
    -> float (B, C)::

        out[b] = sum_k mask[b, k] * sum_{dy, dx} wy * wx * table[base[b, k] + shifts[2 dy + dx]]

    with ``wy = (1 - fy, fy)[dy]`` and ``wx = (1 - fx, fx)[dx]``: ``base`` is the table row of
    the top-left neighbour, ``shifts`` the row offsets of the four neighbours. The forward is one
    ``F.embedding_bag`` (a fused gather and weighted sum per bag b). Only the (B, K) inputs are
    saved; the backward recomputes rows and weights, and avoids ``embedding_bag``'s own backward
    (which sorts all B * 4K entries):

    - d table: entries are sorted once by ``base`` (B * K keys) and each neighbour's share is an
      ``embedding_bag`` over ``grad_out`` whose bags are table rows, added at its shift;
    - d weight of each neighbour, ``<table[row], grad_out[b]>``: a sampled dense-dense product
      (``torch.sparse.sampled_addmm``) on CPU, a gather + batched dot elsewhere; then the chain
      rule through the bilinear weights to ``fx``, ``fy`` and ``mask``, by hand.
    """

    @staticmethod
    def forward(ctx, table, base, fx, fy, mask, shifts):  # type: ignore[override]
        bags = base.shape[0]
        rows = _neighbour_rows(base, shifts, base.dtype).view(bags, -1)
        weight = _neighbour_weights(fx, fy, mask, table.dtype).view(bags, -1)
        out = F.embedding_bag(rows, table, per_sample_weights=weight, mode="sum")
        ctx.shifts = shifts
        ctx.save_for_backward(table, base, fx, fy, mask)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        table, base, fx, fy, mask = ctx.saved_tensors
        shifts: tuple[int, ...] = ctx.shifts
        grad_out = grad_out.contiguous()
        num_rows, channels = table.shape
        bags, points = base.shape
        grad_table = grad_fx = grad_fy = grad_mask = None
        if ctx.needs_input_grad[0]:
            key, order = torch.sort(base.view(-1), stable=True)
            counts = torch.bincount(key, minlength=num_rows)
            starts = torch.cumsum(counts, 0) - counts
            bag_of_entry = torch.div(order, points, rounding_mode="floor")
            sorted_weight = _neighbour_weights(
                fx.view(-1).index_select(0, order).unsqueeze(0),
                fy.view(-1).index_select(0, order).unsqueeze(0),
                mask.view(-1).index_select(0, order).unsqueeze(0),
                table.dtype,
            )[0]
            grad_table = torch.zeros_like(table)
            for corner, shift in enumerate(shifts):
                share = F.embedding_bag(
                    bag_of_entry,
                    grad_out,
                    starts,
                    per_sample_weights=sorted_weight[corner],
                    mode="sum",
                )
                grad_table[shift:] += share[: num_rows - shift]
        if any(ctx.needs_input_grad[2:5]):
            rows = _neighbour_rows(base, shifts, torch.int64).view(-1)
            if table.device.type == "cpu" and table.dtype in (torch.float32, torch.float64):
                with warnings.catch_warnings():  # "sparse CSR support is in beta"
                    warnings.simplefilter("ignore", UserWarning)
                    pattern = torch.sparse_csr_tensor(
                        torch.arange(0, rows.numel() + 1, points * len(shifts)),
                        rows,
                        torch.zeros(rows.numel(), dtype=table.dtype),  # beta * 0, never garbage
                        size=(bags, num_rows),
                        check_invariants=False,
                    )
                    dots = torch.sparse.sampled_addmm(pattern, grad_out, table.t(), beta=0.0)
                grad_w = dots.values()
            else:
                gathered = table.index_select(0, rows).view(bags, -1, channels)
                grad_w = torch.bmm(gathered, grad_out.unsqueeze(-1))
            grad_w = grad_w.view(bags, len(shifts), points).to(fx.dtype)
            g00, g01, g10, g11 = grad_w.unbind(1)
            d_top = g01 - g00
            d_bottom = g11 - g10
            top = g00 + fx * d_top  # (1 - fx) g00 + fx g01
            bottom = g10 + fx * d_bottom
            grad_mask = top + fy * (bottom - top)
            grad_fy = mask * (bottom - top)
            grad_fx = mask * (d_top + fy * (d_bottom - d_top))
        return grad_table, None, grad_fx, grad_fy, grad_mask, None


def dcnv3_core(
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
    """The DCNv3 operator (module docstring formula), fused gather + weighted sum.

    Args:
        input: float (N, H, W, group * group_channels), channels-last, *unpadded*; channel
            ``g * group_channels + c`` belongs to group ``g``.
        offset: float (N, H_out, W_out, group * K * 2), K = kernel_size ** 2, ordered group,
            kernel point, (dx, dy), in pixels (before ``offset_scale``).
        mask: float (N, H_out, W_out, group * K), softmax-normalised over each group's K points
            (not checked).
        kernel_size, stride, pad, dilation: square kernel geometry; ``pad`` zero pixels on every
            side; H_out = (H + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1.
        group, group_channels: channel groups, each with its own offsets and mask.
        offset_scale: multiplies both the kernel-point positions and the offsets.

    Returns:
        (N, H_out, W_out, group * group_channels), the dtype of ``input``. Differentiable in
        ``input``, ``offset`` and ``mask``. Sampling positions and bilinear weights are computed
        in at least float32.

    Raises:
        ValueError: inconsistent shapes or kernel geometry.

    Source: OpenGVLab/InternImage ``ops_dcnv3/functions/dcnv3_func.py`` (``dcnv3_core_pytorch``).
    """
    h_out, w_out = check_core_args(
        input, offset, mask, kernel_size, stride, pad, dilation, group, group_channels
    )
    n, h, w, _ = input.shape
    x, y = _sampling_positions(offset, kernel_size, stride, pad, dilation, group, offset_scale)
    # The table is the input with one zero row/column before and two after, so that both
    # bilinear neighbours of any position in [-1, size] exist and read zeros outside the image.
    # A position beyond that range only meets zeros; clamping it to the range's end keeps it
    # there (weight 1 on a zero pixel) with zero gradient, as the exact operator has.
    x = x.clamp(-1.0, float(w))
    y = y.clamp(-1.0, float(h))
    x0 = torch.floor(x.detach())  # piecewise constant: no gradient
    y0 = torch.floor(y.detach())
    points = kernel_size * kernel_size
    # Table row of padded pixel (n, yy, xx) and group g: ((n * (H + 3) + yy + 1) * (W + 3) +
    # xx + 1) * group + g; the four neighbours of the top-left one sit at fixed row shifts.
    hp, wp = h + 3, w + 3
    rows = n * hp * wp * group
    index_dtype = torch.int32 if rows + (wp + 1) * group < 2**31 else torch.int64
    device = input.device
    row_n = torch.arange(n, device=device, dtype=index_dtype).view(n, 1, 1, 1, 1) * hp
    row_g = torch.arange(group, device=device, dtype=index_dtype).view(1, 1, 1, group, 1)
    base = ((row_n + y0.to(index_dtype) + 1) * wp + x0.to(index_dtype) + 1) * group + row_g
    shifts = (0, group, wp * group, (wp + 1) * group)
    table = F.pad(input, (0, 0, 1, 2, 1, 2)).reshape(rows, group_channels)
    m = mask.reshape(-1, points).to(x.dtype).contiguous()
    out = _DeformableGather.apply(
        table,
        base.reshape(-1, points).contiguous(),
        (x - x0).reshape(-1, points).contiguous(),
        (y - y0).reshape(-1, points).contiguous(),
        m,
        shifts,
    )
    return out.view(n, h_out, w_out, group * group_channels)


def dcnv3_core_grid_sample(
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
    """The DCNv3 operator written the reference's way: pad, ``grid_sample``, mask, sum.

    Same arguments, result, dtype rules and errors as :func:`dcnv3_core`. Materialises the
    (N * group, group_channels, H_out * W_out, K) sample tensor; kept as the numerical
    reference and the benchmark baseline.

    Source: OpenGVLab/InternImage ``ops_dcnv3/functions/dcnv3_func.py`` (``dcnv3_core_pytorch``).
    """
    h_out, w_out = check_core_args(
        input, offset, mask, kernel_size, stride, pad, dilation, group, group_channels
    )
    n = input.shape[0]
    padded = F.pad(input, (0, 0, pad, pad, pad, pad))
    hp, wp = padded.shape[1], padded.shape[2]
    points = kernel_size * kernel_size
    x, y = _sampling_positions(offset, kernel_size, stride, pad, dilation, group, offset_scale)
    # Pixel index u in the padded input sits at continuous (u + 0.5); grid_sample with
    # align_corners=False maps [-1, 1] onto [0, size] in those continuous units.
    gx = 2 * (x + pad + 0.5) / wp - 1
    gy = 2 * (y + pad + 0.5) / hp - 1
    grid = torch.stack((gx, gy), dim=-1)  # (N, H_out, W_out, G, K, 2)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * group, h_out * w_out, points, 2)
    images = padded.view(n, hp, wp, group, group_channels).permute(0, 3, 4, 1, 2)
    images = images.reshape(n * group, group_channels, hp, wp)
    samples = F.grid_sample(
        images, grid.to(input.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (N * G, C, H_out * W_out, K)
    m = mask.reshape(n, h_out * w_out, group, points).permute(0, 2, 1, 3)
    m = m.reshape(n * group, 1, h_out * w_out, points).to(input.dtype)
    out = (samples * m).sum(-1)  # (N * G, C, H_out * W_out)
    out = out.view(n, group * group_channels, h_out * w_out).transpose(1, 2)
    return out.reshape(n, h_out, w_out, group * group_channels).contiguous()


DCNV3_IMPL_ENV = "SEGCTL_DCNV3_IMPL"
DCNV3_IMPLS = ("pytorch", "triton", "grid_sample")


@functools.cache
def _triton_core() -> CoreFn | None:
    """:func:`dcnv3_core_triton`, or None where triton cannot be imported (imported on first
    use only, so that CPU-only installs never import triton)."""
    try:
        from trainer.models.dcnv3_triton import dcnv3_core_triton
    except ImportError:
        return None
    return dcnv3_core_triton


def select_dcnv3_core(input: Tensor) -> CoreFn:
    """The DCNv3 implementation :func:`dcnv3_core_auto` runs for ``input``.

    ``SEGCTL_DCNV3_IMPL`` (read at every call) forces one: ``pytorch`` (:func:`dcnv3_core`),
    ``triton`` (:func:`trainer.models.dcnv3_triton.dcnv3_core_triton`; CUDA tensors, or CPU
    tensors under ``TRITON_INTERPRET=1``) or ``grid_sample`` (:func:`dcnv3_core_grid_sample`).
    Unset or empty: :func:`dcnv3_core`. The Triton kernels are opt-in until they have been
    checked on a GPU (their numerics are verified with Triton's interpreter and their sm_90
    build is compiled in the tests; ``tests/test_dcnv3_triton.py`` compares the compiled kernels
    on any CUDA machine): set ``SEGCTL_DCNV3_IMPL=triton`` to use them.

    Raises:
        ValueError: ``SEGCTL_DCNV3_IMPL`` names no implementation.
        ImportError: ``SEGCTL_DCNV3_IMPL=triton`` where triton cannot be imported.
    """
    forced = os.environ.get(DCNV3_IMPL_ENV, "").strip().lower()
    if forced == "pytorch":
        return dcnv3_core
    if forced == "grid_sample":
        return dcnv3_core_grid_sample
    if forced == "triton":
        core = _triton_core()
        if core is None:
            raise ImportError(f"{DCNV3_IMPL_ENV}=triton but triton cannot be imported")
        return core
    if forced:
        raise ValueError(
            f"{DCNV3_IMPL_ENV}={forced!r} names no DCNv3 implementation; use one of "
            f"{', '.join(DCNV3_IMPLS)} or leave it unset"
        )
    return dcnv3_core


def dcnv3_core_auto(
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
    """The DCNv3 operator by the implementation :func:`select_dcnv3_core` picks for ``input``
    (:func:`dcnv3_core` unless ``SEGCTL_DCNV3_IMPL`` names another, e.g. ``triton``).

    Same arguments, result and errors as :func:`dcnv3_core`.
    """
    core = select_dcnv3_core(input)
    return core(
        input, offset, mask, kernel_size, stride, pad, dilation, group, group_channels,
        offset_scale,
    )


class ChannelsLast(nn.Module):
    """(N, C, H, W) -> (N, H, W, C) view; no parameters (a slot in mmseg-named Sequentials)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


class ChannelsFirst(nn.Module):
    """(N, H, W, C) -> (N, C, H, W) view; no parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2)


class DCNv3(nn.Module):
    """DCNv3 block operator: input projection, deformable sampling, output projection.

    Offsets and modulation come from ``dw_conv`` (depthwise ``dw_kernel_size`` conv with bias,
    then LayerNorm over channels (eps 1e-6) on the channels-last map, then GELU) applied to the
    block input; ``offset`` (Linear C -> group * K * 2) and ``mask`` (Linear C -> group * K,
    softmax over each group's K points) read it. ``input_proj`` (Linear) gives the sampled
    values, ``output_proj`` (Linear) the result. With ``center_feature_scale`` a per-group gate
    ``sigmoid(dw_features @ center_feature_scale_proj_weight.T + ..._bias)`` blends the
    sampled result with the input projection: ``out * (1 - gate) + input_proj(x) * gate``.

    Parameter names (as the released checkpoints): ``dw_conv.0.{weight,bias}``,
    ``dw_conv.1.1.{weight,bias}``, ``offset.*``, ``mask.*``, ``input_proj.*``,
    ``output_proj.*`` and, with ``center_feature_scale``, ``center_feature_scale_proj_weight``
    (group, C) and ``center_feature_scale_proj_bias`` (group,).

    Init (as the reference ``_reset_parameters``): ``offset`` and ``mask`` weights and biases
    zero (so sampling starts at the regular grid with uniform weights), ``input_proj`` and
    ``output_proj`` Xavier-uniform weights with zero bias, the gate zero.

    forward(x: float (N, H, W, C) channels-last) -> float (N, H_out, W_out, C); offsets are
    computed at the input resolution, so H_out must equal H (stride 1, ``pad`` = the kernel's
    half-extent), as every InternImage block uses it.

    Args:
        core: the operator implementation; by default :func:`dcnv3_core_auto`
            (:func:`dcnv3_core` unless ``SEGCTL_DCNV3_IMPL`` names another, e.g. ``triton``).

    Raises:
        ValueError: (construction) ``channels`` not divisible by ``group``; (forward) shapes
            inconsistent with the kernel geometry.

    Source: OpenGVLab/InternImage ``segmentation/ops_dcnv3/modules/dcnv3.py``.
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 3,
        dw_kernel_size: int | None = None,
        stride: int = 1,
        pad: int = 1,
        dilation: int = 1,
        group: int = 4,
        offset_scale: float = 1.0,
        center_feature_scale: bool = False,
        core: CoreFn | None = None,
    ) -> None:
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"channels ({channels}) must be divisible by group ({group})")
        dw_kernel_size = kernel_size if dw_kernel_size is None else dw_kernel_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.dw_kernel_size = dw_kernel_size
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.group = group
        self.group_channels = channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.core: CoreFn = dcnv3_core_auto if core is None else core

        points = kernel_size * kernel_size
        self.dw_conv = nn.Sequential(
            nn.Conv2d(
                channels,
                channels,
                dw_kernel_size,
                padding=(dw_kernel_size - 1) // 2,
                groups=channels,
            ),
            nn.Sequential(ChannelsLast(), nn.LayerNorm(channels, eps=LAYER_NORM_EPS)),
            nn.GELU(),
        )
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's DCNv3 init (see the class docstring)."""
        for layer in (self.offset, self.mask):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.center_feature_scale:
            nn.init.zeros_(self.center_feature_scale_proj_weight)
            nn.init.zeros_(self.center_feature_scale_proj_bias)

    def forward(self, x: Tensor) -> Tensor:
        n, h, w, _ = x.shape
        projected = self.input_proj(x)
        features = self.dw_conv(x.permute(0, 3, 1, 2))  # (N, H, W, C)
        offset = self.offset(features)
        mask = self.mask(features).view(n, h, w, self.group, -1).softmax(-1)
        mask = mask.view(n, h, w, -1).to(projected.dtype)
        out = self.core(
            projected,
            offset,
            mask,
            self.kernel_size,
            self.stride,
            self.pad,
            self.dilation,
            self.group,
            self.group_channels,
            self.offset_scale,
        )
        if self.center_feature_scale:
            gate = F.linear(
                features, self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias
            ).sigmoid()  # (N, H, W, group)
            gate = gate.repeat_interleave(self.group_channels, dim=-1)
            out = out * (1 - gate) + projected * gate
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, group={self.group}, "
            f"offset_scale={self.offset_scale}, center_feature_scale={self.center_feature_scale}"
        )

"""What every DCNv3 core implementation agrees on: the output size and the checked shapes of
its arguments. Shared by the PyTorch cores (:mod:`trainer.models.dcnv3`) and the Triton kernels
(:mod:`trainer.models.dcnv3_triton`), so neither imports the other's private parts.

Source of the formula: InternImage ``ops_dcnv3/functions/dcnv3_func.py``
(``_get_reference_points``).
"""

from __future__ import annotations

from torch import Tensor


def dcnv3_output_size(size: int, kernel_size: int, stride: int, pad: int, dilation: int) -> int:
    """Output length along one axis: ``(size + 2 * pad - dilation * (kernel_size - 1) - 1) //
    stride + 1``, as the reference's ``_get_reference_points``."""
    return (size + 2 * pad - dilation * (kernel_size - 1) - 1) // stride + 1


def check_core_args(
    input: Tensor,
    offset: Tensor,
    mask: Tensor,
    kernel_size: int,
    stride: int,
    pad: int,
    dilation: int,
    group: int,
    group_channels: int,
) -> tuple[int, int]:
    """Check the arguments of a DCNv3 core (every implementation takes the same ones) and
    return the output size ``(H_out, W_out)`` in pixels.

    Shapes: ``input`` (N, H, W, group * group_channels); ``offset`` (N, H_out, W_out,
    group * K * 2) and ``mask`` (N, H_out, W_out, group * K), with K = kernel_size ** 2.

    Raises:
        ValueError: a size out of range, or a tensor of another shape (the message gives the
            expected and the actual shape).
    """
    if kernel_size < 1 or stride < 1 or dilation < 1 or pad < 0:
        raise ValueError(
            f"need kernel_size, stride, dilation >= 1 and pad >= 0; got kernel_size="
            f"{kernel_size}, stride={stride}, dilation={dilation}, pad={pad}"
        )
    if input.dim() != 4 or input.shape[-1] != group * group_channels:
        raise ValueError(
            f"input must be (N, H, W, group * group_channels = {group * group_channels}), "
            f"got {tuple(input.shape)}"
        )
    n, h, w, _ = input.shape
    h_out = dcnv3_output_size(h, kernel_size, stride, pad, dilation)
    w_out = dcnv3_output_size(w, kernel_size, stride, pad, dilation)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"input {h}x{w} too small for kernel {kernel_size} with pad {pad}")
    points = kernel_size * kernel_size
    if tuple(offset.shape) != (n, h_out, w_out, group * points * 2):
        raise ValueError(
            f"offset must be (N, H_out, W_out, group * K * 2) = "
            f"{(n, h_out, w_out, group * points * 2)}, got {tuple(offset.shape)}"
        )
    if tuple(mask.shape) != (n, h_out, w_out, group * points):
        raise ValueError(
            f"mask must be (N, H_out, W_out, group * K) = {(n, h_out, w_out, group * points)}, "
            f"got {tuple(mask.shape)}"
        )
    return h_out, w_out

"""The one place that holds the sliding-window arithmetic of conv, conv_transpose and the
pools: padding resolution ('valid', TF/Keras 'same', explicit) and output sizes.

A window of size k with dilation d spans ``k_eff = (k - 1) * d + 1`` input positions.
"""
from __future__ import annotations

import math

from cnnc.ops.registry import RuleError

Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF/Keras SAME (SAME_UPPER) padding of one axis: output ceil(size / stride), total
    pad max((ceil(size/s) - 1) * s + k_eff - size, 0), the odd pixel at the end."""
    k_eff = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def resolve_pads(padding: str | Pads, hw: tuple[int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> Pads:
    """Explicit (top, bottom, left, right) pads for a padding attr on an H x W input."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        top, bottom = same_pads(hw[0], kernel[0], stride[0], dilation[0])
        left, right = same_pads(hw[1], kernel[1], stride[1], dilation[1])
        return (top, bottom, left, right)
    return padding  # type: ignore[return-value]


def window_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
                       dilation: int = 1, ceil_mode: bool = False) -> int:
    """Number of window positions along one axis (conv and pooling).

    floor((size + pads - k_eff) / stride) + 1, or with ``ceil_mode`` the ceiling, keeping
    only windows that start inside the input or the left padding (PyTorch's rule).
    Raises RuleError (about input 0) when the window does not fit the padded input.
    """
    k_eff = (kernel - 1) * dilation + 1
    padded = size + pad_lo + pad_hi
    if padded < k_eff:
        what = (f"a window of size {kernel}" if dilation == 1 else
                f"a window spanning {k_eff} (size {kernel}, dilation {dilation})")
        raise RuleError(f"has {what}, larger than its padded input ({padded})", inputs=(0,),
                        hint="use a smaller kernel, padding, or fewer downsampling layers "
                             "before it")
    span = padded - k_eff
    if ceil_mode:
        # every window must start inside the input or the left padding
        out = min(-(-span // stride) + 1, -(-(size + pad_lo) // stride))
    else:
        out = span // stride + 1
    return out


def output_hw(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
              pads: Pads, dilation: tuple[int, int] = (1, 1),
              ceil_mode: bool = False) -> tuple[int, int]:
    """:func:`window_output_size` for both spatial axes."""
    return (window_output_size(hw[0], kernel[0], stride[0], pads[0], pads[1], dilation[0],
                               ceil_mode),
            window_output_size(hw[1], kernel[1], stride[1], pads[2], pads[3], dilation[1],
                               ceil_mode))


def transpose_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int,
                          output_padding: int = 0, dilation: int = 1) -> int:
    """Output size of a transposed convolution along one axis (PyTorch's relation):
    (size - 1) * stride + k_eff - pads + output_padding, the inverse of
    :func:`window_output_size` when output_padding < stride."""
    k_eff = (kernel - 1) * dilation + 1
    out = (size - 1) * stride + k_eff - pad_lo - pad_hi + output_padding
    if out <= 0:
        raise RuleError(f"would make an output of size {out} (padding {pad_lo}+{pad_hi} "
                        f"crops more than the {out + pad_lo + pad_hi} it produces)",
                        inputs=(0,), hint="reduce the padding")
    return out

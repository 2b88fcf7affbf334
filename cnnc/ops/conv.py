"""Convolutions: ``conv`` (2-D, grouped/depthwise, dilated) and ``conv_transpose``.

Layout: input NCHW; conv weight OIHW = [filters, in_channels / groups, kh, kw];
conv_transpose weight [in_channels, filters, kh, kw] (PyTorch's layout: the OIHW weight of
the convolution it transposes). Activations are separate layers in cnnc.

MACs count the multiply-accumulates of the products only (no bias), per image, as
torchvision's ``_ops`` figures do.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import ACTIVATION, BOOL, PADDING, attr, float_kind, int_kind, pair_kind
from cnnc.ops.checks import expect_4d
from cnnc.ops.registry import OpDef, ParamSpec, RuleError, register_op
from cnnc.ops.window import Pads, output_hw, resolve_pads, transpose_output_size

# Spellings a Keras or PyTorch user would type, mapped to cnnc's field names.
CONV_ALIASES = {
    "kernel_size": "kernel", "strides": "stride", "pad": "padding",
    "dilation_rate": "dilation", "use_bias": "bias", "out_channels": "filters",
}


@dataclass(frozen=True)
class ConvAttrs:
    """Attributes of ``conv``."""

    filters: int = attr("number of output channels", int_kind(1))
    kernel: tuple[int, int] = attr("kernel height and width", pair_kind(1))
    stride: tuple[int, int] = attr("step between windows", pair_kind(1), (1, 1))
    padding: str | Pads = attr("'valid' (none), 'same' (TF/Keras: output ceil(H/stride), "
                               "extra pixel at bottom/right) or explicit pads", PADDING,
                               "valid")
    dilation: tuple[int, int] = attr("spacing between kernel taps", pair_kind(1), (1, 1))
    groups: int = attr("channel groups; groups = in channels makes it depthwise",
                       int_kind(1), 1)
    bias: bool = attr("add a learned per-channel bias", BOOL, True)
    activation: str = attr("activation applied to the output, fused into the layer's kernel",
                           ACTIVATION, "none")
    activation_alpha: float = attr("slope of leaky_relu for negative inputs", float_kind(0.0),
                                   0.3)


def conv_pads(t: TensorType, a: ConvAttrs) -> Pads:
    """The explicit (top, bottom, left, right) pads of ``conv`` on an input of type t."""
    return resolve_pads(a.padding, (int(t.shape[2]), int(t.shape[3])), a.kernel, a.stride,
                        a.dilation)


def conv_shape(ins: Sequence[TensorType], a: ConvAttrs) -> TensorType:
    """[N, C, H, W] -> [N, filters, H', W'] with the window formula per axis."""
    x = ins[0]
    expect_4d(x)
    c = int(x.shape[1])
    if c % a.groups:
        raise RuleError(f"has groups={a.groups}, which does not divide its {c} input "
                        "channels", inputs=(0,))
    if a.filters % a.groups:
        raise RuleError(f"has groups={a.groups}, which does not divide its {a.filters} "
                        "filters", hint="make filters a multiple of groups")
    oh, ow = output_hw((int(x.shape[2]), int(x.shape[3])), a.kernel, a.stride,
                       conv_pads(x, a), a.dilation)
    return TensorType((x.shape[0], a.filters, oh, ow), x.dtype)


def conv_params(ins: Sequence[TensorType], a: ConvAttrs) -> dict[str, ParamSpec]:
    """weight [filters, C / groups, kh, kw] (glorot_uniform), bias [filters] (zeros)."""
    c = int(ins[0].shape[1])
    params = {"weight": ParamSpec((a.filters, c // a.groups) + a.kernel, "glorot_uniform")}
    if a.bias:
        params["bias"] = ParamSpec((a.filters,), "zeros")
    return params


def conv_macs(ins: Sequence[TensorType], out: TensorType, a: ConvAttrs) -> int:
    """H' * W' * filters * (C / groups) * kh * kw."""
    c = int(ins[0].shape[1])
    return out.numel() * (c // a.groups) * a.kernel[0] * a.kernel[1]


@dataclass(frozen=True)
class ConvTransposeAttrs:
    """Attributes of ``conv_transpose``."""

    filters: int = attr("number of output channels", int_kind(1))
    kernel: tuple[int, int] = attr("kernel height and width", pair_kind(1))
    stride: tuple[int, int] = attr("upsampling step", pair_kind(1), (1, 1))
    padding: str | Pads = attr("'valid' (no crop), 'same' (output H * stride, as Keras) or "
                               "pads cropped from the output (as PyTorch)", PADDING, "valid")
    output_padding: tuple[int, int] = attr("extra rows/columns at the bottom/right, "
                                           "< stride", pair_kind(0), (0, 0))
    bias: bool = attr("add a learned per-channel bias", BOOL, True)
    activation: str = attr("activation applied to the output, fused into the layer's kernel",
                           ACTIVATION, "none")
    activation_alpha: float = attr("slope of leaky_relu for negative inputs", float_kind(0.0),
                                   0.3)


def conv_transpose_geometry(a: ConvTransposeAttrs) -> tuple[Pads, tuple[int, int]]:
    """Explicit (top, bottom, left, right) crops and output padding of ``conv_transpose``.

    'same' crops k - stride (the odd one at the bottom/right, mirroring SAME_UPPER); when
    the kernel is smaller than the stride it adds stride - k rows instead.
    """
    if a.padding == "valid":
        return (0, 0, 0, 0), a.output_padding
    if a.padding != "same":
        return a.padding, a.output_padding  # type: ignore[return-value]
    if a.output_padding != (0, 0):
        raise RuleError("cannot combine padding='same' with output_padding",
                        hint="use explicit padding with output_padding")
    pads: list[int] = []
    extra: list[int] = []
    for k, s in zip(a.kernel, a.stride):
        total = k - s
        lo = max(total, 0) // 2
        pads += [lo, max(total, 0) - lo]
        extra.append(max(-total, 0))
    return (pads[0], pads[1], pads[2], pads[3]), (extra[0], extra[1])


def conv_transpose_shape(ins: Sequence[TensorType], a: ConvTransposeAttrs) -> TensorType:
    """[N, C, H, W] -> [N, filters, (H - 1) * s + k - pads + output_padding, ...]."""
    x = ins[0]
    expect_4d(x)
    for op, s in zip(a.output_padding, a.stride):
        if op >= s:
            raise RuleError(f"has output_padding {a.output_padding}, which must be smaller "
                            f"than the stride {a.stride}")
    pads, extra = conv_transpose_geometry(a)
    oh = transpose_output_size(int(x.shape[2]), a.kernel[0], a.stride[0], pads[0], pads[1],
                               extra[0])
    ow = transpose_output_size(int(x.shape[3]), a.kernel[1], a.stride[1], pads[2], pads[3],
                               extra[1])
    return TensorType((x.shape[0], a.filters, oh, ow), x.dtype)


def conv_transpose_params(ins: Sequence[TensorType], a: ConvTransposeAttrs
                          ) -> dict[str, ParamSpec]:
    """weight [C, filters, kh, kw] (glorot_uniform), bias [filters] (zeros)."""
    c = int(ins[0].shape[1])
    params = {"weight": ParamSpec((c, a.filters) + a.kernel, "glorot_uniform")}
    if a.bias:
        params["bias"] = ParamSpec((a.filters,), "zeros")
    return params


def conv_transpose_macs(ins: Sequence[TensorType], out: TensorType,
                        a: ConvTransposeAttrs) -> int:
    """Every input pixel scatters a kh x kw x filters patch: H * W * C * filters * kh * kw."""
    return ins[0].numel() * a.filters * a.kernel[0] * a.kernel[1]


register_op(OpDef(
    name="conv", attrs=ConvAttrs, positional=("filters", "kernel"), arity=1,
    shape_rule=conv_shape, param_rule=conv_params, mac_rule=conv_macs,
    doc="2-D convolution over NCHW (OIHW weights), with stride, padding, dilation, groups",
    aliases=CONV_ALIASES,
))
register_op(OpDef(
    name="conv_transpose", attrs=ConvTransposeAttrs, positional=("filters", "kernel"),
    arity=1, shape_rule=conv_transpose_shape, param_rule=conv_transpose_params,
    mac_rule=conv_transpose_macs,
    doc="transposed 2-D convolution (learned upsampling), the gradient of conv w.r.t. input",
    aliases={k: v for k, v in CONV_ALIASES.items() if v != "dilation"},
))

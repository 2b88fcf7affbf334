"""Pooling over NCHW: ``maxpool``, ``avgpool`` and ``global_avgpool``.

Pools are left out of the MAC total (torchvision's ``_ops`` figures count only
convolutions and dense layers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import BOOL, PADDING, attr, optional, pair_kind
from cnnc.ops.checks import expect_4d
from cnnc.ops.registry import OpDef, RuleError, register_op
from cnnc.ops.window import Pads, output_hw, resolve_pads

POOL_ALIASES = {
    "pool_size": "size", "kernel_size": "size", "kernel": "size", "strides": "stride",
    "pad": "padding",
}


@dataclass(frozen=True)
class MaxPoolAttrs:
    """Attributes of ``maxpool``."""

    size: tuple[int, int] = attr("window height and width", pair_kind(1), (2, 2))
    stride: tuple[int, int] | None = attr("step between windows (default: the size)",
                                          optional(pair_kind(1)), None)
    padding: str | Pads = attr("'valid', 'same' (TF/Keras) or explicit pads "
                               "(at most half the window)", PADDING, "valid")
    ceil_mode: bool = attr("round the output size up (PyTorch ceil_mode)", BOOL, False)


@dataclass(frozen=True)
class AvgPoolAttrs(MaxPoolAttrs):
    """Attributes of ``avgpool``."""

    count_include_pad: bool = attr("divide by the full window, padding included (PyTorch's "
                                   "default); false averages the real pixels only (Keras)",
                                   BOOL, False)


def pool_stride(a: MaxPoolAttrs) -> tuple[int, int]:
    """The stride of a pool: as given, else the window size."""
    return a.stride if a.stride is not None else a.size


def pool_pads(t: TensorType, a: MaxPoolAttrs) -> Pads:
    """The explicit (top, bottom, left, right) pads of a pool on an input of type t."""
    return resolve_pads(a.padding, (int(t.shape[2]), int(t.shape[3])), a.size,
                        pool_stride(a))


def pool_shape(ins: Sequence[TensorType], a: MaxPoolAttrs) -> TensorType:
    """[N, C, H, W] -> [N, C, H', W'] with the window formula (floor, or ceil_mode)."""
    x = ins[0]
    expect_4d(x)
    if a.padding == "same" and a.ceil_mode:
        raise RuleError("cannot combine padding='same' with ceil_mode",
                        hint="'same' already rounds the output size up")
    pads = pool_pads(x, a)
    if not isinstance(a.padding, str):
        half = (a.size[0] // 2, a.size[0] // 2, a.size[1] // 2, a.size[1] // 2)
        if any(p > h for p, h in zip(pads, half)):
            raise RuleError(f"has padding {pads} larger than half its {a.size[0]}x"
                            f"{a.size[1]} window, so some windows would see only padding")
    oh, ow = output_hw((int(x.shape[2]), int(x.shape[3])), a.size, pool_stride(a), pads,
                       ceil_mode=a.ceil_mode)
    return TensorType((x.shape[0], x.shape[1], oh, ow), x.dtype)


@dataclass(frozen=True)
class GlobalAvgPoolAttrs:
    """Attributes of ``global_avgpool``."""

    keepdims: bool = attr("keep the spatial axes as 1 x 1 ([N, C, 1, 1], as PyTorch) "
                          "instead of [N, C] (Keras)", BOOL, False)


def global_avgpool_shape(ins: Sequence[TensorType], a: GlobalAvgPoolAttrs) -> TensorType:
    """[N, C, H, W] -> [N, C], or [N, C, 1, 1] with keepdims."""
    x = ins[0]
    expect_4d(x)
    shape = x.shape[:2] + ((1, 1) if a.keepdims else ())
    return TensorType(shape, x.dtype)


register_op(OpDef(
    name="maxpool", attrs=MaxPoolAttrs, positional=("size", "stride"), arity=1,
    shape_rule=pool_shape, doc="max over each window, per channel", aliases=POOL_ALIASES,
))
register_op(OpDef(
    name="avgpool", attrs=AvgPoolAttrs, positional=("size", "stride"), arity=1,
    shape_rule=pool_shape, doc="mean over each window, per channel", aliases=POOL_ALIASES,
))
register_op(OpDef(
    name="global_avgpool", attrs=GlobalAvgPoolAttrs, positional=(), arity=1,
    shape_rule=global_avgpool_shape, doc="mean over all spatial positions, per channel",
))

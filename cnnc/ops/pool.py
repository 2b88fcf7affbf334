"""Pooling over NCHW: ``maxpool``, ``avgpool`` and ``global_avgpool``.

Pools are left out of the MAC total (torchvision's ``_ops`` figures count only
convolutions and dense layers).

Kernels: ``cnnc._kernels.pool``. Max-pool backward recomputes each window's winner from
the forward input x instead of saving int32 indices: in the usual conv -> relu -> maxpool
x is the relu's output, which relu's own backward keeps alive anyway, so recomputing costs
no memory while indices would cost 4 bytes per output element (same gradients either way).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from cnnc._kernels import pool as _pool

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


@dataclass(frozen=True)
class PoolGradAttrs:
    """Attributes of a pool's backward op: the window geometry with explicit pads and the
    forward input's (C, H, W)."""

    size: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    ceil_mode: bool
    count_include_pad: bool
    x_chw: tuple[int, int, int]


def _grad_attrs(node) -> PoolGradAttrs:
    a = node.attrs
    x = node.inputs[0].type
    return PoolGradAttrs(a.size, pool_stride(a), pool_pads(x, a), a.ceil_mode,
                         getattr(a, "count_include_pad", False),
                         (int(x.shape[1]), int(x.shape[2]), int(x.shape[3])))


def maxpool_kernel(node, ctx) -> Callable[[], None]:
    """y = window maxima (no indices saved; see the module docstring)."""
    a = node.attrs
    x = node.inputs[0]
    return partial(_pool.maxpool2d_forward, ctx.array(x), ctx.array(node.output), None,
                   a.size, pool_stride(a), pool_pads(x.type, a), a.ceil_mode, ctx.n_threads)


def maxpool_vjp(gb, node, douts) -> list:
    """dx = maxpool_backward(dy, x): the winners recomputed from x."""
    if not gb.needs(node.inputs[0]):
        return [None]
    return [gb.emit("maxpool_backward", [douts[0], node.inputs[0]], _grad_attrs(node),
                    "dx").outputs[0]]


def maxpool_backward_shape(ins: Sequence[TensorType], a: PoolGradAttrs) -> TensorType:
    """(dy, x) -> dx of x's type."""
    return ins[1]


def maxpool_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx = 0, then dy scattered to each window's winner."""
    a = node.attrs
    dy, x = node.inputs
    return partial(_pool.maxpool2d_backward, ctx.array(dy), None, ctx.array(x),
                   ctx.array(node.output), a.size, a.stride, a.pads, a.ceil_mode,
                   ctx.n_threads)


def avgpool_kernel(node, ctx) -> Callable[[], None]:
    """y = window means."""
    a = node.attrs
    x = node.inputs[0]
    return partial(_pool.avgpool2d_forward, ctx.array(x), ctx.array(node.output), a.size,
                   pool_stride(a), pool_pads(x.type, a), a.ceil_mode, a.count_include_pad,
                   ctx.n_threads)


def avgpool_vjp(gb, node, douts) -> list:
    """dx = avgpool_backward(dy)."""
    if not gb.needs(node.inputs[0]):
        return [None]
    return [gb.emit("avgpool_backward", [douts[0]], _grad_attrs(node), "dx").outputs[0]]


def input_shape(ins: Sequence[TensorType], a: PoolGradAttrs) -> TensorType:
    """(dy,) -> dx of the forward input's type."""
    return TensorType((ins[0].shape[0],) + a.x_chw, ins[0].dtype)


def avgpool_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx = each dy spread evenly over its window."""
    a = node.attrs
    return partial(_pool.avgpool2d_backward, ctx.array(node.inputs[0]),
                   ctx.array(node.output), a.size, a.stride, a.pads, a.ceil_mode,
                   a.count_include_pad, ctx.n_threads)


def global_avgpool_kernel(node, ctx) -> Callable[[], None]:
    """y = per-plane means."""
    return partial(_pool.global_avgpool2d_forward, ctx.array(node.inputs[0]),
                   ctx.array(node.output), ctx.n_threads)


def global_avgpool_vjp(gb, node, douts) -> list:
    """dx = global_avgpool_backward(dy)."""
    if not gb.needs(node.inputs[0]):
        return [None]
    x = node.inputs[0].type
    a = PoolGradAttrs((1, 1), (1, 1), (0, 0, 0, 0), False, False,
                      (int(x.shape[1]), int(x.shape[2]), int(x.shape[3])))
    return [gb.emit("global_avgpool_backward", [douts[0]], a, "dx").outputs[0]]


def global_avgpool_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx[n, c] = dy[n, c] / (H * W) everywhere on the plane."""
    return partial(_pool.global_avgpool2d_backward, ctx.array(node.inputs[0]),
                   ctx.array(node.output), ctx.n_threads)


register_op(OpDef(
    name="maxpool", attrs=MaxPoolAttrs, positional=("size", "stride"), arity=1,
    shape_rule=pool_shape, doc="max over each window, per channel", aliases=POOL_ALIASES,
    kernel=maxpool_kernel, vjp=maxpool_vjp,
))
register_op(OpDef(
    name="avgpool", attrs=AvgPoolAttrs, positional=("size", "stride"), arity=1,
    shape_rule=pool_shape, doc="mean over each window, per channel", aliases=POOL_ALIASES,
    kernel=avgpool_kernel, vjp=avgpool_vjp,
))
register_op(OpDef(
    name="global_avgpool", attrs=GlobalAvgPoolAttrs, positional=(), arity=1,
    shape_rule=global_avgpool_shape, doc="mean over all spatial positions, per channel",
    kernel=global_avgpool_kernel, vjp=global_avgpool_vjp,
))
register_op(OpDef(
    name="maxpool_backward", attrs=PoolGradAttrs, positional=(), arity=2,
    shape_rule=maxpool_backward_shape, doc="gradient of maxpool (inputs: dy, x)",
    internal=True, kernel=maxpool_backward_kernel,
))
register_op(OpDef(
    name="avgpool_backward", attrs=PoolGradAttrs, positional=(), arity=1,
    shape_rule=input_shape, doc="gradient of avgpool (input: dy)",
    internal=True, kernel=avgpool_backward_kernel,
))
register_op(OpDef(
    name="global_avgpool_backward", attrs=PoolGradAttrs, positional=(), arity=1,
    shape_rule=input_shape, doc="gradient of global_avgpool (input: dy)",
    internal=True, kernel=global_avgpool_backward_kernel,
))

"""Pooling over NCHW: ``maxpool``, ``avgpool`` and ``global_avgpool``.

Pools are left out of the MAC total (torchvision's ``_ops`` figures count only
convolutions and dense layers).

Kernels: ``cnnc._kernels.pool``. In a training graph each maxpool becomes the internal
``maxpool_train``: outputs (y, int32 argmax, the winner's index in its input plane), and
its backward ``maxpool_backward`` scatters dy through the saved argmax. Measured faster
than recomputing the winners from x (benchmarks/RESULTS.md, "Max-pool": forward +
backward 1.04x to 4.2x on the seed CNN's and LeNet-5's pools), for 4 bytes per output
element kept until the backward step (the seed CNN's training arena: 36.2 -> 42.2 MB).
``maxpool_backward`` also takes x instead of argmax (the winners recomputed, same
gradients): the backward of an inference-form maxpool, whose graph saved nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    """y = window maxima; maxpool_train also writes the argmax (its second output)."""
    a = node.attrs
    x = node.inputs[0]
    argmax = ctx.array(node.outputs[1]) if len(node.outputs) > 1 else None
    return _pool.maxpool2d_forward(ctx.array(x), ctx.array(node.outputs[0]), argmax, a.size,
                                   pool_stride(a), pool_pads(x.type, a), a.ceil_mode,
                                   ctx.n_threads, bind=True)


def maxpool_training(node, seed: int) -> tuple[str, MaxPoolAttrs]:
    """Training form: maxpool_train, which saves the argmax for the backward."""
    return "maxpool_train", node.attrs


def maxpool_train_shape(ins: Sequence[TensorType], a: MaxPoolAttrs
                        ) -> tuple[TensorType, TensorType]:
    """x -> (y, argmax: int32 of y's shape)."""
    y = pool_shape(ins, a)
    return y, TensorType(y.shape, "int32")


def maxpool_vjp(gb, node, douts) -> list:
    """dx = maxpool_backward(dy, argmax) after maxpool_train, else (dy, x): the winners
    recomputed from x."""
    if not gb.needs(node.inputs[0]):
        return [None]
    winners = node.outputs[1] if len(node.outputs) > 1 else node.inputs[0]
    return [gb.emit("maxpool_backward", [douts[0], winners], _grad_attrs(node),
                    "dx").outputs[0]]


def maxpool_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx: dy at each window's winner (from the argmax, or recomputed from x), 0 elsewhere."""
    a = node.attrs
    dy, winners = node.inputs
    saved = winners.type.dtype == "int32"
    argmax, x = (ctx.array(winners), None) if saved else (None, ctx.array(winners))
    return _pool.maxpool2d_backward(ctx.array(dy), argmax, x, ctx.array(node.output), a.size,
                                    a.stride, a.pads, a.ceil_mode, ctx.n_threads, bind=True)


def avgpool_kernel(node, ctx) -> Callable[[], None]:
    """y = window means."""
    a = node.attrs
    x = node.inputs[0]
    return _pool.avgpool2d_forward(ctx.array(x), ctx.array(node.output), a.size,
                                   pool_stride(a), pool_pads(x.type, a), a.ceil_mode,
                                   a.count_include_pad, ctx.n_threads, bind=True)


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
    return _pool.avgpool2d_backward(ctx.array(node.inputs[0]), ctx.array(node.output), a.size,
                                    a.stride, a.pads, a.ceil_mode, a.count_include_pad,
                                    ctx.n_threads, bind=True)


def global_avgpool_kernel(node, ctx) -> Callable[[], None]:
    """y = per-plane means."""
    return _pool.global_avgpool2d_forward(ctx.array(node.inputs[0]), ctx.array(node.output),
                                          ctx.n_threads, bind=True)


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
    return _pool.global_avgpool2d_backward(ctx.array(node.inputs[0]), ctx.array(node.output),
                                           ctx.n_threads, bind=True)


register_op(OpDef(
    name="maxpool", attrs=MaxPoolAttrs, positional=("size", "stride"), arity=1,
    shape_rule=pool_shape, doc="max over each window, per channel", aliases=POOL_ALIASES,
    kernel=maxpool_kernel, vjp=maxpool_vjp, training=maxpool_training,
))
register_op(OpDef(
    name="maxpool_train", attrs=MaxPoolAttrs, positional=(), arity=1,
    shape_rule=maxpool_train_shape,
    doc="maxpool in training: outputs (y, int32 argmax in the input plane)", internal=True,
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
    shape_rule=input_shape, doc="gradient of maxpool (inputs: dy, and argmax or x)",
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

"""Ops joining two or more branches: ``add`` (equal shapes) and ``concat`` (along the
channel axis 1, other axes equal). No MACs counted.

``add`` may apply an activation to the sum (``activation``, set by the fuse pass for the
``add(main, skip) relu`` that ends every residual block), in the same pass over memory.

Backward: add hands its output gradient to every input unchanged (no node at all; with an
activation, the gradient through it first, one ``act_backward``); concat's is the internal
``concat_backward``, which splits dy into one output per input.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from cnnc._kernels import elementwise as _ew

from cnnc.ir.types import TensorType
from cnnc.ops.activation import unfuse_activation
from cnnc.ops.attrs import ACTIVATION, NoAttrs, attr, float_kind
from cnnc.ops.checks import expect_same_dtype
from cnnc.ops.registry import OpDef, RuleError, register_op


@dataclass(frozen=True)
class AddAttrs:
    """Attributes of ``add``: an activation applied to the sum (the names and meaning of
    the weighted layers' ``activation`` options)."""

    activation: str = attr("activation applied to the sum, in the same pass", ACTIVATION,
                           "none")
    activation_alpha: float = attr("slope of leaky_relu for negative inputs", float_kind(0.0),
                                   0.3)


def add_shape(ins: Sequence[TensorType], a: AddAttrs) -> TensorType:
    """All inputs share one shape; the output has it."""
    expect_same_dtype(ins)
    for i, t in enumerate(ins[1:], start=1):
        if t.shape != ins[0].shape:
            what = "channel counts" if (t.rank == ins[0].rank and t.rank > 1 and
                                        t.shape[2:] == ins[0].shape[2:]) else "shapes"
            raise RuleError(f"needs inputs of equal shape, but their {what} differ",
                            inputs=(0, i),
                            hint="match them, e.g. with a 1x1 conv on the skip path")
    return ins[0]


def concat_shape(ins: Sequence[TensorType], a: NoAttrs) -> TensorType:
    """Channels add up; every other axis must agree."""
    expect_same_dtype(ins)
    first = ins[0]
    if first.rank < 2:
        raise RuleError("needs inputs with a channel axis", inputs=(0,))
    for i, t in enumerate(ins[1:], start=1):
        if t.rank != first.rank or t.shape[2:] != first.shape[2:] or t.shape[0] != first.shape[0]:
            raise RuleError("needs inputs that agree on every axis but channels",
                            inputs=(0, i), hint="resize or pad the branches to one size")
    channels = sum(int(t.shape[1]) for t in ins)
    return TensorType((first.shape[0], channels) + first.shape[2:], first.dtype)


@dataclass(frozen=True)
class SplitAttrs:
    """Attributes of ``concat_backward``: the channels of each concatenated input."""

    channels: tuple[int, ...]


def add_kernel(node, ctx) -> Callable[[], None]:
    """y = act(x0 + x1 + ...) (y may be x0)."""
    return _ew.add_forward([ctx.array(v) for v in node.inputs], ctx.array(node.output),
                           ctx.n_threads, node.attrs.activation, node.attrs.activation_alpha,
                           bind=True)


def add_vjp(gb, node, douts) -> list:
    """Every input's gradient is dy (through the activation first, if any)."""
    if not any(gb.needs(v) for v in node.inputs):
        return [None] * len(node.inputs)
    dy = unfuse_activation(gb, node, douts[0])
    return [dy if gb.needs(v) else None for v in node.inputs]


def concat_kernel(node, ctx) -> Callable[[], None]:
    """y = the inputs joined along axis 1."""
    return partial(_ew.concat_forward, [ctx.array(v) for v in node.inputs],
                   ctx.array(node.output), ctx.n_threads)


def concat_vjp(gb, node, douts) -> list:
    """dx_j = dy's channels of input j, all from one concat_backward."""
    if not any(gb.needs(v) for v in node.inputs):
        return [None] * len(node.inputs)
    a = SplitAttrs(tuple(int(v.type.shape[1]) for v in node.inputs))
    split = gb.emit("concat_backward", [douts[0]], a, "dx")
    return [out if gb.needs(v) else None for v, out in zip(node.inputs, split.outputs)]


def split_shape(ins: Sequence[TensorType], a: SplitAttrs) -> tuple[TensorType, ...]:
    """dy [N, sum C_j, ...] -> one [N, C_j, ...] per input."""
    t = ins[0]
    return tuple(TensorType((t.shape[0], c) + t.shape[2:], t.dtype) for c in a.channels)


def concat_backward_kernel(node, ctx) -> Callable[[], None]:
    """Split dy along axis 1."""
    return partial(_ew.concat_backward, ctx.array(node.inputs[0]),
                   [ctx.array(v) for v in node.outputs], ctx.n_threads)


register_op(OpDef(
    name="add", attrs=AddAttrs, positional=(), arity=None, shape_rule=add_shape,
    doc="elementwise sum of two or more tensors of one shape (residual connections)",
    kernel=add_kernel, vjp=add_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="concat", attrs=NoAttrs, positional=(), arity=None, shape_rule=concat_shape,
    doc="join two or more tensors along the channel axis",
    kernel=concat_kernel, vjp=concat_vjp,
))
register_op(OpDef(
    name="concat_backward", attrs=SplitAttrs, positional=(), arity=1,
    shape_rule=split_shape, doc="split dy along the channel axis (concat's gradient)",
    internal=True, kernel=concat_backward_kernel,
))

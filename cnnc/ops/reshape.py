"""Ops that only rearrange or pass data through: ``flatten`` and ``identity`` (and the
internal ``reshape``, flatten's backward).

Their kernel is a copy, or nothing at all when the in-place pass let the output share the
input's buffer (row-major data reads the same under any shape).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from cnnc._kernels import elementwise as _ew

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import NoAttrs
from cnnc.ops.checks import expect_rank
from cnnc.ops.registry import OpDef, register_op


def flatten_shape(ins: Sequence[TensorType], a: NoAttrs) -> TensorType:
    """[N, C, H, W] -> [N, C * H * W] (C-order); [N, F] stays as it is."""
    x = ins[0]
    expect_rank(x, (2, 3, 4, 5))
    return TensorType((x.shape[0], math.prod(int(d) for d in x.shape[1:])), x.dtype)


def same_shape(ins: Sequence[TensorType], a: object) -> TensorType:
    """The shape rule of every op whose output has its input's type."""
    return ins[0]


@dataclass(frozen=True)
class ReshapeAttrs:
    """Attributes of ``reshape``: the per-example shape of the output."""

    shape: tuple[int, ...]


def reshape_shape(ins: Sequence[TensorType], a: ReshapeAttrs) -> TensorType:
    """[N, ...] -> [N, *shape] with as many elements."""
    return TensorType((ins[0].shape[0],) + a.shape, ins[0].dtype)


def copy_kernel(node, ctx) -> Callable[[], None] | None:
    """y = x (viewed in y's shape); None (nothing to run) when y shares x's buffer."""
    x, y = ctx.array(node.inputs[0]), ctx.array(node.outputs[0])
    if np.shares_memory(x, y):
        return None
    return partial(_ew.copy, x.reshape(y.shape), y, ctx.n_threads)


def flatten_vjp(gb, node, douts) -> list:
    """dx = dy reshaped to x's shape."""
    if not gb.needs(node.inputs[0]):
        return [None]
    shape = tuple(int(d) for d in node.inputs[0].type.shape[1:])
    return [gb.emit("reshape", [douts[0]], ReshapeAttrs(shape), "dx").outputs[0]]


def pass_through_vjp(gb, node, douts) -> list:
    """dx = dy (identity, and dropout at inference)."""
    return [douts[0]]


register_op(OpDef(
    name="flatten", attrs=NoAttrs, positional=(), arity=1, shape_rule=flatten_shape,
    doc="collapse all axes but the batch into one, in C order (channels slowest)",
    kernel=copy_kernel, vjp=flatten_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="identity", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="pass the input through unchanged (a named tap or an explicit skip path)",
    kernel=copy_kernel, vjp=pass_through_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="reshape", attrs=ReshapeAttrs, positional=(), arity=1, shape_rule=reshape_shape,
    doc="view the input under another per-example shape (flatten's backward)",
    internal=True, kernel=copy_kernel, inplace_ok=True,
))

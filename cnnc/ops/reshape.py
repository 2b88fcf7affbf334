"""Ops that only rearrange or pass data through: ``flatten`` and ``identity``."""
from __future__ import annotations

import math
from collections.abc import Sequence

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


register_op(OpDef(
    name="flatten", attrs=NoAttrs, positional=(), arity=1, shape_rule=flatten_shape,
    doc="collapse all axes but the batch into one, in C order (channels slowest)",
))
register_op(OpDef(
    name="identity", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="pass the input through unchanged (a named tap or an explicit skip path)",
))

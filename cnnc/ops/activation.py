"""Activations, each a layer of its own: ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``,
``softmax`` (over the channel axis 1). Elementwise, so they add no MACs."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import NoAttrs, attr, float_kind
from cnnc.ops.checks import expect_rank
from cnnc.ops.registry import OpDef, register_op
from cnnc.ops.reshape import same_shape


@dataclass(frozen=True)
class LeakyReluAttrs:
    """Attributes of ``leaky_relu``."""

    alpha: float = attr("slope for negative inputs (Keras' default 0.3; PyTorch uses 0.01)",
                        float_kind(0.0), 0.3)


def softmax_shape(ins: Sequence[TensorType], a: NoAttrs) -> TensorType:
    """Same type; needs a channel axis (axis 1)."""
    expect_rank(ins[0], (2, 4))
    return ins[0]


register_op(OpDef(
    name="relu", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="max(x, 0)",
))
register_op(OpDef(
    name="leaky_relu", attrs=LeakyReluAttrs, positional=("alpha",), arity=1,
    shape_rule=same_shape, doc="x if x > 0 else alpha * x",
    aliases={"negative_slope": "alpha"},
))
register_op(OpDef(
    name="sigmoid", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="1 / (1 + exp(-x))",
))
register_op(OpDef(
    name="tanh", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="hyperbolic tangent",
))
register_op(OpDef(
    name="softmax", attrs=NoAttrs, positional=(), arity=1, shape_rule=softmax_shape,
    doc="exp(x) / sum(exp(x)) over the channel axis (axis 1) of [N, C] or [N, C, H, W]",
))

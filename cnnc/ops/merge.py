"""Ops joining two or more branches: ``add`` (equal shapes) and ``concat`` (along the
channel axis 1, other axes equal). No MACs counted."""
from __future__ import annotations

from collections.abc import Sequence

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import NoAttrs
from cnnc.ops.checks import expect_same_dtype
from cnnc.ops.registry import OpDef, RuleError, register_op


def add_shape(ins: Sequence[TensorType], a: NoAttrs) -> TensorType:
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


register_op(OpDef(
    name="add", attrs=NoAttrs, positional=(), arity=None, shape_rule=add_shape,
    doc="elementwise sum of two or more tensors of one shape (residual connections)",
))
register_op(OpDef(
    name="concat", attrs=NoAttrs, positional=(), arity=None, shape_rule=concat_shape,
    doc="join two or more tensors along the channel axis",
))

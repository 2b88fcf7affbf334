"""``dropout``: during training zero each element with probability ``rate`` and scale the
rest by 1 / (1 - rate) (inverted dropout, as Keras and PyTorch); identity at inference."""
from __future__ import annotations

from dataclasses import dataclass

from cnnc.ops.attrs import attr, float_kind
from cnnc.ops.registry import OpDef, register_op
from cnnc.ops.reshape import same_shape


@dataclass(frozen=True)
class DropoutAttrs:
    """Attributes of ``dropout``."""

    rate: float = attr("probability of zeroing an element", float_kind(0.0, 1.0, True), 0.5)


register_op(OpDef(
    name="dropout", attrs=DropoutAttrs, positional=("rate",), arity=1,
    shape_rule=same_shape, doc="randomly zero elements while training (inverted dropout)",
    aliases={"p": "rate"},
))

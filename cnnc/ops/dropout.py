"""``dropout``: during training zero each element with probability ``rate`` and scale the
rest by 1 / (1 - rate) (inverted dropout, as Keras and PyTorch); identity at inference.

In a training graph dropout becomes the internal ``dropout_train``, whose mask is drawn
from (a per-layer seed, the step counter): its backward ``dropout_backward`` regenerates the
same mask instead of storing it (``cnnc._kernels.dropout``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cnnc._kernels import dropout as _dropout

from cnnc.ops.attrs import attr, float_kind
from cnnc.ops.registry import OpDef, register_op
from cnnc.ops.reshape import copy_kernel, pass_through_vjp, same_shape


@dataclass(frozen=True)
class DropoutAttrs:
    """Attributes of ``dropout``."""

    rate: float = attr("probability of zeroing an element", float_kind(0.0, 1.0, True), 0.5)


@dataclass(frozen=True)
class DropoutTrainAttrs:
    """Attributes of ``dropout_train`` and ``dropout_backward``: the rate and the layer's
    seed (the mask also depends on the step counter)."""

    rate: float
    seed: int


def dropout_training(node, seed: int) -> tuple[str, DropoutTrainAttrs]:
    """Training form: dropout_train with the given per-layer seed."""
    return "dropout_train", DropoutTrainAttrs(node.attrs.rate, seed)


def _masked(kernel, x, y, a: DropoutTrainAttrs, ctx) -> Callable[[], None]:
    counter, n = ctx.counter, ctx.n_threads

    def run() -> None:
        kernel(x, y, a.rate, a.seed, int(counter[0]), n)
    return run


def dropout_train_kernel(node, ctx) -> Callable[[], None]:
    """y = x * mask / (1 - rate), the mask drawn from (seed, step)."""
    return _masked(_dropout.dropout_forward, ctx.array(node.inputs[0]),
                   ctx.array(node.output), node.attrs, ctx)


def dropout_train_vjp(gb, node, douts) -> list:
    """dx = dropout_backward(dy) with the same seed and step."""
    if not gb.needs(node.inputs[0]):
        return [None]
    return [gb.emit("dropout_backward", [douts[0]], node.attrs, "dx").outputs[0]]


def dropout_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx = dy * mask / (1 - rate) (dx may be dy)."""
    return _masked(_dropout.dropout_backward, ctx.array(node.inputs[0]),
                   ctx.array(node.output), node.attrs, ctx)


register_op(OpDef(
    name="dropout", attrs=DropoutAttrs, positional=("rate",), arity=1,
    shape_rule=same_shape, doc="randomly zero elements while training (inverted dropout)",
    aliases={"p": "rate"}, kernel=copy_kernel, vjp=pass_through_vjp,
    training=dropout_training, inplace_ok=True,
))
register_op(OpDef(
    name="dropout_train", attrs=DropoutTrainAttrs, positional=(), arity=1,
    shape_rule=same_shape, doc="dropout while training, mask from (seed, step)",
    internal=True, kernel=dropout_train_kernel, vjp=dropout_train_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="dropout_backward", attrs=DropoutTrainAttrs, positional=(), arity=1,
    shape_rule=same_shape, doc="gradient of dropout_train (the mask regenerated)",
    internal=True, kernel=dropout_backward_kernel, inplace_ok=True,
))

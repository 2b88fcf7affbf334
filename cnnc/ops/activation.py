"""Activations, each a layer of its own: ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``,
``softmax`` (over the channel axis 1). Elementwise, so they add no MACs.

Backward rules read the forward *output* y (relu and leaky_relu its sign, sigmoid
y (1 - y), tanh 1 - y^2), so a forward run in place loses nothing: one internal op,
``act_backward`` (inputs dy, y), serves these four and every fused activation of conv,
conv_transpose, dense and add. It also takes several gradients (inputs dy_1, ..., dy_k,
y) and sums them first: the fuse pass merges the ``add`` summing a fanned-out tensor's
gradients into it. ``softmax_backward`` (inputs dy, y) is softmax's.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cnnc._kernels import elementwise as _ew
from cnnc._kernels import loss as _loss

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import ACTIVATION, NoAttrs, attr, float_kind
from cnnc.ops.checks import expect_rank
from cnnc.ops.registry import OpDef, RuleError, register_op
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


@dataclass(frozen=True)
class ActAttrs:
    """Attributes of ``act_backward``: which activation, and leaky_relu's slope."""

    act: str = attr("the activation", ACTIVATION)
    alpha: float = attr("slope of leaky_relu for negative inputs", float_kind(0.0), 0.0)


_FORWARD = {"relu": lambda x, y, alpha, n: _ew.relu_forward(x, y, n, bind=True),
            "leaky_relu": lambda x, y, alpha, n: _ew.leaky_relu_forward(x, y, alpha, n,
                                                                       bind=True),
            "sigmoid": lambda x, y, alpha, n: _ew.sigmoid_forward(x, y, n, bind=True),
            "tanh": lambda x, y, alpha, n: _ew.tanh_forward(x, y, n, bind=True)}


def _alpha(node) -> float:
    return node.attrs.alpha if node.op == "leaky_relu" else 0.0


def activation_kernel(node, ctx) -> Callable[[], None]:
    """y = act(x) (y may be x: in place)."""
    return _FORWARD[node.op](ctx.array(node.inputs[0]), ctx.array(node.output),
                             _alpha(node), ctx.n_threads)


def activation_vjp(gb, node, douts) -> list:
    """dx = act_backward(dy, y)."""
    if not gb.needs(node.inputs[0]):
        return [None]
    attrs = ActAttrs(node.op, _alpha(node))
    return [gb.emit("act_backward", [douts[0], node.output], attrs, "dx").outputs[0]]


def unfuse_activation(gb, node, dy):
    """The gradient before a layer's fused activation (conv, dense...): dy itself when
    the layer has none, else act_backward(dy, y) on the layer's output y."""
    a = node.attrs
    if a.activation == "none":
        return dy
    attrs = ActAttrs(a.activation, a.activation_alpha)
    return gb.emit("act_backward", [dy, node.outputs[0]], attrs, "dact").outputs[0]


def act_backward_shape(ins: Sequence[TensorType], a: ActAttrs) -> TensorType:
    """(dy_1, ..., dy_k, y) -> dx of y's type; every dy has y's type."""
    for i, t in enumerate(ins[:-1]):
        if t != ins[-1]:
            raise RuleError("needs gradients of the forward output's type",
                            inputs=(i, len(ins) - 1))
    return ins[-1]


def act_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx = (dy_1 + ... + dy_k) * act'(from y) (dx may be dy_1)."""
    *dys, y = node.inputs
    return _ew.act_backward(ctx.array(y), [ctx.array(v) for v in dys], ctx.array(node.output),
                            node.attrs.act, node.attrs.alpha, ctx.n_threads, bind=True)


def softmax_kernel(node, ctx) -> Callable[[], None]:
    """y = softmax(x) over axis 1."""
    return _loss.softmax_forward(ctx.array(node.inputs[0]), ctx.array(node.output),
                                 ctx.n_threads, bind=True)


def softmax_vjp(gb, node, douts) -> list:
    """dx = softmax_backward(dy, y)."""
    if not gb.needs(node.inputs[0]):
        return [None]
    return [gb.emit("softmax_backward", [douts[0], node.output], NoAttrs(), "dx").outputs[0]]


def softmax_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx = y * (dy - sum(dy * y)) over axis 1."""
    dy, y = node.inputs
    return _loss.softmax_backward(ctx.array(y), ctx.array(dy), ctx.array(node.output),
                                  ctx.n_threads, bind=True)


register_op(OpDef(
    name="relu", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="max(x, 0)", kernel=activation_kernel, vjp=activation_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="leaky_relu", attrs=LeakyReluAttrs, positional=("alpha",), arity=1,
    shape_rule=same_shape, doc="x if x > 0 else alpha * x",
    aliases={"negative_slope": "alpha"}, kernel=activation_kernel, vjp=activation_vjp,
    inplace_ok=True,
))
register_op(OpDef(
    name="sigmoid", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="1 / (1 + exp(-x))", kernel=activation_kernel, vjp=activation_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="tanh", attrs=NoAttrs, positional=(), arity=1, shape_rule=same_shape,
    doc="hyperbolic tangent", kernel=activation_kernel, vjp=activation_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="softmax", attrs=NoAttrs, positional=(), arity=1, shape_rule=softmax_shape,
    doc="exp(x) / sum(exp(x)) over the channel axis (axis 1) of [N, C] or [N, C, H, W]",
    kernel=softmax_kernel, vjp=softmax_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="act_backward", attrs=ActAttrs, positional=(), arity=None,
    shape_rule=act_backward_shape,
    doc="gradient through an activation (inputs: dy_1, ..., dy_k, y; the dys are summed)",
    internal=True, kernel=act_backward_kernel, inplace_ok=True,
))
register_op(OpDef(
    name="softmax_backward", attrs=NoAttrs, positional=(), arity=2,
    shape_rule=act_backward_shape, doc="gradient through softmax (inputs: dy, y)",
    internal=True, kernel=softmax_backward_kernel, inplace_ok=True,
))

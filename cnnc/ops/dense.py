"""``dense``: a fully connected layer on [N, F], y = act(x @ W + b) with W of shape
[F, units] (Keras layout). MACs: F * units per image (bias not counted).

Kernel: one GEMM with the bias (per column) and activation fused in its epilogue. Backward
(internal ops): ``dense_backward_data`` dx = dy @ W^T and ``dense_backward_weight``
dW = x^T @ dy, db = column sums of dy.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cnnc._kernels import elementwise as _ew
from cnnc._kernels import gemm as _gemm

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import BOOL, WeightedLayerOptions, attr, int_kind
from cnnc.ops.checks import expect_rank
from cnnc.ops.activation import unfuse_activation
from cnnc.ops.registry import OpDef, ParamSpec, register_op


@dataclass(frozen=True)
class DenseAttrs(WeightedLayerOptions):
    """Attributes of ``dense``."""

    units: int = attr("number of outputs", int_kind(1))
    bias: bool = attr("add a learned bias", BOOL, True)


def dense_shape(ins: Sequence[TensorType], a: DenseAttrs) -> TensorType:
    """[N, F] -> [N, units]."""
    x = ins[0]
    hint = "add flatten (or global_avgpool) before it" if x.rank > 2 else None
    expect_rank(x, (2,), hint=hint)
    return TensorType((x.shape[0], a.units), x.dtype)


def dense_params(ins: Sequence[TensorType], a: DenseAttrs) -> dict[str, ParamSpec]:
    """weight [F, units] (glorot_uniform), bias [units] (zeros)."""
    params = {"weight": ParamSpec((int(ins[0].shape[1]), a.units), "glorot_uniform")}
    if a.bias:
        params["bias"] = ParamSpec((a.units,), "zeros")
    return params


def dense_macs(ins: Sequence[TensorType], out: TensorType, a: DenseAttrs) -> int:
    """F * units."""
    return int(ins[0].shape[1]) * a.units


@dataclass(frozen=True)
class DenseGradAttrs:
    """Attributes of dense's backward ops: the weight's shape [F, units] and the bias."""

    features: int
    units: int
    bias: bool


def dense_kernel(node, ctx) -> Callable[[], None]:
    """y = act(x @ W + b) in one GEMM."""
    a = node.attrs
    b = node.params.get("bias")
    return _gemm.gemm(ctx.array(node.inputs[0]), ctx.array(node.params["weight"]),
                      ctx.array(node.output), bias=ctx.array(b) if b is not None else None,
                      bias_mode="col" if b is not None else None, act=a.activation,
                      act_param=a.activation_alpha, n_threads=ctx.n_threads, bind=True)


def dense_vjp(gb, node, douts) -> list:
    """Undo the fused activation; dx = dy @ W^T if needed; dW, db if trained."""
    dy = unfuse_activation(gb, node, douts[0])
    x, w = node.inputs[0], node.params["weight"]
    a = DenseGradAttrs(int(w.type.shape[0]), int(w.type.shape[1]), node.attrs.bias)
    grads = [None] * len(node.inputs)
    if gb.needs(x):
        grads[0] = gb.emit("dense_backward_data", [dy, w], a, "dx").outputs[0]
    if gb.needs(w):
        for i, out in enumerate(gb.emit("dense_backward_weight", [x, dy], a,
                                        "dweight").outputs):
            grads[1 + i] = out
    return grads


def backward_data_shape(ins: Sequence[TensorType], a: DenseGradAttrs) -> TensorType:
    """(dy [N, units], W) -> dx [N, F]."""
    return TensorType((ins[0].shape[0], a.features), ins[0].dtype)


def backward_weight_shape(ins: Sequence[TensorType], a: DenseGradAttrs
                          ) -> tuple[TensorType, ...]:
    """(x, dy) -> (dW [F, units], db [units]) or (dW,)."""
    dw = TensorType((a.features, a.units), ins[0].dtype)
    return (dw, TensorType((a.units,), ins[0].dtype)) if a.bias else (dw,)


def backward_data_kernel(node, ctx) -> Callable[[], None]:
    """dx = dy @ W^T."""
    dy, w = node.inputs
    return _gemm.gemm(ctx.array(dy), ctx.array(w), ctx.array(node.output), trans_b=True,
                      n_threads=ctx.n_threads, bind=True)


def backward_weight_kernel(node, ctx) -> Callable[[], None]:
    """dW = x^T @ dy; db = column sums of dy."""
    x, dy = (ctx.array(v) for v in node.inputs)
    weight = _gemm.gemm(x, dy, ctx.array(node.outputs[0]), trans_a=True,
                        n_threads=ctx.n_threads, bind=True)
    if not node.attrs.bias:
        return weight
    bias = _ew.bias_backward(dy, ctx.array(node.outputs[1]), ctx.n_threads, bind=True)

    def both() -> None:
        weight()
        bias()
    return both


register_op(OpDef(
    name="dense", attrs=DenseAttrs, positional=("units",), arity=1,
    shape_rule=dense_shape, param_rule=dense_params, mac_rule=dense_macs,
    doc="fully connected layer: y = x @ W + b on a flat input [N, F]",
    aliases={"use_bias": "bias", "out_features": "units"},
    kernel=dense_kernel, vjp=dense_vjp,
))
register_op(OpDef(
    name="dense_backward_data", attrs=DenseGradAttrs, positional=(), arity=2,
    shape_rule=backward_data_shape, doc="dx = dy @ W^T (inputs: dy, weight)",
    internal=True, kernel=backward_data_kernel,
))
register_op(OpDef(
    name="dense_backward_weight", attrs=DenseGradAttrs, positional=(), arity=2,
    shape_rule=backward_weight_shape, doc="dW = x^T @ dy, db = sum of dy (inputs: x, dy)",
    internal=True, kernel=backward_weight_kernel,
))

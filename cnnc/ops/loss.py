"""Losses as internal ops: each reads the network's prediction and the targets, and writes
the mean loss ([1]) and, in a training graph, its gradient with respect to the prediction
in the same kernel call (``cnnc._kernels.loss``).

* ``softmax_xent``: softmax cross-entropy from logits over axis 1 of [N, K] or
  [N, K, H, W] (per pixel), against integer labels ([N] or [N, H, W], int64: ``targets =
  "sparse"``) or one-hot / probability targets shaped like the logits (``"dense"``), with
  optional label smoothing. A network ending in softmax is fed its softmax's *input*.
* ``sigmoid_bce``: binary cross-entropy from logits (a network ending in sigmoid is fed
  the sigmoid's input); ``bce``: on probabilities (a sigmoid fused into a layer's kernel).
* ``mse``: mean squared error; ``mae``: mean absolute error (numpy ufuncs writing into
  planned buffers: |p - t| in the op's workspace, sign(p - t) / count as the gradient, 0
  where p == t).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cnnc._kernels import loss as _loss
from cnnc.ir.types import TensorType
from cnnc.ops.attrs import BOOL, attr, choice_kind, float_kind
from cnnc.ops.registry import OpDef, RuleError, register_op

LOSS_OPS = ("softmax_xent", "sigmoid_bce", "bce", "mse", "mae")


@dataclass(frozen=True)
class LossAttrs:
    """Attributes of the loss ops."""

    targets: str = attr("'sparse' (integer labels) or 'dense' (shaped like the prediction)",
                        choice_kind("sparse", "dense"), "dense")
    label_smoothing: float = attr("softmax_xent: mix e / K into every target",
                                  float_kind(0.0, 1.0), 0.0)
    with_grad: bool = attr("also write d(loss)/d(prediction)", BOOL, True)


def loss_shape(ins: Sequence[TensorType], a: LossAttrs) -> tuple[TensorType, ...]:
    """(prediction, targets) -> (loss [1],) + (d prediction,) with_grad."""
    pred, target = ins
    if a.targets == "sparse":
        want = (pred.shape[0],) + pred.shape[2:]
        if target.shape != want or target.dtype != "int64":
            raise RuleError(f"needs int64 labels of shape {list(want)} for predictions "
                            f"{pred}; got {target} {target.dtype}", inputs=(0,))
    elif target.shape != pred.shape:
        raise RuleError(f"needs targets shaped like its prediction {pred}; got {target}",
                        inputs=(0,))
    loss = TensorType((1,), pred.dtype)
    return (loss, pred) if a.with_grad else (loss,)


def _call(op: str, pred, target, grad, a: LossAttrs, n: int) -> Callable[[], float]:
    if op == "softmax_xent" and a.targets == "sparse":
        return lambda: _loss.softmax_xent_sparse(pred, target, grad, a.label_smoothing, None, n)
    if op == "softmax_xent":
        return lambda: _loss.softmax_xent_dense(pred, target, grad, a.label_smoothing, n)
    if op == "sigmoid_bce":
        return lambda: _loss.sigmoid_bce_logits(pred, target, grad, n)
    if op == "bce":
        return lambda: _loss.bce_probs(pred, target, grad, 1e-7, n)
    return lambda: _loss.mse(pred, target, grad, n)


def _mae(pred, target, grad, scratch) -> Callable[[], float]:
    inv = 1.0 / max(pred.size, 1)

    def compute() -> float:
        np.subtract(pred, target, out=scratch)
        if grad is not None:
            np.sign(scratch, out=grad)
            np.multiply(grad, inv, out=grad)
        np.abs(scratch, out=scratch)
        return float(scratch.sum(dtype=np.float64)) * inv
    return compute


def loss_workspace(node, batch: int, worker_stride: int = 0) -> int:
    """mae's |p - t| buffer; the kernels of the other losses need none."""
    if node.op != "mae":
        return 0
    t = node.inputs[0].type
    return t.numel(batch) * np.dtype(t.dtype).itemsize


def loss_kernel(node, ctx) -> Callable[[], None]:
    """loss[0] = the mean loss; d prediction written alongside when with_grad."""
    pred, target = (ctx.array(v) for v in node.inputs)
    out = ctx.array(node.outputs[0])
    grad = ctx.array(node.outputs[1]) if node.attrs.with_grad else None
    if node.op == "mae":
        compute = _mae(pred, target, grad, ctx.workspace(node)[:pred.size].reshape(pred.shape))
    else:
        compute = _call(node.op, pred, target, grad, node.attrs, ctx.n_threads)

    def run() -> None:
        out[0] = compute()
    return run


for _op in LOSS_OPS:
    register_op(OpDef(
        name=_op, attrs=LossAttrs, positional=(), arity=2, shape_rule=loss_shape,
        doc=f"{_op} loss (inputs: prediction, targets; outputs: loss [1], d prediction)",
        internal=True, kernel=loss_kernel, workspace=loss_workspace,
    ))

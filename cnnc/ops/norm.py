"""``batchnorm`` over the channel axis 1 of [N, C, H, W] or [N, C].

Defaults and the meaning of ``momentum`` follow Keras: running = momentum * running +
(1 - momentum) * batch statistic, momentum 0.99, epsilon 1e-3 (PyTorch's momentum 0.1
means the same as Keras' 0.9). gamma/beta are trained; running_mean/running_var are
"state" (not trained; counted as non-trainable params, as Keras does).

Kernels: ``cnnc._kernels.batchnorm``. ``batchnorm`` itself is the inference form (running
statistics). In a training graph each batchnorm becomes the internal ``batchnorm_train``:
outputs (y, batch mean, inverse std; the two statistics float64 whatever x's dtype), the
running statistics updated in place; its backward ``batchnorm_backward`` reads x, dy, the
two saved vectors, gamma and beta (not the normalised input, which would cost a tensor of
x's size). A frozen batchnorm (``trainable=false``) keeps its inference form while
training, as Keras does (running statistics used, not updated); its backward
``batchnorm_infer_backward`` is a per-channel scale of dy (plus dgamma, dbeta when
something differentiates an inference graph with trained gamma/beta).

The fuse pass gives a ``batchnorm_train`` followed by relu ``activation="relu"`` (y = relu
of the normalised input, written in the same pass); its ``batchnorm_backward`` then takes
relu's gradient on the way in (attrs ``activation="relu"``), finding where y was 0 from x,
the saved statistics and beta, exactly as the forward computed y, so it does not read y.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from cnnc._kernels import batchnorm as _bn
from cnnc._kernels import elementwise as _ew

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import BOOL, attr, choice_kind, float_kind
from cnnc.ops.checks import expect_rank
from cnnc.ops.registry import OpDef, ParamSpec, register_op


@dataclass(frozen=True)
class BatchNormAttrs:
    """Attributes of ``batchnorm``."""

    momentum: float = attr("weight of the old running statistics (Keras convention)",
                           float_kind(0.0, 1.0), 0.99)
    epsilon: float = attr("added to the variance before the square root",
                          float_kind(0.0), 1e-3)
    center: bool = attr("learn an offset beta", BOOL, True)
    scale: bool = attr("learn a scale gamma", BOOL, True)


def batchnorm_shape(ins: Sequence[TensorType], a: BatchNormAttrs) -> TensorType:
    """Same type; needs a channel axis."""
    expect_rank(ins[0], (2, 4))
    return ins[0]


def batchnorm_params(ins: Sequence[TensorType], a: BatchNormAttrs) -> dict[str, ParamSpec]:
    """gamma (ones), beta (zeros), running_mean (zeros), running_var (ones), each [C]."""
    c = (int(ins[0].shape[1]),)
    params = {}
    if a.scale:
        params["gamma"] = ParamSpec(c, "ones")
    if a.center:
        params["beta"] = ParamSpec(c, "zeros")
    params["running_mean"] = ParamSpec(c, "zeros", trainable=False)
    params["running_var"] = ParamSpec(c, "ones", trainable=False)
    return params


def _affine(node, ctx) -> tuple[np.ndarray, np.ndarray]:
    """gamma and beta views, or constant ones / zeros for a layer without them."""
    c = int(node.inputs[0].type.shape[1])
    dtype = node.inputs[0].type.dtype
    gamma = node.params.get("gamma")
    beta = node.params.get("beta")
    return (ctx.array(gamma) if gamma is not None else np.ones(c, dtype),
            ctx.array(beta) if beta is not None else np.zeros(c, dtype))


def batchnorm_kernel(node, ctx) -> Callable[[], None]:
    """Inference: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta."""
    gamma, beta = _affine(node, ctx)
    return partial(_bn.batchnorm_forward_infer, ctx.array(node.inputs[0]), gamma, beta,
                   ctx.array(node.params["running_mean"]),
                   ctx.array(node.params["running_var"]), ctx.array(node.output),
                   node.attrs.epsilon, ctx.n_threads)


@dataclass(frozen=True)
class BatchNormTrainAttrs(BatchNormAttrs):
    """Attributes of ``batchnorm_train``: the layer's, and an activation on the output."""

    activation: str = attr("activation applied to the output, in the same pass",
                           choice_kind("none", "relu"), "none")


@dataclass(frozen=True)
class BatchNormGradAttrs:
    """Attributes of ``batchnorm_backward``: "relu" when the forward applied relu, and
    whether the layer has gamma (``scale``) and beta (``center``), which are then inputs."""

    activation: str = "none"
    scale: bool = True
    center: bool = True


def batchnorm_training(node, seed: int) -> tuple[str, BatchNormAttrs]:
    """Training form: batchnorm_train with the same attrs; a frozen layer keeps its
    inference form (see the module docstring)."""
    if not node.trainable:
        return "batchnorm", node.attrs
    return "batchnorm_train", BatchNormTrainAttrs(**asdict(node.attrs))


@dataclass(frozen=True)
class BatchNormInferGradAttrs:
    """Attributes of ``batchnorm_infer_backward``: epsilon, and whether to compute the
    gamma and beta gradients too."""

    epsilon: float
    param_grads: bool


def batchnorm_vjp(gb, node, douts) -> list:
    """Inference form: dx = dy * gamma / sqrt(running_var + eps); dgamma, dbeta if
    trained (one batchnorm_infer_backward, inputs dy, x, running stats[, gamma])."""
    x = node.inputs[0]
    trained = [v for k, v in node.params.items() if k in ("gamma", "beta") and gb.needs(v)]
    if not gb.needs(x) and not trained:
        return [None] * len(node.inputs)
    inputs = [douts[0], x, node.params["running_mean"], node.params["running_var"]]
    if "gamma" in node.params:
        inputs.append(node.params["gamma"])
    attrs = BatchNormInferGradAttrs(node.attrs.epsilon, bool(trained))
    outs = gb.emit("batchnorm_infer_backward", inputs, attrs, "dx").outputs
    grads = {id(x): outs[0]}
    for key, i in (("gamma", 1), ("beta", 2)):
        if trained and key in node.params:
            grads[id(node.params[key])] = outs[i]
    return [grads.get(id(v)) if gb.needs(v) else None for v in node.inputs]


def infer_backward_shape(ins: Sequence[TensorType], a: BatchNormInferGradAttrs
                         ) -> tuple[TensorType, ...]:
    """(dy, x, running_mean, running_var[, gamma]) -> (dx[, dgamma, dbeta])."""
    c = TensorType((int(ins[1].shape[1]),), ins[1].dtype)
    return (ins[1], c, c) if a.param_grads else (ins[1],)


def infer_backward_workspace(node, batch: int, worker_stride: int = 0) -> int:
    """A tensor of x's size for the normalised input (only for dgamma)."""
    if not node.attrs.param_grads:
        return 0
    x = node.inputs[1].type
    return x.numel(batch) * np.dtype(x.dtype).itemsize


def infer_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx by the inference kernel itself (x := dy, mean := 0, beta := 0); dgamma = sum of
    dy * xhat and dbeta = sum of dy per channel, before dx (which may overwrite dy)."""
    dy, x, mean, var = (ctx.array(v) for v in node.inputs[:4])
    c = mean.shape[0]
    gamma = ctx.array(node.inputs[4]) if len(node.inputs) == 5 else np.ones(c, mean.dtype)
    zeros, ones = np.zeros(c, mean.dtype), np.ones(c, mean.dtype)
    n, eps = ctx.n_threads, node.attrs.epsilon
    dx = partial(_bn.batchnorm_forward_infer, dy, gamma, zeros, zeros, var,
                 ctx.array(node.outputs[0]), eps, n)
    if not node.attrs.param_grads:
        return dx
    xhat = ctx.workspace(node)[:x.size].reshape(x.shape)
    normalise = partial(_bn.batchnorm_forward_infer, x, ones, zeros, mean, var, xhat, eps, n)
    dgamma, dbeta = ctx.array(node.outputs[1]), ctx.array(node.outputs[2])

    def run() -> None:
        normalise()
        np.multiply(xhat, dy, out=xhat)
        _ew.bias_backward(xhat, dgamma, n)
        _ew.bias_backward(dy, dbeta, n)
        dx()
    return run


def batchnorm_train_shape(ins: Sequence[TensorType], a: BatchNormAttrs
                          ) -> tuple[TensorType, ...]:
    """x -> (y like x, mean [C], inverse std [C]); the statistics in float64 (the backward
    recomputes the forward's normalised values from them)."""
    y = batchnorm_shape(ins, a)
    c = TensorType((int(y.shape[1]),), "float64")
    return (y, c, c)


def batchnorm_workspace(node, batch: int, worker_stride: int = 0) -> int:
    """Bytes of the training kernels' float64 workspace: per-channel constants, per-row
    sums (_bn.batchnorm_workspace_size)."""
    return 8 * _bn.batchnorm_workspace_size(node.outputs[0].type.with_batch(batch).shape)


def _workspace(node, ctx) -> np.ndarray:
    """The node's planned workspace (of its first input's dtype) as float64."""
    return ctx.workspace(node).view(np.float64)


def batchnorm_train_kernel(node, ctx) -> Callable[[], None]:
    """Normalise by batch statistics (then the activation), save them, update the running
    ones."""
    gamma, beta = _affine(node, ctx)
    y, mean, invstd = (ctx.array(v) for v in node.outputs)
    return _bn.batchnorm_forward_train(ctx.array(node.inputs[0]), gamma, beta, y, mean,
                                       invstd, ctx.array(node.params["running_mean"]),
                                       ctx.array(node.params["running_var"]),
                                       node.attrs.momentum, node.attrs.epsilon,
                                       ctx.n_threads, node.attrs.activation,
                                       _workspace(node, ctx), bind=True)


def running_stats(node) -> list:
    """The state batchnorm_train updates in place."""
    return [node.params["running_mean"], node.params["running_var"]]


def batchnorm_train_vjp(gb, node, douts) -> list:
    """dx, dgamma, dbeta from one batchnorm_backward (inputs dy, x, mean, invstd[, gamma]
    [, beta])."""
    x = node.inputs[0]
    wanted = [x] + [node.params[k] for k in ("gamma", "beta") if k in node.params]
    if not any(gb.needs(v) for v in wanted):
        return [None] * len(node.inputs)
    _, mean, invstd = node.outputs
    inputs = [douts[0], x, mean, invstd]
    inputs += [node.params[k] for k in ("gamma", "beta") if k in node.params]
    attrs = BatchNormGradAttrs(node.attrs.activation, "gamma" in node.params,
                               "beta" in node.params)
    dx, dgamma, dbeta = gb.emit("batchnorm_backward", inputs, attrs, "dx").outputs
    grads = {id(x): dx}
    if "gamma" in node.params:
        grads[id(node.params["gamma"])] = dgamma
    if "beta" in node.params:
        grads[id(node.params["beta"])] = dbeta
    return [grads.get(id(v)) if gb.needs(v) else None for v in node.inputs]


def batchnorm_backward_shape(ins: Sequence[TensorType], a: BatchNormGradAttrs
                             ) -> tuple[TensorType, ...]:
    """(dy, x, mean, invstd[, gamma][, beta]) -> (dx, dgamma, dbeta)."""
    c = TensorType((int(ins[1].shape[1]),), ins[1].dtype)
    return (ins[1], c, c)


def batchnorm_backward_kernel(node, ctx) -> Callable[[], None]:
    """dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy, or after a
    fused relu its gradient (dy where y > 0, else 0); dgamma, dbeta."""
    a = node.attrs
    dy, x, mean, invstd = (ctx.array(v) for v in node.inputs[:4])
    gamma = ctx.array(node.inputs[4]) if a.scale else np.ones(mean.shape, x.dtype)
    beta = ctx.array(node.inputs[4 + a.scale]) if a.center else None
    dx, dgamma, dbeta = (ctx.array(v) for v in node.outputs)
    return _bn.batchnorm_backward(x, dy, gamma, mean, invstd, dx, dgamma, dbeta,
                                  ctx.n_threads, a.activation, beta, _workspace(node, ctx),
                                  bind=True)


register_op(OpDef(
    name="batchnorm", attrs=BatchNormAttrs, positional=(), arity=1,
    shape_rule=batchnorm_shape, param_rule=batchnorm_params,
    doc="normalise each channel by batch statistics (running ones at inference)",
    aliases={"eps": "epsilon"}, kernel=batchnorm_kernel, training=batchnorm_training,
    vjp=batchnorm_vjp, inplace_ok=True,
))
register_op(OpDef(
    name="batchnorm_infer_backward", attrs=BatchNormInferGradAttrs, positional=(),
    arity=None, shape_rule=infer_backward_shape,
    doc="gradients of inference-form batchnorm (inputs: dy, x, running stats[, gamma])",
    internal=True, kernel=infer_backward_kernel, workspace=infer_backward_workspace,
    inplace_ok=True,
))
register_op(OpDef(
    name="batchnorm_train", attrs=BatchNormTrainAttrs, positional=(), arity=1,
    shape_rule=batchnorm_train_shape, param_rule=batchnorm_params,
    doc="batchnorm in training: outputs (y, batch mean, inverse std); updates the running "
        "statistics", internal=True, kernel=batchnorm_train_kernel,
    workspace=batchnorm_workspace, vjp=batchnorm_train_vjp, writes=running_stats,
))
register_op(OpDef(
    name="batchnorm_backward", attrs=BatchNormGradAttrs, positional=(), arity=None,
    shape_rule=batchnorm_backward_shape,
    doc="gradients of batchnorm_train (inputs: dy, x, mean, invstd[, gamma][, beta])",
    internal=True, kernel=batchnorm_backward_kernel, workspace=batchnorm_workspace,
    inplace_ok=True,
))

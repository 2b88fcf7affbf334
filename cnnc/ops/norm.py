"""``batchnorm`` over the channel axis 1 of [N, C, H, W] or [N, C].

Defaults and the meaning of ``momentum`` follow Keras: running = momentum * running +
(1 - momentum) * batch statistic, momentum 0.99, epsilon 1e-3 (PyTorch's momentum 0.1
means the same as Keras' 0.9). gamma/beta are trained; running_mean/running_var are
"state" (not trained; counted as non-trainable params, as Keras does).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import BOOL, attr, float_kind
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


register_op(OpDef(
    name="batchnorm", attrs=BatchNormAttrs, positional=(), arity=1,
    shape_rule=batchnorm_shape, param_rule=batchnorm_params,
    doc="normalise each channel by batch statistics (running ones at inference)",
    aliases={"eps": "epsilon"},
))

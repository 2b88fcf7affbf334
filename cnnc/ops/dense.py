"""``dense``: a fully connected layer on [N, F], y = x @ W + b with W of shape [F, units]
(Keras layout). MACs: F * units per image (bias not counted)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnc.ir.types import TensorType
from cnnc.ops.attrs import ACTIVATION, BOOL, attr, float_kind, int_kind
from cnnc.ops.checks import expect_rank
from cnnc.ops.registry import OpDef, ParamSpec, register_op


@dataclass(frozen=True)
class DenseAttrs:
    """Attributes of ``dense``."""

    units: int = attr("number of outputs", int_kind(1))
    bias: bool = attr("add a learned bias", BOOL, True)
    activation: str = attr("activation applied to the output, fused into the layer's kernel",
                           ACTIVATION, "none")
    activation_alpha: float = attr("slope of leaky_relu for negative inputs", float_kind(0.0),
                                   0.3)


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


register_op(OpDef(
    name="dense", attrs=DenseAttrs, positional=("units",), arity=1,
    shape_rule=dense_shape, param_rule=dense_params, mac_rule=dense_macs,
    doc="fully connected layer: y = x @ W + b on a flat input [N, F]",
    aliases={"use_bias": "bias", "out_features": "units"},
))

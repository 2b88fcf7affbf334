"""Inference-only simplifications: batchnorm folded into the linear layer before it, and
dropout and identity removed.

Folding. At inference batchnorm is affine per channel c: y = s[c] * (x - mean[c]) + beta[c]
with s = gamma / sqrt(running_var + epsilon). After a conv (or conv_transpose, dense)
without activation, whose output only the batchnorm reads, it merges into the layer:
weight'[c] = s[c] * weight[c] (c the output-channel axis of the weight) and
bias' = s * (bias - mean) + beta (bias taken as 0 when the layer had none; the folded
layer always has one).

The folded weight and bias must follow the trained parameters, which change after
compilation (training, load_weights, writes into Model.parameters). They are therefore
not constants baked into the graph but :class:`FoldedParam` values: parameters of the
folded layer (same names as the layer's own, ``conv_1.weight``, ``conv_1.bias``) that
carry a :class:`Fold` recipe naming the source parameters. The runtime gives each folded
parameter its own buffer and recomputes it with :func:`fold_into` from the live source
parameters before an inference step, whenever they may have changed since the plan's last
step (``Plan.run``'s version token, kept by the Model: any training-mode step, a load, and
from the first hand-out of ``Model.parameters`` on, every step). Refolding at every step
cost VGG-11 a third of its batch-1 inference (one pass over 37 MB of weights, 3.3 of
9.4 ms). (A graph node computing the folded weights would need a layer whose weight is a
computed tensor, which the IR's parameter rules do not allow.)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, TensorType, Value
from cnnc.ops.registry import get_op
from cnnc.passes.rewrite import GraphCopy, readers, sole_reader

# The output-channel axis of each foldable layer's weight: conv OIHW, conv_transpose
# [in, out, kh, kw], dense [in, out].
CHANNEL_AXIS = {"conv": 0, "conv_transpose": 1, "dense": 1}
REMOVED_AT_INFERENCE = ("dropout", "identity")


@dataclass(frozen=True)
class Fold:
    """Names of the parameters a folded layer's weight and bias derive from (None: the
    layer had no bias, or the batchnorm has no gamma/beta), the batchnorm's epsilon and
    the weight's output-channel axis."""

    weight: str
    bias: str | None
    gamma: str | None
    beta: str | None
    mean: str
    var: str
    epsilon: float
    axis: int


@dataclass(eq=False)
class FoldedParam(Value):
    """A parameter computed from other parameters by ``fold`` (``role`` "weight" or
    "bias"), recomputed by the runtime before each inference step."""

    fold: Fold | None = None
    role: str = "weight"


def fold_into(fold: Fold, params: Mapping[str, np.ndarray], weight: np.ndarray,
              bias: np.ndarray, scale: np.ndarray) -> None:
    """Write the folded ``weight`` and ``bias`` from the source arrays ``params`` (by
    name); ``scale`` is scratch of the bias's shape. Makes no temporary arrays (the
    broadcast multiply uses at most numpy's fixed-size ufunc buffer)."""
    np.add(params[fold.var], fold.epsilon, out=scale)
    np.sqrt(scale, out=scale)
    np.reciprocal(scale, out=scale)
    if fold.gamma is not None:
        scale *= params[fold.gamma]
    shape = [1] * weight.ndim
    shape[fold.axis] = -1
    np.multiply(params[fold.weight], scale.reshape(shape), out=weight)
    # bias' = beta + scale * (bias - mean)
    np.negative(params[fold.mean], out=bias)
    if fold.bias is not None:
        bias += params[fold.bias]
    bias *= scale
    if fold.beta is not None:
        bias += params[fold.beta]


def _name(value: Value | None) -> str | None:
    return None if value is None else value.name


def _folded_params(layer: Node, bn: Node) -> dict[str, Value]:
    """The folded weight and bias of ``layer`` followed by ``bn``."""
    weight, out = layer.params["weight"], layer.output.type
    fold = Fold(weight.name, _name(layer.params.get("bias")), _name(bn.params.get("gamma")),
                _name(bn.params.get("beta")), bn.params["running_mean"].name,
                bn.params["running_var"].name, bn.attrs.epsilon, CHANNEL_AXIS[layer.op])
    bias_type = TensorType((out.shape[1],), out.dtype)
    return {"weight": FoldedParam(weight.name, weight.type, "param", fold=fold),
            "bias": FoldedParam(f"{layer.name}.bias", bias_type, "param", fold=fold,
                                role="bias")}


def fold_batchnorm(graph: Graph) -> Graph:
    """A copy of ``graph`` (an inference graph) with every batchnorm that follows a conv,
    conv_transpose or dense without activation, and is the only reader of its output,
    folded into that layer (see the module docstring)."""
    out = GraphCopy(graph)
    reading = readers(graph)
    absorbed: set[int] = set()
    for node in graph.nodes:
        if id(node) in absorbed:
            continue
        bn = sole_reader(graph, node, reading) if node.op in CHANNEL_AXIS else None
        if (bn is None or bn.op != "batchnorm" or node.attrs.activation != "none"
                or isinstance(node.params["weight"], FoldedParam)):  # folded once already
            out.copy(node)
            continue
        folded = out.add(node, node.op, dataclasses.replace(node.attrs, bias=True),
                         params=_folded_params(node, bn), outputs=bn.outputs)
        folded.outputs[0].span = bn.span
        absorbed.add(id(bn))
    return out.finish()


def strip_inference(graph: Graph) -> Graph:
    """A copy of ``graph`` without dropout (the identity at inference) and identity
    layers: their readers read their input instead. One whose output is a graph output
    stays, as an identity (the output keeps its name)."""
    out = GraphCopy(graph)
    for node in graph.nodes:
        if node.op not in REMOVED_AT_INFERENCE:
            out.copy(node)
        elif any(v is node.output for v in graph.outputs):
            out.add(node, "identity", get_op("identity").attrs())
        else:
            out.redirect(node.output, out[node.data_inputs[0]])
    return out.finish()


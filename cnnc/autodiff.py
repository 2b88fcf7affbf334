"""Reverse-mode automatic differentiation over the Graph: forward graph -> training graph.

:func:`build_training_graph` copies the network (layers in their training form: batchnorm
with batch statistics, dropout with a seeded mask), attaches a loss node to its output,
derives the backward pass as more graph nodes, and adds one optimizer update node per
trained parameter. Every step is plain graph building, so the passes, the scheduler and
the memory planner see forward, backward and update at once.

The driver (:func:`backward`) is generic: it walks the nodes in reverse topological order,
asks each op's ``vjp`` rule for its inputs' gradients (the rule emits nodes through a
:class:`GradBuilder`), and sums the gradients of a tensor read by several nodes with one
``add`` node. Only tensors that depend on a wanted value (a trained parameter, or the input
when asked) get gradients, so backward stops where nothing upstream needs one: frozen
layers (``trainable=false``) and the first layer's input cost nothing.

Naming: the loss is ``loss``, the labels input ``labels``; the gradient of a value ``v`` is
``<v>/grad`` (with "." in parameter names written as "/": ``conv_1/weight/grad``), an
optimizer's state ``<param>/<slot>`` (``conv_1/weight/exp_avg``).
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cnnc.dsl.train import Option
from cnnc.errors import GradError, SpecError
from cnnc.ir.graph import Graph, describe_layer
from cnnc.ir.types import BATCH, Node, TensorType, Value
from cnnc.ops.loss import LossAttrs
from cnnc.ops.optim import state_names, update_op
from cnnc.ops.registry import get_op

LOSS = "loss"
LABELS = "labels"

# The spec's loss names -> the loss op computing them.
LOSSES = {
    "categorical_crossentropy": "softmax_xent",
    "sparse_categorical_crossentropy": "softmax_xent",
    "binary_crossentropy": "binary",
    "mse": "mse",
    "mae": "mae",
}


@dataclass(frozen=True)
class LossSpec:
    """The loss to attach: a spec loss name (see :data:`LOSSES`), label smoothing (softmax
    cross-entropy only), and the form of the targets: "sparse" (integer class labels) or
    "dense" (shaped like the network's output: one-hot, probabilities, 0/1, values)."""

    name: str
    label_smoothing: float = 0.0
    targets: str = "sparse"

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise SpecError(f"loss '{self.name}' is not supported by the compiler",
                            hint="losses: " + ", ".join(LOSSES))
        if self.targets not in ("sparse", "dense"):
            raise ValueError(f"targets must be 'sparse' or 'dense', not {self.targets!r}")
        if self.targets == "sparse" and LOSSES[self.name] != "softmax_xent":
            object.__setattr__(self, "targets", "dense")


def grad_name(name: str) -> str:
    """The name of the gradient of the value called ``name``."""
    return name.replace(".", "/") + "/grad"


def state_name(param: str, slot: str) -> str:
    """The name of an optimizer state buffer of parameter ``param``."""
    return f"{param.replace('.', '/')}/{slot}"


def default_loss(graph: Graph) -> str:
    """The loss a network's output implies: binary cross-entropy for one output unit
    (after a sigmoid or as a logit), softmax cross-entropy for K > 1 classes."""
    out = network_output(graph)
    return "binary_crossentropy" if int(out.type.shape[1]) == 1 else \
        "sparse_categorical_crossentropy"


def network_output(graph: Graph) -> Value:
    """The single output a loss attaches to (CnncError for several)."""
    if len(graph.outputs) != 1:
        raise SpecError(f"a loss needs a network with one output; '{graph.name}' has "
                        f"{len(graph.outputs)}")
    out = graph.outputs[0]
    if out.type.rank < 2:
        raise SpecError(f"the network's output {out.type} has no class axis")
    return out


class GradBuilder:
    """What a vjp rule sees: the graph being extended and which values need gradients."""

    def __init__(self, graph: Graph, requires: set[int]):
        self.graph = graph
        self.requires = requires
        self.node: Node | None = None

    def needs(self, value: Value) -> bool:
        """Whether ``value`` needs a gradient (it depends on a wanted value)."""
        return id(value) in self.requires

    def emit(self, op: str, inputs: Sequence[Value], attrs: Any, suffix: str) -> Node:
        """Append a backward node ``<layer>/<suffix>`` for the layer being differentiated;
        it carries the layer's span, so errors name the .cnn line."""
        node = self.node
        return self.graph.add_node(op, inputs, attrs, f"{node.name}/{suffix}", node.span)


def layer_seed(layer: str, seed: int) -> int:
    """The seed of a layer's random stream (dropout masks): the model's seed mixed with a
    hash of the layer's name, so layers draw independent masks."""
    return (zlib.crc32(layer.encode()) ^ (seed * 0x9E3779B1)) & 0xFFFFFFFF


def copy_forward(forward: Graph, training: bool, seed: int = 0,
                 dtype: str | None = None) -> Graph:
    """A fresh copy of ``forward`` (same names and spans); with ``training`` every layer
    whose op has a training form (batchnorm, dropout) gets it. Dropout seeds derive from
    ``seed`` and the layer's name. ``dtype`` recasts every input and parameter."""
    g = Graph(forward.name)
    new: dict[int, Value] = {}
    for v in forward.inputs:
        new[id(v)] = g.add_input(v.name, v.type.shape[1:], v.span, dtype or v.type.dtype)
    for node in forward.nodes:
        op, attrs = node.op, node.attrs
        opdef = get_op(op)
        if training and opdef.training is not None:
            op, attrs = opdef.training(node, layer_seed(node.name, seed))
        params = {k: Value(p.name, TensorType(p.type.shape, dtype or p.type.dtype), p.kind,
                           span=p.span) for k, p in node.params.items()}
        copy = g.add_node(op, [new[id(v)] for v in node.data_inputs], attrs, node.name,
                          node.span, params=params, trainable=node.trainable)
        if len(copy.outputs) > 1:  # the training form's main output keeps the layer name
            g.rename_value(copy.outputs[0], node.name)
        new[id(node.output)] = copy.outputs[0]
    g.set_outputs([new[id(v)] for v in forward.outputs])
    return g


def attach_loss(g: Graph, loss: LossSpec, with_grad: bool) -> tuple[Value, Value, Value]:
    """Add the labels input and the loss node on the network's output.

    Softmax cross-entropy after a softmax layer reads the softmax's input (log-softmax
    fused into the loss, stable and cheaper); binary cross-entropy after a sigmoid layer
    reads the sigmoid's input (from logits), after a sigmoid fused into a layer's kernel
    the probabilities, and otherwise treats the output as a logit.
    Returns (loss value [1], d prediction or None, prediction)."""
    out = network_output(g)
    kind = LOSSES[loss.name]
    producer = out.producer
    pred, op = out, kind
    if kind == "softmax_xent" and producer is not None and producer.op == "softmax":
        pred = producer.inputs[0]
    elif kind == "binary":
        op = "sigmoid_bce"
        if producer is not None and producer.op == "sigmoid":
            pred = producer.inputs[0]
        elif producer is not None and getattr(producer.attrs, "activation", "") == "sigmoid":
            op = "bce"
    if loss.targets == "sparse":
        target = TensorType((BATCH,) + pred.type.shape[2:], "int64")
    else:
        target = pred.type
    labels = g.add_value(_free(g, LABELS), target, "input")
    smoothing = loss.label_smoothing if op == "softmax_xent" else 0.0
    node = g.add_node(op, [pred, labels], LossAttrs(loss.targets, smoothing, with_grad),
                      _free(g, LOSS))
    g.rename_value(node.outputs[0], node.name)
    return node.outputs[0], (node.outputs[1] if with_grad else None), pred


def _free(g: Graph, name: str) -> str:
    """``name``, or ``name#k`` when a layer already uses it."""
    k, free = 1, name
    while g.has_value(free):
        k += 1
        free = f"{name}#{k}"
    return free


def backward(g: Graph, seeds: Sequence[tuple[Value, Value]],
             wrt: Sequence[Value]) -> dict[int, Value]:
    """Emit the backward pass of ``g`` for the output gradients ``seeds`` ((value,
    gradient) pairs) and return {id(v): gradient of v} for each ``wrt`` value that gets
    one. Raises GradError naming the layer (and its line) whose op has no backward rule.
    """
    requires = {id(v) for v in wrt}
    for node in g.nodes:
        if any(id(v) in requires for v in node.inputs):
            requires.update(id(o) for o in node.outputs)
    gb = GradBuilder(g, requires)
    pending: dict[int, list[Value]] = {id(v): [d] for v, d in seeds}

    def total(value: Value) -> Value | None:
        parts = pending.get(id(value))
        if not parts:
            return None
        if len(parts) > 1:  # a tensor read by several nodes: sum their gradients once
            node = g.add_node("add", parts, get_op("add").attrs(),
                              f"{value.name}/gradsum", value.producer.span
                              if value.producer else None)
            parts[:] = [node.outputs[0]]
        return parts[0]

    for node in list(reversed(g.nodes)):
        if not any(gb.needs(v) for v in node.inputs):
            continue
        douts = [total(o) for o in node.outputs]
        if all(d is None for d in douts):
            continue
        opdef = get_op(node.op)
        where = describe_layer(node.op, node.name, node.span)
        if opdef.vjp is None:
            raise GradError(f"{where} cannot be differentiated: op '{node.op}' has no "
                            "backward rule", span=node.span)
        gb.node = node
        grads = opdef.vjp(gb, node, douts)
        if len(grads) != len(node.inputs):
            raise GradError(f"{where}: the backward rule of '{node.op}' returned "
                            f"{len(grads)} gradients for {len(node.inputs)} inputs",
                            span=node.span)
        for v, d in zip(node.inputs, grads):
            if d is not None and gb.needs(v):
                pending.setdefault(id(v), []).append(d)
    return {id(v): d for v in wrt if (d := total(v)) is not None}


def trained_params(g: Graph) -> list[Value]:
    """The parameters that get gradients: kind "param" of layers not frozen, in order."""
    return [p for node in g.nodes if node.trainable
            for p in node.params.values() if p.kind == "param"]


def _name_gradient(g: Graph, value: Value, grad: Value, taken: set[int]) -> Value:
    """Give ``grad`` the name ``<value>/grad``; a gradient that is not a fresh node output
    of its own (shared, or passed through unchanged) is copied by an identity node."""
    if id(grad) in taken or grad.producer is None or grad.name == LOSS:
        node = g.add_node("identity", [grad], get_op("identity").attrs(),
                          grad_name(value.name))
        grad = node.outputs[0]
    else:
        g.rename_value(grad, grad_name(value.name))
    taken.add(id(grad))
    return grad


def add_updates(g: Graph, grads: Sequence[tuple[Value, Value]], optimizer: Option) -> None:
    """One update node per (parameter, gradient), with zeroed state values of its own;
    a layer's own ``weight_decay`` replaces the optimizer's for its parameters; with
    ``clipnorm`` the gradients first pass through one ``clip_grad_norm`` node."""
    op, attrs = update_op(optimizer.name, optimizer.args)
    if attrs.clipnorm > 0 and grads:  # every update waits for the global norm
        clip = g.add_node("clip_grad_norm", [d for _, d in grads],
                          get_op("clip_grad_norm").attrs(attrs.clipnorm), "clip_grad_norm")
        grads = [(p, d) for (p, _), d in zip(grads, clip.outputs)]
    owner = {id(p): node for node in g.nodes for p in node.params.values()}
    for param, grad in grads:
        layer_decay = getattr(owner[id(param)].attrs, "weight_decay", None)
        param_attrs = attrs if layer_decay is None else replace(attrs,
                                                                 weight_decay=layer_decay)
        states = [g.add_value(state_name(param.name, s), param.type, "state")
                  for s in state_names(op, param_attrs)]
        g.add_node(op, [param, grad, *states], param_attrs,
                   f"{param.name.replace('.', '/')}/update", None)


def build_training_graph(forward: Graph, loss: LossSpec | str | None = None,
                         optimizer: Option | None = None, *, training: bool = True,
                         gradients: bool = True, input_grad: bool = False, seed: int = 0,
                         keep_outputs: bool = False) -> Graph:
    """The compiled graph of one step on ``forward``.

    loss : the loss to attach (default :func:`default_loss`).
    optimizer : with it, an update node per trained parameter (the train step); without,
        the parameter gradients become graph outputs (``Model.gradients``).
    training : layers in training form (batch statistics, dropout) or inference form.
    gradients : False builds forward + loss only (``Model.loss``).
    input_grad : also output the gradient of the network input.
    keep_outputs : also output the network's prediction.

    Outputs, in order: the loss; without an optimizer the gradients (of the trained
    parameters that get one, then the input's); with keep_outputs the prediction.
    """
    if loss is None:
        loss = default_loss(forward)
    if isinstance(loss, str):
        loss = LossSpec(loss)
    g = copy_forward(forward, training, seed)
    net_out = list(g.outputs)
    loss_value, dpred, pred = attach_loss(g, loss, with_grad=gradients)
    outputs = [loss_value]
    if gradients:
        wrt = trained_params(g) + ([g.inputs[0]] if input_grad else [])
        found = backward(g, [(pred, dpred)], wrt)
        taken: set[int] = set()
        named = [(v, _name_gradient(g, v, found[id(v)], taken)) for v in wrt
                 if id(v) in found]
        if optimizer is not None:
            add_updates(g, [(v, d) for v, d in named if v.kind == "param"], optimizer)
        else:
            outputs += [d for _, d in named]
    if keep_outputs:
        outputs += net_out
    g.set_outputs(outputs)
    return g

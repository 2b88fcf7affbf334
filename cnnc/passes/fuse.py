"""Activation fusion: ``conv -> relu`` becomes one conv node with ``activation="relu"``,
so the activation runs in the layer's own kernel instead of as a second pass over
memory. Applies when the activation is the only reader of the layer's (first) output,
which is not a graph output, and the layer has no activation yet, to

* conv, conv_transpose, dense and add followed by relu, leaky_relu, sigmoid or tanh;
* batchnorm_train (the training form, so only in training graphs) followed by relu.

The fused node keeps the layer's name, span and parameters (so parameter names do
not change); its output takes the activation layer's name and span, so every later layer
still reads the tensor the user named.

In a training graph (the Model fuses after autodiff) gradient nodes merge as well, each
the only reader of the other's output:

* relu's ``act_backward`` into the ``batchnorm_backward`` it feeds, when that batchnorm
  took the relu: the merged node applies relu's gradient itself (finding where relu's
  output was 0 from its own inputs);
* an ``add`` summing the gradients of a tensor read by several layers, into the
  ``act_backward`` reading the sum: ``act_backward(dy_1, ..., dy_k, y)`` adds them in
  the same pass (every residual block's input has such a sum).

And relu's gradient moves ahead of a max-pool's: ``act_backward(maxpool_backward(dy), y)``
on the pool's input y becomes ``maxpool_backward(act_backward(dy, pool output))``, on a
tensor a quarter of the size for 2x2 windows. The same values: each window's winner is an
element of y equal to the window's output, so relu lets its gradient through exactly when
it lets the window's through (and a gradient summed from overlapping windows is kept or
zeroed whole).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, Value
from cnnc.ops.registry import get_op
from cnnc.passes.rewrite import GraphCopy, readers, sole_reader

LINEAR_OPS = ("conv", "conv_transpose", "dense")
FUSABLE_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
# The ops that apply an activation in their own kernel, and the activations each takes.
FUSES = {**{op: FUSABLE_ACTIVATIONS for op in LINEAR_OPS + ("add",)},
         "batchnorm_train": ("relu",)}


def fuse(graph: Graph) -> Graph:
    """A copy of ``graph`` with each fusable layer + activation pair merged, and the
    gradient nodes the module docstring lists."""
    reading = readers(graph)
    outputs = {id(v) for v in graph.outputs}

    def sole_reader(v: Value) -> Node | None:
        found = reading.get(id(v), [])
        return found[0] if len(found) == 1 and id(v) not in outputs else None

    acts: dict[int, Node] = {}          # id(layer) -> the activation it takes
    for node in graph.nodes:
        act = sole_reader(node.outputs[0]) if node.op in FUSES else None
        if (act is not None and act.op in FUSES[node.op]
                and node.attrs.activation == "none" and act.data_inputs == node.outputs[:1]):
            acts[id(node)] = act
    merged = _merge_gradients(graph, sole_reader, acts)
    absorbed = {id(a) for a in acts.values()} | {id(g) for g, _ in merged.values()}
    pooled = _relu_after_pool(graph, sole_reader, reading, absorbed)
    absorbed |= {id(a) for a, _ in pooled.values()}

    out = GraphCopy(graph)
    for node in graph.nodes:
        if id(node) in absorbed:
            continue
        if id(node) in pooled:
            relu, pool_out = pooled[id(node)]
            dy, winners = node.inputs
            # relu's gradient on the pool's output, under the pool gradient's names; then
            # the pool's, reading it, under relu's (its readers read that)
            out.add(dataclasses.replace(relu, name=node.name, inputs=[dy, pool_out]),
                    relu.op, relu.attrs, outputs=node.outputs)
            out.add(dataclasses.replace(node, name=relu.name, inputs=[node.output, winners]),
                    node.op, node.attrs, outputs=relu.outputs)
        elif id(node) in acts:
            act = acts[id(node)]
            fused = out.add(node, node.op, _activated(node.attrs, act),
                            outputs=act.outputs + node.outputs[1:])
            fused.outputs[0].span = act.span
        elif id(node) in merged:
            _, inputs = merged[id(node)]
            attrs = node.attrs
            if node.op == "batchnorm_backward":  # it now takes relu's gradient itself
                attrs = dataclasses.replace(attrs, activation="relu")
            # the node as if it read the merged inputs: a template for the copy, no more
            out.add(dataclasses.replace(node, inputs=inputs), node.op, attrs)
        else:
            out.copy(node)
    return out.finish()


def fuse_conv_pool(graph: Graph) -> Graph:
    """Inference: a conv whose only reader is a 2x2 max-pool becomes one ``conv_maxpool``
    node where its kernel pays (``cnnc.ops.conv.conv_maxpool_pays``), so the conv's output
    is never stored and the pool is no pass of its own. Run after :func:`fuse` (the conv
    keeps its activation). The node keeps the conv's name and parameters; its output takes
    the pool's name and span."""
    from cnnc.ops.conv import conv_maxpool_pays
    reading = readers(graph)
    pools: dict[int, Node] = {}
    for node in graph.nodes:
        pool = sole_reader(graph, node, reading) if node.op == "conv" else None
        if pool is not None and pool.op == "maxpool" and conv_maxpool_pays(node, pool):
            pools[id(node)] = pool
    taken = {id(p) for p in pools.values()}
    out = GraphCopy(graph)
    for node in graph.nodes:
        if id(node) in pools:
            fused = out.add(node, "conv_maxpool", node.attrs, outputs=pools[id(node)].outputs)
            fused.outputs[0].span = pools[id(node)].span
        elif id(node) not in taken:
            out.copy(node)
    return out.finish()


def _activated(attrs: Any, act: Node) -> Any:
    """A layer's attrs with the activation ``act`` (and leaky_relu's slope) set."""
    if act.op == "leaky_relu":
        return dataclasses.replace(attrs, activation=act.op, activation_alpha=act.attrs.alpha)
    return dataclasses.replace(attrs, activation=act.op)


Readers = Callable[[Value], "Node | None"]


def _merge_gradients(graph: Graph, sole_reader: Readers, acts: dict[int, Node]
                     ) -> dict[int, tuple[Node, list[Value]]]:
    """id(gradient node) -> (the node merged into it, its inputs after the merge)."""
    relu_outputs = {key: act.output for key, act in acts.items() if act.op == "relu"}
    merged: dict[int, tuple[Node, list[Value]]] = {}
    for node in graph.nodes:        # relu's gradient into batchnorm_backward
        src = _sole_source(node, sole_reader)
        if (node.op == "batchnorm_backward" and src is not None and src.op == "act_backward"
                and src.attrs.act == "relu" and len(src.inputs) == 2
                and relu_outputs.get(id(node.inputs[2].producer)) is src.inputs[1]):
            merged[id(node)] = src, [src.inputs[0], *node.inputs[1:]]
    taken = {id(g) for g, _ in merged.values()}
    for node in graph.nodes:        # a sum of gradients into the act_backward reading it
        src = _sole_source(node, sole_reader)
        if (node.op == "act_backward" and id(node) not in taken and src is not None
                and src.op == "add" and src.attrs.activation == "none"):
            merged[id(node)] = src, [*src.inputs, *node.inputs[1:]]
    return merged


def _relu_after_pool(graph: Graph, sole_reader: Readers, reading: dict[int, list[Node]],
                     taken: set[int]) -> dict[int, tuple[Node, Value]]:
    """id(maxpool_backward) -> (the relu ``act_backward`` that is the only reader of its
    gradient and reads the pool's input, the pool's output), for pools that saved their
    winners (maxpool_train) and whose output no op may alias (a flatten: read again in
    the backward, it would have to be copied)."""
    found: dict[int, tuple[Node, Value]] = {}
    for node in graph.nodes:
        src = _sole_source(node, sole_reader)
        if not (node.op == "act_backward" and node.attrs.act == "relu"
                and len(node.inputs) == 2 and src is not None
                and src.op == "maxpool_backward" and not {id(node), id(src)} & taken):
            continue
        pool = src.inputs[1].producer
        if (pool is not None and pool.op == "maxpool_train"
                and pool.inputs[0] is node.inputs[1]
                and not any(get_op(r.op).inplace_ok
                            for r in reading.get(id(pool.outputs[0]), []))):
            found[id(src)] = node, pool.outputs[0]
    return found


def _sole_source(node: Node, sole_reader: Readers) -> Node | None:
    """The producer of ``node``'s first input when ``node`` is its only reader and reads
    it once, else None."""
    dy = node.inputs[0] if node.inputs else None
    if dy is None or dy.producer is None or sole_reader(dy) is not node:
        return None
    return dy.producer if sum(v is dy for v in node.inputs) == 1 else None

"""Activation fusion: ``conv -> relu`` becomes one conv node with ``activation="relu"``,
so the activation runs in the linear layer's GEMM epilogue instead of as a second pass
over memory. Applies to conv, conv_transpose and dense followed by relu, leaky_relu,
sigmoid or tanh, when the activation is the only reader of the linear layer's output
(which is not a graph output) and the layer has no activation yet.

The fused node keeps the linear layer's name, span and parameters (so parameter names do
not change); its output takes the activation layer's name and span, so every later layer
still reads the tensor the user named."""
from __future__ import annotations

import dataclasses

from cnnc.ir.graph import Graph
from cnnc.passes.rewrite import GraphCopy, readers, sole_reader

LINEAR_OPS = ("conv", "conv_transpose", "dense")
FUSABLE_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")


def fuse(graph: Graph) -> Graph:
    """A copy of ``graph`` with each fusable linear layer + activation pair merged."""
    out = GraphCopy(graph)
    reading = readers(graph)
    absorbed: set[int] = set()
    for node in graph.nodes:
        if id(node) in absorbed:
            continue
        act = sole_reader(graph, node, reading) if node.op in LINEAR_OPS else None
        if (act is None or act.op not in FUSABLE_ACTIVATIONS
                or node.attrs.activation != "none" or act.data_inputs != node.outputs):
            out.copy(node)
            continue
        alpha = act.attrs.alpha if act.op == "leaky_relu" else node.attrs.activation_alpha
        attrs = dataclasses.replace(node.attrs, activation=act.op, activation_alpha=alpha)
        fused = out.add(node, node.op, attrs, outputs=act.outputs)
        fused.outputs[0].span = act.span
        absorbed.add(id(act))
    return out.finish()

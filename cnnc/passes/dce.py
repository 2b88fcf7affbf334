"""Dead-code elimination."""
from __future__ import annotations

from cnnc.ir.graph import Graph
from cnnc.ir.types import Node
from cnnc.ops.registry import get_op
from cnnc.passes.rewrite import GraphCopy


def has_side_effect(node: Node) -> bool:
    """Whether running ``node`` matters beyond its outputs: it writes an input in place
    as its op declares (optimizer updates, batchnorm's running statistics), or it has no
    outputs at all."""
    declared = get_op(node.op).writes
    return not node.outputs or (declared is not None and bool(list(declared(node))))


def dce(graph: Graph) -> Graph:
    """A copy of ``graph`` without the nodes whose outputs reach no graph output and no
    node with a side effect. Graph inputs stay (they are the model's interface) even when
    unread; parameters go with their layer."""
    needed = {id(v) for v in graph.outputs}
    kept: set[int] = set()
    for node in reversed(graph.nodes):
        if has_side_effect(node) or any(id(v) in needed for v in node.outputs):
            kept.add(id(node))
            needed.update(id(v) for v in node.inputs)
    out = GraphCopy(graph)
    for node in graph.nodes:
        if id(node) in kept:
            out.copy(node)
    return out.finish()

"""In-place rewrites: an elementwise node whose op allows it (``OpDef.inplace_ok``: relu
and the other activations, ...) writes its output over its first input's buffer when
that is safe. The result is marked on the output Value as ``alias_of`` (the input Value);
the memory planner gives both one buffer, and the scheduler treats the node as writing
its input (a WAR edge from every other reader), so any later schedule keeps it safe.

Safe means: the input is an activation (not a graph input, parameter or state: those
are the caller's buffers); neither the input's buffer nor the output is a graph output
(outputs get buffers of their own); input and output have the same size (flatten may
alias too); and no other node reads that buffer (the input, or a value aliasing the
same buffer) after this node in the schedule.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, Value
from cnnc.ops.registry import get_op
from cnnc.passes.rewrite import copy_graph
from cnnc.passes.schedule import alias_root, schedule, value_bytes


def declares_inplace(node: Node) -> bool:
    """Whether ``node``'s op lets its output share its first input's buffer."""
    return get_op(node.op).inplace_ok


def inplace(graph: Graph, order: Sequence[Node] | None = None,
            allowed: Callable[[Node], bool] = declares_inplace) -> Graph:
    """A copy of ``graph``, nodes in ``order`` (default :func:`schedule`), with every
    legal in-place output marked ``alias_of`` its first input (see the module
    docstring). ``allowed`` says which nodes may run in place."""
    order = list(schedule(graph) if order is None else order)
    if sorted(map(id, order)) != sorted(map(id, graph.nodes)):
        raise ValueError(f"the order given is not an order of graph '{graph.name}''s nodes")
    pos = {id(n): i for i, n in enumerate(order)}
    last_read: dict[int, int] = {}     # buffer (root value id) -> its last reader's step
    for node in order:
        for v in node.inputs:
            key = id(alias_root(v))
            last_read[key] = max(last_read.get(key, -1), pos[id(node)])
    outputs = {id(alias_root(v)) for v in graph.outputs}
    aliases: dict[int, Value] = {}     # output id -> the input it overwrites
    roots: dict[int, int] = {}         # value id -> buffer id, including new aliases

    def buffer(v: Value) -> int:
        return roots.get(id(v), id(alias_root(v)))

    for node in order:
        if not (allowed(node) and node.outputs and node.inputs):
            continue
        x, y = node.inputs[0], node.outputs[0]
        key = buffer(x)
        if (x.kind != "activation" or key in outputs or id(y) in outputs
                or value_bytes(x) != value_bytes(y) or y.alias_of is not None
                or last_read.get(key) != pos[id(node)]
                or sum(v is x for v in node.inputs) != 1):
            continue
        aliases[id(y)] = x
        roots[id(y)] = key
        last_read[key] = last_read.get(id(y), pos[id(node)])  # y's readers now read it
    new = copy_graph(graph, order=order)
    for node in order:
        for v in node.outputs:
            if id(v) in aliases:
                new[v].alias_of = new[aliases[id(v)]]
    return new.finish()

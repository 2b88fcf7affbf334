"""Constant shapes for a concrete batch size."""
from __future__ import annotations

from cnnc.ir.graph import Graph
from cnnc.passes.rewrite import copy_graph


def resolve_batch(graph: Graph, n: int) -> Graph:
    """A copy of ``graph`` with the symbolic batch "N" replaced by ``n`` in every type
    (inputs, outputs and every intermediate; parameter shapes have no batch)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"batch size must be a positive int, got {n!r}")
    return copy_graph(graph, batch=n).finish()

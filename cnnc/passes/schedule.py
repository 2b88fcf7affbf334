"""The scheduler: the order in which a graph's nodes run.

Edges are RAW (a value's producer runs before its readers) and WAR: a node that writes one
of its inputs in place (an optimizer update writing its parameter and state, batchnorm
updating its running statistics, an activation whose output aliases its input) runs after
every other reader of that input (so every reader sees the value as it was before the
step's in-place writes); two writers of one value keep their graph order.
Kahn's algorithm over these edges gives a valid order; a cycle is a :class:`ScheduleError`.

Among the valid orders :func:`schedule` looks for one with a low peak of live activation
bytes: a greedy list scheduler runs side-effect nodes (updates: no outputs) as soon as they
are ready, so a weight gradient dies right after its update, and otherwise picks the ready
node that grows the live set least (outputs allocated minus inputs it is the last reader
of). The greedy choice is not always better than the graph's own order, so both are
measured with :func:`peak_bytes` and the lower peak wins: never worse than the plain order.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from cnnc.errors import CnncError
from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, Value
from cnnc.ops.registry import get_op

Writes = Callable[[Node], Iterable[Value]]


class ScheduleError(CnncError):
    """The graph's dependencies form a cycle (a bug in whatever built or rewrote it)."""


def written_inputs(node: Node) -> list[Value]:
    """The inputs ``node`` overwrites: those its op declares (``OpDef.writes(node)``, for
    optimizer updates and batchnorm's running statistics) and the input an output of the
    node aliases (marked by the in-place pass)."""
    declared = get_op(node.op).writes
    written = list(declared(node)) if declared is not None else []
    return written + [v.alias_of for v in node.outputs if v.alias_of is not None]


def dependencies(graph: Graph, writes: Writes = written_inputs) -> dict[Node, set[Node]]:
    """For every node, the nodes that must run before it (RAW and WAR edges)."""
    producer = {id(v): n for n in graph.nodes for v in n.outputs}
    readers: dict[int, list[Node]] = defaultdict(list)
    writers: dict[int, list[Node]] = defaultdict(list)
    preds: dict[Node, set[Node]] = {n: set() for n in graph.nodes}
    for node in graph.nodes:
        for v in {id(v): v for v in node.inputs}.values():
            readers[id(v)].append(node)
            if id(v) in producer:
                preds[node].add(producer[id(v)])
        for v in writes(node):
            writers[id(v)].append(node)
    for key, ws in writers.items():
        for r in readers[key]:
            if r not in ws:
                preds[ws[0]].add(r)
        for before, after in zip(ws, ws[1:]):
            preds[after].add(before)
    return preds


def value_bytes(value: Value, batch: int = 1) -> int:
    """Bytes of ``value`` with the symbolic batch taken as ``batch``."""
    return value.type.numel(batch) * np.dtype(value.type.dtype).itemsize


def alias_root(value: Value) -> Value:
    """The value owning the buffer ``value`` shares (itself when not an alias)."""
    while value.alias_of is not None:
        value = value.alias_of
    return value


def peak_bytes(graph: Graph, order: Sequence[Node], batch: int = 1) -> int:
    """The largest total of activation bytes live at one step of ``order``:
    a node's outputs live from its step to their last reader's (graph outputs to the end),
    aliases share their source's buffer. Graph inputs, params and state are not counted
    (they live in their own buffers). This is the memory plan's lower bound."""
    pos = {n: i for i, n in enumerate(order)}
    last: dict[int, int] = {}
    first: dict[int, tuple[int, Value]] = {}
    for node in order:
        for v in node.outputs:
            root = alias_root(v)
            if root.producer is not None:
                first.setdefault(id(root), (pos[root.producer], root))
                last[id(root)] = max(last.get(id(root), 0), pos[node])
        for v in node.inputs:
            root = alias_root(v)
            if id(root) in last:
                last[id(root)] = max(last[id(root)], pos[node])
    for v in graph.outputs:
        if id(alias_root(v)) in last:
            last[id(alias_root(v))] = len(order) - 1
    live = np.zeros(len(order) + 1, dtype=np.int64)
    for key, (start, root) in first.items():
        live[start] += value_bytes(root, batch)
        live[last[key] + 1] -= value_bytes(root, batch)
    live = np.cumsum(live)[:len(order)]
    return int(live.max(initial=0))


def _cycle(preds: dict[Node, set[Node]], stuck: list[Node]) -> list[Node]:
    """A cycle among the unscheduled nodes: each has an unscheduled predecessor, so
    walking predecessors must come back to a node already seen."""
    left = set(stuck)
    seen: dict[Node, int] = {}
    path: list[Node] = []
    node = stuck[0]
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(p for p in preds[node] if p in left)
    return list(reversed(path[seen[node]:]))


class _GraphOrder:
    """Ready nodes, popped in the graph's own order."""

    def __init__(self, graph: Graph):
        self.index = {n: i for i, n in enumerate(graph.nodes)}
        self.nodes = graph.nodes
        self.heap: list[int] = []

    def push(self, node: Node) -> None:
        heapq.heappush(self.heap, self.index[node])

    def pop(self) -> Node:
        return self.nodes[heapq.heappop(self.heap)]

    def __len__(self) -> int:
        return len(self.heap)


class _LeastGrowth:
    """Ready nodes, popped greedily: side-effect nodes first, then the node whose step
    grows the live bytes least; ties go to the most recently readied node, which finishes
    one branch before starting the next."""

    def __init__(self, graph: Graph, batch: int):
        self.ready: list[tuple[int, Node]] = []
        self.seq = 0
        self.batch = batch
        # Pending readers of every activation buffer (aliases count on their root);
        # graph outputs keep one reader that never runs.
        self.pending: dict[int, int] = defaultdict(int)
        for node in graph.nodes:
            for key in {id(alias_root(v)) for v in node.inputs}:
                self.pending[key] += 1
        for v in graph.outputs:
            self.pending[id(alias_root(v))] += 1

    def push(self, node: Node) -> None:
        self.ready.append((self.seq, node))
        self.seq += 1

    def _growth(self, node: Node) -> int:
        grown = sum(value_bytes(v, self.batch) for v in node.outputs
                    if v.alias_of is None)
        for root in {id(r): r for r in map(alias_root, node.inputs)}.values():
            if root.producer is not None and self.pending[id(root)] == 1:
                grown -= value_bytes(root, self.batch)
        return grown

    def pop(self) -> Node:
        best = min(range(len(self.ready)), key=lambda i: (
            bool(self.ready[i][1].outputs), self._growth(self.ready[i][1]),
            -self.ready[i][0]))
        node = self.ready.pop(best)[1]
        for key in {id(alias_root(v)) for v in node.inputs}:
            self.pending[key] -= 1
        return node

    def __len__(self) -> int:
        return len(self.ready)


def _kahn(graph: Graph, preds: dict[Node, set[Node]], ready: _GraphOrder | _LeastGrowth
          ) -> list[Node]:
    """Kahn's algorithm; ``ready`` holds the nodes whose predecessors all ran and
    chooses which runs next."""
    succs: dict[Node, list[Node]] = {n: [] for n in graph.nodes}
    indegree = {n: len(ps) for n, ps in preds.items()}
    for node, ps in preds.items():
        for p in ps:
            succs[p].append(node)
    for node in graph.nodes:
        if indegree[node] == 0:
            ready.push(node)
    order: list[Node] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for s in succs[node]:
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.push(s)
    if len(order) < len(graph.nodes):
        stuck = [n for n in graph.nodes if indegree[n] > 0]
        loop = " -> ".join(f"{n.op} '{n.name}'" for n in _cycle(preds, stuck))
        raise ScheduleError(f"cannot schedule graph '{graph.name}': its dependencies form "
                            f"a cycle: {loop} -> back to the first")
    return order


def plain_order(graph: Graph, writes: Writes = written_inputs) -> list[Node]:
    """Kahn's algorithm taking ready nodes in the graph's own order (so the graph's order
    itself when it already respects every edge)."""
    return _kahn(graph, dependencies(graph, writes), _GraphOrder(graph))


def schedule(graph: Graph, writes: Writes = written_inputs, batch: int = 1) -> list[Node]:
    """A valid execution order of ``graph``'s nodes with a low peak of live bytes
    (measured at ``batch``): the greedy order or the plain one, whichever peaks lower.

    ``writes(node)`` lists the inputs a node overwrites (default :func:`written_inputs`).
    Raises ScheduleError naming the nodes of a dependency cycle.
    """
    preds = dependencies(graph, writes)
    plain = _kahn(graph, preds, _GraphOrder(graph))
    greedy = _kahn(graph, preds, _LeastGrowth(graph, batch))
    return min((greedy, plain), key=lambda order: peak_bytes(graph, order, batch))

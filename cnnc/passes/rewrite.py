"""How a pass builds its result: a :class:`GraphCopy` copies the nodes a pass keeps (or
replaces) into a fresh Graph, mapping every old value to its new counterpart, so the input
graph is never changed. Parameters are copied too (new Values of the same name, type and
kind), so no Value is shared between two graphs."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, TensorType, Value


def readers(graph: Graph) -> dict[int, list[Node]]:
    """For every value (by id), the nodes reading it, in graph order, each once."""
    found: dict[int, list[Node]] = {}
    for node in graph.nodes:
        for key in dict.fromkeys(map(id, node.inputs)):
            found.setdefault(key, []).append(node)
    return found


def sole_reader(graph: Graph, node: Node, reading: dict[int, list[Node]]) -> Node | None:
    """The one node reading ``node``'s single output (``reading`` from :func:`readers`),
    or None if it has several readers, none, or is a graph output."""
    if len(node.outputs) != 1 or any(v is node.outputs[0] for v in graph.outputs):
        return None
    found = reading.get(id(node.outputs[0]), [])
    return found[0] if len(found) == 1 else None


class GraphCopy:
    """A new graph being built from ``old``; ``batch`` (if given) replaces the symbolic
    batch in every type. Nodes are added in the order they are copied."""

    def __init__(self, old: Graph, batch: int | None = None):
        self.old = old
        self.batch = batch
        self.graph = Graph(old.name)
        self._map: dict[int, Value] = {}
        for v in old.inputs + old.states:
            new = self.graph.add_value(v.name, self._type(v.type), v.kind)
            new.span = v.span
            self._map[id(v)] = new

    def _type(self, t: TensorType) -> TensorType:
        return t if self.batch is None else t.with_batch(self.batch)

    def __getitem__(self, old_value: Value) -> Value:
        """The new graph's counterpart of ``old_value``."""
        return self._map[id(old_value)]

    def redirect(self, old_value: Value, new_value: Value) -> None:
        """Make every later reader of ``old_value`` read ``new_value`` (a value of the new
        graph) instead: how a pass removes a node or merges two."""
        self._map[id(old_value)] = new_value

    def copy(self, node: Node) -> Node:
        """Copy ``node`` unchanged (its inputs mapped)."""
        return self.add(node, node.op, node.attrs)

    def add(self, like: Node, op: str, attrs: Any, *,
            params: Mapping[str, Value] | None = None,
            outputs: Sequence[Value] | None = None) -> Node:
        """Add a node built like ``like`` (its name, span, trainable flag and data inputs,
        mapped) with ``op`` and ``attrs``. ``params`` are the new node's parameters (old
        Values to copy, default ``like``'s own); ``outputs`` are old Values whose names,
        spans and aliasing the new outputs take (default ``like``'s), and whose readers
        then read the new outputs. Output types come from the op's shape rule."""
        own = like.params if params is None else params
        fresh = {k: dataclasses.replace(v, type=self._type(v.type), producer=None)
                 for k, v in own.items()}
        for k, v in own.items():  # other nodes (gradients, updates) may read them too
            self.redirect(v, fresh[k])
        node = self.graph.add_node(op, [self[v] for v in like.data_inputs], attrs,
                                   like.name, like.span, params=fresh,
                                   trainable=like.trainable)
        if node.name != like.name:
            raise ValueError(f"copying node '{like.name}': the name is taken")
        olds = like.outputs if outputs is None else outputs
        if len(olds) != len(node.outputs):
            raise ValueError(f"copying node '{like.name}': {len(node.outputs)} outputs, "
                             f"expected {len(olds)}")
        for old, new in zip(olds, node.outputs):
            if new.name != old.name:
                self.graph.rename_value(new, old.name)
            new.span = old.span
            if old.alias_of is not None:
                new.alias_of = self[old.alias_of]
            self.redirect(old, new)
        return node

    def finish(self) -> Graph:
        """The new graph, its outputs mapped from the old graph's."""
        self.graph.set_outputs([self[v] for v in self.old.outputs])
        return self.graph


def copy_graph(graph: Graph, batch: int | None = None,
               order: Sequence[Node] | None = None) -> GraphCopy:
    """A GraphCopy with every node of ``graph`` copied (in ``order`` if given)."""
    out = GraphCopy(graph, batch)
    for node in graph.nodes if order is None else order:
        out.copy(node)
    return out

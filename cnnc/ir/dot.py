"""Graphviz DOT export of a graph (``cnnc graph spec.cnn``; render with ``dot -Tsvg``).

Layers are boxes showing the op (with a fused activation), the layer's name, its output
shape and the .cnn line it comes from; inputs and outputs are ellipses; edges carry the
shape of the tensor they move. Parameters are left out unless asked for.
"""
from __future__ import annotations

from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, Value

LINE_TEXT_MAX = 40   # characters of the source line shown in a box


def _quote(text: str) -> str:
    """A DOT string literal; newlines become DOT's centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _ellipse(vid: str, title: str, value: Value, extra: str = "") -> str:
    return f"  {vid} [shape=ellipse{extra}, label={_quote(title + chr(10) + str(value.type))}];"


def _op_text(node: Node) -> str:
    activation = getattr(node.attrs, "activation", "none")
    return node.op if activation == "none" else f"{node.op} + {activation}"


def _node_label(node: Node) -> str:
    lines = [f"{node.name}: {_op_text(node)}"]
    lines += [f"{v.name} {v.type}" if v.name != node.name else str(v.type)
              for v in node.outputs]
    if any(v.alias_of is not None for v in node.outputs):
        lines.append("(in place)")
    if node.span is not None:
        where = f"{node.span.file}:{node.span.line}"
        text = node.span.line_text.strip()
        if len(text) > LINE_TEXT_MAX:
            text = text[:LINE_TEXT_MAX - 3] + "..."
        lines.append(f"{where}  {text}" if text else where)
    return "\n".join(lines)


def to_dot(graph: Graph, params: bool = False) -> str:
    """The graph as Graphviz DOT text; ``params=True`` also draws every parameter and
    state as a small ellipse with a dashed edge into its layer (and free-standing states,
    such as optimizer moments, with their edges)."""
    ids: dict[int, str] = {}
    lines = [f"digraph {_quote(graph.name)} {{",
             "  rankdir=TB;",
             '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for i, v in enumerate(graph.inputs + (graph.states if params else [])):
        ids[id(v)] = f"v{i}"
        lines.append(_ellipse(f"v{i}", f"{v.name} ({v.kind})", v))
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            ids[id(v)] = f"n{i}"
        lines.append(f"  n{i} [label={_quote(_node_label(node))}];")
    for i, node in enumerate(graph.nodes):
        own = {id(p) for p in node.params.values()}
        for v in node.inputs:
            if id(v) in own or id(v) not in ids:
                continue
            label = str(v.type) if v.producer is None or v.name == v.producer.name \
                else f"{v.name} {v.type}"
            lines.append(f"  {ids[id(v)]} -> n{i} [label={_quote(label)}];")
        if params:
            for j, p in enumerate(node.params.values()):
                pid = ids[id(p)] = f"p{i}_{j}"  # backward and update nodes read it too
                lines.append(_ellipse(pid, p.name, p, ", fontsize=8"))
                lines.append(f"  {pid} -> n{i} [style=dashed];")
    for k, v in enumerate(graph.outputs):
        lines.append(_ellipse(f"out{k}", f"output {v.name}", v, ", peripheries=2"))
        lines.append(f"  {ids[id(v)]} -> out{k} [label={_quote(str(v.type))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"

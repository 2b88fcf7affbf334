"""A Keras-like summary of a graph: per layer its type, output shape, parameters, MACs.

Parameter counts follow Keras: batchnorm running statistics (kind "state") and the
parameters of layers built with ``trainable=False`` count as non-trainable. MACs are the
forward multiply-accumulates per image that each op's MAC rule counts (conv,
conv_transpose and dense; see docs/architecture.md).
"""
from __future__ import annotations

from typing import Any

from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, TensorType, Value
from cnnc.ops.registry import get_op


def _shape(t: TensorType, batch: int | None) -> list[int | str]:
    return list(t.with_batch(batch).shape if batch is not None else t.shape)


def _source(value: Value) -> str:
    return value.producer.name if value.producer is not None else value.name


def _node_macs(node: Node) -> int:
    opdef = get_op(node.op)
    return opdef.mac_rule([v.type for v in node.data_inputs], node.output.type, node.attrs)


def summarize(graph: Graph, batch: int | None = None) -> dict[str, Any]:
    """The graph's summary as plain data (JSON-ready).

    Keys: ``name``; ``layers``: one dict per input and layer with ``name``, ``type`` (the
    op, or "input"), ``output_shape`` (batch as "N", or ``batch``), ``params``, ``macs``,
    ``connected_to`` (the names of the layers/inputs producing its data inputs);
    ``total_params``, ``trainable_params``, ``non_trainable_params``, ``macs`` (per
    image), ``chain`` (whether every layer just consumes the one before it).
    """
    layers: list[dict[str, Any]] = []
    for value in graph.inputs:
        layers.append({"name": value.name, "type": "input",
                       "output_shape": _shape(value.type, batch), "params": 0, "macs": 0,
                       "connected_to": []})
    trainable = non_trainable = macs = 0
    for node in graph.nodes:
        count = 0
        for param in node.params.values():
            n = param.type.numel()
            count += n
            if param.kind == "param" and node.trainable:
                trainable += n
            else:
                non_trainable += n
        node_macs = _node_macs(node)
        macs += node_macs
        layers.append({"name": node.name, "type": node.op,
                       "output_shape": _shape(node.output.type, batch), "params": count,
                       "macs": node_macs,
                       "connected_to": [_source(v) for v in node.data_inputs]})
    return {"name": graph.name, "layers": layers, "total_params": trainable + non_trainable,
            "trainable_params": trainable, "non_trainable_params": non_trainable,
            "macs": macs, "chain": _is_chain(graph)}


def _is_chain(graph: Graph) -> bool:
    """One input, and every layer takes exactly the previous layer's (or the input's)
    output (so nothing else can read it)."""
    if len(graph.inputs) != 1:
        return False
    previous = graph.inputs[0]
    for node in graph.nodes:
        if node.data_inputs != [previous]:
            return False
        previous = node.output
    return True


def _fmt_shape(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_macs(n: int) -> str:
    """A MAC count with thousands separators and an engineering suffix: "1,814,073,856
    (1.81 G)"."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n:,} ({n / scale:.2f} {suffix})"
    return f"{n:,}"


def format_summary(summary: dict[str, Any]) -> str:
    """Render :func:`summarize`'s dict as a Keras-model.summary()-like table."""
    headers = ["Layer (type)", "Output Shape", "Param #", "MACs"]
    rows = [[f"{layer['name']} ({layer['type']})", _fmt_shape(layer["output_shape"]),
             f"{layer['params']:,}", f"{layer['macs']:,}"] for layer in summary["layers"]]
    if not summary.get("chain", False):
        headers.append("Connected to")
        for row, layer in zip(rows, summary["layers"]):
            row.append(", ".join(layer["connected_to"]))
    widths = [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(headers)]
    width = sum(widths)

    def line(cells: list[str]) -> str:
        return "".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [f'Model: "{summary["name"]}"', "_" * width, line(headers), "=" * width]
    for i, row in enumerate(rows):
        out.append(line(row))
        out.append("_" * width if i < len(rows) - 1 else "=" * width)
    out += [
        f"Total params: {summary['total_params']:,}",
        f"Trainable params: {summary['trainable_params']:,}",
        f"Non-trainable params: {summary['non_trainable_params']:,}",
        f"Total MACs per image: {format_macs(summary['macs'])}",
        "_" * width,
        "Convention: batchnorm running statistics and frozen layers count as non-trainable",
        "params (as in Keras); MACs count conv, conv_transpose and dense products.",
    ]
    return "\n".join(out)

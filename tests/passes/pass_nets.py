"""Graphs for the pass tests, built from .cnn source as a user writes it."""
from pathlib import Path

import cnnc.dsl
from cnnc.ir import Graph

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.cnn"))


def load(body: str, input_shape: str = "[3, 8, 8]") -> Graph:
    """The graph of a spec with one input ``x`` and the given ``layers`` body."""
    text = f"network T\ninput x: {input_shape}\nlayers {{\n{body}\n}}\n"
    return cnnc.dsl.load(text).graph


def spec_graph(path: Path) -> Graph:
    return cnnc.dsl.load(path).graph


def snapshot(graph: Graph) -> tuple:
    """Everything a pass could change in place: node identities, names, ops, attrs,
    inputs, outputs with their types and aliases, parameter identities and types."""
    return (
        [(id(n), n.name, n.op, n.attrs, n.span, [id(v) for v in n.inputs],
          [(id(v), v.name, v.type, v.kind, v.span, id(v.alias_of)) for v in n.outputs],
          [(id(p), p.name, p.type) for p in n.params.values()]) for n in graph.nodes],
        [(id(v), v.type) for v in graph.inputs], [id(v) for v in graph.outputs],
        dict(graph.params))


# An Inception module: four branches of a 1x1 reduction and a wider conv, joined.
INCEPTION = """
    stem = conv(32, kernel=3, padding=1) relu
    b1 = stem conv(16, kernel=1) relu
    b2 = stem conv(8, kernel=1) relu conv(24, kernel=3, padding=1) relu
    b3 = stem conv(4, kernel=1) relu conv(8, kernel=5, padding=2) relu
    b4 = stem maxpool(3, stride=1, padding=1) conv(8, kernel=1) relu
    concat(b1, b2, b3, b4) global_avgpool flatten dense(10)
"""

# One U-Net level: encode, go down, come back up and join the skip tensor.
UNET = """
    e = conv(8, kernel=3, padding=1, bias=false) batchnorm relu
    d = e maxpool(2) conv(16, kernel=3, padding=1) relu
    u = d conv_transpose(8, kernel=2, stride=2)
    concat(e, u) conv(8, kernel=3, padding=1) relu conv(2, kernel=1) softmax
"""

"""Graphviz DOT export."""
import re

import pytest

from cnnc.autodiff import build_training_graph
from cnnc.dsl.train import Option
from cnnc.ir import Graph
from cnnc.ir.dot import to_dot
from cnnc.passes import optimize

from pass_nets import SPECS, load, spec_graph

EDGE = re.compile(r"^  (\w+) -> (\w+) \[(.*)\];$")
NODE = re.compile(r"^  (\w+) \[(.*)\];$")


def parse(text):
    """(declared node ids, edges as (from, to, attributes)); checks the framing."""
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if (m := EDGE.match(line)):
            edges.append(m.groups())
        elif (m := NODE.match(line)) and m.group(1) not in ("node", "edge"):
            nodes[m.group(1)] = m.group(2)
    for a, b, _ in edges:
        assert a in nodes and b in nodes
    for line in lines:  # every string literal closed on its line
        assert line.replace('\\\\', '').replace('\\"', '').count('"') % 2 == 0
    return nodes, edges


def test_layers_are_boxes_with_op_name_shape_and_source_line():
    graph = load("conv(4, kernel=3) relu flatten dense(2)")
    nodes, edges = parse(to_dot(graph))
    conv = nodes["n0"]
    assert "conv_1: conv" in conv and "[N, 4, 6, 6]" in conv and "<spec>:4" in conv
    assert "conv(4, kernel=3) relu flatten dense(2)" in conv
    assert ("v0", "n0", 'label="[N, 3, 8, 8]"') in edges
    assert ("n0", "n1", 'label="[N, 4, 6, 6]"') in edges
    assert any(b.startswith("out") for _, b, _ in edges)
    assert not any("weight" in label for label in nodes.values())


def test_fused_and_in_place_layers_say_so_and_params_can_be_shown():
    graph = optimize(load("conv(4, kernel=3) relu maxpool(3, stride=2) relu flatten"), "infer")
    text = to_dot(graph, params=True)
    nodes, edges = parse(text)
    assert "conv + relu" in nodes["n0"] and "relu_1 [N, 4, 6, 6]" in nodes["n0"]
    assert "(in place)" in nodes["n2"]
    weight = next(k for k, v in nodes.items() if "conv_1.weight" in v)
    assert (weight, "n0", "style=dashed") in edges


def test_quotes_and_backslashes_are_escaped():
    graph = Graph('my "net"')
    x = graph.add_input("x", (3,))
    graph.set_outputs([graph.add_layer("relu", [x], name='a"b\\c')])
    text = to_dot(graph)
    parse(text)
    assert text.startswith('digraph "my \\"net\\"" {')
    assert 'label="a\\"b\\\\c: relu' in text


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_export(path):
    graph = spec_graph(path)
    nodes, edges = parse(to_dot(graph))
    assert sum(k.startswith("n") for k in nodes) == len(graph.nodes)
    data_edges = sum(len(n.data_inputs) for n in graph.nodes) + len(graph.outputs)
    assert len(edges) == data_edges


def test_training_graphs_export_with_their_parameters_and_states():
    graph = load("conv(4, kernel=3) relu flatten dense(3)")
    step = build_training_graph(graph, optimizer=Option("adam", {"lr": 1e-3}))
    nodes, edges = parse(to_dot(step, params=True))
    update = next(k for k, v in nodes.items() if "conv_1/weight/update: adam_update" in v)
    weight = next(k for k, v in nodes.items() if 'label="conv_1.weight' in v)
    into_update = {a for a, b, _ in edges if b == update}
    assert weight in into_update           # the parameter it writes
    assert any("(state)" in nodes[a] for a in into_update)   # its Adam moments
    assert len(nodes) > len(step.nodes) and len(to_dot(step)) < len(to_dot(step, True))

"""Activation fusion: conv/conv_transpose/dense + activation -> one node."""
import pytest

from cnnc.ir.verify import verify
from cnnc.passes import fuse

from pass_nets import SPECS, load, snapshot, spec_graph


def test_conv_relu_becomes_one_node_named_like_the_user_named_it():
    graph = load("conv(4, kernel=3) relu maxpool(2)")
    fused = fuse(graph)
    verify(fused)
    assert [n.op for n in fused.nodes] == ["conv", "maxpool"]
    conv = fused.nodes[0]
    relu = graph.node("relu_1")
    assert conv.name == "conv_1" and conv.span == graph.node("conv_1").span
    assert conv.attrs.activation == "relu"
    assert conv.output.name == "relu_1" and conv.output.span == relu.span
    assert fused.value("relu_1") is conv.output
    assert list(conv.params) == ["weight", "bias"]
    assert conv.params["weight"].name == "conv_1.weight"
    assert fused.nodes[1].inputs == [conv.output]


@pytest.mark.parametrize("act,alpha", [("relu", 0.3), ("leaky_relu(0.05)", 0.05),
                                       ("sigmoid", 0.3), ("tanh", 0.3)])
@pytest.mark.parametrize("layer", ["conv(4, kernel=3)", "conv_transpose(4, kernel=2)",
                                   "flatten dense(5)"])
def test_each_linear_layer_takes_each_activation(layer, act, alpha):
    graph = load(f"{layer} {act}")
    fused = fuse(graph)
    verify(fused)
    linear = fused.nodes[-1]
    assert len(fused.nodes) == len(graph.nodes) - 1
    assert linear.attrs.activation == act.split("(")[0]
    assert linear.attrs.activation_alpha == pytest.approx(alpha)
    assert fused.outputs == [linear.output]
    assert linear.output.name == graph.outputs[0].name


@pytest.mark.parametrize("body", [
    "c = conv(4, kernel=3)\n r = c relu\n add(r, c)",        # conv output read twice
    "conv(4, kernel=3, activation=tanh) relu",                # already has an activation
    "conv(4, kernel=3) softmax",                              # not a fusable activation
    "conv(4, kernel=3) batchnorm relu",                       # not directly after
    "maxpool(2) relu",                                        # not a linear layer
])
def test_unfusable_pairs_stay_apart(body):
    graph = load(body)
    fused = fuse(graph)
    verify(fused)
    assert [(n.op, n.attrs) for n in fused.nodes] == [(n.op, n.attrs) for n in graph.nodes]


def test_a_linear_layer_that_is_a_graph_output_is_not_fused():
    # the conv's own output is the graph output: fusing would change what is returned
    graph = load("c = conv(4, kernel=3)\n c relu")
    graph.set_outputs([graph.value("conv_1"), graph.value("relu_1")])
    fused = fuse(graph)
    verify(fused)
    assert len(fused.nodes) == 2


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_fuse_and_verify(path):
    graph = spec_graph(path)
    before = snapshot(graph)
    fused = fuse(graph)
    verify(fused)
    assert snapshot(graph) == before
    n_acts = sum(n.op in ("relu", "leaky_relu", "sigmoid", "tanh") and
                 n.inputs[0].producer is not None and
                 n.inputs[0].producer.op in ("conv", "conv_transpose", "dense")
                 for n in graph.nodes)
    assert len(fused.nodes) == len(graph.nodes) - n_acts
    # every value the user named that survives is still there, under its name
    kept = {v.name for n in fused.nodes for v in n.outputs}
    absorbed = {n.name for n in graph.nodes} - kept
    assert all(graph.node(name).op in ("conv", "conv_transpose", "dense")
               for name in absorbed)
    assert set(fused.params) == set(graph.params)
    assert [v.name for v in fused.outputs] == [v.name for v in graph.outputs]

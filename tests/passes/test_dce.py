"""Dead-code elimination."""
import pytest

from cnnc.autodiff import build_training_graph
from cnnc.dsl.train import Option
from cnnc.ir.verify import verify
from cnnc.passes import dce

from pass_nets import SPECS, load, snapshot, spec_graph


def test_a_branch_reaching_no_output_goes_with_its_parameters():
    graph = load("""
        a = conv(4, kernel=3) relu
        dead = a conv(2, kernel=1) relu
        a maxpool(2)
    """)
    before = snapshot(graph)
    out = dce(graph)
    verify(out)
    assert snapshot(graph) == before
    assert [n.name for n in out.nodes] == ["conv_1", "relu_1", "maxpool_1"]
    assert sorted(out.params) == ["conv_1.bias", "conv_1.weight"]
    assert [v.name for v in out.inputs] == ["x"]


def test_an_unread_input_stays():
    graph = load("c = x relu\n x sigmoid")
    graph.set_outputs([graph.value("sigmoid_1")])
    out = dce(graph)
    assert [n.op for n in out.nodes] == ["sigmoid"] and len(out.inputs) == 1


def test_nodes_with_side_effects_stay():
    # batchnorm's training form updates its running statistics: kept although its
    # output reaches nothing; the softmax the loss does not need goes.
    graph = load("a = conv(4, kernel=3)\n b = a batchnorm\n a flatten dense(3) softmax")
    step = build_training_graph(graph, gradients=False)
    out = dce(step)
    verify(out)
    assert [n.op for n in out.nodes] == ["conv", "batchnorm_train", "flatten", "dense",
                                         "softmax_xent"]
    # optimizer updates have no outputs and are kept, with everything they read
    step = build_training_graph(graph, optimizer=Option("sgd", {"lr": 0.1}))
    out = dce(step)
    verify(out)
    updates = [n for n in step.nodes if not n.outputs]
    assert updates and all(out.node(n.name).op == n.op for n in updates)
    assert "batchnorm_1" in {n.name for n in out.nodes}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_have_no_dead_code(path):
    graph = spec_graph(path)
    out = dce(graph)
    verify(out)
    assert [n.name for n in out.nodes] == [n.name for n in graph.nodes]

"""Constant shapes for a concrete batch size."""
import pytest

from cnnc.autodiff import build_training_graph
from cnnc.dsl.train import Option
from cnnc.ir import BATCH
from cnnc.ir.verify import verify
from cnnc.passes import optimize, resolve_batch

from pass_nets import SPECS, load, snapshot, spec_graph


def all_types(graph):
    return ([v.type for v in graph.inputs + graph.states]
            + [v.type for n in graph.nodes for v in n.inputs + n.outputs])


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_resolve_to_concrete_shapes(path):
    graph = spec_graph(path)
    before = snapshot(graph)
    out = resolve_batch(graph, 7)
    verify(out)
    assert snapshot(graph) == before
    assert all(BATCH not in t.shape for t in all_types(out))
    for old, new in zip(graph.nodes, out.nodes):
        assert new.name == old.name and new.span == old.span
        assert new.output.type == old.output.type.with_batch(7)
        assert [p.type for p in new.params.values()] == [p.type for p in old.params.values()]
    infer = optimize(graph, "infer")
    out = resolve_batch(infer, 2)
    verify(out)
    assert [type(p) for p in out.params.values()] == [type(p) for p in infer.params.values()]
    assert [v.alias_of is None for n in out.nodes for v in n.outputs] == \
        [v.alias_of is None for n in infer.nodes for v in n.outputs]


def test_training_graphs_resolve_too():
    graph = load("conv(4, kernel=3) batchnorm relu flatten dense(3)")
    step = build_training_graph(optimize(graph, "train"),
                                optimizer=Option("adam", {"lr": 1e-3}))
    out = resolve_batch(step, 5)
    verify(out)
    assert out.inputs[0].type.shape == (5, 3, 8, 8)
    assert all(isinstance(d, int) for t in all_types(out) for d in t.shape)
    assert len(out.states) == len(step.states) > 0


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_bad_batch_sizes_are_refused(n):
    with pytest.raises(ValueError, match="batch size"):
        resolve_batch(load("relu"), n)

"""The pass pipelines: each pass verified, the result computing what the input did."""
import numpy as np
import pytest

from cnnc.autodiff import build_training_graph
from cnnc.ir.verify import verify
from cnnc.passes import (PIPELINES, dce, inplace, optimize, optimize_training, peak_bytes,
                         plain_order, schedule)
from cnnc.runtime import Plan

from pass_nets import INCEPTION, SPECS, UNET, load, snapshot, spec_graph

RESNET_BLOCK = """
    s = conv(8, kernel=3, padding=1, bias=false) batchnorm relu
    m = s conv(8, kernel=3, padding=1, bias=false) batchnorm relu
      conv(8, kernel=3, padding=1, bias=false) batchnorm
    add(m, s) relu dropout(0.3) global_avgpool flatten dense(4)
"""
NETS = {"inception": (INCEPTION, "[3, 8, 8]"), "unet": (UNET, "[3, 16, 16]"),
        "resnet_block": (RESNET_BLOCK, "[3, 9, 7]")}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_every_pass_of_each_pipeline_verifies_on_specs(path, mode):
    graph = spec_graph(path)
    before = snapshot(graph)
    out = graph
    for run in PIPELINES[mode]:
        out = run(out)
        verify(out)
    assert snapshot(graph) == before
    # every spec has a fusable conv/dense + activation; fold and strip only infer
    assert len(out.nodes) < len(graph.nodes) or mode == "train" and \
        len(out.nodes) == len(graph.nodes) and any(n.op == "batchnorm" for n in graph.nodes)
    assert [v.name for v in out.outputs] == [v.name for v in graph.outputs]
    if mode == "infer":
        assert not any(n.op in ("dropout", "identity") for n in out.nodes)
        assert peak_bytes(out, schedule(out)) <= peak_bytes(graph, plain_order(graph))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        optimize(load("relu"), "eval")


def random_storage(graph, rng):
    return {name: (rng.uniform(0.5, 2.0, v.type.shape) if name.endswith("running_var")
                   else rng.standard_normal(v.type.shape)).astype(np.float32)
            for name, v in graph.params.items()}


def run(graph, storage, feeds, mode):
    """The graph's outputs for ``feeds`` (a fresh copy of ``storage``: steps may update
    state in place)."""
    plan = Plan(graph, len(next(iter(feeds.values()))), {k: v.copy() for k, v in
                                                        storage.items()},
                np.zeros(1, np.int64), np.ones(1), mode=mode)
    for name, value in feeds.items():
        plan.inputs[name][...] = value
    plan.run()
    return [plan.array(v).copy() for v in graph.outputs]


@pytest.mark.parametrize("net", NETS)
def test_optimized_inference_computes_the_same(net):
    graph = load(*NETS[net])
    rng = np.random.default_rng(5)
    storage = random_storage(graph, rng)
    shape = (3,) + graph.inputs[0].type.shape[1:]
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    optimized = optimize(graph, "infer")
    assert len(optimized.nodes) < len(graph.nodes)
    (expected,), (got,) = run(graph, storage, feeds, "infer"), \
        run(optimized, storage, feeds, "infer")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("net", NETS)
def test_optimized_training_graph_computes_the_same_loss_and_gradients(net):
    graph = load(*NETS[net])
    rng = np.random.default_rng(6)
    storage = random_storage(graph, rng)
    step = build_training_graph(optimize(graph, "train"))  # loss + gradients as outputs
    verify(step)
    out = dce(step)
    verify(out)
    out = inplace(out)
    verify(out)
    assert any(v.alias_of is not None for n in out.nodes for v in n.outputs)
    assert [v.name for v in optimize_training(step).outputs] == [v.name for v in step.outputs]
    labels = step.value("labels")
    shape = (4,) + graph.inputs[0].type.shape[1:]
    feeds = {"x": rng.standard_normal(shape).astype(np.float32),
             "labels": rng.integers(0, int(graph.outputs[0].type.shape[1]),
                                    labels.type.with_batch(4).shape).astype(labels.type.dtype)}
    expected, got = run(step, storage, feeds, "train"), run(out, storage, feeds, "train")
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)
    assert peak_bytes(out, schedule(out)) <= peak_bytes(step, plain_order(step))

"""Activation fusion: conv/conv_transpose/dense/add + activation -> one node; in training
graphs batchnorm_train + relu too, and the gradient nodes that go with them; in inference
graphs conv -> 2x2 max-pool too."""
from collections import Counter

import pytest

from cnnc.autodiff import build_training_graph
from cnnc.ir.verify import verify
from cnnc.passes import fuse, optimize

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
                 n.inputs[0].producer.op in ("conv", "conv_transpose", "dense", "add")
                 for n in graph.nodes)
    assert len(fused.nodes) == len(graph.nodes) - n_acts
    # every value the user named that survives is still there, under its name
    kept = {v.name for n in fused.nodes for v in n.outputs}
    absorbed = {n.name for n in graph.nodes} - kept
    assert all(graph.node(name).op in ("conv", "conv_transpose", "dense", "add")
               for name in absorbed)
    assert set(fused.params) == set(graph.params)
    assert [v.name for v in fused.outputs] == [v.name for v in graph.outputs]


@pytest.mark.parametrize("act,alpha", [("relu", 0.3), ("leaky_relu(0.05)", 0.05),
                                       ("sigmoid", 0.3), ("tanh", 0.3)])
def test_add_takes_the_activation_after_it(act, alpha):
    graph = load(f"a = x conv(4, kernel=3)\n b = x conv(4, kernel=3)\n add(a, b) {act}")
    fused = fuse(graph)
    verify(fused)
    add = fused.nodes[-1]
    assert [n.op for n in fused.nodes] == ["conv", "conv", "add"]
    assert add.name == "add_1" and add.attrs.activation == act.split("(")[0]
    assert add.attrs.activation_alpha == pytest.approx(alpha)
    assert add.output.name == graph.outputs[0].name and fused.outputs == [add.output]


def test_batchnorm_takes_relu_only_in_its_training_form():
    graph = load("conv(4, kernel=3) batchnorm relu")
    assert [n.op for n in fuse(graph).nodes] == ["conv", "batchnorm", "relu"]
    training = build_training_graph(graph, "mse", None)
    fused = fuse(training)
    verify(fused)
    bn = fused.node("batchnorm_1")
    assert bn.op == "batchnorm_train" and bn.attrs.activation == "relu"
    assert bn.outputs[0].name == "relu_1"
    # relu's gradient merged into the batchnorm's: it reads dy, x, mean, invstd, gamma,
    # beta (and finds relu's zeros from them), not relu's output
    grad = fused.node("batchnorm_1/dx")
    assert grad.attrs.activation == "relu"
    assert grad.inputs[1:] == [bn.inputs[0], *bn.outputs[1:], bn.params["gamma"],
                               bn.params["beta"]]
    assert grad.inputs[0].name == training.node("relu_1/dx").inputs[0].name
    assert "relu_1/dx" not in {n.name for n in fused.nodes}


def test_batchnorm_sigmoid_and_a_shared_batchnorm_output_stay_apart():
    for body in ("conv(4, kernel=3) batchnorm sigmoid",
                 "b = conv(4, kernel=3) batchnorm\n r = b relu\n add(r, b)"):
        training = build_training_graph(load(body), "mse", None)
        fused = fuse(training)
        verify(fused)
        assert all(n.attrs.activation == "none"
                   for n in fused.nodes if n.op.startswith("batchnorm"))


# A ResNet basic block twice (identity shortcut), as in every ResNet stage.
BLOCKS = """
    x = conv(4, kernel=3, padding=1, bias=false) batchnorm relu
    m = x conv(4, kernel=3, padding=1, bias=false) batchnorm relu
          conv(4, kernel=3, padding=1, bias=false) batchnorm
    y = add(m, x) relu
    n = y conv(4, kernel=3, padding=1, bias=false) batchnorm relu
          conv(4, kernel=3, padding=1, bias=false) batchnorm
    add(n, y) relu global_avgpool dense(3)
"""


def test_residual_blocks_lose_every_relu_and_the_gradient_sums():
    training = build_training_graph(load(BLOCKS), "mse", None)
    fused = fuse(training)
    verify(fused)
    ops = Counter(n.op for n in fused.nodes)
    before = Counter(n.op for n in training.nodes)
    assert before["relu"] == 5 and ops["relu"] == 0
    assert before["act_backward"] == 5 and ops["act_backward"] == 2
    # the sums of the gradients of x and y (each read by a conv and an add): y's merged
    # into relu_5's act_backward; x's stays, relu_1's act_backward went into batchnorm_1's
    assert before["add"] == 4 and ops["add"] == 3
    merged = fused.node("relu_3/dx")
    assert len(merged.inputs) == 3 and merged.inputs[-1].name == "relu_3"
    assert {v.name for v in merged.inputs[:2]} == \
        {v.name for v in training.node("relu_3/gradsum").inputs}
    assert [n.attrs.activation for n in fused.nodes if n.op == "add" and "/" not in n.name] \
        == ["relu", "relu"]
    assert sum(n.attrs.activation == "relu" for n in fused.nodes
               if n.op == "batchnorm_backward") == 3


POOLED = """
conv(4, kernel=3, padding=1) relu
maxpool(POOL)
conv(3, kernel=3) relu
maxpool(2)
flatten
dense(2)
"""


@pytest.mark.parametrize("pool", ["2", "3, stride=2"])  # windows apart; overlapping
def test_relu_gradient_moves_ahead_of_the_max_pool(pool):
    training = build_training_graph(load(POOLED.replace("POOL", pool), "[2, 9, 9]"), "mse",
                                    None)
    fused = fuse(training)
    verify(fused)
    # the first pool: relu's gradient on the pool's output (under the pool gradient's
    # name), then the pool's into relu's gradient
    gate, scatter = fused.node("maxpool_1/dx"), fused.node("relu_1/dx")
    assert gate.op == "act_backward" and gate.inputs[1] is fused.value("maxpool_1")
    assert gate.output.type == fused.value("maxpool_1").type
    assert scatter.op == "maxpool_backward" and scatter.inputs[0] is gate.output
    assert scatter.output.type == fused.value("relu_1").type
    # the second pool's output is flattened (an alias, which a later read would break)
    assert fused.node("maxpool_2/dx").op == "maxpool_backward"
    assert fused.node("relu_2/dx").op == "act_backward"


@pytest.mark.parametrize("pool", ["2", "3, stride=2"])
def test_relu_gradient_ahead_of_the_max_pool_gives_the_same_bits(pool, monkeypatch):
    import importlib

    import numpy as np

    import cnnc
    source = ("network T\ninput x: [2, 11, 11]\nlayers {\n"
              + POOLED.replace("POOL", pool) + "\n}\n")

    def train(model):
        rng = np.random.default_rng(3)
        x, y = rng.standard_normal((4, 2, 11, 11)), rng.standard_normal((4, 2))
        losses = [model.train_step(x, y) for _ in range(3)]
        return losses, model._param_arrays()

    got = train(cnnc.compile(source, seed=2, dtype="float64", loss="mse"))
    monkeypatch.setattr(importlib.import_module("cnnc.passes.fuse"), "_relu_after_pool",
                        lambda *args: {})
    want = train(cnnc.compile(source, seed=2, dtype="float64", loss="mse"))
    assert got[0] == want[0]
    for k, v in want[1].items():
        np.testing.assert_array_equal(got[1][k], v)


def test_conv_then_max_pool_becomes_one_node_in_inference():
    graph = load("conv(4, kernel=3) relu maxpool(2)\n flatten dense(2)", "[3, 9, 9]")
    infer = optimize(graph, "infer")
    verify(infer)
    assert [n.op for n in infer.nodes] == ["conv_maxpool", "flatten", "dense"]
    node = infer.nodes[0]
    assert node.name == "conv_1" and node.attrs.activation == "relu"
    assert node.output.name == "maxpool_1" and node.output.span == graph.node("maxpool_1").span
    assert node.output.type.shape[1:] == (4, 3, 3)
    assert node.params["weight"].name == "conv_1.weight"
    assert "conv_maxpool" not in [n.op for n in optimize(graph, "train").nodes]


@pytest.mark.parametrize("body,shape", [
    ("conv(4, kernel=3) maxpool(3)", "[3, 9, 9]"),                   # another window
    ("conv(4, kernel=3) maxpool(2, stride=1)", "[3, 9, 9]"),         # overlapping
    ("conv(4, kernel=3) maxpool(2, padding=same)", "[3, 9, 9]"),     # padded (7 -> 4)
    ("conv(4, kernel=3) maxpool(2, ceil_mode=true)", "[3, 9, 9]"),   # rounded up
    ("conv(4, kernel=3) avgpool(2)", "[3, 9, 9]"),
    ("conv(4, kernel=5) maxpool(2)", "[3, 9, 9]"),                   # not 3x3
    ("conv(4, kernel=3, stride=2) maxpool(2)", "[3, 12, 12]"),
    ("conv(4, kernel=3, dilation=2) maxpool(2)", "[3, 12, 12]"),
    ("c = conv(4, kernel=3)\n p = c maxpool(2)\n q = c maxpool(2)\n add(p, q)",
     "[3, 9, 9]"),                                                   # the conv read twice
    ("conv(4, kernel=3) maxpool(2)", "[64, 9, 9]"),                  # wide: GEMM paths win
])
def test_conv_and_pool_stay_apart_where_the_fusion_does_not_apply(body, shape):
    infer = optimize(load(body, shape), "infer")
    verify(infer)
    assert "conv_maxpool" not in [n.op for n in infer.nodes]
    assert {"maxpool", "avgpool"} & {n.op for n in infer.nodes}


@pytest.mark.parametrize("act", ["relu", "leaky_relu(0.1)", "tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_conv_pool_predicts_what_the_two_layers_do(act, dtype, monkeypatch):
    import importlib

    import numpy as np

    import cnnc
    source = (f"network T\ninput x: [3, 13, 12]\nlayers {{\n conv(8, kernel=3, padding=1) "
              f"{act} maxpool(2)\n conv(16, kernel=3) relu maxpool(2)\n flatten dense(3)\n}}\n")
    x = np.random.default_rng(4).standard_normal((3, 3, 13, 12))
    model = cnnc.compile(source, seed=2, dtype=dtype, loss="mse")
    assert [n.op for n in model.plan.graph.nodes].count("conv_maxpool") == 2
    got = model.predict(x)
    passes = importlib.import_module("cnnc.passes")
    monkeypatch.setitem(passes.PIPELINES, "infer", tuple(
        p for p in passes.PIPELINES["infer"] if p is not passes.fuse_conv_pool))
    plain = cnnc.compile(source, seed=2, dtype=dtype, loss="mse")
    assert "conv_maxpool" not in [n.op for n in plain.plan.graph.nodes]
    want = plain.predict(x)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())

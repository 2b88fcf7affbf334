"""Whole-network gradients (every parameter and the input) against central finite
differences in float64, on small versions of the seed CNN, LeNet-5, ResNet basic and
bottleneck blocks, an Inception module, a U-Net level (batchnorm and dropout inside) and a
zoo of the remaining ops. A random subset of coordinates per tensor keeps it fast."""
from collections import Counter

import numpy as np
import pytest

import cnnc
from cnnc.autodiff import build_training_graph
from cnnc.dsl import load
from cnnc.errors import GradError, SpecError
from cnnc.ir import Graph
from cnnc.ir.verify import verify
from cnnc.memory import verify_plan
from cnnc.ops.activation import ActAttrs

from compiler_nets import NETS, SEED, batch_for

EPS = 1e-6


def finite_difference(model, x, y, arr, idx):
    old = arr[idx]
    arr[idx] = old + EPS
    plus = model.loss(x, y, training=True)
    arr[idx] = old - EPS
    minus = model.loss(x, y, training=True)
    arr[idx] = old
    return (plus - minus) / (2 * EPS)


def check_gradients(model, x, y, rng, per_tensor=3):
    loss, grads = model.gradients(x, y, input_grad=True)
    assert loss == pytest.approx(model.loss(x, y, training=True), rel=1e-14)
    frozen = {p.name for n in model.graph.nodes if not n.trainable for p in n.params.values()}
    trained = [n for n in model.parameters
               if not n.endswith(("running_mean", "running_var")) and n not in frozen]
    assert set(grads) == set(trained) | {model.graph.inputs[0].name}
    for name, grad in grads.items():
        arr = x if name == model.graph.inputs[0].name else model.parameters[name]
        assert grad.shape == arr.shape
        for flat in rng.choice(arr.size, size=min(per_tensor, arr.size), replace=False):
            idx = np.unravel_index(flat, arr.shape)
            fd = finite_difference(model, x, y, arr, idx)
            assert grad[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), (name, idx)


@pytest.mark.parametrize("name", list(NETS))
def test_network_gradients_match_finite_differences(name):
    source, loss = NETS[name]
    model = cnnc.compile(source, dtype="float64", seed=7, loss=loss)
    rng = np.random.default_rng(11)
    x, y = batch_for(model, 3, rng)
    check_gradients(model, x, y, rng)


def test_fused_resnet_blocks_keep_their_gradients():
    # the compiled step fuses relu into batchnorm_train and add, relu's gradient into
    # batchnorm_backward, and a gradient sum into act_backward; all of it, in-place
    # outputs included, must leave the gradients exact and the memory plan valid
    model = cnnc.compile(NETS["resnet_basic"][0], dtype="float64", seed=3)
    rng = np.random.default_rng(4)
    x, y = batch_for(model, 3, rng)
    model.gradients(x, y, input_grad=True)
    plan = model.plan
    verify_plan(plan.records, plan.memory)
    ops = Counter((n.op, getattr(n.attrs, "activation", None)) for n in plan.graph.nodes)
    assert ops[("relu", None)] == 0
    assert ops[("add", "relu")] == 2 and ops[("batchnorm_train", "relu")] == 3
    assert ops[("batchnorm_backward", "relu")] == 3
    assert [len(n.inputs) for n in plan.graph.nodes if n.op == "act_backward"] == [2, 3]
    assert any(v.alias_of is not None for n in plan.graph.nodes for v in n.outputs
               if n.op in ("add", "act_backward", "batchnorm_backward"))
    check_gradients(model, x, y, rng, per_tensor=5)


@pytest.mark.parametrize("options", ["center=false", "scale=false",
                                     "center=false, scale=false"])
def test_fused_batchnorm_relu_without_gamma_or_beta(options):
    # the merged backward finds relu's zeros from the parameters the layer has
    source = f"""
network BnRelu
input image: [2, 7, 7]
layers {{
    conv(3, kernel=3) batchnorm({options}) relu
    conv(3, kernel=3) batchnorm({options}) relu
    flatten
    dense(4) softmax
}}
"""
    model = cnnc.compile(source, dtype="float64", seed=5)
    rng = np.random.default_rng(8)
    x, y = batch_for(model, 4, rng)
    model.gradients(x, y, input_grad=True)
    assert sum(n.op == "batchnorm_backward" and n.attrs.activation == "relu"
               for n in model.plan.graph.nodes) == 2
    check_gradients(model, x, y, rng, per_tensor=5)


def test_an_add_written_with_its_activation_is_the_add_then_the_activation():
    source = NETS["resnet_basic"][0]
    written = source.replace("add(main, skip) relu", 'add(main, skip, activation="relu")')
    a = cnnc.compile(source, dtype="float64", seed=5)
    b = cnnc.compile(written, dtype="float64", seed=5)
    rng = np.random.default_rng(6)
    x, y = batch_for(a, 3, rng)
    assert b.loss(x, y, training=True) == a.loss(x, y, training=True)
    want, got = a.gradients(x, y)[1], b.gradients(x, y)[1]
    assert got.keys() == want.keys()
    for name, grad in want.items():
        np.testing.assert_array_equal(got[name], grad)
    check_gradients(b, x, y, rng)


def test_dense_targets_and_label_smoothing_gradients():
    source, _ = NETS["lenet"]
    model = cnnc.compile(source, dtype="float64", seed=2,
                         loss="categorical_crossentropy")
    model.set_loss("categorical_crossentropy", label_smoothing=0.1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4,) + model.input_shape)
    y = rng.dirichlet(np.ones(5), size=4)
    check_gradients(model, x, y, rng)
    sparse = rng.integers(0, 5, 4)
    one_hot = np.eye(5)[sparse]
    assert model.loss(x, sparse) == pytest.approx(model.loss(x, one_hot), rel=1e-13)


def test_binary_loss_on_logits_and_on_fused_sigmoid():
    rng = np.random.default_rng(5)
    logits = SEED.replace("dense(1) sigmoid", "dense(1)")
    fused = SEED.replace("dense(1) sigmoid", 'dense(1, activation="sigmoid")')
    a = cnnc.compile(SEED, dtype="float64", seed=1)
    b = cnnc.compile(logits, dtype="float64", seed=1)
    c = cnnc.compile(fused, dtype="float64", seed=1)
    x, y = batch_for(a, 4, rng)
    # one loss whether the sigmoid is a layer (fused into the loss), absent (logits) or
    # fused into dense (probabilities)
    assert a.loss(x, y) == pytest.approx(b.loss(x, y), rel=1e-12)
    assert a.loss(x, y) == pytest.approx(c.loss(x, y), rel=1e-9)
    check_gradients(c, x, y.reshape(-1, 1), rng)


def test_frozen_layers_and_input_get_no_gradient_nodes():
    source = SEED.replace("conv(6, kernel=3) relu", "conv(6, kernel=3, trainable=false) relu")
    g = load(source).graph
    tg = build_training_graph(g, "binary_crossentropy", None)
    verify(tg)
    names = {n.name for n in tg.nodes}
    assert "conv_2/dx" in names and "conv_2/dweight" not in names
    assert "conv_1/dweight" in names and "conv_1/dx" not in names  # no input gradient
    assert [v.name for v in tg.outputs] == ["loss"] + [
        f"{p}/grad" for p in ("conv_1/weight", "conv_1/bias", "dense_1/weight",
                              "dense_1/bias", "dense_2/weight", "dense_2/bias")]
    # freezing everything before conv_2 stops backward at conv_2's output
    source = SEED.replace("conv(4, kernel=3) relu", "conv(4, kernel=3, trainable=false) relu")
    source = source.replace("conv(6, kernel=3) relu", "conv(6, kernel=3, trainable=false) relu")
    tg = build_training_graph(load(source).graph, "binary_crossentropy", None)
    assert not any(n.name.startswith(("conv_", "maxpool", "relu_1", "relu_2"))
                   for n in tg.nodes if "/" in n.name)


def test_fan_out_gradients_are_summed_by_one_add_node():
    g = load(NETS["resnet_basic"][0]).graph
    tg = build_training_graph(g, None, None)
    sums = [n for n in tg.nodes if n.name.endswith("/gradsum")]
    assert sums and all(n.op == "add" and len(n.inputs) == 2 for n in sums)


def test_missing_backward_rule_names_the_layer():
    g = Graph("g")
    x = g.add_input("x", (3,))
    y = g.add_layer("dense", [x], (4,))
    node = g.add_node("act_backward", [y, y], ActAttrs("relu"), "odd")  # no vjp rule
    g.set_outputs([g.add_layer("dense", [node.outputs[0]], (2,))])
    with pytest.raises(GradError, match="act_backward 'odd' cannot be differentiated: op "
                                        "'act_backward' has no backward rule"):
        build_training_graph(g, "mse", None)


def test_inference_form_batchnorm_is_differentiable():
    g = load(NETS["resnet_basic"][0]).graph
    tg = build_training_graph(g, None, None, training=False)
    verify(tg)
    assert any(n.op == "batchnorm_infer_backward" for n in tg.nodes)
    assert not any(n.op == "batchnorm_train" for n in tg.nodes)


def test_internal_ops_are_not_layers():
    with pytest.raises(SpecError, match="unknown layer or block 'conv_backward_data'"):
        load(SEED.replace("maxpool(2)\n    conv(6", "conv_backward_data\n    conv(6", 1))
    g = Graph("g")
    x = g.add_input("x", (2, 4, 4))
    with pytest.raises(SpecError, match="unknown layer 'maxpool_backward'"):
        g.add_layer("maxpool_backward", [x])

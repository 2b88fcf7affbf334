"""Inference simplifications: batchnorm folding, dropout and identity removal."""
import tracemalloc

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from cnnc.ir.verify import verify
from cnnc.passes import FoldedParam, fold_batchnorm, fold_into, strip_inference

from pass_nets import SPECS, load, snapshot, spec_graph

EPS = 1e-3


def conv_ref(x, w, b, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


def conv_transpose_ref(x, w, b, stride):
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    y = np.zeros((n, o, (h - 1) * stride + kh, (wd - 1) * stride + kw))
    for i in range(kh):
        for j in range(kw):
            y[:, :, i:i + (h - 1) * stride + 1:stride, j:j + (wd - 1) * stride + 1:stride] += \
                np.einsum("nchw,co->nohw", x, w[:, :, i, j])
    return y + b[None, :, None, None]


def batchnorm_ref(y, p, name, axis=1):
    shape = [1] * y.ndim
    shape[axis] = -1
    r = lambda k: p[f"{name}.{k}"].reshape(shape)  # noqa: E731
    out = (y - r("running_mean")) / np.sqrt(r("running_var") + EPS)
    if f"{name}.gamma" in p:
        out = out * r("gamma")
    if f"{name}.beta" in p:
        out = out + r("beta")
    return out


def random_params(graph, rng):
    """Random float64 values for every parameter (variances positive)."""
    return {name: (rng.uniform(0.5, 2.0, v.type.shape) if name.endswith("running_var")
                   else rng.standard_normal(v.type.shape))
            for name, v in graph.params.items()}


def folded_arrays(layer, params):
    """The folded weight and bias of ``layer`` computed by fold_into."""
    weight, bias = layer.params["weight"], layer.params["bias"]
    assert isinstance(weight, FoldedParam) and isinstance(bias, FoldedParam)
    assert weight.fold is bias.fold or weight.fold == bias.fold
    w = np.empty(weight.type.shape)
    b, scratch = np.empty(bias.type.shape), np.empty(bias.type.shape)
    fold_into(weight.fold, params, w, b, scratch)
    return w, b


@pytest.mark.parametrize("bias", ["true", "false"])
@pytest.mark.parametrize("bn", ["batchnorm(epsilon=0.001)",
                                "batchnorm(epsilon=0.001, center=false, scale=false)"])
def test_conv_batchnorm_folds_to_the_same_result(bias, bn):
    graph = load(f"conv(5, kernel=3, padding=1, bias={bias}) {bn} relu", "[3, 7, 6]")
    before = snapshot(graph)
    folded = fold_batchnorm(graph)
    verify(folded)
    assert snapshot(graph) == before
    assert [n.op for n in folded.nodes] == ["conv", "relu"]
    conv = folded.nodes[0]
    assert conv.attrs.bias and conv.output.name == "batchnorm_1"
    assert conv.output.span == graph.node("batchnorm_1").span
    assert sorted(folded.params) == ["conv_1.bias", "conv_1.weight"]
    rng = np.random.default_rng(0)
    p = random_params(graph, rng)
    x = rng.standard_normal((2, 3, 7, 6))
    b0 = p.get("conv_1.bias", np.zeros(5))
    expected = batchnorm_ref(conv_ref(x, p["conv_1.weight"], b0, 1), p, "batchnorm_1")
    w, b = folded_arrays(conv, p)
    np.testing.assert_allclose(conv_ref(x, w, b, 1), expected, rtol=1e-12, atol=1e-12)


def test_folding_follows_parameters_changed_after_the_pass():
    graph = load("conv(4, kernel=3) batchnorm(epsilon=0.001)")
    conv = fold_batchnorm(graph).nodes[0]
    rng = np.random.default_rng(1)
    p = random_params(graph, rng)
    x = rng.standard_normal((1, 3, 8, 8))
    for _ in range(2):  # e.g. a training step or load_weights between two inferences
        w, b = folded_arrays(conv, p)
        expected = batchnorm_ref(conv_ref(x, p["conv_1.weight"], p["conv_1.bias"], 0),
                                 p, "batchnorm_1")
        np.testing.assert_allclose(conv_ref(x, w, b, 0), expected, rtol=1e-12, atol=1e-12)
        p = random_params(graph, rng)


def test_dense_and_conv_transpose_fold_along_their_output_axis():
    rng = np.random.default_rng(2)
    graph = load("flatten dense(6) batchnorm(epsilon=0.001)", "[3, 2, 2]")
    dense = fold_batchnorm(graph).nodes[-1]
    verify(fold_batchnorm(graph))
    p = random_params(graph, rng)
    x = rng.standard_normal((3, 12))
    expected = batchnorm_ref(x @ p["dense_1.weight"] + p["dense_1.bias"], p, "batchnorm_1")
    w, b = folded_arrays(dense, p)
    np.testing.assert_allclose(x @ w + b, expected, rtol=1e-12, atol=1e-12)

    graph = load("conv_transpose(4, kernel=2, stride=2) batchnorm(epsilon=0.001)",
                 "[3, 3, 5]")
    folded = fold_batchnorm(graph)
    verify(folded)
    p = random_params(graph, rng)
    x = rng.standard_normal((2, 3, 3, 5))
    y = conv_transpose_ref(x, p["conv_transpose_1.weight"], p["conv_transpose_1.bias"], 2)
    w, b = folded_arrays(folded.nodes[0], p)
    np.testing.assert_allclose(conv_transpose_ref(x, w, b, 2),
                               batchnorm_ref(y, p, "batchnorm_1"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("body", [
    "c = conv(4, kernel=3)\n n = c batchnorm\n add(n, c)",   # conv output read twice
    "conv(4, kernel=3, activation=relu) batchnorm",           # activation before the norm
    "maxpool(2) batchnorm",                                   # nothing to fold into
])
def test_batchnorm_that_cannot_fold_stays(body):
    graph = load(body)
    folded = fold_batchnorm(graph)
    verify(folded)
    assert [n.op for n in folded.nodes] == [n.op for n in graph.nodes]
    assert not any(isinstance(v, FoldedParam) for v in folded.params.values())


def test_a_second_batchnorm_does_not_fold_into_an_already_folded_layer():
    graph = load("conv(4, kernel=3) batchnorm batchnorm")
    once = fold_batchnorm(graph)
    assert [n.op for n in once.nodes] == ["conv", "batchnorm"]
    twice = fold_batchnorm(once)
    verify(twice)
    assert [n.op for n in twice.nodes] == ["conv", "batchnorm"]


def test_fold_into_writes_in_the_arrays_dtype_and_makes_no_temporary_arrays():
    graph = load("conv(128, kernel=3, bias=false) batchnorm", "[64, 8, 8]")
    conv = fold_batchnorm(graph).nodes[0]
    p = {k: v.astype(np.float32) for k, v in
         random_params(graph, np.random.default_rng(3)).items()}
    w = np.empty((128, 64, 3, 3), np.float32)
    b, s = np.empty(128, np.float32), np.empty(128, np.float32)
    fold = conv.params["weight"].fold
    fold_into(fold, p, w, b, s)
    tracemalloc.start()
    fold_into(fold, p, w, b, s)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # at most numpy's fixed ufunc buffer (bufsize elements), far below the weight's size
    assert peak <= np.getbufsize() * w.itemsize + 4096 < w.nbytes // 4
    scale = p["batchnorm_1.gamma"] / np.sqrt(p["batchnorm_1.running_var"] + 1e-3)
    np.testing.assert_allclose(w, p["conv_1.weight"] * scale[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(b, p["batchnorm_1.beta"] - scale * p["batchnorm_1.running_mean"],
                               rtol=1e-5, atol=1e-6)


def test_dropout_and_identity_are_removed():
    graph = load("""
        a = conv(4, kernel=3) dropout(0.5) identity relu
        b = a dropout(0.2)
        add(a, b)
    """)
    stripped = strip_inference(graph)
    verify(stripped)
    assert [n.op for n in stripped.nodes] == ["conv", "relu", "add"]
    add = stripped.nodes[-1]
    assert add.inputs == [stripped.value("relu_1"), stripped.value("relu_1")]
    assert stripped.nodes[1].inputs == [stripped.value("conv_1")]


def test_a_removed_layer_producing_the_output_stays_as_an_identity():
    graph = load("conv(4, kernel=3) dropout(0.5)")
    stripped = strip_inference(graph)
    verify(stripped)
    assert [n.op for n in stripped.nodes] == ["conv", "identity"]
    assert stripped.outputs[0].name == "dropout_1"
    graph = load("dropout(0.5) conv(4, kernel=3)")   # dropout right on the graph input
    stripped = strip_inference(graph)
    verify(stripped)
    assert stripped.nodes[0].inputs[0] is stripped.inputs[0]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_fold_and_strip(path):
    graph = spec_graph(path)
    before = snapshot(graph)
    folded = fold_batchnorm(graph)
    verify(folded)
    stripped = strip_inference(folded)
    verify(stripped)
    assert snapshot(graph) == before
    foldable = sum(n.op == "batchnorm" and n.inputs[0].producer is not None
                   and n.inputs[0].producer.op == "conv" for n in graph.nodes)
    assert len(folded.nodes) == len(graph.nodes) - foldable
    assert not any(n.op in ("dropout", "identity") for n in stripped.nodes)
    assert [v.name for v in stripped.outputs] == [v.name for v in graph.outputs]

"""Parameter and MAC counts against published figures, and the rendered table."""
import json

import pytest

from cnnc.ir import Graph
from cnnc.ir.summary import format_summary, summarize

from ir_nets import mnist_convnet, resnet18, seed_cnn, vgg16


def test_seed_cnn_counts():
    s = summarize(seed_cnn())
    assert s["total_params"] == s["trainable_params"] == 1_625_281
    assert s["non_trainable_params"] == 0
    conv1 = s["layers"][1]
    assert conv1 == {"name": "conv_1", "type": "conv", "output_shape": ["N", 32, 62, 62],
                     "params": 896, "macs": 62 * 62 * 32 * 27, "connected_to": ["image"]}
    assert s["layers"][0]["type"] == "input"
    json.dumps(s)


def test_keras_mnist_convnet():
    s = summarize(mnist_convnet())
    assert s["total_params"] == 34_826
    assert [layer["params"] for layer in s["layers"] if layer["params"]] == [320, 18496, 16010]


def test_vgg16_matches_torchvision():
    s = summarize(vgg16())
    assert s["total_params"] == 138_357_544
    assert s["macs"] == pytest.approx(15.47e9, rel=0.005)


def test_resnet18_matches_torchvision_and_keras_convention():
    s = summarize(resnet18())
    assert s["trainable_params"] == 11_689_512       # torchvision's parameter count
    assert s["non_trainable_params"] == 2 * 4800     # running mean/var of 4800 channels
    assert s["macs"] == pytest.approx(1.814e9, rel=0.005)
    add = next(layer for layer in s["layers"] if layer["name"] == "add_1")
    assert add["connected_to"] == ["batchnorm_3", "maxpool_1"]


def test_concrete_batch_and_frozen_layers():
    g = Graph("t")
    x = g.add_input("x", (6,))
    y = g.add_layer("dense", [x], (4,), trainable=False)
    g.add_layer("dense", [y], (2,))
    s = summarize(g, batch=32)
    assert s["layers"][1]["output_shape"] == [32, 4]
    assert (s["trainable_params"], s["non_trainable_params"]) == (10, 28)
    assert s["macs"] == 6 * 4 + 4 * 2


def test_format_chain():
    text = format_summary(summarize(seed_cnn()))
    lines = text.splitlines()
    assert lines[0] == 'Model: "SeedCNN"'
    assert lines[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#", "MACs"]
    assert any(line.split() == ["dense_1", "(dense)", "[N,", "128]", "1,605,760",
                                "1,605,632"] for line in lines)
    assert "Total params: 1,625,281" in text
    assert "Trainable params: 1,625,281" in text
    assert "Non-trainable params: 0" in text
    assert "Total MACs per image: 20,428,288 (20.43 M)" in text
    assert "running statistics" in text and "non-trainable" in lines[-2]
    assert "Connected to" not in text


def test_format_branches_has_connected_to():
    text = format_summary(summarize(resnet18()))
    assert "Connected to" in text
    row = next(line for line in text.splitlines() if line.startswith("add_1 (add)"))
    assert row.rstrip().endswith("batchnorm_3, maxpool_1")
    assert "Non-trainable params: 9,600" in text

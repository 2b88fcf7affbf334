"""Building graphs: types, naming, parameters, consumers, re-running shape inference."""
import pytest

from cnnc.errors import SpecError
from cnnc.ir import Graph, Node, TensorType, Value

from ir_nets import resnet18, seed_cnn


def test_tensor_type():
    t = TensorType(["N", 64, 5, 5])
    assert str(t) == "[N, 64, 5, 5]" and t.shape == ("N", 64, 5, 5)
    assert t.dtype == "float32" and t.rank == 4 and t.batched
    assert t.with_batch(8) == TensorType((8, 64, 5, 5))
    assert t.numel() == 1600 and t.numel(batch=2) == 3200
    assert TensorType((3, 4)).with_batch(8) == TensorType((3, 4))
    with pytest.raises(ValueError):
        TensorType((3, "N"))
    with pytest.raises(ValueError):
        TensorType((3,), "int8")
    with pytest.raises(AttributeError):
        t.dtype = "float64"
    assert hash(t) == hash(TensorType(("N", 64, 5, 5)))


def test_seed_cnn_structure_and_params():
    g = seed_cnn()
    assert [n.name for n in g.nodes][:4] == ["conv_1", "relu_1", "maxpool_1", "conv_2"]
    assert str(g.outputs[0].type) == "[N, 1]"
    assert sum(v.type.numel() for v in g.params.values()) == 1_625_281
    assert list(g.params)[:4] == ["conv_1.weight", "conv_1.bias", "conv_2.weight",
                                  "conv_2.bias"]
    conv = g.node("conv_1")
    assert conv.params["weight"].type.shape == (32, 3, 3, 3)
    assert conv.inputs == [g.inputs[0], conv.params["weight"], conv.params["bias"]]
    assert conv.data_inputs == [g.inputs[0]]
    assert g.value("dense_1.weight").type.shape == (12544, 128)
    assert all(v.kind == "param" for v in g.params.values())


def test_batchnorm_params_and_kinds():
    g = Graph("t")
    x = g.add_input("x", (5, 4, 4))
    g.add_layer("batchnorm", [x], name="bn")
    kinds = {name: v.kind for name, v in g.params.items()}
    assert kinds == {"bn.gamma": "param", "bn.beta": "param", "bn.running_mean": "state",
                     "bn.running_var": "state"}
    g.add_layer("batchnorm", [x], kwargs={"center": False, "scale": False}, name="bn2")
    assert [p for p in g.params if p.startswith("bn2.")] == ["bn2.running_mean",
                                                             "bn2.running_var"]


def test_auto_names_count_per_op_and_skip_taken_names():
    g = Graph("t")
    x = g.add_input("x", (3, 8, 8))
    a = g.add_layer("relu", [x], name="relu_2")
    b = g.add_layer("relu", [a])
    c = g.add_layer("relu", [b])
    d = g.add_layer("conv", [c], (4, 3))
    assert [a.name, b.name, c.name, d.name] == ["relu_2", "relu_3", "relu_4", "conv_1"]


def test_duplicate_and_bad_names():
    g = Graph("t")
    x = g.add_input("x", (3, 8, 8))
    g.add_layer("relu", [x], name="r")
    with pytest.raises(SpecError, match="name 'r' is already used"):
        g.add_layer("relu", [x], name="r")
    with pytest.raises(SpecError, match="name 'x' is already used"):
        g.add_input("x", (3,))
    with pytest.raises(SpecError, match="contain no '.'"):
        g.add_layer("relu", [x], name="a.b")
    with pytest.raises(SpecError, match="positive ints"):
        g.add_input("y", (3, 0))


def test_inputs_must_belong_to_the_graph_and_not_be_params():
    g, other = Graph("a"), Graph("b")
    x = g.add_input("x", (4,))
    y = other.add_input("x", (4,))
    with pytest.raises(SpecError, match="not a value of graph 'a'"):
        g.add_layer("relu", [y])
    d = g.add_layer("dense", [x], (3,))
    with pytest.raises(SpecError, match="param 'dense_1.weight' cannot be a layer input"):
        g.add_layer("relu", [g.params["dense_1.weight"]])
    with pytest.raises(SpecError, match="not a value of graph 'a'"):
        g.set_outputs([y])
    g.set_outputs([d])
    assert g.outputs == [d]


def test_consumers_and_frozen_layers():
    g = resnet18()
    stem_pool = g.value("maxpool_1")
    assert [n.name for n in g.consumers(stem_pool)] == ["conv_2", "add_1"]
    assert g.consumers(g.outputs[0]) == []
    g2 = Graph("t")
    x = g2.add_input("x", (4,))
    g2.add_layer("dense", [x], (3,), trainable=False, name="frozen")
    assert g2.node("frozen").trainable is False
    assert g2.params["frozen.weight"].kind == "param"


def test_infer_shapes_after_changing_the_input():
    g = seed_cnn()
    g.inputs[0].type = TensorType(("N", 3, 32, 32))
    g.infer_shapes()
    assert str(g.value("flatten_1").type) == "[N, 2304]"
    assert g.params["dense_1.weight"].type.shape == (2304, 128)
    g.inputs[0].type = TensorType(("N", 3, 5, 5))
    with pytest.raises(SpecError, match="conv 'conv_2' has a window of size 3, larger than "
                                        "its padded input \\(1\\)"):
        g.infer_shapes()


def test_values_and_nodes_are_identity_hashed():
    g = seed_cnn()
    assert len({*g.nodes}) == len(g.nodes)
    assert isinstance(g.nodes[0], Node) and isinstance(g.outputs[0], Value)
    assert len({*g.params.values()}) == len(g.params)

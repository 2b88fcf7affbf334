"""The IR verifier accepts built graphs and catches each kind of corruption."""
import pytest

from cnnc.ir import TensorType, Value
from cnnc.ir.verify import VerifyError, verify

from ir_nets import mnist_convnet, resnet18, seed_cnn


def test_built_graphs_verify():
    for build in (seed_cnn, mnist_convnet, resnet18):
        verify(build())


def corrupt(how):
    g = resnet18()
    how(g)
    return g


CORRUPTIONS = {
    "stored output type": lambda g: setattr(g.value("conv_2"), "type",
                                            TensorType(("N", 64, 55, 56))),
    "topological order": lambda g: g.nodes.reverse(),
    "used twice": lambda g: setattr(g.value("relu_1"), "name", "conv_1"),
    "takes 1 input; has 2": lambda g: g.node("relu_1").inputs.append(g.inputs[0]),
    "mixes dtypes": lambda g: setattr(g.inputs[0], "type",
                                      TensorType(("N", 3, 224, 224), "float64")),
    "parameter 'conv_1.weight'": lambda g: setattr(g.params["conv_1.weight"], "type",
                                                   TensorType((64, 3, 7, 6))),
    "should be 'batchnorm_1.running_mean' (state": lambda g: setattr(
        g.params["batchnorm_1.running_mean"], "kind", "param"),
    "no outputs": lambda g: g.set_outputs([]),
    "not produced in the graph": lambda g: g.outputs.append(
        Value("ghost", TensorType(("N", 3)), "activation")),
    "graph.params does not match": lambda g: g.params.pop("conv_1.weight"),
    "unknown layer 'relux'": lambda g: setattr(g.node("relu_1"), "op", "relux"),
    "inputs no longer fit": lambda g: setattr(g.node("dense_1"), "inputs",
                                              [g.value("relu_17")] +
                                              list(g.node("dense_1").params.values())),
}


@pytest.mark.parametrize("message", list(CORRUPTIONS))
def test_verifier_catches(message):
    g = corrupt(CORRUPTIONS[message])
    with pytest.raises(VerifyError, match="invalid graph") as info:
        verify(g)
    assert message in str(info.value)

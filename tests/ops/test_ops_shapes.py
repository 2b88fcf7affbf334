"""Shape rules of every op, through the graph API, plus PyTorch as an optional oracle."""
import itertools

import pytest

from cnnc.errors import ShapeError
from cnnc.ir import Graph, TensorType
from cnnc.ops import get_op, op_names, parse_attrs


def out_shape(op, in_shape, *args, **kwargs):
    g = Graph("t")
    x = g.add_input("x", in_shape)
    return list(g.add_layer(op, [x], args, kwargs).type.shape)


def test_all_ops_registered():
    assert set(op_names()) == {
        "conv", "conv_transpose", "upsample", "maxpool", "avgpool", "global_avgpool",
        "flatten", "dense", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "dropout",
        "batchnorm", "add", "concat", "identity"}


@pytest.mark.parametrize("kwargs,expected", [
    (dict(kernel=3), [7, 5, 9]),
    (dict(kernel=3, padding="same"), [7, 7, 11]),
    (dict(kernel=3, padding=1), [7, 7, 11]),
    (dict(kernel=(3, 1), padding=(1, 0)), [7, 7, 11]),
    (dict(kernel=3, padding=(0, 2, 1, 1)), [7, 7, 11]),
    (dict(kernel=2, stride=2, padding="same"), [7, 4, 6]),   # even kernel, stride 2
    (dict(kernel=4, stride=2, padding="same"), [7, 4, 6]),
    (dict(kernel=1, stride=3), [7, 3, 4]),                    # stride > kernel
    (dict(kernel=3, dilation=2), [7, 3, 7]),
    (dict(kernel=3, dilation=(2, 1), padding="same"), [7, 7, 11]),
])
def test_conv_shapes(kwargs, expected):
    assert out_shape("conv", (6, 7, 11), 7, **kwargs) == ["N"] + expected


def test_depthwise_conv_params():
    g = Graph("t")
    x = g.add_input("x", (8, 9, 9))
    g.add_layer("conv", [x], (16, 3), {"groups": 8, "bias": False}, name="dw")
    assert g.params["dw.weight"].type.shape == (16, 1, 3, 3)
    assert "dw.bias" not in g.params
    grouped = g.add_layer("conv", [x], (6, 3), {"groups": 2, "padding": "same"}, name="gc")
    assert list(grouped.type.shape) == ["N", 6, 9, 9]
    assert g.params["gc.weight"].type.shape == (6, 4, 3, 3)


@pytest.mark.parametrize("args,kwargs,expected", [
    ((2,), {}, [4, 5]),
    ((3, 2), {}, [3, 4]),
    ((3, 2), {"ceil_mode": True}, [4, 5]),
    ((3, 2), {"padding": 1}, [4, 5]),
    ((2,), {"padding": "same"}, [4, 5]),
    ((2, 1), {"padding": "same"}, [8, 10]),
    ((1, 3), {}, [3, 4]),
    (((2, 3),), {}, [4, 3]),
])
def test_pool_shapes(args, kwargs, expected):
    for op in ("maxpool", "avgpool"):
        assert out_shape(op, (5, 8, 10), *args, **kwargs) == ["N", 5] + expected


def test_pool_padding_more_than_half_window():
    with pytest.raises(ShapeError, match="larger than half its 2x2 window"):
        out_shape("maxpool", (1, 8, 8), 2, padding=2)


def test_pool_same_with_ceil_mode():
    with pytest.raises(ShapeError, match="ceil_mode"):
        out_shape("maxpool", (1, 8, 8), 2, padding="same", ceil_mode=True)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(kernel=3), [9, 11]),
    (dict(kernel=3, stride=2), [15, 19]),
    (dict(kernel=4, stride=2, padding=1), [14, 18]),
    (dict(kernel=3, stride=2, padding=1, output_padding=1), [14, 18]),
    (dict(kernel=3, stride=2, padding="same"), [14, 18]),
    (dict(kernel=4, stride=2, padding="same"), [14, 18]),
    (dict(kernel=1, stride=2, padding="same"), [14, 18]),   # kernel < stride
])
def test_conv_transpose_shapes(kwargs, expected):
    assert out_shape("conv_transpose", (4, 7, 9), 5, **kwargs) == ["N", 5] + expected


def test_conv_transpose_params_layout():
    g = Graph("t")
    x = g.add_input("x", (4, 7, 9))
    g.add_layer("conv_transpose", [x], (5, (3, 2)), name="up")
    assert g.params["up.weight"].type.shape == (4, 5, 3, 2)
    assert g.params["up.bias"].type.shape == (5,)


def test_conv_transpose_output_padding_limits():
    with pytest.raises(ShapeError, match="smaller than the stride"):
        out_shape("conv_transpose", (4, 7, 9), 5, 3, stride=2, output_padding=2)
    with pytest.raises(ShapeError, match="'same' with output_padding"):
        out_shape("conv_transpose", (4, 7, 9), 5, 3, stride=2, padding="same",
                  output_padding=1)
    with pytest.raises(ShapeError, match="output of size"):
        out_shape("conv_transpose", (4, 1, 1), 5, 1, padding=1)


def test_other_shapes():
    assert out_shape("upsample", (3, 5, 7), 2) == ["N", 3, 10, 14]
    assert out_shape("upsample", (3, 5, 7), (1, 3)) == ["N", 3, 5, 21]
    assert out_shape("global_avgpool", (3, 5, 7)) == ["N", 3]
    assert out_shape("global_avgpool", (3, 5, 7), keepdims=True) == ["N", 3, 1, 1]
    assert out_shape("flatten", (3, 5, 7)) == ["N", 105]
    assert out_shape("flatten", (12,)) == ["N", 12]
    assert out_shape("dense", (12,), 4) == ["N", 4]
    for op in ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", "dropout", "batchnorm",
               "identity"):
        assert out_shape(op, (3, 5, 7)) == ["N", 3, 5, 7]
        assert out_shape(op, (6,)) == ["N", 6]


def test_add_and_concat():
    g = Graph("t")
    x = g.add_input("x", (4, 6, 6))
    a = g.add_layer("conv", [x], (8, 1), name="a")
    b = g.add_layer("conv", [x], (3, 3), {"padding": "same"}, name="b")
    c = g.add_layer("conv", [x], (8, 3), {"padding": 1}, name="c")
    assert list(g.add_layer("add", [a, c, a]).type.shape) == ["N", 8, 6, 6]
    assert list(g.add_layer("concat", [a, b, x]).type.shape) == ["N", 15, 6, 6]


def test_shape_rules_keep_a_concrete_batch_and_dtype():
    t = TensorType((5, 3, 8, 8), "float64")
    attrs = parse_attrs(get_op("conv"), (4, 3), {"stride": 2})
    assert get_op("conv").shape_rule([t], attrs) == TensorType((5, 4, 3, 3), "float64")


def _torch():
    return pytest.importorskip("torch")


def test_conv_and_pool_sizes_agree_with_pytorch():
    torch = _torch()
    F = torch.nn.functional

    def meta(*shape):  # shape-only tensors: PyTorch infers output sizes without computing
        return torch.empty(shape, device="meta")

    for size, k, s, p, d in itertools.product((5, 8, 11), (1, 2, 3, 5), (1, 2, 3),
                                              (0, 1, 2), (1, 2)):
        if size + 2 * p < (k - 1) * d + 1:
            continue
        x = meta(1, 2, size, size + 1)
        ref = list(F.conv2d(x, meta(3, 2, k, k), stride=s, padding=p, dilation=d).shape[2:])
        got = out_shape("conv", (2, size, size + 1), 3, k, stride=s, padding=p, dilation=d)
        assert got[2:] == ref
        if d == 1 and 2 * p <= k:
            for ceil in (False, True):
                ref = list(F.max_pool2d(x, k, s, p, ceil_mode=ceil).shape[2:])
                got = out_shape("maxpool", (2, size, size + 1), k, s, padding=p,
                                ceil_mode=ceil)
                assert got[2:] == ref, (size, k, s, p, ceil)
        if d == 1:
            for op in range(s):
                ref = list(F.conv_transpose2d(x, meta(2, 3, k, k), stride=s, padding=p,
                                              output_padding=op).shape[2:])
                if min(ref) <= 0:
                    continue
                got = out_shape("conv_transpose", (2, size, size + 1), 3, k, stride=s,
                                padding=p, output_padding=op)
                assert got[2:] == ref


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_agrees_with_pytorch_stride_1():
    torch = _torch()
    x = torch.zeros((1, 1, 7, 8)).normal_()
    for k in (1, 2, 3, 4, 5):
        w = torch.ones((1, 1, k, k))
        ref = list(torch.nn.functional.conv2d(x, w, padding="same").shape[2:])
        assert out_shape("conv", (1, 7, 8), 1, k, padding="same")[2:] == ref == [7, 8]

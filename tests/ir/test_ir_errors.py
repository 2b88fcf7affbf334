"""Shape and argument errors read well and carry the layer's span."""
import pytest

from cnnc.errors import CnncError, ShapeError, Span, SpecError
from cnnc.ir import Graph


def at(line, text="    layer"):
    return Span("net.cnn", line, 5, text)


@pytest.fixture
def g():
    g = Graph("t")
    x = g.add_input("image", (3, 20, 20), at(2, "input image: [3, 20, 20]"))
    g.add_layer("conv", [x], (64, 3), name="c1", span=at(10))
    g.add_layer("maxpool", [g.value("c1")], (4,), name="p1", span=at(12, "    maxpool(4)"))
    return g


def raises(g, cls, op, inputs, *args, line=14, **kwargs):
    with pytest.raises(cls) as info:
        g.add_layer(op, [g.value(i) for i in inputs], args, kwargs,
                    span=at(line, f"    {op}(...)"))
    err = info.value
    assert isinstance(err, CnncError) and err.span is not None and err.span.line == line
    text = str(err)
    assert text.startswith(f"net.cnn:{line}:5: ") and f"    {op}(...)" in text
    return err.message


def test_dense_on_4d_input(g):
    msg = raises(g, ShapeError, "dense", ["p1"], 10)
    assert msg == ("dense at line 14 expects a flat input [N, F]; got [N, 64, 4, 4] from "
                   "maxpool at line 12 — add flatten (or global_avgpool) before it")


def test_conv_on_flat_input(g):
    g.add_layer("flatten", [g.value("p1")], name="f", span=at(13))
    msg = raises(g, ShapeError, "conv", ["f"], 8, 3)
    assert msg.startswith("conv at line 14 expects a 4-D input [N, C, H, W]; got [N, 1024] "
                          "from flatten at line 13")
    assert "before flatten" in msg


def test_kernel_larger_than_padded_input(g):
    msg = raises(g, ShapeError, "conv", ["p1"], 8, 5, padding=(0, 0))
    assert "has a window of size 5, larger than its padded input (4)" in msg
    assert "got [N, 64, 4, 4] from maxpool at line 12" in msg
    msg = raises(g, ShapeError, "conv", ["p1"], 8, 3, dilation=2)
    assert "spanning 5 (size 3, dilation 2)" in msg


def test_groups_must_divide(g):
    msg = raises(g, ShapeError, "conv", ["p1"], 8, 1, groups=3)
    assert "groups=3, which does not divide its 64 input channels" in msg
    msg = raises(g, ShapeError, "conv", ["p1"], 6, 1, groups=4)
    assert "does not divide its 6 filters" in msg


def test_add_names_both_producers(g):
    g.add_layer("conv", [g.value("p1")], (32, 1), name="c2", span=at(13))
    msg = raises(g, ShapeError, "add", ["p1", "c2"])
    assert msg == ("add at line 14 needs inputs of equal shape, but their channel counts "
                   "differ; got [N, 64, 4, 4] from maxpool at line 12 and [N, 32, 4, 4] "
                   "from conv at line 13 — match them, e.g. with a 1x1 conv on the skip path")


def test_concat_names_both_producers(g):
    msg = raises(g, ShapeError, "concat", ["p1", "image"])
    assert "agree on every axis but channels" in msg
    assert "[N, 64, 4, 4] from maxpool at line 12 and [N, 3, 20, 20] from input 'image' " \
           "at line 2" in msg


def test_output_size_not_positive(g):
    msg = raises(g, ShapeError, "conv_transpose", ["p1"], 8, 1, padding=3)
    assert "would make an output of size -2" in msg


def test_argument_errors_carry_the_span(g):
    msg = raises(g, SpecError, "conv", ["p1"], 8, kernal=3)
    assert msg.startswith("conv at line 14: unknown argument 'kernal' (did you mean 'kernel'")
    msg = raises(g, SpecError, "dense", ["p1"])
    assert "missing required argument 'units'" in msg
    msg = raises(g, SpecError, "convolution", ["p1"], 8)
    assert "unknown layer 'convolution'" in msg
    msg = raises(g, SpecError, "add", ["p1"])
    assert msg == "add at line 14 takes 2 or more inputs; got 1"


def test_without_span_layers_are_named():
    g = Graph("t")
    x = g.add_input("x", (3, 8, 8))
    y = g.add_layer("maxpool", [x], name="pool")
    with pytest.raises(ShapeError) as info:
        g.add_layer("dense", [y], (3,), name="head")
    assert info.value.span is None
    assert str(info.value).startswith("dense 'head' expects a flat input [N, F]; got "
                                      "[N, 3, 4, 4] from maxpool 'pool'")

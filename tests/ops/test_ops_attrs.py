"""Parsing (args, kwargs) into frozen attrs: coercion, defaults, aliases, errors."""
import dataclasses

import pytest

from cnnc.errors import SpecError
from cnnc.ops import describe_attrs, get_op, op_names, parse_attrs


def parse(op, *args, **kwargs):
    return parse_attrs(get_op(op), args, kwargs)


def test_conv_defaults_and_coercion():
    a = parse("conv", 16, 3)
    assert (a.filters, a.kernel, a.stride, a.padding, a.dilation, a.groups, a.bias) == \
        (16, (3, 3), (1, 1), "valid", (1, 1), 1, True)
    a = parse("conv", 16, kernel=[3, 5], stride=2, padding=1, bias=False)
    assert (a.kernel, a.stride, a.padding, a.bias) == ((3, 5), (2, 2), (1, 1, 1, 1), False)
    assert parse("conv", 1, 3, padding=(1, 2)).padding == (1, 1, 2, 2)
    assert parse("conv", 1, 3, padding=(0, 1, 2, 3)).padding == (0, 1, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.filters = 3


def test_keras_and_pytorch_spellings():
    a = parse("conv", filters=8, kernel_size=3, strides=2, pad="same", use_bias=False,
              dilation_rate=1)
    assert (a.kernel, a.stride, a.padding, a.bias) == ((3, 3), (2, 2), "same", False)
    assert parse("maxpool", pool_size=3, strides=2).size == (3, 3)
    assert parse("maxpool", kernel_size=3).stride is None
    assert parse("dropout", p=0.2).rate == 0.2
    assert parse("leaky_relu", negative_slope=0.01).alpha == 0.01
    assert parse("upsample", size=2).scale == (2, 2)
    assert parse("batchnorm", eps=1e-5).epsilon == 1e-5


def test_documented_defaults():
    assert parse("leaky_relu").alpha == 0.3
    bn = parse("batchnorm")
    assert (bn.momentum, bn.epsilon, bn.center, bn.scale) == (0.99, 1e-3, True, True)
    assert parse("dropout").rate == 0.5
    assert parse("maxpool").size == (2, 2)
    assert parse("avgpool").count_include_pad is False
    assert parse("dense", 3).bias is True


def test_floats_accept_ints_but_ints_reject_floats_and_bools():
    assert parse("dropout", 0).rate == 0.0
    assert isinstance(parse("dropout", 0).rate, float)
    for bad in (3.0, True, "3"):
        with pytest.raises(SpecError, match="argument 'filters' expects an int >= 1"):
            parse("conv", bad, 3)
    with pytest.raises(SpecError, match="expects true or false; got 1"):
        parse("conv", 1, 3, bias=1)


def test_range_checks():
    with pytest.raises(SpecError, match=r"'rate' expects a number in \[0.0, 1.0\); got 1.0"):
        parse("dropout", 1.0)
    with pytest.raises(SpecError, match="'filters' expects an int >= 1; got 0"):
        parse("conv", 0, 3)
    with pytest.raises(SpecError, match="'padding' expects .*; got -1"):
        parse("conv", 1, 3, padding=-1)
    with pytest.raises(SpecError, match=r"'kernel' expects .*; got \(3, 3, 3\)"):
        parse("conv", 1, (3, 3, 3))


def test_unknown_argument_suggests():
    with pytest.raises(SpecError, match="unknown argument 'kernal' \\(did you mean 'kernel'"):
        parse("conv", 8, kernal=3)
    with pytest.raises(SpecError, match="'padding' expects .*; got 'sme' \\(did you mean"):
        parse("conv", 8, 3, padding="sme")


def test_missing_twice_and_too_many():
    with pytest.raises(SpecError, match="missing required argument 'kernel'"):
        parse("conv", 8)
    with pytest.raises(SpecError, match="given twice \\(positionally and as 'kernel_size'\\)"):
        parse("conv", 8, 3, kernel_size=3)
    with pytest.raises(SpecError, match="given twice \\(as 'pad' and as 'padding'\\)"):
        parse("conv", 8, 3, pad=1, padding=1)
    with pytest.raises(SpecError, match="at most 2 positional arguments \\(filters, kernel\\)"):
        parse("conv", 8, 3, 1)
    with pytest.raises(SpecError, match="takes no positional arguments"):
        parse("relu", 1)


def test_unknown_op_suggests():
    with pytest.raises(SpecError, match="unknown layer 'maxpol' \\(did you mean 'maxpool'"):
        get_op("maxpol")


def test_every_field_is_described():
    for name in op_names():
        op = get_op(name)
        assert op.doc
        for field_name, kind, default, doc in describe_attrs(op):
            assert kind and doc, (name, field_name)
        for alias, target in op.aliases.items():
            assert target in {f.name for f in dataclasses.fields(op.attrs)}, (name, alias)
        assert set(op.positional) <= {f.name for f in dataclasses.fields(op.attrs)}

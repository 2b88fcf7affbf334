"""Initialisers: fans for OIHW and [in, out] layouts, and the statistics of the draws."""
import math

import numpy as np
import pytest

from cnnc.errors import SpecError
from cnnc.ops import ParamSpec
from cnnc.ops.init import fans, initialise


def draw(shape, init, dtype="float64", seed=0):
    return initialise(ParamSpec(shape, init), np.random.default_rng(seed), dtype)


def test_fans():
    assert fans((64, 32, 3, 3)) == (32 * 9, 64 * 9)     # OIHW
    assert fans((128, 10)) == (128, 10)                 # dense [in, out]
    assert fans((7,)) == (7, 7)


@pytest.mark.parametrize("shape", [(64, 48, 3, 3), (300, 200)])
def test_glorot_uniform(shape):
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6 / (fan_in + fan_out))
    w = draw(shape, "glorot_uniform")
    assert w.shape == shape
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.98 * limit
    assert w.var() == pytest.approx(limit ** 2 / 3, rel=0.03)
    assert abs(w.mean()) < 0.02 * limit


@pytest.mark.parametrize("init,scale,mode", [
    ("he_normal", 2.0, "in"), ("glorot_normal", 1.0, "avg"), ("lecun_normal", 1.0, "in"),
    ("he_uniform", 2.0, "in"), ("lecun_uniform", 1.0, "in"),
])
def test_variance_scaling(init, scale, mode):
    shape = (96, 40, 3, 3)
    fan_in, fan_out = fans(shape)
    n = fan_in if mode == "in" else (fan_in + fan_out) / 2
    w = draw(shape, init)
    assert w.var() == pytest.approx(scale / n, rel=0.04)
    if init.endswith("normal"):  # truncated at two (pre-correction) standard deviations
        bound = 2 * math.sqrt(scale / n) / 0.87962566103423978
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.95 * bound


def test_constants_dtype_and_determinism():
    assert (draw((5,), "zeros") == 0).all() and (draw((5,), "ones") == 1).all()
    w = draw((4, 3, 3, 3), "glorot_uniform", dtype="float32")
    assert w.dtype == np.float32 and w.flags.c_contiguous
    assert np.array_equal(w, draw((4, 3, 3, 3), "glorot_uniform", dtype="float32"))
    assert not np.array_equal(w, draw((4, 3, 3, 3), "glorot_uniform", "float32", seed=1))


def test_unknown_initialiser():
    with pytest.raises(SpecError, match="unknown initialiser 'he_norml' \\(did you mean"):
        draw((3,), "he_norml")

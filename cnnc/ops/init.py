"""Parameter initialisers, as Keras defines them, by the name a ParamSpec stores.

Fans follow the parameter layouts of docs/architecture.md: a 4-D weight is OIHW-like
([out, in, kh, kw]: fan_in = in * kh * kw, fan_out = out * kh * kw; conv_transpose's
[in, out, kh, kw] is read the same way, as Keras and PyTorch do), a 2-D weight is dense's
[in, out], a 1-D vector has fan_in = fan_out = its length.

The variance-scaling family draws with variance ``scale / n`` (n = fan_in, fan_out, or
their mean); the normal variants use a normal truncated at two standard deviations whose
stddev is divided by 0.8796..., the stddev of a unit normal truncated there, so the
variance still comes out as ``scale / n`` (Keras' VarianceScaling).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from cnnc.errors import SpecError
from cnnc.ops.registry import ParamSpec, suggest

# Standard deviation of a unit normal truncated to [-2, 2].
TRUNCATED_STD = 0.87962566103423978


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a parameter of ``shape`` (layouts in the module docstring)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...],
                      std: float) -> np.ndarray:
    """Normal(0, std) samples, redrawing those beyond two standard deviations."""
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2.0
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2.0
    return x * std


def _variance_scaling(scale: float, mode: str, distribution: str
                      ) -> Callable[[tuple[int, ...], np.random.Generator], np.ndarray]:
    def draw(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        fan_in, fan_out = fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, n)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        return _truncated_normal(rng, shape, math.sqrt(variance) / TRUNCATED_STD)
    return draw


INITIALISERS: dict[str, Callable[[tuple[int, ...], np.random.Generator], np.ndarray]] = {
    "zeros": lambda shape, rng: np.zeros(shape),
    "ones": lambda shape, rng: np.ones(shape),
    "glorot_uniform": _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _variance_scaling(1.0, "fan_avg", "normal"),
    "he_uniform": _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": _variance_scaling(2.0, "fan_in", "normal"),
    "lecun_uniform": _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _variance_scaling(1.0, "fan_in", "normal"),
}


def initialise(spec: ParamSpec, rng: np.random.Generator,
               dtype: str | np.dtype = "float32") -> np.ndarray:
    """A fresh array of ``spec.shape`` and ``dtype`` drawn by ``spec.init`` from ``rng``.

    glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)); he_normal: truncated
    normal of variance 2 / fan_in; zeros; ones; and the rest of :data:`INITIALISERS`.
    """
    draw = INITIALISERS.get(spec.init)
    if draw is None:
        close = suggest(spec.init, list(INITIALISERS))
        raise SpecError(f"unknown initialiser '{spec.init}'{close}",
                        hint="known initialisers: " + ", ".join(INITIALISERS))
    return np.ascontiguousarray(draw(tuple(spec.shape), rng), dtype=dtype)

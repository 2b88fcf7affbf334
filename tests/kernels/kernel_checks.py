"""Helpers shared by the kernel tests: seeded random inputs and central differences."""
import numpy as np


def rand(rng, shape, dtype, scale=1.0):
    """Standard-normal values (times ``scale``) of ``shape`` and ``dtype``: never all zeros."""
    return (rng.standard_normal(shape) * scale).astype(dtype)


def numeric_grad(loss, x, idx, h=1e-6):
    """Central differences of the scalar loss() w.r.t. x.flat[i] for i in idx (x float64)."""
    out = []
    for i in idx:
        old = x.flat[i]
        x.flat[i] = old + h
        up = loss()
        x.flat[i] = old - h
        down = loss()
        x.flat[i] = old
        out.append((up - down) / (2 * h))
    return np.array(out)

# Argument checks shared by conv.pyx and pool.pyx (included, not cimported).
#
# Every `def` entry point runs these before it releases the GIL, so the nogil helpers may
# trust shapes, dtypes, contiguity and that outputs overlap no other argument.

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _pair(name: str, value, minimum: int) -> tuple:
    """An int or a pair of ints (each >= minimum) as (h, w)."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if h < minimum or w < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return h, w


def _padding(value) -> tuple:
    """Padding as (top, bottom, left, right) from an int, (ph, pw) or a 4-tuple."""
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * 4
    try:
        pads = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"padding must be an int, (ph, pw) or (top, bottom, left, right), "
                         f"got {value!r}") from None
    if len(pads) == 2:
        pads = (pads[0], pads[0], pads[1], pads[1])
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError(f"padding must be non-negative: an int, (ph, pw) or "
                         f"(top, bottom, left, right), got {value!r}")
    return pads


def _float_array(name: str, a, ndim: int):
    """`a` as a C-contiguous float32/float64 array of `ndim` dimensions, else ValueError."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _check(name: str, a, dtype, shape) -> None:
    """`a` is a C-contiguous ndarray of `dtype` and exactly `shape`."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} has dtype {a.dtype} but the input is {dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def _check_outputs(outputs: dict, inputs: dict) -> None:
    """Outputs are writeable and overlap neither the inputs nor each other (None: absent)."""
    for name, out in outputs.items():
        if out is None:
            continue
        if not out.flags.writeable:
            raise ValueError(f"{name} is read-only")
        for other, arr in list(inputs.items()) + list(outputs.items()):
            if other != name and arr is not None and np.may_share_memory(out, arr):
                raise ValueError(f"{name} overlaps {other}; outputs must not alias any argument")


def _check_threads(n_threads) -> int:
    n = int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads!r}")
    return n

# Shared by the elementwise, loss, metrics, batchnorm, dropout and optim kernels (included,
# not cimported): argument checks that run with the GIL before any nogil work, so the nogil
# helpers may trust shapes, dtypes, contiguity and aliasing; and fused-type math.

from cython cimport floating
from libc.math cimport exp, expf, log, logf, log1p, log1pf, sqrt, tanh, tanhf

import numpy as np

from cnnc.threads import effective_n_threads

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)

# Reductions are split into chunks of this many elements (positions for the losses); each
# chunk's partial sum is computed by one thread and the partials are added in chunk order,
# so a sum does not depend on the thread count. PAR_GRAIN: elements per thread at least.
cdef enum:
    SUM_CHUNK = 4096
    PAR_GRAIN = 8192


def _float_arg(name: str, a, out: bool = False, ndim=None):
    """Check `a` is a C-contiguous float32/float64 ndarray (writable if `out`)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOATS:
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, "
                         f"got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if out and not a.flags.writeable:
        raise ValueError(f"{name} is an output but is read-only")
    return a


def _like(name: str, a, ref_name: str, ref, out: bool = False, shape=None):
    """Check `a` has the dtype of `ref` and the shape `shape` (default: ref's shape)."""
    _float_arg(name, a, out)
    if a.dtype != ref.dtype:
        raise ValueError(f"{name} has dtype {a.dtype} but {ref_name} is {ref.dtype}")
    shape = ref.shape if shape is None else tuple(shape)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    return a


def _labels_arg(name: str, a, shape):
    """Check `a` is a C-contiguous int64 array of `shape`."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != _INT64:
        raise ValueError(f"{name} must be int64, got {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _same_buffer(a, b) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.dtype == b.dtype)


def _no_alias(out_name: str, out, inputs: dict, inplace=()):
    """`out` overlaps no argument in `inputs`, except exactly (same buffer) those in `inplace`."""
    for name, a in inputs.items():
        if a is None or not np.may_share_memory(out, a):
            continue
        if name in inplace and _same_buffer(out, a):
            continue
        how = "may only be the very same array as" if name in inplace else "must not overlap"
        raise ValueError(f"{out_name} overlaps {name}; {out_name} {how} {name}")


def _threads(n_threads, work) -> int:
    """Threads for `work` elements: n_threads (None: cnnc.get_num_threads(); negative: all
    cores but |n|-1), but no more than one per PAR_GRAIN elements, since waking a thread
    costs more than a small loop (results do not depend on the count)."""
    if n_threads is not None and not isinstance(n_threads, (int, np.integer)):
        raise ValueError(f"n_threads must be an int or None, got {n_threads!r}")
    n = effective_n_threads(None if n_threads is None else int(n_threads))
    return max(1, min(n, work // PAR_GRAIN))


def _nck(x):
    """x of shape (N, C, ...) viewed as (N, C, S), S = product of the trailing axes."""
    if x.ndim < 2:
        raise ValueError(f"expected an (N, C) or (N, C, H, W) array, got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1)


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


cdef inline floating _sigmoid(floating v) noexcept nogil:
    """1 / (1 + e^-v) without overflow: exp only ever sees a non-positive argument."""
    cdef floating e
    if v >= 0:
        return 1 / (1 + _exp(-v))
    e = _exp(v)
    return e / (1 + e)


cdef double _sum_partials(const double[::1] partial) noexcept nogil:
    """Add per-chunk partial sums in chunk order (the fixed-order half of a reduction)."""
    cdef double total = 0
    cdef Py_ssize_t i
    for i in range(partial.shape[0]):
        total += partial[i]
    return total


cdef double _row_sum(const floating* p, Py_ssize_t n) noexcept nogil:
    """sum(p[0:n]) in double, with four interleaved partial sums added in a fixed order."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        a0 += p[i]
        a1 += p[i + 1]
        a2 += p[i + 2]
        a3 += p[i + 3]
        i += 4
    while i < n:
        a0 += p[i]
        i += 1
    return (a0 + a1) + (a2 + a3)


cdef double _row_dot_centred(const floating* a, double ca, const floating* b, double cb,
                             Py_ssize_t n) noexcept nogil:
    """sum((a[i] - ca) * (b[i] - cb)) over i < n in double, in the order of _row_sum."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        a0 += (a[i] - ca) * (b[i] - cb)
        a1 += (a[i + 1] - ca) * (b[i + 1] - cb)
        a2 += (a[i + 2] - ca) * (b[i + 2] - cb)
        a3 += (a[i + 3] - ca) * (b[i + 3] - cb)
        i += 4
    while i < n:
        a0 += (a[i] - ca) * (b[i] - cb)
        i += 1
    return (a0 + a1) + (a2 + a3)

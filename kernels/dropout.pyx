"""Inverted dropout with a mask regenerated from (seed, step), never stored.

Element i (flat C-order index) of the tensor is kept when the 32-bit word r_i >= T, with
T = floor(rate * 2^32), so P(keep) = 1 - T / 2^32 = 1 - rate to within 2^-32; kept elements
are scaled by 1 / (1 - rate) and dropped ones are 0. r_i is word i % 4 of
Philox-4x32-10(counter = (i // 4 low, i // 4 high, step low, step high), key = seed), so the
mask depends only on (seed, step, i): backward calls the same function with the same
(seed, step) and gets the same mask. Give each dropout layer its own seed (e.g. derived from
the model seed and the layer) and advance step once per training step.

Threads: each block of four elements has one owner; results do not depend on the thread
count.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t

include "elementwise_common.pxi"

cdef extern from "dropout_philox.h" nogil:
    void cnnc_philox4x32_10(const uint32_t* ctr, uint32_t key0, uint32_t key1, uint32_t* out)

_U64 = 2 ** 64


def dropout_forward(x, y, rate: float, seed, step, n_threads=None) -> None:
    """y = x * mask / (1 - rate), the mask drawn from (seed, step) as described above.

    Parameters
    ----------
    x : any shape, float32/float64, IN
    y : like x, OUT; may be x (in-place)
    rate : probability of dropping an element, 0 <= rate < 1
    seed, step : ints in [0, 2**64)
    """
    _dropout(x, "x", y, "y", rate, seed, step, n_threads)


def dropout_backward(dy, dx, rate: float, seed, step, n_threads=None) -> None:
    """dx = dy * mask / (1 - rate) with the forward's mask (same rate, seed and step).

    dy : IN; dx : like dy, OUT, may be dy (in-place).
    """
    _dropout(dy, "dy", dx, "dx", rate, seed, step, n_threads)


def philox4x32_10(counter, key) -> tuple:
    """The four 32-bit words of Philox-4x32-10 for a counter of four and a key of two
    32-bit words (exposed to check the generator against its published test vectors)."""
    cdef uint32_t ctr[4]
    cdef uint32_t out[4]
    words = [int(v) for v in counter] + [int(v) for v in key]
    if len(words) != 6 or any(not 0 <= w < 2 ** 32 for w in words):
        raise ValueError("philox4x32_10 needs 4 counter and 2 key words in [0, 2**32)")
    for i in range(4):
        ctr[i] = words[i]
    cnnc_philox4x32_10(ctr, words[4], words[5], out)
    return (out[0], out[1], out[2], out[3])


def _dropout(x, x_name, y, y_name, rate, seed, step, n_threads):
    _float_arg(x_name, x)
    _like(y_name, y, x_name, x, out=True)
    _no_alias(y_name, y, {x_name: x}, inplace=(x_name,))
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must lie in [0, 1), got {rate}")
    for name, v in (("seed", seed), ("step", step)):
        if not isinstance(v, (int, np.integer)) or not 0 <= v < _U64:
            raise ValueError(f"{name} must be an int in [0, 2**64), got {v!r}")
    nt = _threads(n_threads, x.size)
    cdef uint64_t threshold = <uint64_t>(rate * 4294967296.0)  # floor(rate * 2^32) < 2^32
    if x.dtype == np.float32:
        _mask_scale[float](x.reshape(-1), y.reshape(-1), threshold, 1.0 / (1.0 - rate),
                           int(seed), int(step), nt)
    else:
        _mask_scale[double](x.reshape(-1), y.reshape(-1), threshold, 1.0 / (1.0 - rate),
                            int(seed), int(step), nt)


cdef void _mask_scale(const floating[::1] x, floating[::1] y, uint64_t threshold,
                      double keep_scale, uint64_t seed, uint64_t step, int nt) noexcept nogil:
    cdef Py_ssize_t b
    for b in prange((x.shape[0] + 3) // 4, schedule="static", num_threads=nt):
        _mask_block(x, y, b, threshold, <floating>keep_scale, seed, step)


cdef void _mask_block(const floating[::1] x, floating[::1] y, Py_ssize_t b, uint64_t threshold,
                      floating scale, uint64_t seed, uint64_t step) noexcept nogil:
    """Elements 4b .. 4b+3 (a helper, so the counter and words are private to a thread)."""
    cdef uint32_t ctr[4]
    cdef uint32_t r[4]
    cdef Py_ssize_t w, i
    ctr[0] = <uint32_t>b
    ctr[1] = <uint32_t>(<uint64_t>b >> 32)
    ctr[2] = <uint32_t>step
    ctr[3] = <uint32_t>(step >> 32)
    cnnc_philox4x32_10(ctr, <uint32_t>seed, <uint32_t>(seed >> 32), r)
    for w in range(4):
        i = 4 * b + w
        if i < x.shape[0]:
            y[i] = x[i] * scale if r[w] >= threshold else 0

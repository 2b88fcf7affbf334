"""Pooling kernels: max, average and global average, forward and backward.

Layout NCHW; float32 or float64 (the dtype of x). Padding is (top, bottom, left, right),
an int or (ph, pw). A window starts at ``o * stride - pad`` and is clipped to the input, so
padded positions never win a max and never count in an average unless
``count_include_pad`` (PyTorch semantics, including ``ceil_mode``: the last window must
start inside the input or its left/top padding). Every padding must be smaller than the
kernel, so each window holds at least one input element.

Max-pool backward: saved argmax or recompute? ``maxpool2d_forward`` can save, per output,
the int32 index of the winner inside its input plane (the first maximum in row-major
window order; NaN wins). Backward from it is one pass over dy (a scatter-add), and x need
not stay alive until the backward pass; the price is 4 bytes per output element (the size
of y in float32, a quarter of x for a 2x2 stride-2 pool). Recomputing from x instead
rescans every window (kh*kw reads per output) and keeps x alive. Both are offered, and give
identical gradients because they share one window-argmax routine: save argmax by default
(about kh*kw times less backward work, and x can be freed early), recompute when x is kept
alive anyway and the memory plan is tight.

Work is split over the N*C planes with a static schedule; a plane has one owner and is
processed in a fixed order, so results are bitwise identical for any thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t
from libc.string cimport memset

cimport numpy as cnp
import numpy as np

cnp.import_array()

include "conv_args.pxi"


def pool2d_output_size(in_size, kernel, stride=None, padding=0, ceil_mode: bool = False):
    """Output (height, width) of a pooling window over an input of ``in_size`` = (H, W).

    Raises ValueError when a padding is not smaller than the kernel or no window fits.
    """
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", kernel if stride is None else stride, 1)
    pt, pb, pl, pr = _padding(padding)
    h, w = _pair("in_size", in_size, 1)
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ValueError(f"pooling padding {(pt, pb, pl, pr)} must be smaller than the kernel "
                         f"{(kh, kw)}")
    return (_pool_len(h, kh, sh, pt, pb, ceil_mode), _pool_len(w, kw, sw, pl, pr, ceil_mode))


def _pool_len(n: int, k: int, s: int, lo: int, hi: int, ceil_mode: bool) -> int:
    span = n + lo + hi - k
    if span < 0:
        raise ValueError(f"pooling kernel {k} is larger than the padded input {n + lo + hi}")
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + lo:  # the last window would start in the padding
        out -= 1
    return out


def _pool_args(x, y_name: str, y, kernel, stride, padding, ceil_mode, n_threads):
    """Validate a pooling call; returns (kh, kw, sh, sw, pt, pl, n_threads)."""
    x = _float_array("x", x, 4)
    n, c, h, w = x.shape
    oh, ow = pool2d_output_size((h, w), kernel, stride, padding, ceil_mode)
    _check(y_name, y, x.dtype, (n, c, oh, ow))
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", kernel if stride is None else stride, 1)
    pt, _, pl, _ = _padding(padding)
    return kh, kw, sh, sw, pt, pl, _check_threads(n_threads)


cdef struct Geom:
    # one input plane [h, w] pooled to [oh, ow]
    Py_ssize_t h, w, oh, ow, kh, kw, sh, sw, pt, pl


cdef Geom _geom(x, y, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                Py_ssize_t pt, Py_ssize_t pl):
    cdef Geom g
    g.h, g.w, g.oh, g.ow = x.shape[2], x.shape[3], y.shape[2], y.shape[3]
    g.kh, g.kw, g.sh, g.sw, g.pt, g.pl = kh, kw, sh, sw, pt, pl
    return g


cdef inline Py_ssize_t _window_argmax(const floating* x, const Geom* g, Py_ssize_t o_h,
                                      Py_ssize_t o_w) noexcept nogil:
    """Index in the plane of the first maximum (NaN wins) of window (o_h, o_w)."""
    cdef Py_ssize_t h0 = o_h * g.sh - g.pt, w0 = o_w * g.sw - g.pl
    cdef Py_ssize_t h1 = min(h0 + g.kh, g.h), w1 = min(w0 + g.kw, g.w)
    cdef Py_ssize_t i, j, best
    cdef floating v, top
    h0 = max(h0, 0)
    w0 = max(w0, 0)
    best = h0 * g.w + w0
    top = x[best]
    for i in range(h0, h1):
        for j in range(w0, w1):
            v = x[i * g.w + j]
            if v > top or v != v:
                top = v
                best = i * g.w + j
    return best


cdef void _maxpool_fwd(const floating* x, floating* y, int32_t* argmax, Py_ssize_t planes,
                       Geom g, int n_threads) noexcept nogil:
    """y = max over each window; argmax (if not NULL) = its index in the plane."""
    cdef Py_ssize_t p, i, j, k, out = g.oh * g.ow
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        for i in range(g.oh):
            for j in range(g.ow):
                k = _window_argmax(x + p * g.h * g.w, &g, i, j)
                y[p * out + i * g.ow + j] = x[p * g.h * g.w + k]
                if argmax != NULL:
                    argmax[p * out + i * g.ow + j] = <int32_t>k


cdef Py_ssize_t _maxpool_bwd(const floating* dy, const int32_t* argmax, const floating* x,
                             floating* dx, Py_ssize_t planes, Geom g,
                             int n_threads) noexcept nogil:
    """dx[winner] += dy per window (winner from argmax, else recomputed from x).

    Returns the number of argmax entries outside the plane (skipped, never written).
    """
    cdef Py_ssize_t p, i, j, k, bad = 0, out = g.oh * g.ow, plane = g.h * g.w
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        memset(dx + p * plane, 0, plane * sizeof(floating))
        for i in range(g.oh):
            for j in range(g.ow):
                if argmax != NULL:
                    k = argmax[p * out + i * g.ow + j]
                    if k < 0 or k >= plane:
                        bad += 1
                        continue
                else:
                    k = _window_argmax(x + p * plane, &g, i, j)
                dx[p * plane + k] += dy[p * out + i * g.ow + j]
    return bad


cdef inline Py_ssize_t _avg_divisor(const Geom* g, Py_ssize_t o_h, Py_ssize_t o_w, bint with_pad,
                                  Py_ssize_t pb, Py_ssize_t pr) noexcept nogil:
    """Number of elements averaged by window (o_h, o_w), padding counted or not."""
    cdef Py_ssize_t h0 = o_h * g.sh - g.pt, w0 = o_w * g.sw - g.pl
    cdef Py_ssize_t h1, w1
    if with_pad:  # PyTorch: clip to the padded input, not to the input
        h1 = min(h0 + g.kh, g.h + pb)
        w1 = min(w0 + g.kw, g.w + pr)
    else:
        h1 = min(h0 + g.kh, g.h)
        w1 = min(w0 + g.kw, g.w)
        h0 = max(h0, 0)
        w0 = max(w0, 0)
    return (h1 - h0) * (w1 - w0)


cdef void _avgpool_fwd(const floating* x, floating* y, Py_ssize_t planes, Geom g,
                       bint with_pad, Py_ssize_t pb, Py_ssize_t pr,
                       int n_threads) noexcept nogil:
    """y = mean over each window (sum in double)."""
    cdef Py_ssize_t p, i, j, a, b, h0, w0, h1, w1
    cdef double s
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        for i in range(g.oh):
            for j in range(g.ow):
                h0 = i * g.sh - g.pt
                w0 = j * g.sw - g.pl
                h1 = min(h0 + g.kh, g.h)
                w1 = min(w0 + g.kw, g.w)
                s = 0
                for a in range(max(h0, 0), h1):
                    for b in range(max(w0, 0), w1):
                        s = s + x[p * g.h * g.w + a * g.w + b]
                y[p * g.oh * g.ow + i * g.ow + j] = <floating>(
                    s / <double>_avg_divisor(&g, i, j, with_pad, pb, pr))


cdef void _avgpool_bwd(const floating* dy, floating* dx, Py_ssize_t planes, Geom g,
                       bint with_pad, Py_ssize_t pb, Py_ssize_t pr,
                       int n_threads) noexcept nogil:
    """dx[a, b] += dy / divisor for every window covering (a, b)."""
    cdef Py_ssize_t p, i, j, a, b, h0, w0, h1, w1, plane = g.h * g.w
    cdef floating d
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        memset(dx + p * plane, 0, plane * sizeof(floating))
        for i in range(g.oh):
            for j in range(g.ow):
                h0 = i * g.sh - g.pt
                w0 = j * g.sw - g.pl
                h1 = min(h0 + g.kh, g.h)
                w1 = min(w0 + g.kw, g.w)
                d = dy[p * g.oh * g.ow + i * g.ow + j] / <floating>_avg_divisor(
                    &g, i, j, with_pad, pb, pr)
                for a in range(max(h0, 0), h1):
                    for b in range(max(w0, 0), w1):
                        dx[p * plane + a * g.w + b] += d


cdef void _global_avg_fwd(const floating* x, floating* y, Py_ssize_t planes, Py_ssize_t plane,
                          int n_threads) noexcept nogil:
    """y[p] = mean of plane p (sum in double)."""
    cdef Py_ssize_t p, i
    cdef double s
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        s = 0
        for i in range(plane):
            s = s + x[p * plane + i]
        y[p] = <floating>(s / plane)


cdef void _global_avg_bwd(const floating* dy, floating* dx, Py_ssize_t planes,
                          Py_ssize_t plane, int n_threads) noexcept nogil:
    """dx[p, :] = dy[p] / plane size."""
    cdef Py_ssize_t p, i
    cdef floating d
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        d = dy[p] / <floating>plane
        for i in range(plane):
            dx[p * plane + i] = d


cdef inline void* _ptr(a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def maxpool2d_forward(x, y, argmax, kernel, stride=None, padding=0, ceil_mode: bool = False,
                      n_threads: int = 1) -> None:
    """Max pooling: y[n, c, i, j] = max of the window at (i*sh - top, j*sw - left).

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64, IN
    y : (N, C, OH, OW), dtype of x, OUT; OH, OW from ``pool2d_output_size``
    argmax : (N, C, OH, OW) int32 or None, OUT: index a*W + b of each window's first
        maximum in its input plane, for ``maxpool2d_backward``
    kernel, stride : int or (h, w); stride defaults to kernel
    padding : int, (ph, pw) or (top, bottom, left, right); each < kernel
    ceil_mode : round the output size up (PyTorch rule)
    n_threads : threads to use (planes are split among them)
    """
    kh, kw, sh, sw, pt, pl, nt = _pool_args(x, "y", y, kernel, stride, padding, ceil_mode,
                                            n_threads)
    if x.shape[2] * x.shape[3] >= 2 ** 31:
        raise ValueError("maxpool2d: an input plane of 2**31 or more elements")
    if argmax is not None:
        _check("argmax", argmax, np.dtype(np.int32), y.shape)
    _check_outputs({"y": y, "argmax": argmax}, {"x": x})
    cdef Geom g = _geom(x, y, kh, kw, sh, sw, pt, pl)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    cdef int32_t* am = NULL
    if argmax is not None:
        am = <int32_t*>_ptr(argmax)
    if x.dtype == np.float32:
        _maxpool_fwd[float](<const float*>_ptr(x), <float*>_ptr(y), am, planes, g, nt)
    else:
        _maxpool_fwd[double](<const double*>_ptr(x), <double*>_ptr(y), am, planes, g, nt)


def maxpool2d_backward(dy, argmax, x, dx, kernel, stride=None, padding=0,
                       ceil_mode: bool = False, n_threads: int = 1) -> None:
    """Gradient of max pooling: dx = 0, then dx[winner] += dy for every window.

    Pass exactly one of ``argmax`` (int32, as saved by ``maxpool2d_forward``) and ``x``
    (the forward input, to recompute the winners; same tie rule, same result).

    Parameters
    ----------
    dy : (N, C, OH, OW) float32 or float64, IN
    argmax : (N, C, OH, OW) int32 or None, IN
    x : (N, C, H, W) dtype of dy, or None, IN
    dx : (N, C, H, W) dtype of dy, OUT
    kernel, stride, padding, ceil_mode : as in the forward call
    """
    if (argmax is None) == (x is None):
        raise ValueError("maxpool2d_backward: pass exactly one of argmax and x")
    dx = _float_array("dx", dx, 4)
    kh, kw, sh, sw, pt, pl, nt = _pool_args(dx, "dy", dy, kernel, stride, padding, ceil_mode,
                                            n_threads)
    if argmax is not None:
        _check("argmax", argmax, np.dtype(np.int32), dy.shape)
    else:
        _check("x", x, dx.dtype, dx.shape)
    _check_outputs({"dx": dx}, {"dy": dy, "argmax": argmax, "x": x})
    cdef Geom g = _geom(dx, dy, kh, kw, sh, sw, pt, pl)
    cdef Py_ssize_t planes = dx.shape[0] * dx.shape[1], bad
    cdef const int32_t* am = NULL
    cdef const void* xp = NULL
    if argmax is not None:
        am = <const int32_t*>_ptr(argmax)
    else:
        xp = _ptr(x)
    if dx.dtype == np.float32:
        bad = _maxpool_bwd[float](<const float*>_ptr(dy), am, <const float*>xp,
                                  <float*>_ptr(dx), planes, g, nt)
    else:
        bad = _maxpool_bwd[double](<const double*>_ptr(dy), am, <const double*>xp,
                                   <double*>_ptr(dx), planes, g, nt)
    if bad:
        raise ValueError(f"maxpool2d_backward: {bad} argmax entries lie outside the input "
                         f"plane (was argmax made by maxpool2d_forward with these shapes?); "
                         f"dx is incomplete")


def avgpool2d_forward(x, y, kernel, stride=None, padding=0, ceil_mode: bool = False,
                      count_include_pad: bool = True, n_threads: int = 1) -> None:
    """Average pooling: y = sum of the window's input elements / divisor.

    The divisor counts the window's positions inside the padded input when
    ``count_include_pad`` (PyTorch's default), else only its input elements.

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64, IN
    y : (N, C, OH, OW), dtype of x, OUT
    kernel, stride, padding, ceil_mode : as in ``maxpool2d_forward``
    """
    kh, kw, sh, sw, pt, pl, nt = _pool_args(x, "y", y, kernel, stride, padding, ceil_mode,
                                            n_threads)
    _check_outputs({"y": y}, {"x": x})
    _, pb, _, pr = _padding(padding)
    cdef Geom g = _geom(x, y, kh, kw, sh, sw, pt, pl)
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1]
    if x.dtype == np.float32:
        _avgpool_fwd[float](<const float*>_ptr(x), <float*>_ptr(y), planes, g,
                           count_include_pad, pb, pr, nt)
    else:
        _avgpool_fwd[double](<const double*>_ptr(x), <double*>_ptr(y), planes, g,
                            count_include_pad, pb, pr, nt)


def avgpool2d_backward(dy, dx, kernel, stride=None, padding=0, ceil_mode: bool = False,
                       count_include_pad: bool = True, n_threads: int = 1) -> None:
    """Gradient of average pooling: dx = sum over covering windows of dy / divisor.

    Parameters
    ----------
    dy : (N, C, OH, OW) float32 or float64, IN
    dx : (N, C, H, W) dtype of dy, OUT
    kernel, stride, padding, ceil_mode, count_include_pad : as in the forward call
    """
    dx = _float_array("dx", dx, 4)
    kh, kw, sh, sw, pt, pl, nt = _pool_args(dx, "dy", dy, kernel, stride, padding, ceil_mode,
                                            n_threads)
    _check_outputs({"dx": dx}, {"dy": dy})
    _, pb, _, pr = _padding(padding)
    cdef Geom g = _geom(dx, dy, kh, kw, sh, sw, pt, pl)
    cdef Py_ssize_t planes = dx.shape[0] * dx.shape[1]
    if dx.dtype == np.float32:
        _avgpool_bwd[float](<const float*>_ptr(dy), <float*>_ptr(dx), planes, g,
                           count_include_pad, pb, pr, nt)
    else:
        _avgpool_bwd[double](<const double*>_ptr(dy), <double*>_ptr(dx), planes, g,
                            count_include_pad, pb, pr, nt)


def _global_args(x, y, n_threads):
    x = _float_array("x", x, 4)
    n, c = x.shape[:2]
    if not isinstance(y, np.ndarray) or y.shape not in ((n, c), (n, c, 1, 1)):
        raise ValueError(f"global average pooling of {x.shape} needs an array of shape "
                         f"{(n, c)} or {(n, c, 1, 1)}, got "
                         f"{getattr(y, 'shape', type(y).__name__)}")
    _check("y", y, x.dtype, y.shape)
    return n * c, x.shape[2] * x.shape[3], _check_threads(n_threads)


def global_avgpool2d_forward(x, y, n_threads: int = 1) -> None:
    """y[n, c] = mean of x[n, c, :, :].

    x : (N, C, H, W) float32 or float64, IN; y : (N, C) or (N, C, 1, 1), dtype of x, OUT
    """
    planes, plane, nt = _global_args(x, y, n_threads)
    _check_outputs({"y": y}, {"x": x})
    if x.dtype == np.float32:
        _global_avg_fwd[float](<const float*>_ptr(x), <float*>_ptr(y), planes, plane, nt)
    else:
        _global_avg_fwd[double](<const double*>_ptr(x), <double*>_ptr(y), planes, plane, nt)


def global_avgpool2d_backward(dy, dx, n_threads: int = 1) -> None:
    """dx[n, c, :, :] = dy[n, c] / (H * W).

    dy : (N, C) or (N, C, 1, 1) float32 or float64, IN; dx : (N, C, H, W), dtype of dy, OUT
    """
    planes, plane, nt = _global_args(dx, dy, n_threads)
    _check_outputs({"dx": dx}, {"dy": dy})
    if dx.dtype == np.float32:
        _global_avg_bwd[float](<const float*>_ptr(dy), <float*>_ptr(dx), planes, plane, nt)
    else:
        _global_avg_bwd[double](<const double*>_ptr(dy), <double*>_ptr(dx), planes, plane, nt)

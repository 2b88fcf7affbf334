"""Pooling kernels: max, average and global average, forward and backward.

Layout NCHW; float32 or float64 (the dtype of x). Padding is (top, bottom, left, right),
an int or (ph, pw). A window starts at ``o * stride - pad`` and is clipped to the input, so
padded positions never win a max and never count in an average unless
``count_include_pad`` (PyTorch semantics, including ``ceil_mode``: the last window must
start inside the input or its left/top padding). Every padding must be smaller than the
kernel, so each window holds at least one input element.

Max-pool winners: the first maximum in row-major window order, or the window's last NaN
if it holds one (PyTorch's rule); y is bitwise x at the winner. ``maxpool2d_forward`` can
save each winner's int32 index in its input plane, and ``maxpool2d_backward`` takes either
that argmax or x (winners recomputed, same gradients). Windows entirely inside the plane
take fast paths: 2x2 stride 2 (the common case) in fixed blocks of 16 outputs from two
input rows, branch-free so gcc vectorises it, and its backward writes every element of dx
once (dy at the winner, 0 elsewhere: windows do not overlap, so no memset pass; rows of
16 windows or more, or from x); other kernels a row of outputs at a time, one pass per
window offset. Edge windows (padding, ceil mode) keep the clipping loop; every other
backward zeroes dx and adds dy at the winners (a plain scatter from a saved argmax).
2x2 stride 2 on planes of even height and a width of 2, 4, 8 or 16, without padding, goes
by units instead (a unit is one row of windows; the units of all planes follow one
another in memory), vectorised across units: a row of 1 to 8 windows costs more to set up
than to compute (3-20x). Their backward takes the unit path for 2x2 planes and the paths
above otherwise (units of 2-8 windows did not vectorise there).

Work is split over the N*C planes (the unit paths: over the units) with a static
schedule; each output has one owner and is processed in a fixed order, so results are
bitwise identical for any thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t
from libc.string cimport memcpy, memset

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
    # one input plane [h, w] pooled to [oh, ow]; the windows of output rows [i_lo, i_hi)
    # and columns [j_lo, j_hi) lie entirely inside the plane
    Py_ssize_t h, w, oh, ow, kh, kw, sh, sw, pt, pl, i_lo, i_hi, j_lo, j_hi


def _inside(n_out: int, n: int, k: int, s: int, lo: int) -> tuple:
    """Outputs [first, last) along one axis whose windows need no clipping."""
    first = min(-(-lo // s), n_out)
    last = min(n_out, (n + lo - k) // s + 1) if n + lo >= k else 0
    return first, max(first, last)


cdef Geom _geom(x, y, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                Py_ssize_t pt, Py_ssize_t pl):
    cdef Geom g
    g.h, g.w, g.oh, g.ow = x.shape[2], x.shape[3], y.shape[2], y.shape[3]
    g.kh, g.kw, g.sh, g.sw, g.pt, g.pl = kh, kw, sh, sw, pt, pl
    g.i_lo, g.i_hi = _inside(g.oh, g.h, kh, sh, pt)
    g.j_lo, g.j_hi = _inside(g.ow, g.w, kw, sw, pl)
    return g


cdef extern from *:
    # Whether v replaces the running maximum top: larger, or NaN (a NaN result stays).
    # A C conditional expression: gcc 12 vectorises loops using it, but neither
    # ``(v > top) | (v != v)`` nor the if/else Cython makes of a bint expression.
    # _pick(c, a, b) is c ? a : b as one C expression, for the same reason.
    """
    #define CNNC_POOL_WINS(v, top) ((v) > (top) ? 1 : ((v) != (v)))
    #define CNNC_POOL_PICK(c, a, b) ((c) ? (a) : (b))
    """
    bint _wins "CNNC_POOL_WINS"(double v, double top) noexcept nogil
    double _pick "CNNC_POOL_PICK"(bint c, double a, double b) noexcept nogil
    int32_t _ipick "CNNC_POOL_PICK"(bint c, int32_t a, int32_t b) noexcept nogil


cdef extern from "pool_max.h" nogil:
    void cnnc_pool_max16_s(const float* r0, const float* r1, float* y)
    void cnnc_pool_max8_s(const float* r0, const float* r1, float* y)
    void cnnc_pool_max8_d(const double* r0, const double* r1, double* y)
    void cnnc_pool_max16_s_am(const float* r0, const float* r1, Py_ssize_t w, int32_t base,
                              float* y, int32_t* am)
    void cnnc_pool_max8_s_am(const float* r0, const float* r1, Py_ssize_t w, int32_t base,
                             float* y, int32_t* am)


cdef inline bint _is_2x2(const Geom* g) noexcept nogil:
    return g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2


cdef inline Py_ssize_t _window_argmax(const floating* x, const Geom* g, Py_ssize_t o_h,
                                      Py_ssize_t o_w) noexcept nogil:
    """Index in the plane of the first maximum (the last NaN if any) of window (o_h, o_w),
    clipped to the plane."""
    cdef Py_ssize_t h0 = o_h * g.sh - g.pt, w0 = o_w * g.sw - g.pl
    cdef Py_ssize_t h1 = min(h0 + g.kh, g.h), w1 = min(w0 + g.kw, g.w)
    cdef Py_ssize_t i, j, best
    h0 = max(h0, 0)
    w0 = max(w0, 0)
    best = h0 * g.w + w0
    for i in range(h0, h1):
        for j in range(w0, w1):
            if _wins(x[i * g.w + j], x[best]):
                best = i * g.w + j
    return best


cdef void _max_clipped(const floating* x, floating* y, int32_t* am, const Geom* g,
                       Py_ssize_t i, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """Outputs (i, j0..j1) of a plane by the clipping loop (windows at the edges)."""
    cdef Py_ssize_t j, k
    for j in range(j0, j1):
        k = _window_argmax(x, g, i, j)
        y[i * g.ow + j] = x[k]
        if am != NULL:
            am[i * g.ow + j] = <int32_t>k


cdef inline Py_ssize_t _block_start(Py_ssize_t j, Py_ssize_t n, Py_ssize_t b) noexcept nogil:
    """Start of the block of b after position j in a row of n >= b windows: the last block
    moves back to end at n and recomputes its overlap (same values). Blocks of a constant
    size vectorise without the scalar remainder loop that dominated 31-wide rows."""
    return min(j, n - b)


cdef void _max_row_2x2(const floating* r0, Py_ssize_t w, int32_t base, floating* y,
                       int32_t* am, Py_ssize_t n) noexcept nogil:
    """n adjacent 2x2 windows inside the plane, the first with top-left r0 (plane index
    base), in blocks of 16, or of 8 for rows of 8-15 windows (LeNet-5's 14), when the row
    has that many (see _block_start): by pool_max.h's vectors, but float64's argmax by
    _max_2x2."""
    cdef Py_ssize_t j = 0, blk = 16 if n >= 16 else 8
    if n < 8:
        _max_2x2(r0, r0 + w, w, base, y, am, n)
        return
    while j < n:
        j = _block_start(j, n, blk)
        if am == NULL:
            _max_2x2_values(r0 + 2 * j, r0 + w + 2 * j, y + j, blk)
        elif floating is float and blk == 16:
            cnnc_pool_max16_s_am(r0 + 2 * j, r0 + w + 2 * j, w, base + 2 * <int32_t>j, y + j,
                                 am + j)
        elif floating is float:
            cnnc_pool_max8_s_am(r0 + 2 * j, r0 + w + 2 * j, w, base + 2 * <int32_t>j, y + j,
                                am + j)
        elif blk == 16:
            _max_2x2(r0 + 2 * j, r0 + w + 2 * j, w, base + 2 * <int32_t>j, y + j, am + j, 16)
        else:
            _max_2x2(r0 + 2 * j, r0 + w + 2 * j, w, base + 2 * <int32_t>j, y + j, am + j, 8)
        j += blk


cdef inline void _max_2x2_values(const floating* r0, const floating* r1, floating* y,
                                 Py_ssize_t blk) noexcept nogil:
    """blk (16 or 8) windows' maxima without argmax, in vectors (pool_max.h)."""
    if floating is float:
        if blk == 16:
            cnnc_pool_max16_s(r0, r1, y)
        else:
            cnnc_pool_max8_s(r0, r1, y)
    else:
        cnnc_pool_max8_d(r0, r1, y)
        if blk == 16:
            cnnc_pool_max8_d(r0 + 16, r1 + 16, y + 8)


cdef inline void _max_2x2(const floating* r0, const floating* r1, Py_ssize_t w, int32_t base,
                          floating* y, int32_t* am, Py_ssize_t n) noexcept nogil:
    """n (<= 16) adjacent 2x2 windows as in _max_row_2x2, their rows' pairs at r0 and r1
    (r0 + w in the plane): max of each row's pair, then of the two rows, which keeps the
    row-major first-maximum and last-NaN rule; branch-free. Without argmax the indices go
    to a scratch array: the same loop without that store is unrolled by gcc 12 into
    branches, 10x slower on random data."""
    cdef Py_ssize_t j
    cdef floating a, b, c, d, m0, m1
    cdef int32_t scratch[16]
    if am == NULL:
        am = scratch
    for j in range(n):  # one expression per output: gcc 12 if-converts that, not bint temps
        a, b, c, d = r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]
        m0 = _pick(_wins(b, a), b, a)
        m1 = _pick(_wins(d, c), d, c)
        y[j] = _pick(_wins(m1, m0), m1, m0)
        am[j] = base + 2 * <int32_t>j + _ipick(_wins(m1, m0), <int32_t>w + _wins(d, c),
                                               _wins(b, a))


cdef void _max_row_inside(const floating* x, const Geom* g, Py_ssize_t i, floating* y,
                          int32_t* am) noexcept nogil:
    """Outputs (i, j_lo..j_hi) of a plane, windows inside it: y (and am) hold the running
    maxima while the window's offsets are visited in row-major order, each offset a pass
    over the row (vectorised when the stride is 1)."""
    cdef Py_ssize_t n = g.j_hi - g.j_lo, s = g.sw, a, b, j, off
    cdef Py_ssize_t start = (i * g.sh - g.pt) * g.w + g.j_lo * s - g.pl
    cdef floating v
    cdef bint t
    for j in range(n):
        y[j] = x[start + j * s]
        if am != NULL:
            am[j] = <int32_t>(start + j * s)
    for a in range(g.kh):
        for b in range(g.kw):
            if a == 0 and b == 0:
                continue
            off = start + a * g.w + b
            if am == NULL:
                for j in range(n):
                    v = x[off + j * s]
                    y[j] = v if _wins(v, y[j]) else y[j]
            else:
                for j in range(n):
                    v = x[off + j * s]
                    t = _wins(v, y[j])
                    y[j] = v if t else y[j]
                    am[j] = <int32_t>(off + j * s) if t else am[j]


cdef void _maxpool_fwd_plane(const floating* x, floating* y, int32_t* am,
                             const Geom* g) noexcept nogil:
    """One plane: interior windows by the fast rows, edge windows by the clipping loop."""
    cdef Py_ssize_t i, row, start
    cdef int32_t* amr = NULL
    for i in range(g.oh):
        if i < g.i_lo or i >= g.i_hi:
            _max_clipped(x, y, am, g, i, 0, g.ow)
            continue
        _max_clipped(x, y, am, g, i, 0, g.j_lo)
        row = i * g.ow + g.j_lo
        if am != NULL:
            amr = am + row
        if _is_2x2(g):
            start = (2 * i - g.pt) * g.w + 2 * g.j_lo - g.pl
            _max_row_2x2(x + start, g.w, <int32_t>start, y + row, amr, g.j_hi - g.j_lo)
        else:
            _max_row_inside(x, g, i, y + row, amr)
        _max_clipped(x, y, am, g, i, g.j_hi, g.ow)


cdef enum:
    UNIT_CHUNK = 128  # rows of windows per chunk of the unit paths (their bases: on the stack)


cdef inline bint _units(const Geom* g) noexcept nogil:
    """Whether a 2x2 stride-2 pool runs by units: no padding, even h and w (so the rows of
    windows of all planes follow one another in memory, a unit being one row of windows,
    two input rows) and 1-15 windows a row, too few for a fast row at a time (LeNet-5's 14
    and 5 too)."""
    return (_is_2x2(g) and g.pt == 0 and g.pl == 0 and g.h == 2 * g.oh and g.w == 2 * g.ow
            and g.ow < 16)


cdef inline Py_ssize_t _unit_bases(int32_t* base, Py_ssize_t r, Py_ssize_t n,
                                   const Geom* g) noexcept nogil:
    """base[k] = plane index of the top-left of unit r + k (k < n, n <= UNIT_CHUNK); returns
    min(n, UNIT_CHUNK)."""
    cdef Py_ssize_t k, i = r % g.oh
    n = min(n, <Py_ssize_t>UNIT_CHUNK)
    for k in range(n):
        base[k] = <int32_t>(i * 2 * g.w)
        i += 1
        if i == g.oh:
            i = 0
    return n


cdef inline void _max_units(const floating* x, Py_ssize_t step, Py_ssize_t dw, Py_ssize_t w,
                            floating* y, int32_t* am, const int32_t* base, Py_ssize_t n,
                            Py_ssize_t ow) noexcept nogil:
    """n units of ow windows each, in a plane of width w: unit u's two input rows at
    x + step * u and dw further, its top-left at base[u] in the plane. Called with literal
    step, dw and ow, so the windows of a unit unroll and gcc vectorises over units."""
    cdef Py_ssize_t u
    for u in range(n):
        _max_2x2(x + step * u, x + step * u + dw, w, base[u], y + ow * u, am + ow * u, ow)


cdef inline void _gather_windows(const floating* x, floating* xt, const int32_t* base,
                                 int32_t* wbase, Py_ssize_t n, Py_ssize_t ow) noexcept nogil:
    """The windows of n units of ow (2 or 4 literal, or any) windows, as one-window units:
    xt[4q:4q + 4] = window q's four elements, wbase[q] its top-left in the plane. Short
    rows of windows do not vectorise; units of one window do, and this copy is cheap."""
    cdef Py_ssize_t u, j, q
    for u in range(n):
        for j in range(ow):
            q = ow * u + j
            memcpy(xt + 4 * q, x + 4 * ow * u + 2 * j, 2 * sizeof(floating))
            memcpy(xt + 4 * q + 2, x + 4 * ow * u + 2 * ow + 2 * j, 2 * sizeof(floating))
            wbase[q] = base[u] + 2 * <int32_t>j


cdef void _maxpool_fwd_units(const floating* x, floating* y, int32_t* argmax,
                             const Geom* g, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Units [r0, r1) of the whole batch (see _units), UNIT_CHUNK at a time (fewer when
    their windows would overflow the gathered copy's 4 * UNIT_CHUNK)."""
    cdef int32_t base[UNIT_CHUNK]
    cdef int32_t wbase[4 * UNIT_CHUNK]
    cdef int32_t scratch[8 * UNIT_CHUNK]
    cdef floating xt[16 * UNIT_CHUNK]
    cdef Py_ssize_t n, ow = g.ow, w = g.w
    cdef int32_t* am
    while r0 < r1:
        n = _unit_bases(base, r0, min(r1 - r0, 4 * UNIT_CHUNK // ow), g)
        am = argmax + ow * r0 if argmax != NULL else scratch
        if ow == 1:
            _max_units(x + 4 * r0, 4, 2, 2, y + r0, am, base, n, 1)
        elif ow == 8:
            _max_units(x + 32 * r0, 32, 16, 16, y + 8 * r0, am, base, n, 8)
        else:
            if ow == 2:
                _gather_windows(x + 8 * r0, xt, base, wbase, n, 2)
            elif ow == 4:
                _gather_windows(x + 16 * r0, xt, base, wbase, n, 4)
            else:
                _gather_windows(x + 4 * ow * r0, xt, base, wbase, n, ow)
            _max_units(xt, 4, 2, w, y + ow * r0, am, wbase, ow * n, 1)
        r0 += n


cdef void _maxpool_fwd(const floating* x, floating* y, int32_t* argmax, Py_ssize_t planes,
                       Geom g, int n_threads) noexcept nogil:
    """y = max over each window; argmax (if not NULL) = its index in the plane."""
    cdef Py_ssize_t p, t, out = g.oh * g.ow, units = planes * g.oh
    if _units(&g):
        for t in prange(n_threads, nogil=True, num_threads=n_threads, schedule="static"):
            _maxpool_fwd_units(x, y, argmax, &g, t * units // n_threads,
                               (t + 1) * units // n_threads)
        return
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        _maxpool_fwd_plane(x + p * g.h * g.w, y + p * out,
                           argmax + p * out if argmax != NULL else NULL, &g)


cdef inline Py_ssize_t _bwd_clipped(const floating* dy, const int32_t* am, const floating* x,
                                    floating* dx, const Geom* g, Py_ssize_t i,
                                    Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """dx[winner] += dy for windows (i, j0..j1); returns how many saved winners lay
    outside the plane (skipped)."""
    cdef Py_ssize_t j, k, bad = 0
    for j in range(j0, j1):
        if am == NULL:
            k = _window_argmax(x, g, i, j)
        else:
            k = am[i * g.ow + j]
            if k < 0 or k >= g.h * g.w:
                bad += 1
                continue
        dx[k] += dy[i * g.ow + j]
    return bad


cdef bint _bwd_row_2x2(const floating* dy, const int32_t* am, const floating* r0,
                       floating* d0, Py_ssize_t w, int32_t base, Py_ssize_t n) noexcept nogil:
    """dx of n adjacent 2x2 windows inside the plane (top-left d0, plane index base):
    windows do not overlap, so each element is written once, dy at the winner and 0
    elsewhere (no memset pass). The winner comes from am, else from x (top-left r0).
    Blocks as in _max_row_2x2. Returns whether a saved winner lay outside its window."""
    cdef Py_ssize_t j = 0
    cdef bint bad = False
    if n < 16:
        return _bwd_2x2(dy, am, r0, d0, w, base, n)
    while j < n:
        j = _block_start(j, n, 16)
        bad |= _bwd_2x2(dy + j, am + j if am != NULL else NULL,
                        r0 + 2 * j if am == NULL else NULL, d0 + 2 * j, w,
                        base + 2 * <int32_t>j, 16)
        j += 16
    return bad


cdef inline bint _bwd_2x2(const floating* dy, const int32_t* am, const floating* r0,
                          floating* d0, Py_ssize_t w, int32_t base,
                          Py_ssize_t n) noexcept nogil:
    """n adjacent windows of _bwd_row_2x2."""
    cdef floating* d1 = d0 + w
    cdef const floating* r1
    cdef Py_ssize_t j, bad = 0
    cdef int32_t k, w32 = <int32_t>w
    cdef bint t0, t1
    cdef floating a, b, c, d
    if am != NULL:
        for j in range(n):
            k = am[j] - base - 2 * <int32_t>j
            bad += (k != 0) & (k != 1) & (k != w32) & (k != w32 + 1)
            _put_2x2(d0, d1, j, k, w32, dy[j])
        return bad != 0
    r1 = r0 + w
    for j in range(n):
        a, b, c, d = r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]
        t0 = _wins(b, a)
        t1 = _wins(d, c)
        k = w32 + <int32_t>t1 if _wins(d if t1 else c, b if t0 else a) else <int32_t>t0
        _put_2x2(d0, d1, j, k, w32, dy[j])
    return False


cdef inline void _put_2x2(floating* d0, floating* d1, Py_ssize_t j, int32_t k, int32_t w,
                          floating d) noexcept nogil:
    """Window j's gradient: d at offset k (0, 1, w or w + 1 from its top-left), 0 around."""
    d0[2 * j] = d if k == 0 else 0
    d0[2 * j + 1] = d if k == 1 else 0
    d1[2 * j] = d if k == w else 0
    d1[2 * j + 1] = d if k == w + 1 else 0


cdef inline void _zero(floating* a, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    if stop > start:
        memset(a + start, 0, (stop - start) * sizeof(floating))


cdef Py_ssize_t _bwd_plane_2x2(const floating* dy, const int32_t* am, const floating* x,
                               floating* dx, const Geom* g) noexcept nogil:
    """One plane of a 2x2 stride-2 pool: the rows of interior windows written directly,
    the rest zeroed and scattered to by the clipping loop (windows never overlap)."""
    cdef Py_ssize_t i, bad = 0, w = g.w, start
    cdef Py_ssize_t r_lo = min(max(2 * g.i_lo - g.pt, 0), g.h)
    cdef Py_ssize_t r_hi = min(max(2 * g.i_hi - g.pt, r_lo), g.h)
    cdef Py_ssize_t c_lo = min(max(2 * g.j_lo - g.pl, 0), w)
    cdef Py_ssize_t c_hi = min(max(2 * g.j_hi - g.pl, c_lo), w)
    _zero(dx, 0, r_lo * w)
    _zero(dx, r_hi * w, g.h * w)
    for i in range(g.oh):
        if i < g.i_lo or i >= g.i_hi:
            bad += _bwd_clipped(dy, am, x, dx, g, i, 0, g.ow)
            continue
        start = (2 * i - g.pt) * w
        _zero(dx, start, start + c_lo)
        _zero(dx, start + c_hi, start + w + c_lo)
        _zero(dx, start + w + c_hi, start + 2 * w)
        start += c_lo
        bad += _bwd_row_2x2(dy + i * g.ow + g.j_lo,
                            am + i * g.ow + g.j_lo if am != NULL else NULL,
                            x + start if am == NULL else NULL, dx + start, w,
                            <int32_t>start, g.j_hi - g.j_lo)
        bad += _bwd_clipped(dy, am, x, dx, g, i, 0, g.j_lo)
        bad += _bwd_clipped(dy, am, x, dx, g, i, g.j_hi, g.ow)
    return bad


cdef Py_ssize_t _maxpool_bwd_units(const floating* dy, const int32_t* am, const floating* x,
                                   floating* dx, const Geom* g, Py_ssize_t r0,
                                   Py_ssize_t r1) noexcept nogil:
    """dx of units [r0, r1) of one window each (2x2 planes, see _units), UNIT_CHUNK at a
    time; returns how many held a saved winner outside its window. (Units of 2-8 windows
    did not vectorise this way: they take the row paths.)"""
    cdef int32_t base[UNIT_CHUNK]
    cdef Py_ssize_t n, u, bad = 0
    while r0 < r1:
        n = _unit_bases(base, r0, r1 - r0, g)
        for u in range(r0, r0 + n):
            bad += _bwd_2x2(dy + u, am + u if am != NULL else NULL,
                            x + 4 * u if am == NULL else NULL, dx + 4 * u, 2, base[u - r0], 1)
        r0 += n
    return bad


cdef Py_ssize_t _maxpool_bwd(const floating* dy, const int32_t* argmax, const floating* x,
                             floating* dx, Py_ssize_t planes, Geom g,
                             int n_threads) noexcept nogil:
    """dx = gradient of max pooling, winners from argmax, else recomputed from x.

    Returns how many saved winners (or rows of them) were invalid: skipped, never written.
    """
    cdef Py_ssize_t p, i, t, bad = 0, out = g.oh * g.ow, plane = g.h * g.w
    cdef Py_ssize_t units = planes * g.oh
    cdef const int32_t* am
    cdef const floating* xp
    if _units(&g) and g.ow == 1:
        for t in prange(n_threads, nogil=True, num_threads=n_threads, schedule="static"):
            bad += _maxpool_bwd_units(dy, argmax, x, dx, &g, t * units // n_threads,
                                      (t + 1) * units // n_threads)
        return bad
    for p in prange(planes, nogil=True, num_threads=n_threads, schedule="static"):
        am = argmax + p * out if argmax != NULL else NULL
        xp = x + p * plane if x != NULL else NULL
        if _is_2x2(&g) and (am == NULL or g.j_hi - g.j_lo >= 16):  # short rows: scatter
            bad += _bwd_plane_2x2(dy + p * out, am, xp, dx + p * plane, &g)
        elif am != NULL:
            bad += _scatter(dy + p * out, am, dx + p * plane, out, plane)
        else:
            memset(dx + p * plane, 0, plane * sizeof(floating))
            for i in range(g.oh):
                bad += _bwd_clipped(dy + p * out, am, xp, dx + p * plane, &g, i, 0, g.ow)
    return bad


cdef Py_ssize_t _scatter(const floating* dy, const int32_t* am, floating* dx, Py_ssize_t out,
                         Py_ssize_t plane) noexcept nogil:
    """One plane: dx = 0, then dx[am] += dy; returns how many am lay outside the plane."""
    cdef Py_ssize_t q, k, bad = 0
    memset(dx, 0, plane * sizeof(floating))
    for q in range(out):
        k = am[q]
        if k < 0 or k >= plane:
            bad += 1
        else:
            dx[k] += dy[q]
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
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# bound calls: an entry point validates its arguments, then runs (or returns) a _Call

cdef enum:
    CALL_MAX_FWD = 0  # x, y, argmax
    CALL_MAX_BWD = 1  # dy, dx, argmax or x
    CALL_AVG_FWD = 2  # x, y
    CALL_AVG_BWD = 3  # dy, dx
    CALL_GLOBAL_FWD = 4  # x, y
    CALL_GLOBAL_BWD = 5  # dy, dx


cdef class _Call:
    """One validated kernel call on fixed arrays: calling it runs the kernel again, with
    no argument checks (the executor binds each op once per plan)."""
    cdef Geom g
    cdef int kind, nt
    cdef bint dbl, with_pad
    cdef Py_ssize_t planes, plane, pb, pr
    cdef void* src
    cdef void* dst
    cdef int32_t* am
    cdef void* x  # maxpool backward without argmax: the forward input
    cdef tuple keep

    def __call__(self) -> None:
        cdef Py_ssize_t bad
        with nogil:
            if self.dbl:
                bad = _run_call[double](self, NULL)
            else:
                bad = _run_call[float](self, NULL)
        if bad:
            raise ValueError("maxpool2d_backward: argmax has entries outside the input plane "
                             "or their window (was it made by maxpool2d_forward with these "
                             "shapes?); dx is incomplete")


cdef Py_ssize_t _run_call(_Call c, floating* _dtype) noexcept nogil:
    """Runs the call; returns the number of bad argmax entries (maxpool backward)."""
    cdef const floating* src = <const floating*> c.src
    cdef floating* dst = <floating*> c.dst
    if c.kind == CALL_MAX_FWD:
        _maxpool_fwd(src, dst, c.am, c.planes, c.g, c.nt)
    elif c.kind == CALL_MAX_BWD:
        return _maxpool_bwd(src, c.am, <const floating*> c.x, dst, c.planes, c.g, c.nt)
    elif c.kind == CALL_AVG_FWD:
        _avgpool_fwd(src, dst, c.planes, c.g, c.with_pad, c.pb, c.pr, c.nt)
    elif c.kind == CALL_AVG_BWD:
        _avgpool_bwd(src, dst, c.planes, c.g, c.with_pad, c.pb, c.pr, c.nt)
    elif c.kind == CALL_GLOBAL_FWD:
        _global_avg_fwd(src, dst, c.planes, c.plane, c.nt)
    else:
        _global_avg_bwd(src, dst, c.planes, c.plane, c.nt)
    return 0


cdef _Call _bound(int kind, src, dst, Py_ssize_t planes, int nt, Geom g, argmax=None,
                  x=None, bint with_pad=False, Py_ssize_t pb=0, Py_ssize_t pr=0,
                  Py_ssize_t plane=0):
    cdef _Call c = _Call.__new__(_Call)
    c.kind, c.nt, c.planes, c.plane, c.g = kind, nt, planes, plane, g
    c.with_pad, c.pb, c.pr = with_pad, pb, pr
    c.dbl = dst.dtype == np.float64
    c.src, c.dst, c.x = _ptr(src), _ptr(dst), _ptr(x)
    c.am = <int32_t*> _ptr(argmax)
    c.keep = (src, dst, argmax, x)
    return c


def maxpool2d_forward(x, y, argmax, kernel, stride=None, padding=0, ceil_mode: bool = False,
                      n_threads: int = 1, bind: bool = False):
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
    bind : instead of running, return the validated call: calling it runs the kernel on
        these arrays again without checking them (the executor binds each op once per
        plan). Every entry point takes it.
    """
    kh, kw, sh, sw, pt, pl, nt = _pool_args(x, "y", y, kernel, stride, padding, ceil_mode,
                                            n_threads)
    if x.shape[2] * x.shape[3] >= 2 ** 31:
        raise ValueError("maxpool2d: an input plane of 2**31 or more elements")
    if argmax is not None:
        _check("argmax", argmax, np.dtype(np.int32), y.shape)
    _check_outputs({"y": y, "argmax": argmax}, {"x": x})
    call = _bound(CALL_MAX_FWD, x, y, x.shape[0] * x.shape[1], nt,
                  _geom(x, y, kh, kw, sh, sw, pt, pl), argmax)
    return call if bind else call()


def maxpool2d_backward(dy, argmax, x, dx, kernel, stride=None, padding=0,
                       ceil_mode: bool = False, n_threads: int = 1, bind: bool = False):
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
    call = _bound(CALL_MAX_BWD, dy, dx, dx.shape[0] * dx.shape[1], nt,
                  _geom(dx, dy, kh, kw, sh, sw, pt, pl), argmax, x)
    return call if bind else call()


def avgpool2d_forward(x, y, kernel, stride=None, padding=0, ceil_mode: bool = False,
                      count_include_pad: bool = True, n_threads: int = 1, bind: bool = False):
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
    call = _bound(CALL_AVG_FWD, x, y, x.shape[0] * x.shape[1], nt,
                  _geom(x, y, kh, kw, sh, sw, pt, pl), None, None, count_include_pad, pb, pr)
    return call if bind else call()


def avgpool2d_backward(dy, dx, kernel, stride=None, padding=0, ceil_mode: bool = False,
                       count_include_pad: bool = True, n_threads: int = 1, bind: bool = False):
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
    call = _bound(CALL_AVG_BWD, dy, dx, dx.shape[0] * dx.shape[1], nt,
                  _geom(dx, dy, kh, kw, sh, sw, pt, pl), None, None, count_include_pad, pb, pr)
    return call if bind else call()


def _global_args(x, y, n_threads):
    x = _float_array("x", x, 4)
    n, c = x.shape[:2]
    if not isinstance(y, np.ndarray) or y.shape not in ((n, c), (n, c, 1, 1)):
        raise ValueError(f"global average pooling of {x.shape} needs an array of shape "
                         f"{(n, c)} or {(n, c, 1, 1)}, got "
                         f"{getattr(y, 'shape', type(y).__name__)}")
    _check("y", y, x.dtype, y.shape)
    return n * c, x.shape[2] * x.shape[3], _check_threads(n_threads)


def global_avgpool2d_forward(x, y, n_threads: int = 1, bind: bool = False):
    """y[n, c] = mean of x[n, c, :, :].

    x : (N, C, H, W) float32 or float64, IN; y : (N, C) or (N, C, 1, 1), dtype of x, OUT
    """
    planes, plane, nt = _global_args(x, y, n_threads)
    _check_outputs({"y": y}, {"x": x})
    cdef Geom g
    call = _bound(CALL_GLOBAL_FWD, x, y, planes, nt, g, None, None, False, 0, 0, plane)
    return call if bind else call()


def global_avgpool2d_backward(dy, dx, n_threads: int = 1, bind: bool = False):
    """dx[n, c, :, :] = dy[n, c] / (H * W).

    dy : (N, C) or (N, C, 1, 1) float32 or float64, IN; dx : (N, C, H, W), dtype of dy, OUT
    """
    planes, plane, nt = _global_args(dx, dy, n_threads)
    _check_outputs({"dx": dx}, {"dy": dy})
    cdef Geom g
    call = _bound(CALL_GLOBAL_BWD, dy, dx, planes, nt, g, None, None, False, 0, 0, plane)
    return call if bind else call()

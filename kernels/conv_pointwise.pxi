# 1x1 layers with a stride or padding (ResNet's projection shortcuts), included by conv.pyx.
#
# Output pixel (i, j) reads x only at (i*sh - pt, j*sw - pl), so y = W @ samples(x). A
# unit of work is an image and a band of output rows: it copies their samples into a
# [C, pixels] block and runs the 1x1 path's GEMMs on it. Backward-data runs them into the
# block, then spreads it into dx, zeros between the samples; a unit owns the input rows
# from its first output row's sample to the next unit's, so dx is written once, by one
# owner. The weight gradient sums the units in a fixed order (partials as _gemm_bwd_weight).
# im2col's generic gather, and GEMMs with K = C over chunks of two images, ran ResNet-20's
# shortcuts 1.5-4x slower.

cdef int _pointwise_enabled = 1  # 0: such layers take im2col (tests, benchmarks)


def _set_pointwise(bint enabled) -> None:
    """Allow (default) or forbid the sampled 1x1 path, for tests and benchmarks."""
    global _pointwise_enabled
    _pointwise_enabled = enabled


cdef inline bint _pointwise(const Geom* g) noexcept nogil:
    """1x1 layers the 1x1 path does not take (a stride or padding), with at most COL_TILE
    samples per output row."""
    return (_pointwise_enabled and g.path == PATH_IM2COL and g.kh == 1 and g.kw == 1
            and g.c * g.ow <= COL_TILE)


cdef inline Py_ssize_t _pw_rows(const Geom* g) noexcept nogil:
    """Output rows per unit: the whole image, or as many rows as COL_TILE samples hold,
    spread evenly (as im2col's tiles: each GEMM packs all of W, so its columns should be
    many)."""
    cdef Py_ssize_t rows = max(1, min(g.oh, COL_TILE // (g.c * g.ow)))
    cdef Py_ssize_t units = (g.oh + rows - 1) // rows
    return (g.oh + units - 1) // units


cdef inline Py_ssize_t _pw_units(const Geom* g) noexcept nogil:
    return g.n * ((g.oh + _pw_rows(g) - 1) // _pw_rows(g))


cdef inline Py_ssize_t _pw_workers(const Geom* g) noexcept nogil:
    return max(1, min(g.threads, _pw_units(g)))


cdef inline Py_ssize_t _pw_slots(const Geom* g) noexcept nogil:
    """Partial weight gradients summed separately (one thread each, added in order)."""
    if g.m * g.kdim > WGRAD_SLOT_MAX_ELEMS:
        return 1
    return max(1, min(WGRAD_SLOTS, _pw_units(g)))


cdef Py_ssize_t _pw_workspace(const Geom* g) noexcept nogil:
    """A block of samples per worker, then the partial weight gradients."""
    cdef Py_ssize_t slots = _pw_slots(g)
    return (_pw_workers(g) * g.c * _pw_rows(g) * g.ow
            + (slots * g.m * g.kdim if slots > 1 else 0))


cdef inline Py_ssize_t _pw_owned(const Geom* g, Py_ssize_t i) noexcept nogil:
    """The first input row owned by the unit that starts at output row i."""
    if i == 0:
        return 0
    if i >= g.oh:
        return g.h
    return min(g.h, max(<Py_ssize_t> 0, i * g.sh - g.pt))


cdef void _pw_sample(const floating* x, floating* s, const Geom* g, Py_ssize_t b,
                     Py_ssize_t i0, Py_ssize_t rows) noexcept nogil:
    """s[c, (i - i0)*ow + j] = x[b, c, i*sh - pt, j*sw - pl] (0 outside x) for the output
    rows i0 .. i0 + rows."""
    cdef Py_ssize_t np_ = rows * g.ow, c, i, j, ih, lo, hi
    cdef const floating* src
    cdef floating* dst
    _tap_range(-g.pl, g.sw, g.ow, g.w, &lo, &hi)
    for c in range(g.c):
        for i in range(i0, i0 + rows):
            dst = s + c * np_ + (i - i0) * g.ow
            ih = i * g.sh - g.pt
            if ih < 0 or ih >= g.h or lo == hi:
                memset(dst, 0, g.ow * sizeof(floating))
                continue
            src = x + ((b * g.c + c) * g.h + ih) * g.w - g.pl
            for j in range(lo):
                dst[j] = 0
            if g.sw == 2:  # a constant step: gcc vectorises the copy
                for j in range(lo, hi):
                    dst[j] = src[2 * j]
            else:
                for j in range(lo, hi):
                    dst[j] = src[j * g.sw]
            for j in range(hi, g.ow):
                dst[j] = 0


cdef void _pw_spread(const floating* s, floating* dx, const Geom* g, Py_ssize_t b,
                     Py_ssize_t i0, Py_ssize_t rows) noexcept nogil:
    """The input rows of image b that the unit of output rows i0 .. i0 + rows owns: the
    samples s (as _pw_sample lays them out) at their pixels, zeros elsewhere."""
    cdef Py_ssize_t np_ = rows * g.ow, c, i, j, ih, lo, hi
    cdef const floating* src
    cdef floating* dst
    _tap_range(-g.pl, g.sw, g.ow, g.w, &lo, &hi)
    for c in range(g.c):
        for ih in range(_pw_owned(g, i0), _pw_owned(g, i0 + rows)):
            dst = dx + ((b * g.c + c) * g.h + ih) * g.w
            memset(dst, 0, g.w * sizeof(floating))
            i = (ih + g.pt) // g.sh
            if (ih + g.pt) % g.sh or i >= i0 + rows:
                continue
            src = s + c * np_ + (i - i0) * g.ow
            dst -= g.pl
            if g.sw == 2:
                for j in range(lo, hi):
                    dst[2 * j] = src[j]
            else:
                for j in range(lo, hi):
                    dst[j * g.sw] = src[j]


cdef inline void _pw_unit(const Geom* g, Py_ssize_t u, Py_ssize_t* b, Py_ssize_t* i0,
                          Py_ssize_t* rows) noexcept nogil:
    """Unit u: image b, output rows i0 .. i0 + rows."""
    cdef Py_ssize_t per = _pw_rows(g), bands = (g.oh + per - 1) // per
    b[0] = u // bands
    i0[0] = u % bands * per
    rows[0] = min(per, g.oh - i0[0])


cdef void _pw_fwd_unit(const floating* x, const floating* w, const floating* bias,
                       floating* y, floating* s, const Geom* g, Py_ssize_t u, int act,
                       floating act_param, int n_threads) noexcept nogil:
    cdef Py_ssize_t b, i0, rows, gi, np_, P = g.oh * g.ow
    _pw_unit(g, u, &b, &i0, &rows)
    np_ = rows * g.ow
    _pw_sample(x, s, g, b, i0, rows)
    for gi in range(g.groups):
        gemm(False, False, g.mg, np_, g.cg, 1, w + gi * g.mg * g.cg, g.cg, s + gi * g.cg * np_,
             np_, 0, y + (b * g.m + gi * g.mg) * P + i0 * g.ow, P,
             bias + gi * g.mg if bias != NULL else NULL,
             BIAS_NONE if bias == NULL else BIAS_ROW, act, act_param, n_threads)


cdef void _pw_data_unit(const floating* dy, const floating* w, floating* dx, floating* s,
                        const Geom* g, Py_ssize_t u, int n_threads) noexcept nogil:
    cdef Py_ssize_t b, i0, rows, gi, np_, P = g.oh * g.ow
    _pw_unit(g, u, &b, &i0, &rows)
    np_ = rows * g.ow
    for gi in range(g.groups):
        gemm(True, False, g.cg, np_, g.mg, 1, w + gi * g.mg * g.cg, g.cg,
             dy + (b * g.m + gi * g.mg) * P + i0 * g.ow, P, 0, s + gi * g.cg * np_, np_,
             NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
    _pw_spread(s, dx, g, b, i0, rows)


cdef void _pw_weight_unit(const floating* x, const floating* dy, floating* dw, floating* s,
                          const Geom* g, Py_ssize_t u, bint overwrite,
                          int n_threads) noexcept nogil:
    cdef Py_ssize_t b, i0, rows, gi, np_, P = g.oh * g.ow
    _pw_unit(g, u, &b, &i0, &rows)
    np_ = rows * g.ow
    _pw_sample(x, s, g, b, i0, rows)
    for gi in range(g.groups):
        gemm(False, True, g.mg, g.cg, np_, 1, dy + (b * g.m + gi * g.mg) * P + i0 * g.ow, P,
             s + gi * g.cg * np_, np_, 0 if overwrite else 1, dw + gi * g.mg * g.cg, g.cg,
             NULL, BIAS_NONE, ACT_NONE, 0, n_threads)


cdef void _pw_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                  floating* ws, const Geom* g, int act, floating act_param,
                  int n_threads) noexcept nogil:
    """y = act(W @ samples(x) + bias); ws: _pw_workspace elements. Each unit has one
    owner, or with one worker the threads run inside its GEMMs."""
    cdef Py_ssize_t u = 0, tid = 0, per = g.c * _pw_rows(g) * g.ow
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, _pw_workers(g))
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, _pw_units(g), workers)
        with parallel(num_threads=workers):
            tid = threadid()
            u = cnnc_queue_take(&queue, tid)
            while u >= 0:
                _pw_fwd_unit(x, w, bias, y, ws + tid * per, g, u, act, act_param, 1)
                u = cnnc_queue_take(&queue, tid)
    else:
        for u in range(_pw_units(g)):
            _pw_fwd_unit(x, w, bias, y, ws, g, u, act, act_param, n_threads)


cdef void _pw_bwd_data(const floating* dy, const floating* w, floating* dx, floating* ws,
                       const Geom* g, int n_threads) noexcept nogil:
    """dx = the samples' gradient W^T @ dy spread into place (zeros elsewhere)."""
    cdef Py_ssize_t u = 0, tid = 0, per = g.c * _pw_rows(g) * g.ow
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, _pw_workers(g))
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, _pw_units(g), workers)
        with parallel(num_threads=workers):
            tid = threadid()
            u = cnnc_queue_take(&queue, tid)
            while u >= 0:
                _pw_data_unit(dy, w, dx, ws + tid * per, g, u, 1)
                u = cnnc_queue_take(&queue, tid)
    else:
        for u in range(_pw_units(g)):
            _pw_data_unit(dy, w, dx, ws, g, u, n_threads)


cdef void _pw_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                    const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= the sum over units of dy @ samples(x)^T: in unit order, or (small dW) in
    _pw_slots fixed runs of units, one partial each, added in run order."""
    cdef Py_ssize_t u = 0, s = 0, e, tid = 0, per = g.c * _pw_rows(g) * g.ow
    cdef Py_ssize_t units = _pw_units(g), slots = _pw_slots(g), size = g.m * g.kdim
    cdef floating* parts = ws + _pw_workers(g) * per
    cdef floating v
    if slots == 1:
        for u in range(units):
            _pw_weight_unit(x, dy, dw, ws, g, u, u == 0 and not accumulate, n_threads)
        return
    cdef cnnc_queue queue
    cnnc_queue_init(&queue, slots, min(<Py_ssize_t> n_threads, slots))
    with parallel(num_threads=min(<Py_ssize_t> n_threads, slots)):
        tid = threadid()
        s = cnnc_queue_take(&queue, tid)
        while s >= 0:
            for u in range(s * units // slots, (s + 1) * units // slots):
                _pw_weight_unit(x, dy, parts + s * size, ws + tid * per, g, u,
                                u == s * units // slots, 1)
            s = cnnc_queue_take(&queue, tid)
    for e in prange(size, num_threads=n_threads if size >= PARALLEL_MIN_ELEMS else 1,
                    schedule="static"):
        v = dw[e] if accumulate else 0
        for s in range(slots):
            v = v + parts[s * size + e]
        dw[e] = v

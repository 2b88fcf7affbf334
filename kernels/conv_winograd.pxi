# Winograd F(2x2, 3x3) and F(4x4, 3x3) forward convolution, included by conv.pyx (Lavin &
# Gray, 2015).
#
# For a t x t output tile (t = g.wtile, 2 or 4) and its (t+2) x (t+2) input patch d,
# Y = A^T [(G g G^T) * (B^T d B)] A, so the channel sums become E = (t+2)^2 GEMMs
# U[e] @ V[e] ([M, C] @ [C, tiles], e = (t+2) * row + column): F(2x2) does 16/36 of
# im2col's multiplies, F(4x4) 36/144, on inputs grown 4x and 2.25x instead of 9x. F(4x4)
# (interpolation points 0, +-1, +-2) rounds worse in float32 (errors ~1e-5 of the largest
# output instead of ~5e-7, the usual cost) and pads odd outputs to whole 4x4 tiles, so it
# is taken where its products over the padded tiles are at most 3/4 of F(2x2)'s (see
# _wino_tile).
# Used for 3x3 stride 1 dilation 1 ungrouped layers with enough channels (also for their
# flipped backward-data) and enough tiles in the call: the weight transform and the E
# packings of U cost several times im2col's one packing of W, which a few tiles do not
# earn back (VGG at batch 1 on 2x2 and 4x4 inputs: F(2x2) 4-5x slower than im2col;
# break-even measured at 64 2x2 tiles with 256-512 channels, 128 with 128, 256 with 64).
# Tiles are numbered over (image, tile row, tile column); a chunk is a fixed run of
# g.wcols of them, so chunking never depends on the thread count.

cdef int _wino4_enabled = 1  # 0: F(2x2) only (tests and benchmarks compare the two)


def _set_wino4(bint enabled) -> None:
    """Allow (default) or forbid Winograd F(4x4, 3x3), for tests and benchmarks."""
    global _wino4_enabled
    _wino4_enabled = enabled


cdef inline Py_ssize_t _wino_cover(const Geom* g) noexcept nogil:
    """2x2 output tiles in the call: the measure of work the thresholds are set in."""
    return g.n * ((g.oh + 1) // 2) * ((g.ow + 1) // 2)


cdef inline bint _wino_ok(const Geom* g) noexcept nogil:
    return (g.path == PATH_IM2COL and g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1
            and g.dh == 1 and g.dw == 1 and g.groups == 1 and g.c >= WINO_MIN_CHANNELS
            and g.m >= WINO_MIN_CHANNELS
            and _wino_cover(g) >= max(<Py_ssize_t> WINO_MIN_TILES,
                                      WINO_TILE_CHANNELS // min(g.c, g.m)))


cdef inline int _wino_tile(const Geom* g) noexcept nogil:
    """4 where F(4x4)'s 36 products per 4x4 tile, over the padded tiles, are at most 3/4 of
    F(2x2)'s 16 per 2x2 tile (8x8 outputs: 0.56; 6x5: 1.0), else 2. Only for M a multiple
    of the GEMM's MR: its U, padded to whole panels, then stays within the 4*M*K of the
    documented workspace bound."""
    cdef Py_ssize_t f2 = 16 * ((g.oh + 1) // 2) * ((g.ow + 1) // 2)
    cdef Py_ssize_t f4 = 36 * ((g.oh + 3) // 4) * ((g.ow + 3) // 4)
    return 4 if _wino4_enabled and g.m % _wino_mr() == 0 and 4 * f4 <= 3 * f2 else 2


cdef inline Py_ssize_t _wino_mr() noexcept nogil:
    """Rows per panel of U: the MR of the GEMM kernel this module runs (fixed for the
    process once first read, so a geometry's sizes stay valid)."""
    return cnnc_gemm_mr(cnnc_gemm_kernel(), 0)


cdef inline Py_ssize_t _wino_e(const Geom* g) noexcept nogil:
    """Transformed positions per tile, (t + 2)^2."""
    return (g.wtile + 2) * (g.wtile + 2)


cdef inline Py_ssize_t _wino_tw(const Geom* g) noexcept nogil:
    """Tiles per tile row."""
    return (g.ow + g.wtile - 1) // g.wtile


cdef inline Py_ssize_t _wino_tiles(const Geom* g) noexcept nogil:
    """t x t output tiles per image."""
    return ((g.oh + g.wtile - 1) // g.wtile) * _wino_tw(g)


cdef inline Py_ssize_t _wino_rows(const Geom* g, Py_ssize_t cols) noexcept nogil:
    """The zero-padded input rows under a chunk of `cols` tiles: t + 2 rows of t * tw + 2
    for each tile row it touches."""
    cdef Py_ssize_t tw = _wino_tw(g)
    return ((cols + tw - 1) // tw + 1) * (g.wtile + 2) * (g.wtile * tw + 2)


cdef void _wino_chunking(Geom* g) noexcept nogil:
    """g.wcols tiles per chunk (the last may have fewer) and g.wworkers. A chunk's V and M
    (for a block of WINO_MB output channels at a time) take at most a thread's share of
    the workspace bound (2**20 + 2**19 elements), and the chunks are evened out, in a
    number rounded up to a multiple of WINO_CHUNK_ROUND while they keep WINO_MIN_COLS tiles: two or four threads then get equal shares (3 chunks of
    511, 511 and 2 tiles left ResNet-20's stage 3 on one thread), and each chunk, which
    streams all of U once, stays wide enough. Widths are whole multiples of
    WINO_COL_UNIT tiles (no ragged column panel in the GEMMs)."""
    cdef Py_ssize_t total = g.n * _wino_tiles(g), chunks, E = _wino_e(g)
    cdef Py_ssize_t mb = min(g.m, <Py_ssize_t> WINO_MB), cap = WINO_COLS
    while cap > WINO_COL_UNIT and _wino_scratch(g, cap) > 3 * COL_TILE:
        cap -= WINO_COL_UNIT
    if _wino_scratch(g, cap) > 3 * COL_TILE:  # very wide layers: chunks under 16 tiles
        cap = max(1, (3 * COL_TILE - _wino_rows(g, cap) - E * (WINO_NR * g.c + WINO_PAD + mb))
                  // (E * (g.c + mb)))
    chunks = max(1, (total + cap - 1) // cap)
    if chunks > 1:
        chunks = max(chunks, min((chunks + WINO_CHUNK_ROUND - 1) // WINO_CHUNK_ROUND
                                 * WINO_CHUNK_ROUND, total // WINO_MIN_COLS))
    g.wcols = max(1, min(total, cap, _wino_round((total + chunks - 1) // chunks, WINO_COL_UNIT)))
    g.wworkers = max(1, min(g.threads, (total + g.wcols - 1) // g.wcols))


cdef inline Py_ssize_t _wino_round(Py_ssize_t n, Py_ssize_t unit) noexcept nogil:
    return (n + unit - 1) // unit * unit


cdef inline Py_ssize_t _wino_even(Py_ssize_t total, Py_ssize_t chunks) noexcept nogil:
    """Tiles per weight-gradient chunk for `chunks` even chunks, made odd: V and P^T hold
    E runs of C (or M) rows of that many elements, and with an even count at 64 channels
    the E values one tile writes fall 4 KiB multiples apart, into one cache set (ResNet-20's
    stage 3 ran 2x slower at 256 or 512 tiles per chunk than at 511)."""
    return max(1, (total + chunks - 1) // chunks) | 1


# The forward's GEMMs read U and V already in the micro-kernel's panels (no packing per
# chunk: it cost as much as the multiplies at 256 channels and 64-tile chunks): U in
# MR-row panels, padded to whole panels, V in NR-column panels of a chunk rounded to
# WINO_NR tiles (sized for the widest kernel, so a kernel chosen later still fits). The
# E positions of V lie WINO_PAD elements more than a power of two apart, and M's rows
# (ldm, odd) likewise, so one tile's E values do not share a cache set.

cdef inline Py_ssize_t _wino_vstride(const Geom* g) noexcept nogil:
    """Elements between two positions of a chunk's V."""
    return g.c * _wino_round(g.wcols, WINO_NR) + WINO_PAD


cdef inline Py_ssize_t _wino_ldm(const Geom* g) noexcept nogil:
    """Row stride of a chunk's M [E, WINO_MB, ldm]."""
    return g.wcols | 1


cdef inline Py_ssize_t _wino_scratch(const Geom* g, Py_ssize_t cols) noexcept nogil:
    """V and M (one block of output channels) of a chunk of `cols` tiles, and the padded
    input rows."""
    return (_wino_e(g) * (g.c * _wino_round(cols, WINO_NR) + WINO_PAD
                          + min(g.m, <Py_ssize_t> WINO_MB) * (cols | 1))
            + _wino_rows(g, cols))


cdef inline Py_ssize_t _wino_per_worker(const Geom* g) noexcept nogil:
    """A worker's chunk scratch; a single worker runs its transforms on all the threads,
    each with its own padded input rows."""
    return (_wino_scratch(g, g.wcols)
            + (g.threads - 1 if g.wworkers == 1 else 0) * _wino_rows(g, g.wcols))


cdef Py_ssize_t _wino_workspace(const Geom* g) noexcept nogil:
    """U for all E positions, then one chunk's scratch per worker."""
    return (_wino_e(g) * _wino_round(g.m, _wino_mr()) * g.c
            + g.wworkers * _wino_per_worker(g))


cdef void _wino_lanes(const double* kd, floating* ub, int t) noexcept nogil:
    """ub[e, l] = (G k_l G^T)[e] for WINO_W_LANES kernels, tap j of kernel l at
    kd[j * WINO_W_LANES + l]; lanes innermost so that the loops vectorise (in double)."""
    cdef Py_ssize_t l, k, r, L = WINO_W_LANES
    cdef double t4[6][3][WINO_W_LANES]
    cdef double a, b, c
    for k in range(3):  # t4 = G k, column by column
        for l in range(L):
            a = kd[k * L + l]
            b = kd[(3 + k) * L + l]
            c = kd[(6 + k) * L + l]
            if t == 4:
                t4[0][k][l] = a * 0.25
                t4[1][k][l] = -(a + b + c) * (1.0 / 6)
                t4[2][k][l] = -(a - b + c) * (1.0 / 6)
                t4[3][k][l] = a * (1.0 / 24) + b * (1.0 / 12) + c * (1.0 / 6)
                t4[4][k][l] = a * (1.0 / 24) - b * (1.0 / 12) + c * (1.0 / 6)
                t4[5][k][l] = c
            else:
                t4[0][k][l] = a
                t4[1][k][l] = (a + b + c) * 0.5
                t4[2][k][l] = (a - b + c) * 0.5
                t4[3][k][l] = c
    for r in range(t + 2):  # then (G k) G^T, row by row
        for l in range(L):
            a = t4[r][0][l]
            b = t4[r][1][l]
            c = t4[r][2][l]
            if t == 4:
                ub[(6 * r) * L + l] = <floating>(a * 0.25)
                ub[(6 * r + 1) * L + l] = <floating>(-(a + b + c) * (1.0 / 6))
                ub[(6 * r + 2) * L + l] = <floating>(-(a - b + c) * (1.0 / 6))
                ub[(6 * r + 3) * L + l] = <floating>(a * (1.0 / 24) + b * (1.0 / 12)
                                                     + c * (1.0 / 6))
                ub[(6 * r + 4) * L + l] = <floating>(a * (1.0 / 24) - b * (1.0 / 12)
                                                     + c * (1.0 / 6))
                ub[(6 * r + 5) * L + l] = <floating>c
            else:
                ub[(4 * r) * L + l] = <floating>a
                ub[(4 * r + 1) * L + l] = <floating>((a + b + c) * 0.5)
                ub[(4 * r + 2) * L + l] = <floating>((a - b + c) * 0.5)
                ub[(4 * r + 3) * L + l] = <floating>c


cdef void _wino_weights(const floating* w, floating* u, const Geom* g, Py_ssize_t mr,
                        bint flip, int n_threads, int t, bint panels_outer) noexcept nogil:
    """u[e, ob, i, r] (panels_outer: u[ob, e, i, r]) = (G k G^T)[e] of F(t x t) for
    k = w[ob * mr + r, i] (flip: w is the weight of the conv whose backward-data this is,
    [C, M, 3, 3], and k = w[i, ob * mr + r] rotated by 180 degrees: no flipped copy), 0 for
    rows past m: each position's U in MR-row panels, the panels over n_threads threads."""
    cdef Py_ssize_t ob, mb = (g.m + mr - 1) // mr
    if n_threads > 1:
        for ob in prange(mb, num_threads=n_threads, schedule="static"):
            _wino_weights_panel(w, u, g, mr, flip, ob, t, panels_outer)
    else:
        for ob in range(mb):
            _wino_weights_panel(w, u, g, mr, flip, ob, t, panels_outer)


cdef void _wino_weights_panel(const floating* w, floating* u, const Geom* g, Py_ssize_t mr,
                              bint flip, Py_ssize_t ob, int t,
                              bint panels_outer) noexcept nogil:
    """_wino_weights for panel ob: a run of WINO_W_LANES / mr input channels is
    transformed at once, and each position's share of it is one contiguous run of u."""
    cdef Py_ssize_t ib, i0, i, r, j, e, n, o, run = WINO_W_LANES // mr, c = g.c
    cdef Py_ssize_t mb = (g.m + mr - 1) // mr, E = (t + 2) * (t + 2)
    cdef double kd[9 * WINO_W_LANES]
    cdef floating ub[36 * WINO_W_LANES]
    memset(kd, 0, sizeof(kd))
    for ib in range((c + run - 1) // run):
        i0 = ib * run
        n = min(run, c - i0)
        for r in range(mr):
            o = ob * mr + r
            for i in range(n):
                for j in range(9):
                    if o >= g.m:
                        kd[j * WINO_W_LANES + i * mr + r] = 0
                    elif flip:
                        kd[j * WINO_W_LANES + i * mr + r] = w[((i0 + i) * g.m + o) * 9 + 8 - j]
                    else:
                        kd[j * WINO_W_LANES + i * mr + r] = w[(o * c + i0 + i) * 9 + j]
        _wino_lanes(kd, ub, t)
        for e in range(E):
            memcpy(u + (((ob * E + e) if panels_outer else (e * mb + ob)) * c + i0) * mr,
                   ub + e * WINO_W_LANES, n * mr * sizeof(floating))


cdef extern from "conv_wino_lanes.h" nogil:
    void cnnc_wl_in_s(const float* rows, const Py_ssize_t* off, int n, int t, Py_ssize_t rw,
                      float* d, Py_ssize_t es)
    void cnnc_wl_in_d(const double* rows, const Py_ssize_t* off, int n, int t, Py_ssize_t rw,
                      double* d, Py_ssize_t es)
    void cnnc_wl_dy_s(const float* src, Py_ssize_t ps, int n, Py_ssize_t ld, int nr, int nc,
                      int t, float* d, Py_ssize_t es)
    void cnnc_wl_dy_d(const double* src, Py_ssize_t ps, int n, Py_ssize_t ld, int nr, int nc,
                      int t, double* d, Py_ssize_t es)
    void cnnc_wl_gt_s(const float* z, Py_ssize_t es, int t, float* r)
    void cnnc_wl_gt_d(const double* z, Py_ssize_t es, int t, double* r)
    void cnnc_wl_out_s(const float* src, Py_ssize_t es, int t, float* m)
    void cnnc_wl_out_d(const double* src, Py_ssize_t es, int t, double* m)


cdef void _wino_input(const floating* x, floating* v, floating* rows, const Geom* g,
                      Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t pw, Py_ssize_t es,
                      Py_ssize_t rstride, int n_threads) noexcept nogil:
    """v[e * es + (k // pw) * C * pw + ch * pw + k % pw] = (B^T d B)[e] for the input
    patch d of tile q = q0 + k (0 outside x): panels of pw tiles (pw = nq: plain rows).
    Channels over n_threads threads, thread i using the rows at rows + i * rstride."""
    cdef Py_ssize_t t = g.wtile, tw = _wino_tw(g), rw = t * tw + 2, tr0 = q0 // tw
    cdef Py_ssize_t k, ch, tid = 0
    cdef Py_ssize_t off[WINO_MAX_COLS]
    for k in range(nq):  # tile q0 + k's patch starts at rows[off[k]]
        off[k] = ((q0 + k) // tw - tr0) * (t + 2) * rw + t * ((q0 + k) % tw)
    if n_threads > 1:
        with parallel(num_threads=n_threads):
            tid = threadid()
            for ch in prange(g.c, schedule="static"):
                _wino_input_channel(x, v, rows + tid * rstride, g, q0, nq, pw, es, off, ch)
    else:
        for ch in range(g.c):
            _wino_input_channel(x, v, rows, g, q0, nq, pw, es, off, ch)


cdef void _wino_input_channel(const floating* x, floating* v, floating* rows, const Geom* g,
                              Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t pw, Py_ssize_t es,
                              const Py_ssize_t* off, Py_ssize_t ch) noexcept nogil:
    """_wino_input for channel ch. The t + 2 input rows under each tile row the chunk
    touches are first copied, zero-padded, into `rows` (t + 2 rows of t * tw + 2 per tile
    row), so that the transform, WINO_LANES tiles at a time in vector lanes, reads without
    bounds checks."""
    cdef Py_ssize_t t = g.wtile, a = t + 2, tw = _wino_tw(g), th = _wino_tiles(g) // tw
    cdef Py_ssize_t rw = t * tw + 2, tr0 = q0 // tw, ntr = (q0 + nq - 1) // tw - tr0 + 1
    cdef Py_ssize_t tr, b, ta, r, ih, k, kb, k0, n, l, e, L = WINO_LANES
    cdef Py_ssize_t lo = max(0, g.pl), hi = min(rw, g.w + g.pl)  # rows[.][c] = x[ih, c - pl]
    cdef floating d[36 * WINO_LANES]
    cdef const floating* p
    cdef floating* dst
    for tr in range(ntr):
        b = (tr0 + tr) // th
        ta = tr0 + tr - b * th
        for r in range(a):
            ih = t * ta - g.pt + r
            dst = rows + (tr * a + r) * rw
            if 0 <= ih < g.h and hi > lo:  # short rows: plain loops beat libc calls
                p = x + ((b * g.c + ch) * g.h + ih) * g.w - g.pl
                for k in range(lo):
                    dst[k] = 0
                for k in range(lo, hi):
                    dst[k] = p[k]
                for k in range(hi, rw):
                    dst[k] = 0
            else:
                for k in range(rw):
                    dst[k] = 0
    for kb in range((nq + L - 1) // L):
        k0 = kb * L
        n = min(L, nq - k0)
        if n == L and k0 % pw + L <= pw:  # straight into v: one run per position
            dst = v + (k0 // pw * g.c + ch) * pw + k0 % pw
            if floating is float:
                cnnc_wl_in_s(rows, off + k0, <int> n, <int> t, rw, dst, es)
            else:
                cnnc_wl_in_d(rows, off + k0, <int> n, <int> t, rw, dst, es)
        else:
            if floating is float:
                cnnc_wl_in_s(rows, off + k0, <int> n, <int> t, rw, d, L)
            else:
                cnnc_wl_in_d(rows, off + k0, <int> n, <int> t, rw, d, L)
            for l in range(n):
                dst = v + ((k0 + l) // pw * g.c + ch) * pw + (k0 + l) % pw
                for e in range(a * a):
                    dst[e * es] = d[e * L + l]


cdef void _wino_output(const floating* mm, floating* y, const floating* bias, const Geom* g,
                       Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t o0, Py_ssize_t no, int act,
                       floating act_param, int n_threads) noexcept nogil:
    """y tile q of channels o0 .. o0 + no = act(A^T M_q A + bias), clipped to the output;
    M_q[e] = mm[e, o - o0, q - q0] (rows _wino_ldm apart, positions WINO_MB rows apart).
    Channels over n_threads threads."""
    cdef Py_ssize_t t = g.wtile, tw = _wino_tw(g), t1 = _wino_tiles(g), P = g.oh * g.ow
    cdef Py_ssize_t o, q, b, ta, j, k
    cdef Py_ssize_t yoff[WINO_MAX_COLS]
    cdef int clip[WINO_MAX_COLS]
    for k in range(nq):  # tile q0 + k: its first pixel in image plane 0, rows x columns kept
        q = q0 + k
        b = q // t1
        ta = (q - b * t1) // tw
        j = q - b * t1 - ta * tw
        yoff[k] = b * g.m * P + t * ta * g.ow + t * j
        clip[k] = <int> (min(t, g.oh - t * ta) * 8 + min(t, g.ow - t * j))
    if n_threads > 1:
        for o in prange(o0, o0 + no, num_threads=n_threads, schedule="static"):
            _wino_output_channel(mm + (o - o0) * _wino_ldm(g), y + o * P, bias, g, nq, o,
                                 yoff, clip, act, act_param)
    else:
        for o in range(o0, o0 + no):
            _wino_output_channel(mm + (o - o0) * _wino_ldm(g), y + o * P, bias, g, nq, o,
                                 yoff, clip, act, act_param)


cdef void _wino_output_channel(const floating* mo, floating* yo, const floating* bias,
                               const Geom* g, Py_ssize_t nq, Py_ssize_t o,
                               const Py_ssize_t* yoff, const int* clip, int act,
                               floating act_param) noexcept nogil:
    """_wino_output for channel o: M of its tiles at mo, y's plane o of image 0 at yo.
    WINO_LANES tiles at a time in vector lanes."""
    cdef Py_ssize_t t = g.wtile, E = _wino_e(g), ldm = _wino_ldm(g), L = WINO_LANES
    cdef Py_ssize_t e, i, k, kb, k0, n, l, nr, nc, es
    cdef floating m[36 * WINO_LANES]
    cdef floating bo = 0 if bias == NULL else bias[o]
    cdef const floating* src
    cdef floating* dst
    for kb in range((nq + L - 1) // L):
        k0 = kb * L
        n = min(L, nq - k0)
        src = mo + k0
        es = min(g.m, <Py_ssize_t> WINO_MB) * ldm
        if n < L:  # a last partial block: its lanes, zero-padded, through `m`
            for e in range(E):
                for l in range(L):
                    m[e * L + l] = src[e * es + l] if l < n else 0
            src, es = m, L
        if floating is float:
            cnnc_wl_out_s(src, es, <int> t, m)
        else:
            cnnc_wl_out_d(src, es, <int> t, m)
        for l in range(n):
            dst = yo + yoff[k0 + l]
            nr = clip[k0 + l] >> 3
            nc = clip[k0 + l] & 7
            for i in range(nr):
                for k in range(nc):
                    dst[i * g.ow + k] = _gemm_act(m[(t * i + k) * L + l] + bo, act,
                                                  act_param)


cdef void _wino_gemm(const floating* u, const floating* v, floating* mm, Py_ssize_t m,
                     Py_ssize_t c, Py_ssize_t nq, Py_ssize_t ldm, int kernel, Py_ssize_t mr,
                     Py_ssize_t nr) noexcept nogil:
    """mm[m, nq] (rows ldm apart) = U @ V for U [m, c] in MR-row panels and V [c, nq] in
    NR-column panels: the micro-kernel on each tile, column panel outermost (it stays in
    L2 while U's panels stream)."""
    cdef Py_ssize_t jb, ib, j, i
    for jb in range((nq + nr - 1) // nr):
        j = jb * nr
        for ib in range((m + mr - 1) // mr):
            i = ib * mr
            _tile(kernel, c, u + i * c, v + j * c, nr, 0, mm + i * ldm + j, ldm,
                  min(mr, m - i), min(nr, nq - j), mr, nr, 1, 0, NULL, NULL, ACT_NONE, 0)


cdef void _wino_chunk(const floating* x, const floating* u, const floating* bias, floating* y,
                      floating* ws, const Geom* g, Py_ssize_t q0, Py_ssize_t nq, int act,
                      floating act_param, int n_threads) noexcept nogil:
    """Tiles q0 .. q0 + nq: input transform, then per block of WINO_MB output channels
    (so V, not M, sets the chunk's width) E GEMMs over the threads and the output
    transform."""
    cdef int kernel = cnnc_gemm_kernel()
    cdef Py_ssize_t mr = cnnc_gemm_mr(kernel, floating is double)
    cdef Py_ssize_t nr = cnnc_gemm_nr(kernel, floating is double)
    cdef Py_ssize_t e, E = _wino_e(g), es = _wino_vstride(g), ldm = _wino_ldm(g)
    cdef Py_ssize_t su = _wino_round(g.m, mr) * g.c, mb = min(g.m, <Py_ssize_t> WINO_MB)
    cdef Py_ssize_t ob, o0, no
    cdef floating* v = ws
    cdef floating* mm = ws + E * es
    _wino_input(x, v, mm + E * mb * ldm, g, q0, nq, nr, es, _wino_rows(g, g.wcols), n_threads)
    for ob in range((g.m + mb - 1) // mb):
        o0 = ob * mb
        no = min(mb, g.m - o0)
        if n_threads > 1:
            for e in prange(E, num_threads=n_threads, schedule="static"):
                _wino_gemm(u + e * su + o0 * g.c, v + e * es, mm + e * mb * ldm, no, g.c, nq,
                           ldm, kernel, mr, nr)
        else:
            for e in range(E):
                _wino_gemm(u + e * su + o0 * g.c, v + e * es, mm + e * mb * ldm, no, g.c, nq,
                           ldm, kernel, mr, nr)
        _wino_output(mm, y, bias, g, q0, nq, o0, no, act, act_param, n_threads)


cdef void _wino_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                    floating* ws, const Geom* g, int act, floating act_param,
                    int n_threads, bint flip=False, floating* uc=NULL,
                    bint fill=True) noexcept nogil:
    """y = act(conv3x3(x, w) + bias) by Winograd F(t x t, 3x3) (flip: w as in
    _wino_weights); ws: _wino_workspace elements; U in uc (made when `fill`) if not NULL,
    else at the workspace's start."""
    cdef int kernel = cnnc_gemm_kernel()
    cdef Py_ssize_t k = 0, tid = 0, total = g.n * _wino_tiles(g)
    cdef Py_ssize_t chunks = (total + g.wcols - 1) // g.wcols
    cdef Py_ssize_t per = _wino_per_worker(g)
    cdef Py_ssize_t size_u = _wino_e(g) * _wino_round(g.m, _wino_mr()) * g.c
    cdef floating* u = uc if uc != NULL else ws
    if uc == NULL or fill:
        _wino_weights(w, u, g, cnnc_gemm_mr(kernel, floating is double), flip, n_threads,
                      <int> g.wtile, False)
    cdef cnnc_queue queue
    if g.wworkers > 1:
        cnnc_queue_init(&queue, chunks, g.wworkers)
        with parallel(num_threads=g.wworkers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _wino_chunk(x, u, bias, y, ws + size_u + tid * per, g, k * g.wcols,
                            min(g.wcols, total - k * g.wcols), act, act_param, 1)
                k = cnnc_queue_take(&queue, tid)
    else:
        for k in range(chunks):
            _wino_chunk(x, u, bias, y, ws + size_u, g, k * g.wcols,
                        min(g.wcols, total - k * g.wcols), act, act_param, n_threads)


# Weight gradient by Winograd F(t x t, 3x3). With P = A dY A^T ((t+2) x (t+2), from a t x t
# tile of dy) and V = B^T d B (the forward's input transform), dW[o, i] = G^T Z[o, i] G
# where Z[o, i] = sum over tiles of P_o * V_i (elementwise): for each of the E positions e
# a GEMM Z_e^T[C, M] += V_e[C, tiles] @ P_e^T[tiles, M], contracting over the tiles.
# 16/36 (F(2x2)) or 36/144 (F(4x4)) of im2col's multiplies; the GEMMs are as large as
# M x C and as deep as a chunk.

cdef inline bint _wino_wg_ok(const Geom* g) noexcept nogil:
    """3x3 stride-1 ungrouped layers with >= 64 channels in and out, or >= 32 with F(4x4):
    measured 1.45-1.65x the direct weight gradient at 32 channels (ResNet-20's stage 2, the
    seed CNN's conv2), where F(2x2) is 0.9x of it; at 16 F(4x4) is 0.7x."""
    return (g.path == PATH_IM2COL and g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1
            and g.dh == 1 and g.dw == 1 and g.groups == 1
            and min(g.c, g.m) >= WINO_WG_MIN_CHANNELS
            and (g.wtile == 4 or min(g.c, g.m) >= WINO_MIN_CHANNELS)
            and _wino_cover(g) >= WINO_MIN_TILES)


cdef Py_ssize_t _wino_wg_cols(const Geom* g) noexcept nogil:
    """Tiles per weight-gradient chunk, the GEMMs' depth: as many as a thread's share of
    the workspace bound holds (at most the forward's chunk; less what the partial Z of
    _wino_wg_slots take beyond the 4*M*K term: F(4x4)'s two are 2x it), or up to
    WINO_WG_COLS where the 4*M*K term leaves room; then evened out over the chunks (a last
    chunk of a few tiles would cost a pass over Z)."""
    cdef Py_ssize_t total = g.n * _wino_tiles(g), E = _wino_e(g)
    cdef Py_ssize_t room = (4 * g.m * g.kdim - E * g.m * g.c) // (E * (g.c + g.m))
    cdef Py_ssize_t extra = 0
    cdef Py_ssize_t share
    if E * g.m * g.c <= WINO_WG_SLOT_MAX:
        extra = max(0, WINO_WG_SLOTS * E * g.m * g.c - 4 * g.m * g.kdim)
    share = ((3 * COL_TILE - _wino_rows(g, g.wcols) - 2 * E * WINO_PAD - extra)
             // (E * (g.c + g.m)) - 1)  # - 1: _wino_even may add one
    cdef Py_ssize_t cols = max(1, min(g.wcols, share), min(<Py_ssize_t> WINO_WG_COLS, room))
    return _wino_even(total, (total + cols - 1) // cols)


cdef inline Py_ssize_t _wino_wg_slots(const Geom* g) noexcept nogil:
    """Partial Z summed separately (one thread each, added in order): 2 when Z is small
    and there are chunks to share, else 1 (the threads then work inside the GEMMs, which
    at 64 channels, 64 x 64 outputs, barely gain: ResNet-20's stage 3 ran 1.1x on two)."""
    cdef Py_ssize_t total = g.n * _wino_tiles(g), cols = _wino_wg_cols(g)
    if _wino_e(g) * g.m * g.c > WINO_WG_SLOT_MAX or total <= cols:
        return 1
    return WINO_WG_SLOTS


cdef inline Py_ssize_t _wino_wg_per_worker(const Geom* g) noexcept nogil:
    """One chunk's V, P^T and padded input rows (one set per thread when a single slot
    runs its transforms on all the threads)."""
    return (_wino_e(g) * ((g.c + g.m) * _wino_wg_cols(g) + 2 * WINO_PAD)
            + (g.threads if _wino_wg_slots(g) == 1 else 1) * _wino_rows(g, _wino_wg_cols(g)))


cdef Py_ssize_t _wino_wg_workspace(const Geom* g) noexcept nogil:
    """Z (per slot) for all E positions, then each worker's chunk scratch."""
    cdef Py_ssize_t slots = _wino_wg_slots(g)
    return (slots * _wino_e(g) * g.m * g.c
            + min(g.threads, slots) * _wino_wg_per_worker(g))


cdef void _wino_dy(const floating* dy, floating* pt, const Geom* g, Py_ssize_t q0,
                   Py_ssize_t nq, int n_threads) noexcept nogil:
    """pt[e * (nq * M + WINO_PAD) + (q - q0) * M + o] = (A d A^T)[e] for the t x t tile d
    of dy[., o] at tile q (0 past the output's last row or column): tiles over n_threads
    threads, WINO_LANES output channels at a time in vector lanes."""
    cdef Py_ssize_t q
    if n_threads > 1:
        for q in prange(q0, q0 + nq, num_threads=n_threads, schedule="static"):
            _wino_dy_tile(dy, pt, g, q0, nq, q)
    else:
        for q in range(q0, q0 + nq):
            _wino_dy_tile(dy, pt, g, q0, nq, q)


cdef void _wino_dy_tile(const floating* dy, floating* pt, const Geom* g, Py_ssize_t q0,
                        Py_ssize_t nq, Py_ssize_t q) noexcept nogil:
    """_wino_dy for tile q."""
    cdef Py_ssize_t t = g.wtile, tw = _wino_tw(g), t1 = _wino_tiles(g), P = g.oh * g.ow
    cdef Py_ssize_t ob, o0, e, l, n, es = nq * g.m + WINO_PAD, E = _wino_e(g), L = WINO_LANES
    cdef Py_ssize_t b = q // t1, a = (q - b * t1) // tw, j = q - b * t1 - a * tw
    cdef Py_ssize_t oy = t * a, ox = t * j
    cdef int nr = <int> min(t, g.oh - oy), nc = <int> min(t, g.ow - ox)
    cdef floating p[36 * WINO_LANES]
    cdef const floating* src
    cdef floating* out
    for ob in range((g.m + L - 1) // L):
        o0 = ob * L
        n = min(L, g.m - o0)
        src = dy + (b * g.m + o0) * P + oy * g.ow + ox
        out = pt + (q - q0) * g.m + o0
        if n == L:
            if floating is float:
                cnnc_wl_dy_s(src, P, <int> n, g.ow, nr, nc, <int> t, out, es)
            else:
                cnnc_wl_dy_d(src, P, <int> n, g.ow, nr, nc, <int> t, out, es)
        else:  # the last channels: through `p`
            if floating is float:
                cnnc_wl_dy_s(src, P, <int> n, g.ow, nr, nc, <int> t, p, L)
            else:
                cnnc_wl_dy_d(src, P, <int> n, g.ow, nr, nc, <int> t, p, L)
            for e in range(E):
                for l in range(n):
                    out[e * es + l] = p[e * L + l]


cdef void _wino_wg_output(const floating* zt, floating* dw, const Geom* g, bint accumulate,
                          int n_threads, int t) noexcept nogil:
    """dw[o, i] (+)= G^T Z[o, i] G with Z[o, i][e] = zt[e, i, o] (F(t x t)): blocks of
    WINO_LANES output channels over n_threads threads."""
    cdef Py_ssize_t ob, L = WINO_LANES
    if n_threads > 1:
        for ob in prange((g.m + L - 1) // L, num_threads=n_threads, schedule="static"):
            _wino_wg_output_block(zt, dw, g, accumulate, ob * L, t)
    else:
        for ob in range((g.m + L - 1) // L):
            _wino_wg_output_block(zt, dw, g, accumulate, ob * L, t)


cdef void _wino_wg_output_block(const floating* zt, floating* dw, const Geom* g,
                                bint accumulate, Py_ssize_t o0, int t) noexcept nogil:
    """_wino_wg_output for output channels o0 .. o0 + WINO_LANES, in vector lanes: their E
    positions are E short contiguous runs of zt (one (o, i) at a time would read E values
    1 MiB apart at 512 channels: 2x slower)."""
    cdef Py_ssize_t o, i, e, k, es, E = (t + 2) * (t + 2), L = WINO_LANES, n = min(L, g.m - o0)
    cdef floating z[36 * WINO_LANES]
    cdef floating r[9 * WINO_LANES]
    cdef const floating* src
    cdef floating* dst
    for i in range(g.c):
        src = zt + i * g.m + o0
        es = g.c * g.m
        if n < L:  # the last channels, zero-padded, through `z`
            for e in range(E):
                for o in range(L):
                    z[e * L + o] = src[e * es + o] if o < n else 0
            src, es = z, L
        if floating is float:
            cnnc_wl_gt_s(src, es, t, r)
        else:
            cnnc_wl_gt_d(src, es, t, r)
        for o in range(n):
            dst = dw + ((o0 + o) * g.c + i) * 9
            for k in range(9):
                dst[k] = (dst[k] if accumulate else 0) + r[k * L + o]


cdef void _wino_wg_chunks(const floating* x, const floating* dy, floating* zt,
                          floating* ws, const Geom* g, Py_ssize_t k0, Py_ssize_t k1,
                          int n_threads) noexcept nogil:
    """zt = the sum over chunks k0 .. k1 (in order) of V_e @ P_e^T, e < E."""
    cdef Py_ssize_t k, e, q0, nq, total = g.n * _wino_tiles(g), cols = _wino_wg_cols(g)
    cdef Py_ssize_t E = _wino_e(g)
    cdef floating* v = ws
    cdef floating* pt = v + E * (g.c * cols + WINO_PAD)
    cdef floating* rows = pt + E * (g.m * cols + WINO_PAD)
    for k in range(k0, k1):
        q0 = k * cols
        nq = min(cols, total - q0)
        _wino_input(x, v, rows, g, q0, nq, nq, g.c * nq + WINO_PAD, _wino_rows(g, cols),
                    n_threads)
        _wino_dy(dy, pt, g, q0, nq, n_threads)
        for e in range(E):
            gemm(False, False, g.c, g.m, nq, 1, v + e * (g.c * nq + WINO_PAD), nq,
                 pt + e * (nq * g.m + WINO_PAD), g.m,
                 0 if k == k0 else 1, zt + e * g.c * g.m, g.m, NULL, BIAS_NONE, ACT_NONE,
                 0, n_threads)


cdef void _wino_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                      const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= the weight gradient by Winograd: chunks of _wino_wg_cols tiles in order,
    the threads inside the GEMMs, or (_wino_wg_slots) fixed runs of chunks summed into
    partial Z by one thread each, then added in order. ws: _wino_wg_workspace elements."""
    cdef Py_ssize_t total = g.n * _wino_tiles(g), cols = _wino_wg_cols(g)
    cdef Py_ssize_t chunks = (total + cols - 1) // cols, slots = _wino_wg_slots(g)
    cdef Py_ssize_t size = _wino_e(g) * g.m * g.c, s = 0, e, tid = 0
    cdef floating* scratch = ws + slots * size
    cdef cnnc_queue queue
    if slots == 1:
        _wino_wg_chunks(x, dy, ws, scratch, g, 0, chunks, n_threads)
    else:
        cnnc_queue_init(&queue, slots, min(<Py_ssize_t> n_threads, slots))
        with parallel(num_threads=min(<Py_ssize_t> n_threads, slots)):
            tid = threadid()
            s = cnnc_queue_take(&queue, tid)
            while s >= 0:
                _wino_wg_chunks(x, dy, ws + s * size, scratch + tid * _wino_wg_per_worker(g),
                                g, s * chunks // slots, (s + 1) * chunks // slots, 1)
                s = cnnc_queue_take(&queue, tid)
        for s in range(1, slots):
            for e in prange(size, num_threads=n_threads if size >= PARALLEL_MIN_ELEMS else 1,
                            schedule="static"):
                ws[e] = ws[e] + ws[s * size + e]
    _wino_wg_output(ws, dw, g, accumulate, n_threads, <int> g.wtile)


# Winograd F(2x2, 3x3) with the tiles in vector lanes (conv_winograd.h) for thinner layers
# (16-64 channels), where the 16 general GEMMs above are too thin and the scalar
# transforms dominate. A chunk is g.wnb whole images, or a band of g.wna tile rows of one
# image when an image's transformed input is too large; per chunk and channel the input
# is split into its 4 polyphase planes (L1-sized) and transformed VL tiles at a time into
# v (its 16 positions side by side per vector of tiles); the weights are transformed and
# packed once per call, MR output channels k-major per position e; a micro-kernel per
# (e, MR channels, up to 3 vectors of tiles) with K = C feeds the output transform, which
# adds the bias (and relu) and interleaves the tile's pixels so that every output row is
# one contiguous run of the stage buffer.
# Virtual tile q = (b * (na + 1) + A) * rw + j of a chunk: image b, tile row A, tile
# column j; each image holds na + 1 rows of rw = tw + 1 tiles (the last row and column are
# wasted, so that the 4x4 patches' rows are contiguous in the polyphase planes).

cdef extern from "conv_winograd.h" nogil:
    void cnnc_wino_copy_s(float* dst, const float* src, Py_ssize_t n)
    void cnnc_wino_copy_d(double* dst, const double* src, Py_ssize_t n)
    void cnnc_wino_split_s(const float* src, Py_ssize_t w, Py_ssize_t pl, Py_ssize_t pairs,
                           float* buf, float* ev, float* od)
    void cnnc_wino_split_d(const double* src, Py_ssize_t w, Py_ssize_t pl, Py_ssize_t pairs,
                           double* buf, double* ev, double* od)
    void cnnc_wino_input_s(const float* z, Py_ssize_t ps, Py_ssize_t rw, Py_ssize_t nq,
                           float* v)
    void cnnc_wino_input_d(const double* z, Py_ssize_t ps, Py_ssize_t rw, Py_ssize_t nq,
                           double* v)
    void cnnc_wino_block_s(Py_ssize_t K, const float* u, const float* v, Py_ssize_t ldv,
                           int nv, float* mm, const float* bias, int rows, int act,
                           float slope, float* st, Py_ssize_t lds, Py_ssize_t half)
    void cnnc_wino_block_d(Py_ssize_t K, const double* u, const double* v, Py_ssize_t ldv,
                           int nv, double* mm, const double* bias, int rows, int act,
                           double slope, double* st, Py_ssize_t lds, Py_ssize_t half)
    void cnnc_wpool_input_s(const float* z, Py_ssize_t ps, Py_ssize_t rw, Py_ssize_t nq,
                            float* v)
    void cnnc_wpool_input_d(const double* z, Py_ssize_t ps, Py_ssize_t rw, Py_ssize_t nq,
                            double* v)
    void cnnc_wpool_split_s(const float* src, Py_ssize_t w, Py_ssize_t pl, Py_ssize_t n,
                            float* buf, float* o, Py_ssize_t os)
    void cnnc_wpool_split_d(const double* src, Py_ssize_t w, Py_ssize_t pl, Py_ssize_t n,
                            double* buf, double* o, Py_ssize_t os)
    void cnnc_wpool_block_h(Py_ssize_t K, const float* u, const float* v, Py_ssize_t ldv,
                            int nv, float* mm, const float* bias, int rows, int act,
                            float slope, float* st, Py_ssize_t lds, Py_ssize_t half)
    void cnnc_wpool_block_s(Py_ssize_t K, const float* u, const float* v, Py_ssize_t ldv,
                            int nv, float* mm, const float* bias, int rows, int act,
                            float slope, float* st, Py_ssize_t lds, Py_ssize_t half)
    void cnnc_wpool_block_d(Py_ssize_t K, const double* u, const double* v, Py_ssize_t ldv,
                            int nv, double* mm, const double* bias, int rows, int act,
                            double slope, double* st, Py_ssize_t lds, Py_ssize_t half)
    void cnnc_wino_block4_s(Py_ssize_t K, const float* u, const float* v, Py_ssize_t ldv,
                            int nv, float* mm, const float* bias, int rows, int act,
                            float slope, float* st, Py_ssize_t lds, Py_ssize_t quarter)
    void cnnc_wino_block4_d(Py_ssize_t K, const double* u, const double* v, Py_ssize_t ldv,
                            int nv, double* mm, const double* bias, int rows, int act,
                            double slope, double* st, Py_ssize_t lds, Py_ssize_t quarter)
    void cnnc_wbat_row_s(const float* x, Py_ssize_t img, int n, Py_ssize_t w, Py_ssize_t pl,
                         Py_ssize_t xs, float* xi)
    void cnnc_wbat_row_d(const double* x, Py_ssize_t img, int n, Py_ssize_t w, Py_ssize_t pl,
                         Py_ssize_t xs, double* xi)
    void cnnc_wbat_input_s(const float* xi, Py_ssize_t xs, Py_ssize_t na, Py_ssize_t tw,
                           float* v, Py_ssize_t ss, Py_ssize_t es)
    void cnnc_wbat_input_d(const double* xi, Py_ssize_t xs, Py_ssize_t na, Py_ssize_t tw,
                           double* v, Py_ssize_t ss, Py_ssize_t es)
    void cnnc_wbat_dy_s(const float* dyi, Py_ssize_t xs, Py_ssize_t na, Py_ssize_t tw,
                        float* p, Py_ssize_t ss, Py_ssize_t es)
    void cnnc_wbat_dy_d(const double* dyi, Py_ssize_t xs, Py_ssize_t na, Py_ssize_t tw,
                        double* p, Py_ssize_t ss, Py_ssize_t es)
    void cnnc_wbat_dot_s(const float* p, Py_ssize_t pe, Py_ssize_t ps, const float* v,
                         Py_ssize_t ve, Py_ssize_t vs, Py_ssize_t S, int M, int C, float* zt)
    void cnnc_wbat_dot_d(const double* p, Py_ssize_t pe, Py_ssize_t ps, const double* v,
                         Py_ssize_t ve, Py_ssize_t vs, Py_ssize_t S, int M, int C, double* zt)
    void cnnc_wbat_store_s(const float* st, int n, Py_ssize_t w, float* y, Py_ssize_t img,
                           Py_ssize_t pf)
    void cnnc_wbat_store_d(const double* st, int n, Py_ssize_t w, double* y, Py_ssize_t img,
                           Py_ssize_t pf)
    int CNNC_WINO_MR
    int CNNC_WINO_NV
    int CNNC_WINO_NV4


cdef int _wvec_enabled = 1  # 0: never (tests and benchmarks compare with the other paths)


def _set_wino_vec(bint enabled) -> None:
    """Allow (default) or forbid the vector Winograd path, for tests and benchmarks."""
    global _wvec_enabled
    _wvec_enabled = enabled


cdef inline Py_ssize_t _wvec_rw(const Geom* g) noexcept nogil:
    """Virtual tiles per tile row: the real ones and one wasted."""
    return (g.ow + 1) // 2 + 1


cdef inline Py_ssize_t _wvec_round(Py_ssize_t n) noexcept nogil:
    return (n + WINO_VL - 1) // WINO_VL * WINO_VL


cdef inline Py_ssize_t _wvec_bands(const Geom* g) noexcept nogil:
    return ((g.oh + 1) // 2 + g.wna - 1) // g.wna


cdef inline Py_ssize_t _wvec_chunks(const Geom* g) noexcept nogil:
    return (g.n + g.wnb - 1) // g.wnb * _wvec_bands(g)


cdef inline Py_ssize_t _wvec_count(Py_ssize_t nb, Py_ssize_t na, Py_ssize_t rw) noexcept nogil:
    """Virtual tiles of a chunk, rounded up to whole vectors: all rows but the last
    (whose tiles are wasted, and which the planes hold only as input data)."""
    return _wvec_round((nb * (na + 1) - 1) * rw)


cdef inline Py_ssize_t _wvec_tiles(const Geom* g) noexcept nogil:
    """Virtual tiles of the largest chunk."""
    return _wvec_count(g.wnb, g.wna, _wvec_rw(g))


cdef inline Py_ssize_t _wvec_planes(Py_ssize_t tiles, Py_ssize_t rw) noexcept nogil:
    """Stride of the polyphase planes: the tiles, the reads past them (rw + 1), the last
    row of input data (rw) and the split's stores past it (up to a vector)."""
    return _wvec_round(tiles + rw + 2 * WINO_VL)


cdef inline Py_ssize_t _wvec_cs(Py_ssize_t tiles) noexcept nogil:
    """Stride of v's channels (16 values per tile), a vector more than a power of two for
    most shapes (set-aliasing between the micro-kernel's rows costs up to 2x)."""
    return 16 * tiles + WINO_VL


cdef inline Py_ssize_t _wvec_half(Py_ssize_t tiles) noexcept nogil:
    """Stage rows: output row t of tile row A of channel i at st + (2i + t)*half + 2q."""
    return 2 * tiles + WINO_VL


cdef inline Py_ssize_t _wvec_per_worker(const Geom* g) noexcept nogil:
    """Polyphase planes of one channel, a padded row, v, the micro-kernels' products, the
    stage."""
    cdef Py_ssize_t t = _wvec_tiles(g)
    return (4 * _wvec_planes(t, _wvec_rw(g)) + 2 * _wvec_round(_wvec_rw(g))
            + g.c * _wvec_cs(t) + 16 * CNNC_WINO_MR * CNNC_WINO_NV * WINO_VL
            + 2 * CNNC_WINO_MR * _wvec_half(t))


cdef inline Py_ssize_t _wvec_parts(const Geom* g) noexcept nogil:
    """Runs of output-channel blocks a chunk is cut into (here and in the pooled path): 1,
    or with fewer chunks than threads (a small batch) enough to give each thread one (each
    run transforms the chunk's input again)."""
    cdef Py_ssize_t chunks = _wvec_chunks(g), mb = (g.m + CNNC_WINO_MR - 1) // CNNC_WINO_MR
    if g.threads <= chunks:
        return 1
    return min(mb, (g.threads + chunks - 1) // chunks)


cdef inline Py_ssize_t _wvec_workers(const Geom* g) noexcept nogil:
    return max(1, min(g.threads, _wvec_chunks(g) * _wvec_parts(g)))


cdef inline Py_ssize_t _wvec_packed(const Geom* g, int t) noexcept nogil:
    """The transformed weights of F(t x t): (t+2)^2 positions of M (rounded up to MR) x C."""
    return (t + 2) * (t + 2) * ((g.m + CNNC_WINO_MR - 1) // CNNC_WINO_MR * CNNC_WINO_MR) * g.c


cdef Py_ssize_t _wvec_workspace(const Geom* g) noexcept nogil:
    """Packed transformed weights, then one chunk's scratch per worker."""
    return _wvec_packed(g, 2) + _wvec_workers(g) * _wvec_per_worker(g)


cdef void _wvec_chunking(Geom* g) noexcept nogil:
    """Images per chunk (g.wnb) and tile rows per chunk (g.wna): whole images while one
    image's transformed input fits WINO_V_ELEMS, else bands of one image."""
    cdef Py_ssize_t th = (g.oh + 1) // 2, row = 16 * g.c * _wvec_rw(g)
    if row * (th + 1) <= WINO_V_ELEMS:
        g.wnb = max(1, min(g.n, WINO_V_ELEMS // (row * (th + 1))))
        g.wna = th
    else:
        g.wnb = 1
        g.wna = max(1, min(th, WINO_V_ELEMS // row - 1))


cdef inline bint _wvec_ok(Geom* g) noexcept nogil:
    """3x3 stride-1 ungrouped layers with 16-64 input and >= 16 output channels, not both
    64 or more where the GEMM Winograd above takes the layer (it is as fast), at least
    WINO_VEC_MIN_TILES tiles in the call, and a chunk's scratch within the documented
    bound. Measured against the direct path: 1.2-1.5x at 16-64 channels; against im2col
    for 64 -> 64 channels on 8x8 at batch 2 and 4 (too few tiles for the GEMM Winograd)
    1.35x and 1.65x, at batch 1 1.6x with the weights kept transformed (inference), 0.9x
    without. Sets the chunking."""
    if not (_wvec_enabled and g.path == PATH_IM2COL and g.kh == 3 and g.kw == 3
            and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1 and g.groups == 1 and g.n > 0
            and WINO_VEC_MIN <= g.c <= WINO_MIN_CHANNELS and g.m >= WINO_VEC_MIN
            and (min(g.c, g.m) < WINO_MIN_CHANNELS or not _wino_ok(g))
            and _wino_cover(g) >= WINO_VEC_MIN_TILES):
        return False
    _wvec_chunking(g)
    return _wvec_per_worker(g) <= 2 * COL_TILE


cdef void _wvec_input(const floating* x, floating* z, floating* v, const Geom* g,
                      Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t a0, Py_ssize_t na,
                      Py_ssize_t tiles) noexcept nogil:
    """v for the chunk's virtual tiles q < tiles, channel by channel; each padded
    row passes through buf, whose padding columns are zeroed once."""
    cdef Py_ssize_t rw = _wvec_rw(g), ps = _wvec_planes(tiles, rw), used = nb * (na + 1) * rw
    cdef Py_ssize_t c, b, a, rp, ih, off, p
    cdef const floating* src
    cdef floating* buf = z + 4 * ps
    memset(buf, 0, 2 * _wvec_round(rw) * sizeof(floating))
    for c in range(g.c):
        for b in range(nb):
            for a in range(na + 1):
                for rp in range(2):  # padded row 2*(a0 + a) + rp -> planes 2*rp, 2*rp + 1
                    ih = 2 * (a0 + a) + rp - g.pt
                    src = NULL
                    if 0 <= ih < g.h:
                        src = x + (((b0 + b) * g.c + c) * g.h + ih) * g.w
                    off = (b * (na + 1) + a) * rw
                    if floating is float:
                        cnnc_wino_split_s(src, g.w, g.pl, rw, buf, z + 2 * rp * ps + off,
                                          z + (2 * rp + 1) * ps + off)
                    else:
                        cnnc_wino_split_d(src, g.w, g.pl, rw, buf, z + 2 * rp * ps + off,
                                          z + (2 * rp + 1) * ps + off)
        for p in range(4):  # the reads past the last row, and the wasted tiles, see zeros
            memset(z + p * ps + used, 0, (ps - used) * sizeof(floating))
        if floating is float:
            cnnc_wino_input_s(z, ps, rw, tiles, v + c * _wvec_cs(tiles))
        else:
            cnnc_wino_input_d(z, ps, rw, tiles, v + c * _wvec_cs(tiles))


cdef void _wvec_store(const floating* st, floating* y, const Geom* g, Py_ssize_t o0,
                      Py_ssize_t rows, Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t a0,
                      Py_ssize_t na, Py_ssize_t tiles, int act,
                      floating act_param) noexcept nogil:
    """Copy the stage's output rows to y (applying sigmoid / tanh, which it has not)."""
    cdef Py_ssize_t i, b, a, t, oy, j, rw = _wvec_rw(g), P = g.oh * g.ow
    cdef const floating* src
    cdef floating* dst
    for i in range(rows):
        for b in range(nb):
            for a in range(na):
                for t in range(2):
                    oy = 2 * (a0 + a) + t
                    if oy >= g.oh:
                        break
                    src = st + (2 * i + t) * _wvec_half(tiles) + 2 * (b * (na + 1) + a) * rw
                    dst = y + ((b0 + b) * g.m + o0 + i) * P + oy * g.ow
                    if act == ACT_SIGMOID or act == ACT_TANH:
                        for j in range(g.ow):
                            dst[j] = _gemm_act(src[j], act, act_param)
                    elif floating is float:
                        cnnc_wino_copy_s(dst, src, g.ow)
                    else:
                        cnnc_wino_copy_d(dst, src, g.ow)


cdef void _wvec_chunk(const floating* x, const floating* u, const floating* bias, floating* y,
                      floating* ws, const Geom* g, Py_ssize_t k, Py_ssize_t ob0,
                      Py_ssize_t ob1, int act, floating act_param) noexcept nogil:
    """Chunk k: input transform, then per block ob0 .. ob1 - 1 of MR output channels the
    products and output transforms of all its tiles, then their rows copied out."""
    cdef Py_ssize_t bands = _wvec_bands(g), mr = CNNC_WINO_MR
    cdef Py_ssize_t b0 = k // bands * g.wnb, nb = min(g.wnb, g.n - b0)
    cdef Py_ssize_t a0 = k % bands * g.wna, na = min(g.wna, (g.oh + 1) // 2 - a0)
    cdef Py_ssize_t tiles = _wvec_count(nb, na, _wvec_rw(g))
    cdef Py_ssize_t vl = 16 if floating is float else 8, step = CNNC_WINO_NV * vl
    cdef Py_ssize_t ob, tb, t0, rows
    cdef floating* z = ws
    cdef floating* v = z + 4 * _wvec_planes(tiles, _wvec_rw(g)) + 2 * _wvec_round(_wvec_rw(g))
    cdef floating* mm = v + g.c * _wvec_cs(tiles)
    cdef floating* st = mm + 16 * CNNC_WINO_MR * CNNC_WINO_NV * WINO_VL
    cdef const floating* bo
    cdef int vact = act if act == ACT_RELU or act == ACT_LEAKY else ACT_NONE
    _wvec_input(x, z, v, g, b0, nb, a0, na, tiles)
    for ob in range(ob0, ob1):
        rows = min(mr, g.m - ob * mr)
        bo = bias
        if bias != NULL:
            bo = bias + ob * mr
        for tb in range((tiles + step - 1) // step):
            t0 = tb * step
            if floating is float:
                cnnc_wino_block_s(g.c, u + ob * 16 * g.c * mr, v + 16 * t0, _wvec_cs(tiles),
                                  <int> min(<Py_ssize_t> CNNC_WINO_NV, (tiles - t0) // vl),
                                  mm, bo, <int> rows, vact, act_param, st + 2 * t0,
                                  2 * _wvec_half(tiles), _wvec_half(tiles))
            else:
                cnnc_wino_block_d(g.c, u + ob * 16 * g.c * mr, v + 16 * t0, _wvec_cs(tiles),
                                  <int> min(<Py_ssize_t> CNNC_WINO_NV, (tiles - t0) // vl),
                                  mm, bo, <int> rows, vact, act_param, st + 2 * t0,
                                  2 * _wvec_half(tiles), _wvec_half(tiles))
        _wvec_store(st, y, g, ob * mr, rows, b0, nb, a0, na, tiles, act, act_param)


cdef void _wvec_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                    floating* ws, const Geom* g, int act, floating act_param,
                    int n_threads, floating* uc, bint fill) noexcept nogil:
    """y = act(conv3x3(x, w) + bias) by the vector Winograd path; ws: _wvec_workspace
    elements; the packed weights in uc (made when `fill`) if not NULL. Work items (a chunk
    and a run of its output-channel blocks, _wvec_parts) go to the threads whole (each
    output has one owner, and its sums do not depend on the item)."""
    cdef Py_ssize_t parts = _wvec_parts(g), items = _wvec_chunks(g) * parts
    cdef Py_ssize_t mb = (g.m + CNNC_WINO_MR - 1) // CNNC_WINO_MR, per = _wvec_per_worker(g)
    cdef Py_ssize_t k = 0, tid = 0, workers = min(<Py_ssize_t> n_threads, _wvec_workers(g))
    cdef floating* u = uc if uc != NULL else ws
    cdef floating* scratch = ws + _wvec_packed(g, 2)
    if uc == NULL or fill:
        _wino_weights(w, u, g, CNNC_WINO_MR, False, n_threads, 2, True)
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, items, workers)
        with parallel(num_threads=workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _wvec_chunk(x, u, bias, y, scratch + tid * per, g, k // parts,
                            k % parts * mb // parts, (k % parts + 1) * mb // parts, act,
                            act_param)
                k = cnnc_queue_take(&queue, tid)
    else:
        for k in range(items):
            _wvec_chunk(x, u, bias, y, scratch, g, k // parts, k % parts * mb // parts,
                        (k % parts + 1) * mb // parts, act, act_param)


# Conv -> 2x2 stride-2 max-pool in one pass (inference; conv_winograd.h, "pooled" path):
# Winograd F(4x4, 3x3) with the tiles in vector lanes, each 4x4 output tile pooled to 2x2
# in registers, so neither the conv's output nor the pool's pass over it exists, and only
# the outputs the pool reads are computed (a floor-mode pool drops an odd last row and
# column). The geometry is the conv's with oh, ow the pooled output's: its 2x2 tiles are
# the conv's 4x4 ones, so the vector path's chunking of tile rows, stage and store apply
# as they are. Per chunk and channel each padded input row is split into its 4 column
# phases (two even/odd splits) as rows of 16 polyphase planes, transformed VL tiles at a
# time into v (36 positions per vector of tiles); the weights are F(4x4)'s, packed as the
# batch-lanes path packs them.

cdef inline bint _wpool_ok(Geom* g) noexcept nogil:
    """On the pooled geometry (oh, ow > 0): 3x3 stride-1 ungrouped layers, and a chunk's
    scratch within the documented bound. Sets the chunking."""
    if not (g.path == PATH_IM2COL and g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1
            and g.dh == 1 and g.dw == 1 and g.groups == 1):
        return False
    _wpool_chunking(g)
    return _wpool_per_worker(g) <= 2 * COL_TILE


cdef void _wpool_chunking(Geom* g) noexcept nogil:
    """As _wvec_chunking, with 36 transformed values per tile."""
    cdef Py_ssize_t th = (g.oh + 1) // 2, row = 36 * g.c * _wvec_rw(g)
    if row * (th + 1) <= WINO_V_ELEMS:
        g.wnb = max(1, min(g.n, WINO_V_ELEMS // (row * (th + 1))))
        g.wna = th
    else:
        g.wnb = 1
        g.wna = max(1, min(th, WINO_V_ELEMS // row - 1))


cdef inline Py_ssize_t _wpool_cs(Py_ssize_t tiles) noexcept nogil:
    """Stride of v's channels (36 values per tile), as _wvec_cs."""
    return 36 * tiles + WINO_VL


cdef inline Py_ssize_t _wpool_split(const Geom* g) noexcept nogil:
    """The row split's buffer: a vector (for one that starts in the left padding)."""
    return WINO_VL


cdef inline Py_ssize_t _wpool_per_worker(const Geom* g) noexcept nogil:
    """16 polyphase planes of one channel, the row split's buffer, v, the products, the
    stage."""
    cdef Py_ssize_t t = _wvec_tiles(g)
    return (16 * _wvec_planes(t, _wvec_rw(g)) + _wpool_split(g) + g.c * _wpool_cs(t)
            + 36 * CNNC_WINO_MR * CNNC_WINO_NV4 * WINO_VL + 2 * CNNC_WINO_MR * _wvec_half(t))


cdef Py_ssize_t _wpool_workspace(const Geom* g) noexcept nogil:
    """Packed transformed weights, then one chunk's scratch per worker."""
    return _wvec_packed(g, 4) + _wvec_workers(g) * _wpool_per_worker(g)


cdef void _wpool_input(const floating* x, floating* z, floating* v, const Geom* g,
                       Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t a0, Py_ssize_t na,
                       Py_ssize_t tiles) noexcept nogil:
    """v for the chunk's virtual tiles q < tiles, channel by channel: padded row 4A + r
    splits into its column phases, row A of planes 4r .. 4r + 3."""
    cdef Py_ssize_t rw = _wvec_rw(g), ps = _wvec_planes(tiles, rw), used = nb * (na + 1) * rw
    cdef Py_ssize_t c, b, a, r, ih, p
    cdef const floating* src
    cdef floating* buf = z + 16 * ps
    cdef floating* row
    for c in range(g.c):
        for b in range(nb):
            for a in range(na + 1):
                for r in range(4):
                    ih = 4 * (a0 + a) + r - g.pt
                    src = NULL
                    if 0 <= ih < g.h:
                        src = x + (((b0 + b) * g.c + c) * g.h + ih) * g.w
                    row = z + 4 * r * ps + (b * (na + 1) + a) * rw
                    if floating is float:
                        cnnc_wpool_split_s(src, g.w, g.pl, rw, buf, row, ps)
                    else:
                        cnnc_wpool_split_d(src, g.w, g.pl, rw, buf, row, ps)
        for p in range(16):  # the reads past the last row, and the wasted tiles, see zeros
            memset(z + p * ps + used, 0, (ps - used) * sizeof(floating))
        if floating is float:
            cnnc_wpool_input_s(z, ps, rw, tiles, v + c * _wpool_cs(tiles))
        else:
            cnnc_wpool_input_d(z, ps, rw, tiles, v + c * _wpool_cs(tiles))


cdef void _wpool_chunk(const floating* x, const floating* u, const floating* bias, floating* y,
                       floating* ws, const Geom* g, Py_ssize_t k, Py_ssize_t ob0,
                       Py_ssize_t ob1, int act, floating act_param) noexcept nogil:
    """Chunk k: input transform, then per block ob0 .. ob1 - 1 of MR output channels the
    products, output transforms and pools of all its tiles, then their rows copied out.
    In float32 a last vector with at most 8 tiles whose outputs are read goes as a half
    vector (the seed CNN's conv2 at batch 1: 56 of 64 lanes, 0.134 -> 0.122 ms)."""
    cdef Py_ssize_t bands = _wvec_bands(g), mr = CNNC_WINO_MR
    cdef Py_ssize_t b0 = k // bands * g.wnb, nb = min(g.wnb, g.n - b0)
    cdef Py_ssize_t a0 = k % bands * g.wna, na = min(g.wna, (g.oh + 1) // 2 - a0)
    cdef Py_ssize_t tiles = _wvec_count(nb, na, _wvec_rw(g)), cs = _wpool_cs(tiles)
    cdef Py_ssize_t vl = 16 if floating is float else 8, step = CNNC_WINO_NV4 * vl
    cdef Py_ssize_t ob, tb, t0, rows, half = _wvec_half(tiles)
    cdef Py_ssize_t used = (nb * (na + 1) - 1) * _wvec_rw(g)  # tiles whose outputs are read
    cdef floating* z = ws
    cdef floating* v = z + 16 * _wvec_planes(tiles, _wvec_rw(g)) + _wpool_split(g)
    cdef floating* mm = v + g.c * cs
    cdef floating* st = mm + 36 * CNNC_WINO_MR * CNNC_WINO_NV4 * WINO_VL
    cdef const floating* bo
    cdef int vact = act if act == ACT_RELU or act == ACT_LEAKY else ACT_NONE
    _wpool_input(x, z, v, g, b0, nb, a0, na, tiles)
    for ob in range(ob0, ob1):
        rows = min(mr, g.m - ob * mr)
        bo = bias
        if bias != NULL:
            bo = bias + ob * mr
        for tb in range((tiles + step - 1) // step):
            t0 = tb * step
            if floating is float and step == 16 and used - t0 <= 8:  # a half vector's worth
                cnnc_wpool_block_h(g.c, u + ob * 36 * g.c * mr, v + 36 * t0, cs, 1, mm, bo,
                                   <int> rows, vact, act_param, st + 2 * t0, 2 * half, half)
            elif floating is float:
                cnnc_wpool_block_s(g.c, u + ob * 36 * g.c * mr, v + 36 * t0, cs,
                                   <int> min(<Py_ssize_t> CNNC_WINO_NV4, (tiles - t0) // vl),
                                   mm, bo, <int> rows, vact, act_param, st + 2 * t0, 2 * half,
                                   half)
            else:
                cnnc_wpool_block_d(g.c, u + ob * 36 * g.c * mr, v + 36 * t0, cs,
                                   <int> min(<Py_ssize_t> CNNC_WINO_NV4, (tiles - t0) // vl),
                                   mm, bo, <int> rows, vact, act_param, st + 2 * t0, 2 * half,
                                   half)
        _wvec_store(st, y, g, ob * mr, rows, b0, nb, a0, na, tiles, act, act_param)


cdef void _wpool_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                     floating* ws, const Geom* g, int act, floating act_param,
                     int n_threads, floating* uc, bint fill) noexcept nogil:
    """y = maxpool2x2(act(conv3x3(x, w) + bias)) by the pooled path; ws: _wpool_workspace
    elements; the packed weights in uc (made when `fill`) if not NULL. Work items as the
    vector path's (_wvec_fwd)."""
    cdef Py_ssize_t parts = _wvec_parts(g), items = _wvec_chunks(g) * parts
    cdef Py_ssize_t mb = (g.m + CNNC_WINO_MR - 1) // CNNC_WINO_MR, per = _wpool_per_worker(g)
    cdef Py_ssize_t k = 0, tid = 0, workers = min(<Py_ssize_t> n_threads, _wvec_workers(g))
    cdef floating* u = uc if uc != NULL else ws
    cdef floating* scratch = ws + _wvec_packed(g, 4)
    if uc == NULL or fill:
        _wino_weights(w, u, g, CNNC_WINO_MR, False, n_threads, 4, True)
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, items, workers)
        with parallel(num_threads=workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _wpool_chunk(x, u, bias, y, scratch + tid * per, g, k // parts,
                             k % parts * mb // parts, (k % parts + 1) * mb // parts, act,
                             act_param)
                k = cnnc_queue_take(&queue, tid)
    else:
        for k in range(items):
            _wpool_chunk(x, u, bias, y, scratch, g, k // parts, k % parts * mb // parts,
                         (k % parts + 1) * mb // parts, act, act_param)


# Winograd F(4x4, 3x3) with a lane per image (conv_winograd.h, "batch lanes") for batches
# of 16 and more. Tiles in lanes, as above, waste a tile column and row per image (a
# quarter of F(4x4)'s tiles at 32x32, over half at 16x16; as polyphase planes F(4x4) was no
# faster than F(2x2) there); images in lanes waste none. A chunk is a group of VL images
# (16 floats, 8 doubles) and a band of g.wna tile rows; per channel its padded input rows
# are transposed into xi[row][column][lane] and transformed, a vector of VL images per
# tile, into v; the weights are transformed as above, the products and output transform
# are CNNC_WINO_BLOCK4's, and the stage's rows are transposed back into y.

cdef int _wbat_enabled = 1  # 0: never (tests and benchmarks compare with the other paths)


def _set_wino_batch(bint enabled) -> None:
    """Allow (default) or forbid Winograd with a lane per image, for tests and benchmarks."""
    global _wbat_enabled
    _wbat_enabled = enabled


cdef inline Py_ssize_t _wbat_tw(const Geom* g) noexcept nogil:
    return (g.ow + 3) // 4


cdef inline Py_ssize_t _wbat_th(const Geom* g) noexcept nogil:
    return (g.oh + 3) // 4


cdef inline Py_ssize_t _wbat_xs(const Geom* g) noexcept nogil:
    """Columns of xi: the tiles' 4*tw + 2, and room for the transposes' whole blocks."""
    return max(4 * _wbat_tw(g) + 2, max(g.pl, 0) + _wvec_round(g.w))


cdef inline Py_ssize_t _wbat_cs(const Geom* g) noexcept nogil:
    """Stride of v's channels: 36 vectors per tile, and one more (see _wvec_cs)."""
    return (36 * g.wna * _wbat_tw(g) + 1) * WINO_VL


cdef inline Py_ssize_t _wbat_row(const Geom* g) noexcept nogil:
    """A stage row [4*tiles columns][VL], with a block of slack for the last transpose."""
    return (4 * g.wna * _wbat_tw(g) + WINO_VL) * WINO_VL


cdef inline Py_ssize_t _wbat_per_worker(const Geom* g) noexcept nogil:
    """xi of one channel, v, the products, the stage."""
    return ((4 * g.wna + 2) * _wbat_xs(g) * WINO_VL + g.c * _wbat_cs(g)
            + 36 * CNNC_WINO_MR * CNNC_WINO_NV4 * WINO_VL + 4 * CNNC_WINO_MR * _wbat_row(g))


cdef inline Py_ssize_t _wbat_chunks(const Geom* g, Py_ssize_t vl) noexcept nogil:
    return (g.n + vl - 1) // vl * ((_wbat_th(g) + g.wna - 1) // g.wna)


cdef inline Py_ssize_t _wbat_workers(const Geom* g) noexcept nogil:
    """Workers (and so scratch areas): as many as float32's chunks allow (float64 has more,
    of half as many images)."""
    return max(1, min(g.threads, _wbat_chunks(g, WINO_VL)))


cdef Py_ssize_t _wbat_workspace(const Geom* g) noexcept nogil:
    """Packed transformed weights, then one chunk's scratch per worker (or with a worker
    stride, see _affine: the workers' scratch, then the weights)."""
    if _affine(g, _wbat_per_worker(g)):
        return g.threads * g.wstride + _wvec_packed(g, 4)
    return _wvec_packed(g, 4) + _wbat_workers(g) * _wbat_per_worker(g)


cdef inline bint _wbat_ok(Geom* g) noexcept nogil:
    """3x3 stride-1 ungrouped layers with 16-64 input and >= 16 output channels, from 16
    images with at most a quarter of the last group's lanes empty, where F(4x4) does at
    most 3/4 of F(2x2)'s products (8x8 outputs and up), and a chunk's scratch within the
    documented bound. Forward and flipped backward-data, measured against the vector
    F(2x2) path below 64 channels and GEMM Winograd at 64 (benchmarks/bench_conv_paths.py):
    ResNet-20's 32x32 stage 1.1-1.15x, its 16x16 stage 1.4-1.5x, its 8x8 stage 1.15-1.3x,
    the seed CNN's conv2 1.45-1.6x, VGG-11's 64 -> 128 on 16x16 1.17x. Sets the chunking:
    tile rows per band while v stays within WINO_BAT_ELEMS (two bands of the 32x32 stage:
    1.1x one)."""
    cdef Py_ssize_t th = _wbat_th(g), tw = _wbat_tw(g)
    cdef Py_ssize_t empty = (WINO_VL - g.n % WINO_VL) % WINO_VL
    if not (_wbat_enabled and _wino4_enabled and g.path == PATH_IM2COL and g.kh == 3
            and g.kw == 3 and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1
            and g.groups == 1 and g.n >= WINO_VL and 4 * empty <= g.n
            and WINO_VEC_MIN <= g.c <= WINO_MIN_CHANNELS and g.m >= WINO_VEC_MIN
            and 4 * 36 * th * tw <= 3 * 16 * ((g.oh + 1) // 2) * ((g.ow + 1) // 2)):
        return False
    g.wna = max(1, min(th, WINO_BAT_ELEMS // (36 * g.c * tw * WINO_VL)))
    return _wbat_per_worker(g) <= 2 * COL_TILE


cdef void _wbat_chunk(const floating* x, const floating* u, const floating* bias, floating* y,
                      floating* ws, const Geom* g, Py_ssize_t k, int act,
                      floating act_param) noexcept nogil:
    """Chunk k (image group k // bands, band k % bands): input transposes and transform,
    then per block of MR output channels the products and output transforms of its tiles
    and the transposes of their rows into y."""
    cdef Py_ssize_t vl = 16 if floating is float else 8, mr = CNNC_WINO_MR
    cdef Py_ssize_t th = _wbat_th(g), tw = _wbat_tw(g), bands = (th + g.wna - 1) // g.wna
    cdef Py_ssize_t b0 = k // bands * vl, a0 = k % bands * g.wna, na = min(g.wna, th - a0)
    cdef Py_ssize_t tiles = na * tw, xs = _wbat_xs(g), cs = _wbat_cs(g), row = _wbat_row(g)
    cdef Py_ssize_t P = g.oh * g.ow, xsz = g.c * g.h * g.w
    cdef Py_ssize_t c, r, ih, ob, o0, tb, s0, i, a, q, oy, b, j, rows, nvm = CNNC_WINO_NV4
    cdef int n = <int> min(vl, g.n - b0), nv
    cdef int vact = act if act == ACT_RELU or act == ACT_LEAKY else ACT_NONE
    cdef floating* xi = ws
    cdef floating* v = xi + (4 * g.wna + 2) * xs * WINO_VL
    cdef floating* mm = v + g.c * cs
    cdef floating* st = mm + 36 * CNNC_WINO_MR * CNNC_WINO_NV4 * WINO_VL
    cdef const floating* src
    cdef const floating* bo
    cdef floating* dst
    for c in range(g.c):
        for r in range(4 * na + 2):
            ih = 4 * a0 + r - g.pt
            src = x + ((b0 * g.c + c) * g.h + ih) * g.w if 0 <= ih < g.h else NULL
            if floating is float:
                cnnc_wbat_row_s(src, xsz, n, g.w, g.pl, xs, xi + r * xs * vl)
            else:
                cnnc_wbat_row_d(src, xsz, n, g.w, g.pl, xs, xi + r * xs * vl)
        if floating is float:
            cnnc_wbat_input_s(xi, xs, na, tw, v + c * cs, 36 * vl, vl)
        else:
            cnnc_wbat_input_d(xi, xs, na, tw, v + c * cs, 36 * vl, vl)
    for ob in range((g.m + mr - 1) // mr):
        o0 = ob * mr
        rows = min(mr, g.m - o0)
        bo = bias + o0 if bias != NULL else NULL
        for tb in range((tiles + nvm - 1) // nvm):
            s0 = tb * nvm
            nv = <int> min(nvm, tiles - s0)
            if floating is float:
                cnnc_wino_block4_s(g.c, u + o0 * 36 * g.c, v + s0 * 36 * vl, cs, nv, mm, bo,
                                   <int> rows, vact, act_param, st + 4 * s0 * vl, 4 * row, row)
            else:
                cnnc_wino_block4_d(g.c, u + o0 * 36 * g.c, v + s0 * 36 * vl, cs, nv, mm, bo,
                                   <int> rows, vact, act_param, st + 4 * s0 * vl, 4 * row, row)
        for i in range(rows):
            for a in range(na):
                for q in range(4):
                    oy = 4 * (a0 + a) + q
                    if oy >= g.oh:
                        break
                    dst = y + (b0 * g.m + o0 + i) * P + oy * g.ow
                    if floating is float:
                        cnnc_wbat_store_s(st + (4 * i + q) * row + 4 * a * tw * vl, n, g.ow, dst,
                                          g.m * P, g.ow)
                    else:
                        cnnc_wbat_store_d(st + (4 * i + q) * row + 4 * a * tw * vl, n, g.ow, dst,
                                          g.m * P, g.ow)
                    if act == ACT_SIGMOID or act == ACT_TANH:
                        for b in range(n):
                            for j in range(g.ow):
                                dst[b * g.m * P + j] = _gemm_act(dst[b * g.m * P + j], act,
                                                                 act_param)


cdef void _wbat_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                    floating* ws, const Geom* g, int act, floating act_param,
                    int n_threads, floating* uc, bint fill) noexcept nogil:
    """y = act(conv3x3(x, w) + bias) by Winograd F(4x4) with a lane per image; ws:
    _wbat_workspace elements; the packed weights in uc (made when `fill`) if not NULL.
    Chunks go to the threads whole (each output has one owner)."""
    cdef Py_ssize_t vl = 16 if floating is float else 8
    cdef Py_ssize_t k = 0, tid = 0, chunks = _wbat_chunks(g, vl), per = _wbat_per_worker(g)
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, min(chunks, _wbat_workers(g)))
    cdef bint affine = _affine(g, per)
    cdef floating* u = uc if uc != NULL else ws + (g.threads * g.wstride if affine else 0)
    cdef floating* scratch = ws if affine else ws + _wvec_packed(g, 4)
    if affine:
        per = g.wstride
    if uc == NULL or fill:
        _wino_weights(w, u, g, CNNC_WINO_MR, False, n_threads, 4, True)
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, chunks, workers)
        with parallel(num_threads=workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _wbat_chunk(x, u, bias, y, scratch + tid * per, g, k, act, act_param)
                k = cnnc_queue_take(&queue, tid)
    else:
        for k in range(chunks):
            _wbat_chunk(x, u, bias, y, scratch, g, k, act, act_param)


# The weight gradient with a lane per image (Winograd F(4x4), as _wino_wgrad's): per chunk
# (a run of groups of VL images, and a band of tile rows) x and dy are transposed and
# transformed into V[e][i][tile][lane] and P[e][o][tile][lane], and Z[e][i][o] gathers the
# sum over the tiles and lanes of P_o * V_i: up to 32 x 32 channels by a kernel that holds
# 4 x 4 blocks of (o, i) in registers and sums their lanes once per block and chunk (no
# packing: each value is used only 16-32 times), beyond that by a GEMM per position over
# tiles x lanes. Chunks are as deep as V and P within WINO_BAT_WG_ELEMS allow, up to
# WINO_BAT_WG_TILES tiles (8x8 images: several groups); with the lane-summing kernel within
# WINO_BAT_DOT_ELEMS (1.75 MiB, inside a core's 2 MiB L2), which V and P stream through once
# per position, but no shallower than WINO_BAT_WG_MIN tiles (the lane sums' cost). In a
# training step on two threads, ResNet-20's 16x16 stage in chunks of 32 tiles (4.5 MiB)
# ran 1.45x slower than in chunks of 16 (2.25 MiB; one thread: 1.1x), though alone, with
# the caches to itself, the deeper chunks were 1.05x faster; its 32x32 stage in chunks of
# 24 tiles (1.7 MiB) 1.07x faster than of 32 (one thread: 0.99x).

cdef inline bint _wbat_wg_dot(const Geom* g) noexcept nogil:
    """Z by the lane-summing kernel (small M x C), else by GEMMs over tiles x lanes."""
    return g.m * g.c <= WINO_BAT_DOT_MAX


cdef inline Py_ssize_t _wbat_wg_tiles(const Geom* g) noexcept nogil:
    """Tiles (of VL images) per weight-gradient chunk, at most."""
    cdef Py_ssize_t per = 36 * (g.c + g.m) * WINO_VL
    if _wbat_wg_dot(g):
        return min(<Py_ssize_t> WINO_BAT_WG_TILES,
                   max(<Py_ssize_t> WINO_BAT_WG_MIN, WINO_BAT_DOT_ELEMS // per))
    return max(1, min(<Py_ssize_t> WINO_BAT_WG_TILES, WINO_BAT_WG_ELEMS // per))


cdef inline Py_ssize_t _wbat_wg_na(const Geom* g) noexcept nogil:
    """Tile rows per weight-gradient band."""
    return max(1, min(_wbat_th(g), _wbat_wg_tiles(g) // _wbat_tw(g)))


cdef inline Py_ssize_t _wbat_wg_ng(const Geom* g) noexcept nogil:
    """Groups of images per weight-gradient chunk (float32's; float64's groups are half as
    large, and twice as many fit). By GEMMs, at most a quarter of them, so that two threads
    share the call and each chunk's V and P stay in L2 (ResNet-20's 8x8 stage: all 4
    groups in one chunk ran on one thread, 1.5-1.7x slower on two; chunks of 2 groups,
    2.25 MiB, against chunks of 1 in its training step 0.92x on two threads, 0.96x on
    one); the lane-summing kernel needs the depth (see _wbat_wg_ok): as many groups as make
    WINO_BAT_WG_MIN tiles, if fewer do not."""
    cdef Py_ssize_t groups = (g.n + WINO_VL - 1) // WINO_VL, unit = _wbat_wg_na(g) * _wbat_tw(g)
    cdef Py_ssize_t ng
    if not _wbat_wg_dot(g):
        groups = (groups + 3) // 4
    ng = max(1, min(groups, _wbat_wg_tiles(g) // unit))
    if _wbat_wg_dot(g) and ng * unit < WINO_BAT_WG_MIN:
        ng = min(groups, (WINO_BAT_WG_MIN + unit - 1) // unit)
    return ng


cdef inline Py_ssize_t _wbat_wg_xs(const Geom* g) noexcept nogil:
    """Columns of the transposed dy rows: the tiles' 4*tw, and the transposes' blocks."""
    return max(4 * _wbat_tw(g), _wvec_round(g.ow))


cdef inline Py_ssize_t _wbat_wg_count(const Geom* g, Py_ssize_t vl) noexcept nogil:
    """Weight-gradient chunks: runs of groups of vl images times bands."""
    cdef Py_ssize_t ng = _wbat_wg_ng(g) * WINO_VL // vl, groups = (g.n + vl - 1) // vl
    return (groups + ng - 1) // ng * ((_wbat_th(g) + _wbat_wg_na(g) - 1) // _wbat_wg_na(g))


cdef inline Py_ssize_t _wbat_wg_slots(const Geom* g) noexcept nogil:
    """Partial Z summed separately (one thread each, added in order), as _wino_wg_slots;
    a small Z (ResNet-20's 16-channel stage: 12 chunks) one per chunk, so that a slowed
    core's chunks can go to the other threads (with 2 slots each thread had one)."""
    cdef Py_ssize_t chunks = _wbat_wg_count(g, WINO_VL)
    if chunks <= 1:
        return 1
    if 36 * g.m * g.c <= WINO_WG_SMALL_Z:
        return min(chunks, WINO_WG_CHUNK_SLOTS)
    return WINO_WG_SLOTS


cdef inline Py_ssize_t _wbat_wg_per_worker(const Geom* g) noexcept nogil:
    """Transposed x rows, transposed dy rows, V, P."""
    cdef Py_ssize_t na = _wbat_wg_na(g), tiles = _wbat_wg_ng(g) * na * _wbat_tw(g)
    return ((4 * na + 2) * _wbat_xs(g) * WINO_VL + 4 * na * _wbat_wg_xs(g) * WINO_VL
            + 36 * ((g.c + g.m) * tiles + 2) * WINO_VL)


cdef Py_ssize_t _wbat_wg_workspace(const Geom* g) noexcept nogil:
    """Z per slot, then each worker's chunk scratch (or with a worker stride, see _affine:
    the workers' scratch, then Z per slot)."""
    cdef Py_ssize_t slots = _wbat_wg_slots(g)
    if _affine(g, _wbat_wg_per_worker(g)):
        return g.threads * g.wstride + slots * 36 * g.m * g.c
    return slots * 36 * g.m * g.c + min(g.threads, slots) * _wbat_wg_per_worker(g)


cdef inline bint _wbat_wg_ok(const Geom* g) noexcept nogil:
    """Where the forward takes the lane-per-image path and the scratch is within the
    documented bound (the partial Z past the first count against a worker's share); with
    the lane-summing kernel, only for chunks of at least WINO_BAT_WG_MIN tiles: its lane
    sums, once per 4 x 4 block of Z and chunk, cost more than F(4x4) saves in shallower
    ones. Measured against the direct and GEMM Winograd paths: ResNet-20's 32x32 stage
    (then 32 tiles) 1.2-1.35x, its 16x16 stage (16 tiles) 1.7x, 16 -> 32 channels on
    16x16 1.4-1.7x; by GEMMs: ResNet-20's 8x8 stage, the seed CNN's conv2 and VGG-11's
    64 -> 128 layer 1.1x (the lane-summing kernel there: 8-16 tiles, 0.6-0.8x)."""
    if not (g.wbat and _wbat_wg_per_worker(g) + (_wbat_wg_slots(g) - 1) * 36 * g.m * g.c
            <= 3 * COL_TILE):
        return False
    return (not _wbat_wg_dot(g)
            or _wbat_wg_ng(g) * _wbat_wg_na(g) * _wbat_tw(g) >= WINO_BAT_WG_MIN)


cdef void _wbat_wg_chunks(const floating* x, const floating* dy, floating* zt, floating* ws,
                          const Geom* g, Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """zt += the sums of chunks k0 .. k1 (in order)."""
    cdef Py_ssize_t vl = 16 if floating is float else 8, na0 = _wbat_wg_na(g)
    cdef Py_ssize_t ng0 = _wbat_wg_ng(g) * WINO_VL // vl, groups = (g.n + vl - 1) // vl
    cdef Py_ssize_t th = _wbat_th(g), tw = _wbat_tw(g), bands = (th + na0 - 1) // na0
    cdef Py_ssize_t xs = _wbat_xs(g), ds = _wbat_wg_xs(g), xsz = g.c * g.h * g.w
    cdef Py_ssize_t P = g.oh * g.ow, k, gi, g0, ng, b0, a0, na, tiles, t0, ve, pe, c, o, r
    cdef Py_ssize_t ih, oy, e
    cdef int n
    cdef floating* xi = ws
    cdef floating* dyi = xi + (4 * na0 + 2) * xs * WINO_VL
    cdef floating* v = dyi + 4 * na0 * ds * WINO_VL
    cdef floating* p
    cdef const floating* src
    for k in range(k0, k1):
        g0 = k // bands * ng0
        ng = min(ng0, groups - g0)
        a0 = k % bands * na0
        na = min(na0, th - a0)
        tiles = ng * na * tw  # group by group
        ve = (g.c * tiles + 1) * vl  # V[e][i][tile][lane], a vector between positions
        pe = (g.m * tiles + 1) * vl
        p = v + 36 * ve
        for gi in range(ng):
            b0 = (g0 + gi) * vl
            n = <int> min(vl, g.n - b0)
            t0 = gi * na * tw * vl
            for c in range(g.c):
                for r in range(4 * na + 2):
                    ih = 4 * a0 + r - g.pt
                    src = x + ((b0 * g.c + c) * g.h + ih) * g.w if 0 <= ih < g.h else NULL
                    if floating is float:
                        cnnc_wbat_row_s(src, xsz, n, g.w, g.pl, xs, xi + r * xs * vl)
                    else:
                        cnnc_wbat_row_d(src, xsz, n, g.w, g.pl, xs, xi + r * xs * vl)
                if floating is float:
                    cnnc_wbat_input_s(xi, xs, na, tw, v + c * tiles * vl + t0, vl, ve)
                else:
                    cnnc_wbat_input_d(xi, xs, na, tw, v + c * tiles * vl + t0, vl, ve)
            for o in range(g.m):
                for r in range(4 * na):
                    oy = 4 * a0 + r
                    src = dy + ((b0 * g.m + o) * g.oh + oy) * g.ow if oy < g.oh else NULL
                    if floating is float:
                        cnnc_wbat_row_s(src, g.m * P, n, g.ow, 0, ds, dyi + r * ds * vl)
                    else:
                        cnnc_wbat_row_d(src, g.m * P, n, g.ow, 0, ds, dyi + r * ds * vl)
                if floating is float:
                    cnnc_wbat_dy_s(dyi, ds, na, tw, p + o * tiles * vl + t0, vl, pe)
                else:
                    cnnc_wbat_dy_d(dyi, ds, na, tw, p + o * tiles * vl + t0, vl, pe)
        if not _wbat_wg_dot(g):  # Z_e^T[C, M] += V_e[C, tiles*lanes] @ P_e[M, tiles*lanes]^T
            for e in range(36):
                gemm(False, True, g.c, g.m, tiles * vl, 1, v + e * ve, tiles * vl, p + e * pe,
                     tiles * vl, 1, zt + e * g.c * g.m, g.m, NULL, BIAS_NONE, ACT_NONE, 0, 1)
        elif floating is float:
            cnnc_wbat_dot_s(p, pe, tiles * vl, v, ve, tiles * vl, tiles, <int> g.m,
                            <int> g.c, zt)
        else:
            cnnc_wbat_dot_d(p, pe, tiles * vl, v, ve, tiles * vl, tiles, <int> g.m,
                            <int> g.c, zt)


cdef void _wbat_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                      const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= the weight gradient with a lane per image: fixed runs of chunks summed into
    partial Z by one thread each, added in order, then G^T Z G. ws: _wbat_wg_workspace
    elements."""
    cdef Py_ssize_t vl = 16 if floating is float else 8
    cdef Py_ssize_t chunks = _wbat_wg_count(g, vl), slots = _wbat_wg_slots(g)
    cdef Py_ssize_t size = 36 * g.m * g.c, s = 0, e, tid = 0, per = _wbat_wg_per_worker(g)
    cdef bint affine = _affine(g, per)
    cdef floating* z = ws + (g.threads * g.wstride if affine else 0)
    cdef floating* scratch = ws if affine else ws + slots * size
    cdef cnnc_queue queue
    if affine:
        per = g.wstride
    if slots == 1 or n_threads == 1:
        memset(z, 0, slots * size * sizeof(floating))
        for s in range(slots):
            _wbat_wg_chunks(x, dy, z + s * size, scratch, g, s * chunks // slots,
                            (s + 1) * chunks // slots)
    else:
        cnnc_queue_init(&queue, slots, min(<Py_ssize_t> n_threads, slots))
        with parallel(num_threads=min(<Py_ssize_t> n_threads, slots)):
            tid = threadid()
            s = cnnc_queue_take(&queue, tid)
            while s >= 0:
                memset(z + s * size, 0, size * sizeof(floating))
                _wbat_wg_chunks(x, dy, z + s * size, scratch + tid * per, g,
                                s * chunks // slots, (s + 1) * chunks // slots)
                s = cnnc_queue_take(&queue, tid)
    for s in range(1, slots):
        for e in prange(size, num_threads=n_threads if size >= PARALLEL_MIN_ELEMS else 1,
                        schedule="static"):
            z[e] = z[e] + z[s * size + e]
    _wino_wg_output(z, dw, g, accumulate, n_threads, 4)

# Winograd F(2x2, 3x3) forward convolution, included by conv.pyx (Lavin & Gray, 2015).
#
# For a 2x2 output tile and its 4x4 input patch d, Y = A^T [(G g G^T) * (B^T d B)] A, so
# the channel sums become 16 GEMMs U[e] @ V[e] ([M, C] @ [C, tiles], e = 4x4 position):
# 16/36 of im2col's multiplies, and the input grows 4x instead of 9x. Used for 3x3 stride 1
# dilation 1 ungrouped layers with enough channels (also for their flipped backward-data)
# and enough tiles in the call: the weight transform and the 16 packings of U cost about
# 3x im2col's one packing of W, which a few tiles do not earn back (VGG at batch 1 on 2x2
# and 4x4 inputs: Winograd 4-5x slower than im2col; break-even measured at 64 tiles with
# 256-512 channels, 128 with 128, 256 with 64).
# Tiles are numbered over (image, tile row, tile column); a chunk is a fixed run of
# g.wcols of them, so chunking never depends on the thread count.

cdef inline bint _wino_ok(const Geom* g) noexcept nogil:
    return (g.path == PATH_IM2COL and g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1
            and g.dh == 1 and g.dw == 1 and g.groups == 1 and g.c >= WINO_MIN_CHANNELS
            and g.m >= WINO_MIN_CHANNELS
            and g.n * _wino_tiles(g) >= max(<Py_ssize_t> WINO_MIN_TILES,
                                            WINO_TILE_CHANNELS // min(g.c, g.m)))


cdef inline Py_ssize_t _wino_tiles(const Geom* g) noexcept nogil:
    """2x2 output tiles per image."""
    return ((g.oh + 1) // 2) * ((g.ow + 1) // 2)


cdef inline Py_ssize_t _wino_per_worker(const Geom* g) noexcept nogil:
    """V and M of one chunk, and the padded input rows."""
    return 16 * (g.c + g.m) * g.wcols + 4 * (g.ow + 3)


cdef Py_ssize_t _wino_workspace(const Geom* g) noexcept nogil:
    """U for all 16 positions, then one chunk's scratch per worker."""
    return 16 * g.m * g.c + g.wworkers * _wino_per_worker(g)


cdef void _wino_weights(const floating* w, floating* u, Py_ssize_t m, Py_ssize_t c) noexcept nogil:
    """u[e, o, i] = (G w[o, i] G^T)[e], e = 4 * row + column.

    The 16 outputs of one (o, i) lie m*c apart (a power of two for most layers: the same
    cache set), so a run of WINO_W_RUN input channels is transformed into `blk` first and
    written out as 16 contiguous runs.
    """
    cdef Py_ssize_t o, ib, i0, i, r, k, e, n, n_run = WINO_W_RUN
    cdef double t[4][3]
    cdef floating blk[16][WINO_W_RUN]
    cdef const floating* k3
    for o in range(m):
        for ib in range((c + n_run - 1) // n_run):
            i0 = ib * n_run
            n = min(n_run, c - i0)
            for i in range(n):
                k3 = w + (o * c + i0 + i) * 9
                for k in range(3):
                    t[0][k] = k3[k]
                    t[1][k] = (k3[k] + k3[3 + k] + k3[6 + k]) * 0.5
                    t[2][k] = (k3[k] - k3[3 + k] + k3[6 + k]) * 0.5
                    t[3][k] = k3[6 + k]
                for r in range(4):
                    blk[4 * r][i] = <floating>t[r][0]
                    blk[4 * r + 1][i] = <floating>((t[r][0] + t[r][1] + t[r][2]) * 0.5)
                    blk[4 * r + 2][i] = <floating>((t[r][0] - t[r][1] + t[r][2]) * 0.5)
                    blk[4 * r + 3][i] = <floating>t[r][2]
            for e in range(16):
                memcpy(u + (e * m + o) * c + i0, &blk[e][0], n * sizeof(floating))


cdef void _wino_input(const floating* x, floating* v, floating* rows, const Geom* g,
                      Py_ssize_t q0, Py_ssize_t nq) noexcept nogil:
    """v[e, ch, q - q0] = (B^T d B)[e] for the 4x4 input patch d of tile q (0 outside x).

    The 4 input rows under a run of tiles are first copied, zero-padded, into `rows`
    (4 x (2*tw + 2)), so the transform itself has no bounds checks.
    """
    cdef Py_ssize_t tw = (g.ow + 1) // 2, t1 = _wino_tiles(g), rw = 2 * tw + 2
    cdef Py_ssize_t ch, q, qe, b, a, j, j1, r, k, ih, lo, hi
    cdef floating d[4][4]
    cdef floating s[4][4]
    cdef const floating* src
    cdef floating* out
    for ch in range(g.c):
        q = q0
        while q < q0 + nq:  # one run of tiles along a tile row
            b = q // t1
            a = (q - b * t1) // tw
            j = q - b * t1 - a * tw
            j1 = min(tw, j + q0 + nq - q)
            for r in range(4):
                ih = 2 * a - g.pt + r
                memset(rows + r * rw, 0, rw * sizeof(floating))
                if 0 <= ih < g.h:
                    src = x + ((b * g.c + ch) * g.h + ih) * g.w
                    lo = max(0, g.pl - 2 * j)   # rows[r][k] = x[ih, 2j - pl + k]
                    hi = min(rw, g.w + g.pl - 2 * j)
                    if hi > lo:
                        memcpy(rows + r * rw + lo, src + 2 * j - g.pl + lo,
                               (hi - lo) * sizeof(floating))
            for qe in range(j1 - j):
                for r in range(4):
                    for k in range(4):
                        d[r][k] = rows[r * rw + 2 * qe + k]
                for k in range(4):
                    s[0][k] = d[0][k] - d[2][k]
                    s[1][k] = d[1][k] + d[2][k]
                    s[2][k] = d[2][k] - d[1][k]
                    s[3][k] = d[1][k] - d[3][k]
                for r in range(4):
                    out = v + (4 * r * g.c + ch) * nq + q - q0 + qe
                    out[0] = s[r][0] - s[r][2]
                    out[g.c * nq] = s[r][1] + s[r][2]
                    out[2 * g.c * nq] = s[r][2] - s[r][1]
                    out[3 * g.c * nq] = s[r][1] - s[r][3]
            q += j1 - j


cdef void _wino_output(const floating* mm, floating* y, const floating* bias, const Geom* g,
                       Py_ssize_t q0, Py_ssize_t nq, int act, floating act_param) noexcept nogil:
    """y tile q = act(A^T M_q A + bias), clipped to the output; M_q[e] = mm[e, o, q - q0]."""
    cdef Py_ssize_t tw = (g.ow + 1) // 2, t1 = _wino_tiles(g), P = g.oh * g.ow
    cdef Py_ssize_t o, q, b, a, j, k, e, oy, ox
    cdef floating t0[4]
    cdef floating t1v[4]
    cdef floating v[16]
    cdef floating bo
    cdef floating* dst
    for o in range(g.m):
        bo = 0 if bias == NULL else bias[o]
        b = q0 // t1
        a = (q0 - b * t1) // tw
        j = q0 - b * t1 - a * tw
        for q in range(nq):
            for e in range(16):
                v[e] = mm[(e * g.m + o) * nq + q]
            for k in range(4):
                t0[k] = v[k] + v[4 + k] + v[8 + k]
                t1v[k] = v[4 + k] - v[8 + k] - v[12 + k]
            oy = 2 * a
            ox = 2 * j
            dst = y + (b * g.m + o) * P + oy * g.ow + ox
            dst[0] = _gemm_act(t0[0] + t0[1] + t0[2] + bo, act, act_param)
            if ox + 1 < g.ow:
                dst[1] = _gemm_act(t0[1] - t0[2] - t0[3] + bo, act, act_param)
            if oy + 1 < g.oh:
                dst[g.ow] = _gemm_act(t1v[0] + t1v[1] + t1v[2] + bo, act, act_param)
                if ox + 1 < g.ow:
                    dst[g.ow + 1] = _gemm_act(t1v[1] - t1v[2] - t1v[3] + bo, act, act_param)
            j += 1
            if j == tw:
                j = 0
                a += 1
                if a * tw == t1:
                    a = 0
                    b += 1


cdef void _wino_chunk(const floating* x, const floating* u, const floating* bias, floating* y,
                      floating* ws, const Geom* g, Py_ssize_t q0, Py_ssize_t nq, int act,
                      floating act_param, int n_threads) noexcept nogil:
    """Tiles q0 .. q0 + nq: input transform, 16 GEMMs, output transform."""
    cdef Py_ssize_t e
    cdef floating* v = ws
    cdef floating* mm = ws + 16 * g.c * nq
    _wino_input(x, v, ws + 16 * (g.c + g.m) * g.wcols, g, q0, nq)
    for e in range(16):
        gemm(False, False, g.m, nq, g.c, 1, u + e * g.m * g.c, g.c, v + e * g.c * nq, nq, 0,
             mm + e * g.m * nq, nq, NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
    _wino_output(mm, y, bias, g, q0, nq, act, act_param)


cdef void _wino_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                    floating* ws, const Geom* g, int act, floating act_param,
                    int n_threads) noexcept nogil:
    """y = act(conv3x3(x, w) + bias) by Winograd F(2x2, 3x3); ws: _wino_workspace elements."""
    cdef Py_ssize_t k, tid = 0, total = g.n * _wino_tiles(g)
    cdef Py_ssize_t chunks = (total + g.wcols - 1) // g.wcols
    cdef Py_ssize_t per = _wino_per_worker(g)
    cdef floating* u = ws
    _wino_weights(w, u, g.m, g.c)
    if g.wworkers > 1:
        with parallel(num_threads=g.wworkers):
            tid = threadid()
            for k in prange(chunks, schedule="static"):
                _wino_chunk(x, u, bias, y, ws + 16 * g.m * g.c + tid * per, g, k * g.wcols,
                            min(g.wcols, total - k * g.wcols), act, act_param, 1)
    else:
        for k in range(chunks):
            _wino_chunk(x, u, bias, y, ws + 16 * g.m * g.c, g, k * g.wcols,
                        min(g.wcols, total - k * g.wcols), act, act_param, n_threads)


# Weight gradient by Winograd F(2x2, 3x3). With P = A dY A^T (4x4, from a 2x2 tile of dy)
# and V = B^T d B (the forward's input transform), dW[o, i] = G^T Z[o, i] G where
# Z[o, i] = sum over tiles of P_o * V_i (elementwise): for each of the 16 positions e a
# GEMM Z_e^T[C, M] += V_e[C, tiles] @ P_e^T[tiles, M], contracting over the tiles.
# 16/36 of im2col's multiplies; the GEMMs are as large as M x C and as deep as a chunk.

cdef inline bint _wino_wg_ok(const Geom* g) noexcept nogil:
    return (g.path == PATH_IM2COL and g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1
            and g.dh == 1 and g.dw == 1 and g.groups == 1 and g.c >= WINO_WG_MIN_CHANNELS
            and g.m >= WINO_WG_MIN_CHANNELS and g.n * _wino_tiles(g) >= WINO_MIN_TILES)


cdef Py_ssize_t _wino_wg_workspace(const Geom* g) noexcept nogil:
    """Z for all 16 positions, then one chunk's V, P^T and padded input rows."""
    return 16 * g.m * g.c + _wino_per_worker(g)


cdef void _wino_dy(const floating* dy, floating* pt, const Geom* g, Py_ssize_t q0,
                   Py_ssize_t nq) noexcept nogil:
    """pt[e, q - q0, o] = (A t A^T)[e] for the 2x2 tile t of dy[., o] at tile q (0 past
    the output's last row or column)."""
    cdef Py_ssize_t tw = (g.ow + 1) // 2, t1 = _wino_tiles(g), P = g.oh * g.ow
    cdef Py_ssize_t q, o, b, a, j, oy, ox, r
    cdef floating d[2][2]
    cdef floating t[4][2]
    cdef const floating* src
    cdef floating* out
    for q in range(q0, q0 + nq):
        b = q // t1
        a = (q - b * t1) // tw
        j = q - b * t1 - a * tw
        oy = 2 * a
        ox = 2 * j
        for o in range(g.m):
            src = dy + (b * g.m + o) * P + oy * g.ow + ox
            d[0][0] = src[0]
            d[0][1] = src[1] if ox + 1 < g.ow else 0
            d[1][0] = src[g.ow] if oy + 1 < g.oh else 0
            d[1][1] = src[g.ow + 1] if ox + 1 < g.ow and oy + 1 < g.oh else 0
            for r in range(2):
                t[0][r] = d[0][r]
                t[1][r] = d[0][r] + d[1][r]
                t[2][r] = d[0][r] - d[1][r]
                t[3][r] = -d[1][r]
            for r in range(4):
                out = pt + (4 * r * nq + q - q0) * g.m + o
                out[0] = t[r][0]
                out[nq * g.m] = t[r][0] + t[r][1]
                out[2 * nq * g.m] = t[r][0] - t[r][1]
                out[3 * nq * g.m] = -t[r][1]


cdef void _wino_wg_output(const floating* zt, floating* dw, const Geom* g,
                          bint accumulate) noexcept nogil:
    """dw[o, i] (+)= G^T Z[o, i] G with Z[o, i][e] = zt[e, i, o]."""
    cdef Py_ssize_t o, i, e, k
    cdef floating z[16]
    cdef floating u[3][4]
    cdef floating* dst
    for o in range(g.m):
        for i in range(g.c):
            for e in range(16):
                z[e] = zt[(e * g.c + i) * g.m + o]
            for k in range(4):  # G^T rows: (1, .5, .5, 0), (0, .5, -.5, 0), (0, .5, .5, 1)
                u[0][k] = z[k] + (z[4 + k] + z[8 + k]) * 0.5
                u[1][k] = (z[4 + k] - z[8 + k]) * 0.5
                u[2][k] = (z[4 + k] + z[8 + k]) * 0.5 + z[12 + k]
            dst = dw + (o * g.c + i) * 9
            for k in range(3):
                if not accumulate:
                    dst[3 * k] = 0
                    dst[3 * k + 1] = 0
                    dst[3 * k + 2] = 0
                dst[3 * k] += u[k][0] + (u[k][1] + u[k][2]) * 0.5
                dst[3 * k + 1] += (u[k][1] - u[k][2]) * 0.5
                dst[3 * k + 2] += (u[k][1] + u[k][2]) * 0.5 + u[k][3]


cdef void _wino_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                      const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= the weight gradient by Winograd; chunks of g.wcols tiles in order, the
    threads inside the GEMMs. ws: _wino_wg_workspace elements."""
    cdef Py_ssize_t k, e, q0, nq, total = g.n * _wino_tiles(g)
    cdef floating* zt = ws
    cdef floating* v = ws + 16 * g.m * g.c
    cdef floating* pt = v + 16 * g.c * g.wcols
    cdef floating* rows = pt + 16 * g.m * g.wcols
    for k in range((total + g.wcols - 1) // g.wcols):
        q0 = k * g.wcols
        nq = min(g.wcols, total - q0)
        _wino_input(x, v, rows, g, q0, nq)
        _wino_dy(dy, pt, g, q0, nq)
        for e in range(16):
            gemm(False, False, g.c, g.m, nq, 1, v + e * g.c * nq, nq, pt + e * nq * g.m, g.m,
                 0 if k == 0 else 1, zt + e * g.c * g.m, g.m, NULL, BIAS_NONE, ACT_NONE, 0,
                 n_threads)
    _wino_wg_output(zt, dw, g, accumulate)

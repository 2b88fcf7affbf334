# Direct convolution with a lane per image, included by conv.pyx after conv_winograd.pxi
# and conv_direct.pxi (whose transposes and micro-kernels it runs): forward (and so the
# flipped backward-data) and weight gradient.
#
# A chunk is a group of VL images (16 float32, 8 float64) and a band of output rows. Its
# rows of x are transposed into xl[c][row][column][lane], zero-padded (CNNC_WBAT_ROW). A
# forward tile of MR output channels by NV pixels of one output row then sums whole
# vectors (conv_lanes.h), and each output channel's stage row is transposed back into y
# (CNNC_WBAT_STORE). The weight gradient transposes the band's rows of dy as well and runs
# the direct path's micro-kernel over them, summing its lanes once per call.
#
# Why: the direct path works on one image's padded plane, computing and discarding its
# padding columns, and needs phase planes for a stride. With the images in lanes an
# output row is OW whole vectors at any width and stride. The price is the transposes in
# and out, paid once per element against the C*kh*kw products of each output pixel.

cdef extern from "conv_lanes.h" nogil:
    void cnnc_lanes_tile_s(int mr, int nv, Py_ssize_t K, const float* a, const float* xp,
                           const int* off, Py_ssize_t vs, const float* bias, int relu,
                           float* out, Py_ssize_t ldo)
    void cnnc_lanes_tile_d(int mr, int nv, Py_ssize_t K, const double* a, const double* xp,
                           const int* off, Py_ssize_t vs, const double* bias, int relu,
                           double* out, Py_ssize_t ldo)

cdef enum:
    LANES_BAND = 131072  # forward: transposed x per chunk, in elements (half of L2)
    LANES_WG_ELEMS = 262144  # weight gradient: transposed x and dy per chunk
    LANES_SHAPES = 3  # forward tiles: 8 x 3, 6 x 4, 4 x 6 (channels x vectors)

cdef int _lanes_enabled = 1  # 0: never (tests and benchmarks compare with the other paths)
cdef int[3] _lanes_mr = [8, 6, 4]
cdef int[3] _lanes_nv = [3, 4, 6]


def _set_lanes(bint enabled) -> None:
    """Allow (default) or forbid the direct path with a lane per image, for tests and
    benchmarks."""
    global _lanes_enabled
    _lanes_enabled = enabled


cdef inline int _lanes_shape(const Geom* g) noexcept nogil:
    """The forward tile shape whose whole tiles would cover the fewest padded channels x
    pixels of a row (the first of a tie: 8 x 3); a row's last tile is narrowed to the
    pixels left (conv_lanes.h)."""
    cdef int s, best = 0
    cdef Py_ssize_t work, least = -1
    for s in range(LANES_SHAPES):
        work = ((g.m + _lanes_mr[s] - 1) // _lanes_mr[s] * _lanes_mr[s]
                * ((g.ow + _lanes_nv[s] - 1) // _lanes_nv[s] * _lanes_nv[s]))
        if least < 0 or work < least:
            best, least = s, work
    return best


cdef inline Py_ssize_t _lanes_cols(const Geom* g) noexcept nogil:
    """Output pixels a row of whole tiles would cover: the scratch is sized for them."""
    cdef int nv = _lanes_nv[_lanes_shape(g)]
    return (g.ow + nv - 1) // nv * nv


cdef inline Py_ssize_t _lanes_xs(const Geom* g) noexcept nogil:
    """Columns of a transposed row of x: every tile's reads, and the transposes' whole
    blocks of VL columns."""
    return max((_lanes_cols(g) - 1) * g.sw + g.dw * (g.kw - 1) + 1,
               max(g.pl, 0) + _wvec_round(g.w))


cdef inline Py_ssize_t _lanes_rows_in(const Geom* g, Py_ssize_t rows) noexcept nogil:
    """Rows of x that `rows` consecutive output rows read."""
    return (rows - 1) * g.sh + g.dh * (g.kh - 1) + 1


cdef inline Py_ssize_t _lanes_rows_fit(const Geom* g, Py_ssize_t limit,
                                       Py_ssize_t extra) noexcept nogil:
    """Output rows (1 .. OH) whose transposed x, and `extra` elements per row, take at most
    `limit` elements in float32 (VL = 16)."""
    cdef Py_ssize_t row = g.c * _lanes_xs(g) * WINO_VL
    cdef Py_ssize_t room = limit - row * (g.dh * (g.kh - 1) + 1 - g.sh)
    if room <= 0:
        return 1
    return max(1, min(g.oh, room // (row * g.sh + extra)))


cdef inline Py_ssize_t _lanes_band(const Geom* g) noexcept nogil:
    return _lanes_rows_fit(g, LANES_BAND, 0)


cdef inline Py_ssize_t _lanes_ldo(const Geom* g) noexcept nogil:
    """Elements of a stage row: whole tiles, and the store's whole blocks of VL columns."""
    return max(_lanes_cols(g), _wvec_round(g.ow)) * WINO_VL


cdef inline Py_ssize_t _lanes_chunks(const Geom* g, Py_ssize_t vl) noexcept nogil:
    cdef Py_ssize_t band = _lanes_band(g)
    return (g.n + vl - 1) // vl * ((g.oh + band - 1) // band)


cdef inline Py_ssize_t _lanes_per_worker(const Geom* g) noexcept nogil:
    """A band's transposed x, and the stage: a row of every output channel."""
    cdef int mr = _lanes_mr[_lanes_shape(g)]
    return (g.c * _lanes_rows_in(g, _lanes_band(g)) * _lanes_xs(g) * WINO_VL
            + (g.m + mr - 1) // mr * mr * _lanes_ldo(g))


cdef inline Py_ssize_t _lanes_workers(const Geom* g) noexcept nogil:
    """Workers (and scratch areas): as many as float32's chunks allow."""
    return max(1, min(g.threads, _lanes_chunks(g, WINO_VL)))


cdef inline Py_ssize_t _lanes_packed(const Geom* g) noexcept nogil:
    """Offsets table, packed weights and bias (rows rounded up to the tile's)."""
    cdef int mr = _lanes_mr[_lanes_shape(g)]
    return g.kdim + (g.m + mr - 1) // mr * mr * (g.kdim + 1)


cdef Py_ssize_t _lanes_fwd_ws(const Geom* g) noexcept nogil:
    return _lanes_packed(g) + _lanes_workers(g) * _lanes_per_worker(g)


cdef inline bint _lanes_ok(const Geom* g) noexcept nogil:
    """Ungrouped layers with 4-32 input channels, >= 100 products per output pixel (C*kh*kw)
    and at most 24 output columns, from 16 images with at most a quarter of the last
    group's lanes empty, and a chunk's scratch within the documented bound. Measured
    against the direct and strided paths (benchmarks/bench_conv_paths.py --path lanes):
    LeNet-5's conv2 forward 1.47x, its flipped backward-data 1.57x, its weight gradient
    1.55x; ResNet-20's stride-2 entries forward 1.33x (16 -> 32) and 1.42x (32 -> 64);
    16 channels, 5x5 on 16x16 and 20x20 forward and backward-data 1.16-1.21x, on 24x24
    1.03-1.05x; 12 channels, 3x3 on 24x24, 1.09-1.24x. Thinner inputs lose to the
    transposes (1-3 channels: 0.5-0.8x), and 28-32 columns gain little or lose (0.89-1.18x)."""
    cdef Py_ssize_t empty = (WINO_VL - g.n % WINO_VL) % WINO_VL
    return (_lanes_enabled and g.path == PATH_IM2COL and g.groups == 1
            and 4 <= g.c <= 32 and g.c * g.kh * g.kw >= 100 and g.ow <= 24
            and g.n >= WINO_VL and 4 * empty <= g.n
            and _lanes_per_worker(g) <= DIRECT_MAX_XP + COL_TILE)


cdef void _lanes_offsets(const Geom* g, Py_ssize_t rin, Py_ssize_t vl, int* off,
                         bint rows_first) noexcept nogil:
    """off[tap (c, ki, kj)] = ((c*rin + ki*dh)*xs + kj*dw)*vl: where output pixel (0, 0)
    reads the tap in xl (rin rows per channel), taps in _direct_tap's order."""
    cdef Py_ssize_t c, ki, kj, xs = _lanes_xs(g)
    for c in range(g.c):
        for ki in range(g.kh):
            for kj in range(g.kw):
                off[_direct_tap(g, c, ki, kj, rows_first)] = <int> (
                    ((c * rin + ki * g.dh) * xs + kj * g.dw) * vl)


cdef void _lanes_x(const floating* x, floating* xl, const Geom* g, Py_ssize_t b0, int n,
                   Py_ssize_t r0, Py_ssize_t rows, Py_ssize_t rin) noexcept nogil:
    """xl[c][r][s][lane] = x[b0 + lane, c, r0 + r, s - pl] for r < rows (0 outside x and
    in the lanes from n on), rin rows per channel."""
    cdef Py_ssize_t vl = 16 if floating is float else 8, xs = _lanes_xs(g)
    cdef Py_ssize_t xsz = g.c * g.h * g.w, c, r, ih
    cdef const floating* src
    for c in range(g.c):
        for r in range(rows):
            ih = r0 + r
            src = x + ((b0 * g.c + c) * g.h + ih) * g.w if 0 <= ih < g.h else NULL
            if floating is float:
                cnnc_wbat_row_s(src, xsz, n, g.w, g.pl, xs, xl + (c * rin + r) * xs * vl)
            else:
                cnnc_wbat_row_d(src, xsz, n, g.w, g.pl, xs, xl + (c * rin + r) * xs * vl)


cdef void _lanes_chunk(const floating* x, const floating* a, const int* off, floating* y,
                       floating* ws, const Geom* g, Py_ssize_t k, int act,
                       floating act_param) noexcept nogil:
    """Chunk k (image group k // bands, band k % bands): x's rows transposed in, then per
    output row every tile of every block of output channels, and the stage transposed
    into y. A row sums only the kernel rows that reach a row of x (a flipped
    backward-data pads by k - 1 - p: LeNet-5's conv2 reads 4 zero rows above and below
    its 10)."""
    cdef Py_ssize_t vl = 16 if floating is float else 8
    cdef int shape = _lanes_shape(g), mr = _lanes_mr[shape], nv = _lanes_nv[shape], tv
    cdef Py_ssize_t band = _lanes_band(g), bands = (g.oh + band - 1) // band
    cdef Py_ssize_t b0 = k // bands * vl, oy0 = k % bands * band
    cdef Py_ssize_t oy1 = min(g.oh, oy0 + band), rin = _lanes_rows_in(g, band)
    cdef Py_ssize_t xs = _lanes_xs(g), ldo = _lanes_ldo(g), blocks = (g.m + mr - 1) // mr
    cdef Py_ssize_t P = g.oh * g.ow, run = g.c * g.kw, oy, r, ki0, ki1, blk, t, i, b, j
    cdef int n = <int> min(vl, g.n - b0)
    cdef const floating* bias = a + blocks * mr * g.kdim
    cdef const floating* base
    cdef floating* st = ws + g.c * rin * xs * WINO_VL
    cdef floating* dst
    _lanes_x(x, ws, g, b0, n, oy0 * g.sh - g.pt, _lanes_rows_in(g, oy1 - oy0), rin)
    for oy in range(oy0, oy1):
        # kernel rows ki with pt <= oy*sh + ki*dh < pt + H
        r = oy * g.sh - g.pt
        ki0 = min(g.kh, (-r + g.dh - 1) // g.dh if r < 0 else 0)
        ki1 = max(ki0, min(g.kh, (g.h - 1 - r) // g.dh + 1 if r < g.h else 0))
        base = ws + (oy - oy0) * g.sh * xs * vl
        for blk in range(blocks):
            for t in range((g.ow + nv - 1) // nv):
                tv = <int> min(<Py_ssize_t> nv, g.ow - t * nv)  # the last tile: what is left
                if floating is float:
                    cnnc_lanes_tile_s(mr, tv, (ki1 - ki0) * run,
                                      a + (blk * g.kdim + ki0 * run) * mr,
                                      base + t * nv * g.sw * vl, off + ki0 * run, g.sw * vl,
                                      bias + blk * mr, act == ACT_RELU,
                                      st + blk * mr * ldo + t * nv * vl, ldo)
                else:
                    cnnc_lanes_tile_d(mr, tv, (ki1 - ki0) * run,
                                      a + (blk * g.kdim + ki0 * run) * mr,
                                      base + t * nv * g.sw * vl, off + ki0 * run, g.sw * vl,
                                      bias + blk * mr, act == ACT_RELU,
                                      st + blk * mr * ldo + t * nv * vl, ldo)
        for i in range(g.m):
            dst = y + ((b0 * g.m + i) * g.oh + oy) * g.ow
            if floating is float:
                cnnc_wbat_store_s(st + i * ldo, n, g.ow, dst, g.m * P, g.ow)
            else:
                cnnc_wbat_store_d(st + i * ldo, n, g.ow, dst, g.m * P, g.ow)
            if act != ACT_NONE and act != ACT_RELU:
                for b in range(n):
                    for j in range(g.ow):
                        dst[b * g.m * P + j] = _gemm_act(dst[b * g.m * P + j], act, act_param)


cdef void _lanes_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                     floating* ws, const Geom* g, int act, floating act_param,
                     int n_threads) noexcept nogil:
    """y = act(conv(x, w) + bias) with a lane per image; ws: _lanes_fwd_ws elements.
    Chunks go to the threads whole (each output has one owner)."""
    cdef Py_ssize_t vl = 16 if floating is float else 8
    cdef int mr = _lanes_mr[_lanes_shape(g)]
    cdef Py_ssize_t blocks = (g.m + mr - 1) // mr, o, k = 0, tid = 0
    cdef Py_ssize_t chunks = _lanes_chunks(g, vl), per = _lanes_per_worker(g)
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, min(chunks, _lanes_workers(g)))
    cdef int* off = <int*> ws
    cdef floating* a = ws + g.kdim
    cdef floating* ab = a + blocks * mr * g.kdim
    cdef floating* scratch = ab + blocks * mr
    _lanes_offsets(g, _lanes_rows_in(g, _lanes_band(g)), vl, off, True)
    _direct_pack_w(w, a, g, mr, True)
    for o in range(blocks * mr):  # the bias after the weights, 0 past M (or without one)
        ab[o] = bias[o] if bias != NULL and o < g.m else 0
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, chunks, workers)
        with parallel(num_threads=workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _lanes_chunk(x, a, off, y, scratch + tid * per, g, k, act, act_param)
                k = cnnc_queue_take(&queue, tid)
    else:
        for k in range(chunks):
            _lanes_chunk(x, a, off, y, scratch, g, k, act, act_param)


# The weight gradient: a chunk holds `groups` groups of VL images and a band of output rows
# (all of them, and as many groups as fit, where one group's rows fit LANES_WG_ELEMS:
# fewer, longer micro-kernel calls, whose lane sums are paid once per call).

cdef inline Py_ssize_t _lanes_dxs(const Geom* g) noexcept nogil:
    """Columns of a transposed row of dy (the transposes' whole blocks of VL)."""
    return _wvec_round(g.ow)


cdef inline Py_ssize_t _lanes_wg_band(const Geom* g) noexcept nogil:
    return _lanes_rows_fit(g, LANES_WG_ELEMS, g.m * _lanes_dxs(g) * WINO_VL)


cdef inline Py_ssize_t _lanes_wg_elems(const Geom* g) noexcept nogil:
    """One group's transposed x and dy in a chunk (float32)."""
    cdef Py_ssize_t band = _lanes_wg_band(g)
    return (g.c * _lanes_rows_in(g, band) * _lanes_xs(g) + g.m * band * _lanes_dxs(g)) * WINO_VL


cdef inline Py_ssize_t _lanes_wg_groups(const Geom* g) noexcept nogil:
    if _lanes_wg_band(g) < g.oh:
        return 1
    return max(1, min((g.n + WINO_VL - 1) // WINO_VL, LANES_WG_ELEMS // _lanes_wg_elems(g)))


cdef inline Py_ssize_t _lanes_wg_chunks(const Geom* g, Py_ssize_t vl) noexcept nogil:
    cdef Py_ssize_t per = _lanes_wg_groups(g), band = _lanes_wg_band(g)
    return ((g.n + vl - 1) // vl + per - 1) // per * ((g.oh + band - 1) // band)


cdef inline Py_ssize_t _lanes_wg_slots(const Geom* g) noexcept nogil:
    """Partial weight gradients summed separately (fixed by the shapes, as for im2col)."""
    if g.m * g.kdim > WGRAD_SLOT_MAX_ELEMS:
        return 1
    return max(1, min(WGRAD_SLOTS, _lanes_wg_chunks(g, WINO_VL)))


cdef inline Py_ssize_t _lanes_wg_per_worker(const Geom* g) noexcept nogil:
    """The chunk's transposed x and dy, and its tables of row starts."""
    cdef Py_ssize_t per = _lanes_wg_groups(g)
    return per * (_lanes_wg_elems(g) + 2 * _lanes_wg_band(g))


cdef Py_ssize_t _lanes_wg_ws(const Geom* g) noexcept nogil:
    """Offsets, the workers' chunks, the partial sums."""
    cdef Py_ssize_t slots = _lanes_wg_slots(g)
    return (g.kdim + min(g.threads, slots) * _lanes_wg_per_worker(g)
            + (slots * g.m * g.kdim if slots > 1 else 0))


cdef inline bint _lanes_wg_ok(const Geom* g) noexcept nogil:
    """The weight gradient of the forward's layers up to 16 input channels (ResNet-20's
    16 -> 32 stride-2 entry 1.17x im2col's, 12 channels 3x3 on 24x24 1.32x the direct
    path's; 24 channels 5x5 on 12x12 1.07x, 32 channels 0.79-0.95x)."""
    return (g.lanes and g.c <= 16
            and _lanes_wg_per_worker(g) <= DIRECT_MAX_XP + COL_TILE)


cdef void _lanes_wg_chunk(const floating* x, const floating* dy, floating* dw, floating* ws,
                          const int* off, const Geom* g, Py_ssize_t k,
                          int n_threads) noexcept nogil:
    """dw[M, K] += chunk k's sum over its images and rows of dy[m] * x[tap], MR rows of dy
    by KR taps per micro-kernel call; each call owns its block of dw."""
    cdef Py_ssize_t vl = 16 if floating is float else 8, per = _lanes_wg_groups(g)
    cdef Py_ssize_t band = _lanes_wg_band(g), bands = (g.oh + band - 1) // band
    cdef Py_ssize_t g0 = k // bands * per, ng = min(per, (g.n + vl - 1) // vl - g0)
    cdef Py_ssize_t oy0 = k % bands * band, rows = min(band, g.oh - oy0)
    cdef Py_ssize_t rin = _lanes_rows_in(g, band), xs = _lanes_xs(g), dxs = _lanes_dxs(g)
    cdef Py_ssize_t ldd = per * band * dxs * vl, gi, b0, o, r, mb, kb
    cdef int shape = _direct_wg_shape(g), MR = _wg_mr[shape], KR = _wg_kr[shape], n, mr, kr
    cdef Py_ssize_t mblocks = (g.m + MR - 1) // MR, kblocks = (g.kdim + KR - 1) // KR
    cdef floating* xl = ws
    cdef floating* dl = xl + per * g.c * rin * xs * vl
    cdef int* xrow = <int*> (dl + g.m * ldd)
    cdef int* drow = xrow + per * band
    for gi in range(ng):
        b0 = (g0 + gi) * vl
        n = <int> min(vl, g.n - b0)
        _lanes_x(x, xl + gi * g.c * rin * xs * vl, g, b0, n, oy0 * g.sh - g.pt,
                 _lanes_rows_in(g, rows), rin)
        for o in range(g.m):
            for r in range(rows):
                if floating is float:
                    cnnc_wbat_row_s(dy + ((b0 * g.m + o) * g.oh + oy0 + r) * g.ow,
                                    g.m * g.oh * g.ow, n, g.ow, 0, dxs,
                                    dl + o * ldd + (gi * band + r) * dxs * vl)
                else:
                    cnnc_wbat_row_d(dy + ((b0 * g.m + o) * g.oh + oy0 + r) * g.ow,
                                    g.m * g.oh * g.ow, n, g.ow, 0, dxs,
                                    dl + o * ldd + (gi * band + r) * dxs * vl)
        for r in range(rows):
            xrow[gi * rows + r] = <int> ((gi * g.c * rin + r * g.sh) * xs * vl)
            drow[gi * rows + r] = <int> ((gi * band + r) * dxs * vl)
    if 2.0 * g.m * g.kdim * ng * rows * g.ow * vl < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for mb in prange(mblocks, num_threads=n_threads, schedule="static"):
        mr = <int> min(<Py_ssize_t> MR, g.m - mb * MR)
        for kb in range(kblocks):
            kr = <int> min(<Py_ssize_t> KR, g.kdim - kb * KR)
            _direct_wg_call(shape, ng * rows, xrow, drow, g.ow * vl, g.sw * vl,
                            dl + mb * MR * ldd, ldd, mr, xl, off + kb * KR, kr,
                            dw + mb * MR * g.kdim + kb * KR, g.kdim)


cdef void _lanes_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                       const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= sum over the batch, in chunks summed in a fixed order: into WGRAD_SLOTS
    partials (one thread each, added in order) when dW is small, else straight into dW
    with the threads splitting its rows. ws: _lanes_wg_ws elements."""
    cdef Py_ssize_t vl = 16 if floating is float else 8
    cdef Py_ssize_t chunks = _lanes_wg_chunks(g, vl), slots = _lanes_wg_slots(g)
    cdef Py_ssize_t size = g.m * g.kdim, per = _lanes_wg_per_worker(g), k = 0, s = 0, tid = 0
    cdef int* off = <int*> ws
    cdef floating* scratch = ws + g.kdim
    cdef floating* parts = scratch + min(g.threads, slots) * per
    _lanes_offsets(g, _lanes_rows_in(g, _lanes_wg_band(g)), vl, off, False)
    if slots == 1:
        if not accumulate:
            memset(dw, 0, size * sizeof(floating))
        for k in range(chunks):
            _lanes_wg_chunk(x, dy, dw, scratch, off, g, k, n_threads)
        return
    cdef cnnc_queue queue
    cnnc_queue_init(&queue, slots, min(<Py_ssize_t> n_threads, slots))
    with parallel(num_threads=min(<Py_ssize_t> n_threads, slots)):
        tid = threadid()
        s = cnnc_queue_take(&queue, tid)
        while s >= 0:
            memset(parts + s * size, 0, size * sizeof(floating))
            for k in range(s * chunks // slots, (s + 1) * chunks // slots):
                _lanes_wg_chunk(x, dy, parts + s * size, scratch + tid * per, off, g, k, 1)
            s = cnnc_queue_take(&queue, tid)
    _wgrad_add_slots(parts, dw, slots, size, accumulate, n_threads)


def _lanes_passes(x_shape, w_shape, stride=1, padding=0, dilation=1, n_threads=1) -> tuple:
    """Whether the forward, backward-data and weight gradient of this ungrouped layer take
    the path (tests and benchmarks)."""
    y_shape = (x_shape[0], w_shape[0]) + conv2d_output_size(x_shape[2:], w_shape[2:], stride,
                                                            padding, dilation)
    cdef Geom g = _geom(tuple(x_shape), tuple(w_shape), y_shape, stride, padding, dilation, 1,
                        n_threads)
    cdef Geom f
    cdef bint data = False
    if not (g.taps & TAPS_DATA) and not _strided_data_ok(&g) and _flips(&g):
        f = _flipped(&g)
        data = f.lanes and not (f.taps & TAPS_FWD)
    return (bool(g.lanes and not (g.taps & TAPS_FWD)), bool(data),
            bool(not (g.taps & TAPS_WG) and _lanes_wg_ok(&g)))

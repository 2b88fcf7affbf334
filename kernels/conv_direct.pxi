# Direct stride-1 convolution, included by conv.pyx: forward (and so the flipped
# backward-data) and weight gradient, reading shifted rows of a zero-padded copy of x in
# place instead of building im2col columns (see conv_direct.h for the index trick).
#
# Why: for thin layers (6-64 channels) the im2col copy and the GEMM's packing of it cost
# as much as the multiplications, since each column element feeds only M of them. Here x
# is copied once (padded), and the micro-kernels load it straight from cache. The price:
# the padding columns of each row are computed and thrown away (one per row with 3x3 and
# padding 1, see _direct_wp: 3% at 32x32, 11% at 8x8).

cdef extern from "conv_direct.h" nogil:
    void cnnc_direct_tile8_s(Py_ssize_t K, const float* a, const float* xp, const int* off,
                             float* out)
    void cnnc_direct_tile6_s(Py_ssize_t K, const float* a, const float* xp, const int* off,
                             float* out)
    void cnnc_direct_tile4_s(Py_ssize_t K, const float* a, const float* xp, const int* off,
                             float* out)
    void cnnc_direct_tile8_d(Py_ssize_t K, const double* a, const double* xp, const int* off,
                             double* out)
    void cnnc_direct_tile6_d(Py_ssize_t K, const double* a, const double* xp, const int* off,
                             double* out)
    void cnnc_direct_tile4_d(Py_ssize_t K, const double* a, const double* xp, const int* off,
                             double* out)
    void cnnc_direct_wgrad_s(Py_ssize_t rows, const int* xrow, Py_ssize_t nv, const float* dy,
                             Py_ssize_t ldd, int mr, const float* xp, const int* off, int kr,
                             float* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad_d(Py_ssize_t rows, const int* xrow, Py_ssize_t nv, const double* dy,
                             Py_ssize_t ldd, int mr, const double* xp, const int* off, int kr,
                             double* dw, Py_ssize_t ldw)

cdef extern from *:
    # relu as one C expression (gcc vectorises it; not Cython's if/else); NaN gives 0, as
    # in _gemm_act
    """
    #define CNNC_DIRECT_RELU(v) ((v) > 0 ? (v) : 0)
    """
    float _relu_s "CNNC_DIRECT_RELU"(float v) noexcept nogil
    double _relu_d "CNNC_DIRECT_RELU"(double v) noexcept nogil

cdef enum:
    DIRECT_VL = 16  # float lanes of one vector: tiles are 3 or 6 vectors wide
    DIRECT_TILE_ELEMS = 8 * 3 * DIRECT_VL  # elements of a tile, every micro-kernel
    DIRECT_MAX_XP = 1048576  # a padded chunk of x above this: im2col instead
    DIRECT_BAND = 65536  # padded x read per band of forward tiles (~L2), in elements
    DIRECT_WG_COLS = 4096  # weight gradient: images per chunk until this many columns
    DIRECT_WG_MR = 4  # rows of dy per weight-gradient micro-kernel call
    DIRECT_WG_KR = 6  # taps per weight-gradient micro-kernel call

cdef int _direct_enabled = 1  # 0: never (tests and benchmarks compare against im2col)


def _set_direct(bint enabled) -> None:
    """Allow (default) or forbid the direct path, for tests and benchmarks."""
    global _direct_enabled
    _direct_enabled = enabled


cdef inline Py_ssize_t _direct_hp(const Geom* g) noexcept nogil:
    """Rows per image of a padded plane (of a phase plane with stride, conv_strided.pxi)."""
    return g.oh + g.dh * (g.kh - 1) // g.sh


cdef inline Py_ssize_t _direct_wp(const Geom* g) noexcept nogil:
    """Elements per row of the padded copy. A window reads Wp = OW + dw*(kw-1) columns, but
    the right padding of one row can be the left padding of the next: with both paddings
    >= 0, rows of W + max(left, right) elements (reads past a row's end land on the next
    row's leading zeros), which leaves 1 wasted column per row instead of 2 at pad 1."""
    cdef Py_ssize_t wp = g.ow + g.dw * (g.kw - 1), pr = wp - g.w - g.pl
    cdef Py_ssize_t shared = g.w + max(g.pl, pr)
    if g.sh > 1 or g.sw > 1:
        return g.ow + g.dw * (g.kw - 1) // g.sw
    return shared if g.pl >= 0 and pr >= 0 and g.ow <= shared <= wp else wp


cdef inline Py_ssize_t _direct_slack(const Geom* g) noexcept nogil:
    """Zeros after the padded chunk: the last tile's and the last q-vector's overrun."""
    return (g.dh * (g.kh - 1) + 1) * _direct_wp(g) + 2 * DIRECT_TILE_ELEMS


cdef inline Py_ssize_t _direct_xp(const Geom* g, Py_ssize_t nb) noexcept nogil:
    """Elements of a padded chunk of nb images, slack included."""
    return g.c * _strided_phases(g) * nb * _direct_hp(g) * _direct_wp(g) + _direct_slack(g)


cdef inline bint _direct_ok(const Geom* g) noexcept nogil:
    """Stride 1 (or a stride on phase planes, see conv_strided.pxi), ungrouped, and each
    weight used by at least K/2 output pixels in the call: with fewer (VGG's 256-512
    channel layers on 8x8 or smaller images at batch 1) the packed GEMM streams the
    weights better (direct: 0.2-0.7x of it there, measured)."""
    return (_direct_enabled and g.path == PATH_IM2COL and _strided_direct(g)
            and g.groups == 1 and 2 * g.n * g.oh * g.ow >= g.kdim
            and _direct_xp(g, 1) <= DIRECT_MAX_XP)


cdef inline int _direct_mr_rows(Py_ssize_t m) noexcept nogil:
    """Weight rows per tile for m output rows: 8, or 6 or 4 when that wastes fewer
    padded rows."""
    if m % 8 == 0 or m >= 32:
        return 8
    if m % 6 == 0:
        return 6
    return 4 if m % 8 <= 4 else 8


cdef inline int _direct_mr(const Geom* g) noexcept nogil:
    return _direct_mr_rows(g.m)


cdef inline Py_ssize_t _direct_packed(const Geom* g) noexcept nogil:
    """Offsets table and packed weights (rows rounded up to the tile's)."""
    cdef int mr = _direct_mr(g)
    return g.kdim + (g.m + mr - 1) // mr * mr * g.kdim


cdef inline Py_ssize_t _direct_workers(const Geom* g) noexcept nogil:
    """Threads that take whole images (each with its own padded copy)."""
    return max(1, min(g.threads, g.n))


cdef Py_ssize_t _direct_fwd_ws(const Geom* g) noexcept nogil:
    """Packed weights, one tile per thread, one padded image per image-taking thread."""
    return (_direct_packed(g) + g.threads * DIRECT_TILE_ELEMS
            + _direct_workers(g) * _direct_xp(g, 1))


cdef inline Py_ssize_t _direct_owv(const Geom* g) noexcept nogil:
    """An output row rounded up to whole vectors."""
    return (g.ow + DIRECT_VL - 1) // DIRECT_VL * DIRECT_VL


cdef inline bint _direct_wg_rows(const Geom* g) noexcept nogil:
    """Weight gradient: sum over output rows of whole vectors (OW = 16, 32: no waste)
    rather than over the flattened padded chunk (Wp - OW columns and the padding rows)."""
    return g.oh * _direct_owv(g) < _direct_hp(g) * _direct_wp(g)


cdef inline bint _direct_wg_ok(const Geom* g) noexcept nogil:
    """The direct weight gradient beats im2col + GEMM (measured: 1.1x at 32 channels, up
    to 2x at 1-3) for inputs of <= 32 channels when at most 15% of its columns are
    padding; from 64 channels 3x3 layers take Winograd's. Not strided layers: on their
    phase planes it is no faster than im2col (ResNet-20's stage-2 entry: 2.7 vs 2.5 ms)."""
    cdef Py_ssize_t cols = g.oh * _direct_owv(g)
    if not _direct_wg_rows(g):
        cols = _direct_hp(g) * _direct_wp(g)
    return (_direct_ok(g) and g.sh == 1 and g.sw == 1 and g.c <= 32
            and 100 * cols <= 115 * g.oh * g.ow
            and _direct_wg_per_worker(g) <= DIRECT_MAX_XP + COL_TILE)


cdef inline Py_ssize_t _direct_wg_images(const Geom* g) noexcept nogil:
    """Images per weight-gradient chunk: enough columns to amortise the lane sums."""
    cdef Py_ssize_t hw = _direct_hp(g) * _direct_wp(g)
    cdef Py_ssize_t cols = g.oh * _direct_owv(g) if _direct_wg_rows(g) else hw
    return max(1, min(g.n, DIRECT_WG_COLS // cols, DIRECT_MAX_XP // ((g.c + g.m) * hw)))


cdef inline Py_ssize_t _direct_cols(const Geom* g, Py_ssize_t nb) noexcept nogil:
    """Columns of dy in a weight-gradient chunk of nb images, in whole vectors."""
    cdef Py_ssize_t q = nb * _direct_hp(g) * _direct_wp(g)
    if _direct_wg_rows(g):
        return nb * g.oh * _direct_owv(g)
    return (q + DIRECT_VL - 1) // DIRECT_VL * DIRECT_VL


cdef inline Py_ssize_t _direct_wg_slots(const Geom* g) noexcept nogil:
    """Partial weight gradients summed separately (fixed by the shapes, as for im2col)."""
    cdef Py_ssize_t nb = _direct_wg_images(g), chunks = (g.n + nb - 1) // nb
    if g.m * g.kdim > WGRAD_SLOT_MAX_ELEMS:
        return 1
    return max(1, min(WGRAD_SLOTS, chunks))


cdef inline Py_ssize_t _direct_wg_per_worker(const Geom* g) noexcept nogil:
    """A padded chunk of x and the matching zero-padded dy."""
    cdef Py_ssize_t nb = _direct_wg_images(g)
    return _direct_xp(g, nb) + g.m * _direct_cols(g, nb)


cdef Py_ssize_t _direct_wg_ws(const Geom* g) noexcept nogil:
    """Offsets and row starts, the workers' chunks, the partial sums."""
    cdef Py_ssize_t slots = _direct_wg_slots(g)
    return (g.kdim + _direct_wg_images(g) * g.oh + min(g.threads, slots) * _direct_wg_per_worker(g)
            + (slots * g.m * g.kdim if slots > 1 else 0))


cdef void _direct_offsets(const Geom* g, Py_ssize_t nb, int* off) noexcept nogil:
    """off[(c, ki, kj)] = c*nb*Hp*Wp + ki*dh*Wp + kj*dw; with stride, the tap's phase
    plane and its row and column in there (see _strided_pad)."""
    cdef Py_ssize_t c, ki, kj, k = 0, wp = _direct_wp(g), plane = nb * _direct_hp(g) * wp
    cdef Py_ssize_t npw = min(g.sw, g.kw), phases = _strided_phases(g), ph
    for c in range(g.c):
        for ki in range(g.kh):
            for kj in range(g.kw):
                ph = ki * g.dh % g.sh * npw + kj * g.dw % g.sw
                off[k] = <int> ((c * phases + ph) * plane + ki * g.dh // g.sh * wp
                                + kj * g.dw // g.sw)
                k += 1


cdef void _direct_pad(const floating* x, floating* xp, const Geom* g, Py_ssize_t nb,
                      Py_ssize_t room, int n_threads) noexcept nogil:
    """xp[c, b, r, s] = x[b, c, r - pt, s - pl] (0 outside x) for b < nb, in a layout of
    `room` images per channel (the rest zero), then the zero slack."""
    cdef Py_ssize_t hp = _direct_hp(g), wp = _direct_wp(g), hw = hp * wp, plane = room * hw
    cdef Py_ssize_t cb, c, b, r, s, ih, lo, hi
    cdef floating* row
    cdef const floating* src
    # columns s of a row holding x: pl <= s < pl + W, clipped to the padded width
    lo = min(max(g.pl, 0), wp)
    hi = max(lo, min(g.pl + g.w, wp))
    for cb in prange(g.c * nb, num_threads=n_threads if hw * g.c * nb >= PARALLEL_MIN_ELEMS
                     else 1, schedule="static"):
        c = cb // nb
        b = cb - c * nb
        for r in range(hp):
            row = xp + c * plane + (b * hp + r) * wp
            ih = r - g.pt
            if ih < 0 or ih >= g.h or hi == lo:
                memset(row, 0, wp * sizeof(floating))
                continue
            src = x + ((b * g.c + c) * g.h + ih) * g.w - g.pl
            for s in range(lo):  # a few columns: a loop beats a memset call
                row[s] = 0
            memcpy(row + lo, src + lo, (hi - lo) * sizeof(floating))
            for s in range(hi, wp):
                row[s] = 0
    if room > nb:
        for c in range(g.c):
            memset(xp + c * plane + nb * hw, 0, (room - nb) * hw * sizeof(floating))
    memset(xp + g.c * plane, 0, _direct_slack(g) * sizeof(floating))


cdef void _direct_pack_w(const floating* w, floating* a, const Geom* g, int mr) noexcept nogil:
    """a[blk, k, i] = w[blk*mr + i, k] (0 past M): each tile's weights k-major."""
    cdef Py_ssize_t blk, k, i, o, blocks = (g.m + mr - 1) // mr
    for blk in range(blocks):
        for k in range(g.kdim):
            for i in range(mr):
                o = blk * mr + i
                a[(blk * g.kdim + k) * mr + i] = w[o * g.kdim + k] if o < g.m else 0


cdef void _direct_store(const floating* tile, Py_ssize_t nr, floating* y, Py_ssize_t m0,
                        Py_ssize_t rows, Py_ssize_t q0, Py_ssize_t nq, const Geom* g,
                        const floating* bias, int act, floating act_param) noexcept nogil:
    """y[m0 + i, oy, ox] = act(tile[i, q - q0] + bias) for the real pixels q = oy*Wp + ox
    of [q0, q0 + nq); y is one image's output."""
    cdef Py_ssize_t i, j, q, run, wp = _direct_wp(g), P = g.oh * g.ow
    cdef Py_ssize_t oy = q0 // wp, ox = q0 - oy * wp, d0 = oy * g.ow + min(ox, g.ow)
    cdef floating bo
    cdef const floating* src
    cdef floating* dst
    q = q0
    while q < q0 + nq:  # one run of real pixels per output row the tile touches
        if ox >= g.ow:
            q += wp - ox
            ox = 0
            continue
        run = min(g.ow - ox, q0 + nq - q)
        for i in range(rows):
            bo = 0 if bias == NULL else bias[m0 + i]
            src = tile + i * nr + q - q0
            dst = y + (m0 + i) * P + d0
            if act == ACT_NONE:
                for j in range(run):
                    dst[j] = src[j] + bo
            elif act == ACT_RELU:  # vectorised; the general case below is not
                for j in range(run):
                    if floating is float:
                        dst[j] = _relu_s(src[j] + bo)
                    else:
                        dst[j] = _relu_d(src[j] + bo)
            else:
                for j in range(run):
                    dst[j] = _gemm_act(src[j] + bo, act, act_param)
        q += run
        ox += run
        d0 += run


cdef void _direct_tiles(const floating* a, const floating* xp, const int* off, floating* y,
                        floating* tile, const Geom* g, Py_ssize_t blk, Py_ssize_t t0,
                        Py_ssize_t t1, const floating* bias, int act,
                        floating act_param) noexcept nogil:
    """Output tiles t0 .. t1 of weight-row block blk, for one image."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t t, q0, nr, Q = g.oh * _direct_wp(g), m0 = blk * mr
    nr = (DIRECT_TILE_ELEMS // mr) if floating is float else (DIRECT_TILE_ELEMS // mr) // 2
    for t in range(t0, t1):
        q0 = t * nr
        if floating is float:
            if mr == 8:
                cnnc_direct_tile8_s(g.kdim, a + blk * g.kdim * mr, xp + q0, off, tile)
            elif mr == 6:
                cnnc_direct_tile6_s(g.kdim, a + blk * g.kdim * mr, xp + q0, off, tile)
            else:
                cnnc_direct_tile4_s(g.kdim, a + blk * g.kdim * mr, xp + q0, off, tile)
        else:
            if mr == 8:
                cnnc_direct_tile8_d(g.kdim, a + blk * g.kdim * mr, xp + q0, off, tile)
            elif mr == 6:
                cnnc_direct_tile6_d(g.kdim, a + blk * g.kdim * mr, xp + q0, off, tile)
            else:
                cnnc_direct_tile4_d(g.kdim, a + blk * g.kdim * mr, xp + q0, off, tile)
        _direct_store(tile, nr, y, m0, min(<Py_ssize_t> mr, g.m - m0), q0, min(nr, Q - q0),
                      g, bias, act, act_param)


cdef void _direct_image(const floating* a, const floating* xp, const int* off, floating* y,
                        floating* tile, const Geom* g, Py_ssize_t blk0, Py_ssize_t blk1,
                        const floating* bias, int act, floating act_param) noexcept nogil:
    """Row blocks blk0 .. blk1 of one image's output, a band of tiles at a time so that
    the band's padded rows stay in cache across the blocks."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t nr, Q = g.oh * _direct_wp(g), tiles, band, i, blk
    nr = (DIRECT_TILE_ELEMS // mr) if floating is float else (DIRECT_TILE_ELEMS // mr) // 2
    tiles = (Q + nr - 1) // nr
    band = max(1, DIRECT_BAND // (g.c * nr))
    for i in range((tiles + band - 1) // band):
        for blk in range(blk0, blk1):
            _direct_tiles(a, xp, off, y, tile, g, blk, i * band, min(tiles, (i + 1) * band),
                          bias, act, act_param)


cdef void _direct_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                      floating* ws, const Geom* g, int act, floating act_param,
                      int n_threads) noexcept nogil:
    """y = act(conv(x, w) + bias), stride 1; ws: _direct_fwd_ws elements. Images go to
    the threads whole; a single image splits its weight-row blocks instead."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t b, blk, tid = 0, blocks = (g.m + mr - 1) // mr
    cdef Py_ssize_t xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow, per = _direct_xp(g, 1)
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, _direct_workers(g))
    cdef int* off = <int*> ws
    cdef floating* a = ws + g.kdim
    cdef floating* tiles = a + blocks * mr * g.kdim
    cdef floating* xps = tiles + g.threads * DIRECT_TILE_ELEMS
    _direct_offsets(g, 1, off)
    _direct_pack_w(w, a, g, mr)
    if workers > 1:
        with parallel(num_threads=workers):
            tid = threadid()
            for b in prange(g.n, schedule="static"):
                _direct_pad(x + b * xs, xps + tid * per, g, 1, 1, 1)
                _direct_image(a, xps + tid * per, off, y + b * ys,
                              tiles + tid * DIRECT_TILE_ELEMS, g, 0, blocks, bias, act,
                              act_param)
        return
    if 2.0 * g.m * g.kdim * g.oh * g.ow < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for b in range(g.n):
        _direct_pad(x + b * xs, xps, g, 1, 1, n_threads)
        if n_threads == 1:
            _direct_image(a, xps, off, y + b * ys, tiles, g, 0, blocks, bias, act, act_param)
            continue
        with parallel(num_threads=n_threads):
            tid = threadid()
            for blk in prange(blocks, schedule="static"):
                _direct_image(a, xps, off, y + b * ys, tiles + tid * DIRECT_TILE_ELEMS, g,
                              blk, blk + 1, bias, act, act_param)


cdef void _direct_dy(const floating* dy, floating* dyv, const Geom* g, Py_ssize_t nb,
                     Py_ssize_t cols) noexcept nogil:
    """dy laid out as the micro-kernel sums it, zero at every other column: by rows,
    dyv[m, (b*OH + oy)*OWv + ox]; flat, dyv[m, b*Hp*Wp + oy*Wp + ox]."""
    cdef Py_ssize_t m, b, oy, s, wp = _direct_wp(g), hp = _direct_hp(g)
    cdef Py_ssize_t step = _direct_owv(g) if _direct_wg_rows(g) else wp
    cdef Py_ssize_t image = g.oh * step if _direct_wg_rows(g) else hp * wp
    cdef floating* row
    for m in range(g.m):
        for b in range(nb):
            row = dyv + m * cols + b * image
            for oy in range(g.oh):  # each output row, then zeros to the next one's start
                memcpy(row + oy * step, dy + ((b * g.m + m) * g.oh + oy) * g.ow,
                       g.ow * sizeof(floating))
                for s in range(g.ow, step):
                    row[oy * step + s] = 0
            memset(row + g.oh * step, 0, (image - g.oh * step) * sizeof(floating))
        memset(dyv + m * cols + nb * image, 0, (cols - nb * image) * sizeof(floating))


cdef void _direct_wg_chunk(const floating* x, const floating* dy, floating* dw, floating* ws,
                           const int* off, const int* xrow, const Geom* g, Py_ssize_t nb,
                           int n_threads) noexcept nogil:
    """dw[M, K] += the sum over nb images of dy[m, q] * xp[off[k] + q], 4 rows of dy by 6
    taps per micro-kernel call; each call owns its block of dw."""
    cdef Py_ssize_t room = _direct_wg_images(g), cols = _direct_cols(g, room)
    cdef Py_ssize_t rows = room * g.oh if _direct_wg_rows(g) else 1
    cdef Py_ssize_t nv = cols // rows // (16 if floating is float else 8)
    cdef Py_ssize_t mb, kb, mblocks = (g.m + DIRECT_WG_MR - 1) // DIRECT_WG_MR
    cdef Py_ssize_t kblocks = (g.kdim + DIRECT_WG_KR - 1) // DIRECT_WG_KR
    cdef floating* xp = ws
    cdef floating* dyv = ws + _direct_xp(g, room)
    cdef int mr, kr
    _direct_pad(x, xp, g, nb, room, n_threads)
    _direct_dy(dy, dyv, g, nb, cols)
    if 2.0 * g.m * g.kdim * cols < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for mb in prange(mblocks, num_threads=n_threads, schedule="static"):
        mr = <int> min(<Py_ssize_t> DIRECT_WG_MR, g.m - mb * DIRECT_WG_MR)
        for kb in range(kblocks):
            kr = <int> min(<Py_ssize_t> DIRECT_WG_KR, g.kdim - kb * DIRECT_WG_KR)
            if floating is float:
                cnnc_direct_wgrad_s(rows, xrow, nv, dyv + mb * DIRECT_WG_MR * cols, cols, mr,
                                    xp, off + kb * DIRECT_WG_KR, kr,
                                    dw + mb * DIRECT_WG_MR * g.kdim + kb * DIRECT_WG_KR,
                                    g.kdim)
            else:
                cnnc_direct_wgrad_d(rows, xrow, nv, dyv + mb * DIRECT_WG_MR * cols, cols, mr,
                                    xp, off + kb * DIRECT_WG_KR, kr,
                                    dw + mb * DIRECT_WG_MR * g.kdim + kb * DIRECT_WG_KR,
                                    g.kdim)


cdef void _direct_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                        const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= sum over the batch, in chunks of images summed in a fixed order: into
    WGRAD_SLOTS partials (one thread each, added in order) when dW is small, else
    straight into dW with the threads splitting its rows. ws: _direct_wg_ws elements."""
    cdef Py_ssize_t nb = _direct_wg_images(g), chunks = (g.n + nb - 1) // nb
    cdef Py_ssize_t slots = _direct_wg_slots(g), size = g.m * g.kdim
    cdef Py_ssize_t per = _direct_wg_per_worker(g), k, s, e, tid = 0
    cdef Py_ssize_t xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow
    cdef Py_ssize_t b, oy
    cdef int* off = <int*> ws
    cdef int* xrow = off + g.kdim
    cdef floating* scratch = ws + g.kdim + nb * g.oh
    cdef floating* parts = scratch + min(g.threads, slots) * per
    cdef floating v
    _direct_offsets(g, nb, off)
    xrow[0] = 0
    if _direct_wg_rows(g):  # where output row oy of image b starts in a padded plane
        for b in range(nb):
            for oy in range(g.oh):
                xrow[b * g.oh + oy] = <int> ((b * _direct_hp(g) + oy) * _direct_wp(g))
    if slots == 1:
        if not accumulate:
            memset(dw, 0, size * sizeof(floating))
        for k in range(chunks):
            _direct_wg_chunk(x + k * nb * xs, dy + k * nb * ys, dw, scratch, off, xrow, g,
                             min(nb, g.n - k * nb), n_threads)
        return
    with parallel(num_threads=min(<Py_ssize_t> n_threads, slots)):
        tid = threadid()
        for s in prange(slots, schedule="static"):
            memset(parts + s * size, 0, size * sizeof(floating))
            for k in range(s * chunks // slots, (s + 1) * chunks // slots):
                _direct_wg_chunk(x + k * nb * xs, dy + k * nb * ys, parts + s * size,
                                 scratch + tid * per, off, xrow, g, min(nb, g.n - k * nb), 1)
    for e in prange(size, num_threads=n_threads if size >= PARALLEL_MIN_ELEMS else 1,
                    schedule="static"):
        v = dw[e] if accumulate else 0
        for s in range(slots):
            v = v + parts[s * size + e]
        dw[e] = v

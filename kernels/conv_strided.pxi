# Strided convolutions (stride >= 2, dilation 1) by polyphase splits, included by conv.pyx.
#
# Tap (ki, kj) of output pixel (oy, ox) reads padded x at (sh*oy + ki, sw*ox + kj): row
# oy + ki // sh of the phase plane (ki % sh, kj % sw) that holds the padded rows
# ki % sh, ki % sh + sh, ... and the matching columns. With x copied once into its phase
# planes (_strided_pad), consecutive output pixels read consecutive elements again, so the
# direct path's micro-kernels (conv_direct.pxi) run on that copy as they do on a padded x:
# only its offsets table and padded layout know the stride. The forward runs them over
# chunks of images (_strided_fwd); the weight gradient stays with im2col (the direct one
# is no faster on phase planes).
#
# Backward-data: phase (pr, pc) of dx (the padded rows pr, pr + sh, ...) is a stride-1
# correlation of dy with the sub-kernel w[:, :, pr::sh, pc::sw] (flipped), so each phase
# is one direct convolution of a zero-padded copy of dy, K = M * its taps, written
# interleaved into dx (_strided_bwd_data): no col2im scatter, and no multiplication by
# the zeros of a dilated dy. Phases no tap reaches (stride > kernel) are zero.

cdef extern from "conv_strided.h" nogil:
    void cnnc_split2_s(const float* s, Py_ssize_t n, float* e, float* o)
    void cnnc_split2_d(const double* s, Py_ssize_t n, double* e, double* o)

cdef enum:
    STRIDED_MAX = 4  # strides up to this take the path (per-phase arrays on the stack)
    STRIDED_CHUNK = 32768  # forward: phase planes per chunk, in elements (L2 / 8)
    STRIDED_DY = 16384  # backward-data: padded dy per chunk, in elements

cdef int _strided_enabled = 1  # 0: strided layers take im2col (tests, benchmarks)


def _set_strided(bint enabled) -> None:
    """Allow (default) or forbid the polyphase path for strided layers."""
    global _strided_enabled
    _strided_enabled = enabled


cdef inline Py_ssize_t _strided_phases(const Geom* g) noexcept nogil:
    """Phase planes the taps read (1 with stride 1)."""
    return min(g.sh, g.kh) * min(g.sw, g.kw)


cdef inline bint _strided_direct(const Geom* g) noexcept nogil:
    """The direct path handles stride 1 (any dilation) or, split into phases, a stride
    with dilation 1 and more than one tap: a 1x1 strided layer is a GEMM on a subsample
    of x, which im2col + GEMM runs faster (ResNet-20's shortcuts: up to 1.6x)."""
    if g.sh == 1 and g.sw == 1:
        return True
    return (_strided_enabled and g.dh == 1 and g.dw == 1 and g.kh * g.kw > 1
            and g.sh <= STRIDED_MAX and g.sw <= STRIDED_MAX)


cdef void _strided_pad(const floating* x, floating* xp, const Geom* g, Py_ssize_t nb,
                       Py_ssize_t room, int n_threads) noexcept nogil:
    """xp[c, (pr, pc), b, i, j] = x[b, c, sh*i + pr - pt, sw*j + pc - pl] (0 outside x)
    for b < nb, in a layout of `room` images per plane (the rest zero), then zero slack."""
    cdef Py_ssize_t hp = _direct_hp(g), wp = _direct_wp(g), hw = hp * wp, plane = room * hw
    cdef Py_ssize_t nph = min(g.sh, g.kh), npw = min(g.sw, g.kw), phases = nph * npw
    cdef Py_ssize_t cb, cr, c, pr, pc, b, r, i, j, ih, n, e
    cdef Py_ssize_t lo[STRIDED_MAX]
    cdef Py_ssize_t hi[STRIDED_MAX]
    cdef floating* row
    cdef const floating* src
    for pc in range(npw):  # columns j inside x, per column phase
        _tap_range(pc - g.pl, g.sw, wp, g.w, &lo[pc], &hi[pc])
    for cb in prange(g.c * nb, num_threads=n_threads if plane * g.c * phases
                     >= PARALLEL_MIN_ELEMS else 1, schedule="static"):
        c = cb // nb
        b = cb - c * nb
        for r in range(hp * g.sh):  # padded rows in order: x is read sequentially
            pr = r % g.sh
            i = r // g.sh
            if pr >= nph:
                continue
            ih = r - g.pt
            row = xp + (c * nph + pr) * npw * plane + (b * hp + i) * wp  # phase (pr, 0)
            if ih < 0 or ih >= g.h:
                for pc in range(npw):
                    memset(row + pc * plane, 0, wp * sizeof(floating))
                continue
            src = x + ((b * g.c + c) * g.h + ih) * g.w - g.pl  # padded column 0
            for pc in range(npw):
                for j in range(lo[pc]):
                    row[pc * plane + j] = 0
                for j in range(hi[pc], wp):
                    row[pc * plane + j] = 0
            n = 0
            if g.sw == 2 and npw == 2:  # x's even and odd columns in one pass
                n = min(hi[0] - lo[0], hi[1] - lo[1])
                e = g.pl % 2  # the phase of x's column 0
                if floating is float:
                    cnnc_split2_s(src + 2 * lo[e] + e, n, row + e * plane + lo[e],
                                  row + (1 - e) * plane + lo[1 - e])
                else:
                    cnnc_split2_d(src + 2 * lo[e] + e, n, row + e * plane + lo[e],
                                  row + (1 - e) * plane + lo[1 - e])
            for pc in range(npw):  # the rest (a phase's last column), other strides
                for j in range(lo[pc] + n, hi[pc]):
                    row[pc * plane + j] = src[j * g.sw + pc]
    for cr in range(g.c * phases):
        memset(xp + cr * plane + nb * hw, 0, (room - nb) * hw * sizeof(floating))
    memset(xp + g.c * phases * plane, 0, _direct_slack(g) * sizeof(floating))


# ---------------------------------------------------------------------------------------
# forward: the direct micro-kernels over chunks of whole images
#
# A chunk's q = b*Hp*Wp + oy*Wp + ox runs on over its images (the direct path takes one
# image at a time): ResNet-20's 8x8 outputs fill 2/3 of their 48-pixel tiles one image at
# a time, 4/5 in a chunk.

cdef inline Py_ssize_t _sf_images(const Geom* g) noexcept nogil:
    """Images per forward chunk: phase planes of about STRIDED_CHUNK elements."""
    return max(1, min(g.n, STRIDED_CHUNK // (_direct_xp(g, 1) - _direct_slack(g))))


cdef inline Py_ssize_t _sf_workers(const Geom* g) noexcept nogil:
    return max(1, min(g.threads, (g.n + _sf_images(g) - 1) // _sf_images(g)))


cdef Py_ssize_t _strided_fwd_ws(const Geom* g) noexcept nogil:
    """Offsets and packed weights, one tile per thread, one chunk per chunk-taking thread."""
    return (_direct_packed(g) + g.threads * DIRECT_TILE_ELEMS
            + _sf_workers(g) * _direct_xp(g, _sf_images(g)))


cdef void _sf_tiles(const floating* a, const floating* xp, const int* off, floating* y,
                    floating* tile, const Geom* g, Py_ssize_t nb, Py_ssize_t blk0,
                    Py_ssize_t blk1, const floating* bias, int act,
                    floating act_param) noexcept nogil:
    """Row blocks blk0 .. blk1 of the output of a chunk of nb images, stored image by
    image (_direct_store: one image's pixels)."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t hw = _direct_hp(g) * _direct_wp(g), Q = g.oh * _direct_wp(g)
    cdef Py_ssize_t nr, tiles, blk, t, q0, q1, b, e, ys = g.m * g.oh * g.ow
    nr = (DIRECT_TILE_ELEMS // mr) if floating is float else (DIRECT_TILE_ELEMS // mr) // 2
    tiles = ((nb - 1) * hw + Q + nr - 1) // nr
    for t in range(tiles):
        q0 = t * nr
        for blk in range(blk0, blk1):
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
            for b in range(q0 // hw, min(nb, (q0 + nr + hw - 1) // hw)):
                q1 = max(q0, b * hw)  # the tile's pixels in image b's first OH rows
                e = min(q0 + nr, b * hw + Q)
                if e > q1:
                    _direct_store(tile + q1 - q0, nr, y + b * ys, blk * mr,
                                  min(<Py_ssize_t> mr, g.m - blk * mr), q1 - b * hw, e - q1,
                                  g, bias, act, act_param)


cdef void _strided_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                       floating* ws, const Geom* g, int act, floating act_param,
                       int n_threads) noexcept nogil:
    """y = act(conv(x, w) + bias) with stride; ws: _strided_fwd_ws elements. Chunks go
    to the threads whole; a single worker shares each chunk's weight-row blocks."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t k = 0, blk, tid = 0, blocks = (g.m + mr - 1) // mr, nb = _sf_images(g)
    cdef Py_ssize_t chunks = (g.n + nb - 1) // nb, per = _direct_xp(g, nb)
    cdef Py_ssize_t xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, _sf_workers(g))
    cdef int* off = <int*> ws
    cdef floating* a = ws + g.kdim
    cdef floating* tiles = a + blocks * mr * g.kdim
    cdef floating* xps = tiles + g.threads * DIRECT_TILE_ELEMS
    _direct_offsets(g, nb, off)
    _direct_pack_w(w, a, g, mr)
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, chunks, workers)
        with parallel(num_threads=workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _strided_pad(x + k * nb * xs, xps + tid * per, g, min(nb, g.n - k * nb), nb, 1)
                _sf_tiles(a, xps + tid * per, off, y + k * nb * ys,
                          tiles + tid * DIRECT_TILE_ELEMS, g, min(nb, g.n - k * nb), 0, blocks,
                          bias, act, act_param)
                k = cnnc_queue_take(&queue, tid)
        return
    if 2.0 * g.m * g.kdim * g.oh * g.ow * nb < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for k in range(chunks):
        _strided_pad(x + k * nb * xs, xps, g, min(nb, g.n - k * nb), nb, n_threads)
        if n_threads == 1:
            _sf_tiles(a, xps, off, y + k * nb * ys, tiles, g, min(nb, g.n - k * nb), 0, blocks,
                      bias, act, act_param)
            continue
        with parallel(num_threads=n_threads):
            tid = threadid()
            for blk in prange(blocks, schedule="static"):
                _sf_tiles(a, xps, off, y + k * nb * ys, tiles + tid * DIRECT_TILE_ELEMS, g,
                          min(nb, g.n - k * nb), blk, blk + 1, bias, act, act_param)


# ---------------------------------------------------------------------------------------
# backward-data, phase by phase
#
# Phase pr of dx's padded rows holds rows i in [lo, hi) (x row sh*i + pr - pt); its taps
# ki = pr + sh*a (a < A) read dy row i - a. dy is copied into a grid of Hd rows with T
# zero rows on top (so that i - a + T >= 0 for every phase), and the phase's output
# i - lo sits at grid row i - lo: tap a reads grid row (i - lo) + lo - a + T. Columns
# alike. So q = b*Hd*Wd + (i - lo)*Wd + (j - lo') runs over the grid and every tap reads
# dyp[off[k] + q], as in the direct forward.

cdef inline void _sd_dim(Py_ssize_t p, Py_ssize_t s, Py_ssize_t k, Py_ssize_t pad,
                         Py_ssize_t size, Py_ssize_t* taps, Py_ssize_t* lo,
                         Py_ssize_t* hi) noexcept nogil:
    """Along one dimension, phase p: its taps, and the range [lo, hi) of its rows in x."""
    taps[0] = (k - p + s - 1) // s
    lo[0] = (pad - p + s - 1) // s
    hi[0] = (size + pad - p + s - 1) // s


cdef inline void _sd_grid(Py_ssize_t s, Py_ssize_t k, Py_ssize_t pad, Py_ssize_t size,
                          Py_ssize_t out, Py_ssize_t* t, Py_ssize_t* d) noexcept nogil:
    """Along one dimension: the zero rows T above dy and the grid's rows Hd."""
    cdef Py_ssize_t p, taps, lo, hi, top = 0, end = out
    for p in range(s):
        _sd_dim(p, s, k, pad, size, &taps, &lo, &hi)
        if taps > 0:
            top = max(top, taps - 1 - lo)
        end = max(end, hi)
    t[0] = top
    d[0] = end + top


cdef inline Py_ssize_t _sd_hd(const Geom* g) noexcept nogil:
    cdef Py_ssize_t t, d
    _sd_grid(g.sh, g.kh, g.pt, g.h, g.oh, &t, &d)
    return d


cdef inline Py_ssize_t _sd_wd(const Geom* g) noexcept nogil:
    cdef Py_ssize_t t, d
    _sd_grid(g.sw, g.kw, g.pl, g.w, g.ow, &t, &d)
    return d


cdef inline Py_ssize_t _sd_slack(const Geom* g) noexcept nogil:
    """Zeros after the dy grid: a phase's largest offset within a plane ends inside the
    last image's grid plus one row; the last tile reads up to two tiles past it."""
    return _sd_wd(g) + 2 * DIRECT_TILE_ELEMS


cdef inline Py_ssize_t _sd_images(const Geom* g) noexcept nogil:
    """Images per chunk: the grid of dy about STRIDED_DY elements, whole images."""
    return max(1, min(g.n, STRIDED_DY // (g.m * _sd_hd(g) * _sd_wd(g))))


cdef inline Py_ssize_t _sd_chunk(const Geom* g) noexcept nogil:
    return g.m * _sd_images(g) * _sd_hd(g) * _sd_wd(g) + _sd_slack(g)


cdef inline bint _strided_data_ok(const Geom* g) noexcept nogil:
    """Backward-data of a strided layer the direct path takes forward."""
    return (g.sh > 1 or g.sw > 1) and _direct_ok(g) and _sd_chunk(g) <= DIRECT_MAX_XP


cdef inline Py_ssize_t _sd_workers(const Geom* g) noexcept nogil:
    return max(1, min(g.threads, (g.n + _sd_images(g) - 1) // _sd_images(g)))


cdef Py_ssize_t _strided_data_ws(const Geom* g) noexcept nogil:
    """Offsets and packed weights of every phase (rows rounded up to the tile's), a tile
    per column phase and one dy chunk per thread."""
    cdef int mr = _direct_mr_rows(g.c)
    return (g.m * g.kh * g.kw * (1 + (g.c + mr - 1) // mr * mr)
            + g.threads * g.sw * DIRECT_TILE_ELEMS + _sd_workers(g) * _sd_chunk(g))


cdef void _sd_pad(const floating* dy, floating* dyp, const Geom* g, Py_ssize_t nb,
                  Py_ssize_t room) noexcept nogil:
    """dyp[m, b, T + oy, L + ox] = dy[b, m, oy, ox], zero elsewhere, then zero slack."""
    cdef Py_ssize_t t, l, hd, wd, m, b, r, plane
    cdef floating* row
    _sd_grid(g.sh, g.kh, g.pt, g.h, g.oh, &t, &hd)
    _sd_grid(g.sw, g.kw, g.pl, g.w, g.ow, &l, &wd)
    plane = room * hd * wd
    memset(dyp, 0, (g.m * plane + _sd_slack(g)) * sizeof(floating))
    for m in range(g.m):
        for b in range(nb):
            for r in range(g.oh):
                row = dyp + m * plane + (b * hd + t + r) * wd + l
                memcpy(row, dy + ((b * g.m + m) * g.oh + r) * g.ow, g.ow * sizeof(floating))


cdef void _sd_pack(const floating* w, floating* a, int* off, const Geom* g, Py_ssize_t pr,
                   Py_ssize_t pc, int mr) noexcept nogil:
    """Phase (pr, pc): a[blk, k, i] = w[k.m, blk*mr + i, pr + sh*k.a, pc + sw*k.b] (0 past
    C) and off[k] for k = (m, a, b)."""
    cdef Py_ssize_t ta, tb, ilo, ihi, jlo, jhi, t, hd, l, wd, plane, room = _sd_images(g)
    cdef Py_ssize_t m, i, j, k, c, blk, kdim, blocks = (g.c + mr - 1) // mr
    _sd_dim(pr, g.sh, g.kh, g.pt, g.h, &ta, &ilo, &ihi)
    _sd_dim(pc, g.sw, g.kw, g.pl, g.w, &tb, &jlo, &jhi)
    _sd_grid(g.sh, g.kh, g.pt, g.h, g.oh, &t, &hd)
    _sd_grid(g.sw, g.kw, g.pl, g.w, g.ow, &l, &wd)
    plane = room * hd * wd
    kdim = g.m * ta * tb
    for m in range(g.m):
        for i in range(ta):
            for j in range(tb):
                k = (m * ta + i) * tb + j
                off[k] = <int> (m * plane + (ilo - i + t) * wd + jlo - j + l)
                for blk in range(blocks):
                    for c in range(blk * mr, blk * mr + mr):
                        a[(blk * kdim + k) * mr + c - blk * mr] = (
                            w[((m * g.c + c) * g.kh + pr + g.sh * i) * g.kw + pc + g.sw * j]
                            if c < g.c else 0)


cdef void _sd_store(const floating* tile, Py_ssize_t nr, Py_ssize_t rows, Py_ssize_t q0,
                    Py_ssize_t nq, floating* dx, const Geom* g, Py_ssize_t hd, Py_ssize_t wd,
                    Py_ssize_t ni) noexcept nogil:
    """dx[b, c0 + r, sh*i, sw*j + s] = tile s's [r, q - q0] (the column phase whose first
    column is x's column s; tiles DIRECT_TILE_ELEMS apart) for the grid's real pixels
    q = b*Hd*Wd + i*Wd + j (i < ni, sw*j + s < W) in [q0, q0 + nq): the column phases
    interleaved, so rows are written whole. dx points at channel c0 of image 0, at the
    row phase's first row."""
    cdef Py_ssize_t q = q0, b, i, j, run, r, t, s, e, hw = g.h * g.w
    cdef Py_ssize_t full = g.w // g.sw, nj = (g.w + g.sw - 1) // g.sw
    cdef const floating* src
    cdef floating* dst
    b = q // (hd * wd)
    i = (q - b * hd * wd) // wd
    j = q - b * hd * wd - i * wd
    while q < q0 + nq:  # one grid row (or the part in the tile) at a time
        run = min(wd - j, q0 + nq - q)
        if i < ni and j < nj:
            e = min(j + run, full)
            for r in range(rows):
                src = tile + r * nr + q - q0 - j
                dst = dx + (b * g.c + r) * hw + g.sh * i * g.w
                if g.sw == 2:  # a constant stride: gcc interleaves in vectors
                    for t in range(j, e):
                        dst[2 * t] = src[t]
                        dst[2 * t + 1] = src[DIRECT_TILE_ELEMS + t]
                else:
                    for t in range(j, e):
                        for s in range(g.sw):
                            dst[g.sw * t + s] = src[s * DIRECT_TILE_ELEMS + t]
                for t in range(max(j, full), min(j + run, nj)):  # x's last, partial group
                    for s in range(g.w - g.sw * t):
                        dst[g.sw * t + s] = src[s * DIRECT_TILE_ELEMS + t]
        q += run
        j += run
        if j == wd:
            j = 0
            i += 1
            if i == hd:
                i = 0
                b += 1


cdef inline Py_ssize_t _sd_packed(const Geom* g, Py_ssize_t pr, Py_ssize_t pc) noexcept nogil:
    """Taps of the phases packed before phase (pr, pc), times M (row-major phase order)."""
    cdef Py_ssize_t p, ta, tb, lo, hi, rows = 0, cols = 0
    for p in range(pr):
        _sd_dim(p, g.sh, g.kh, g.pt, g.h, &ta, &lo, &hi)
        rows += ta
    for p in range(pc):
        _sd_dim(p, g.sw, g.kw, g.pl, g.w, &tb, &lo, &hi)
        cols += tb
    _sd_dim(pr, g.sh, g.kh, g.pt, g.h, &ta, &lo, &hi)
    return g.m * (rows * g.kw + ta * cols)


cdef void _sd_rows(const floating* a, const int* off, const floating* dyp, floating* dx,
                   floating* tiles, const Geom* g, Py_ssize_t nb, Py_ssize_t pr, int mr,
                   Py_ssize_t blk0, Py_ssize_t blk1) noexcept nogil:
    """Channel blocks blk0 .. blk1 of row phase pr of nb images' dx: per tile, each column
    phase's micro-kernel (a zero tile where no tap reaches it), then one store of them
    interleaved. tiles: sw tiles of DIRECT_TILE_ELEMS."""
    cdef Py_ssize_t ta, tb, ilo, ihi, jlo, jhi, hd = _sd_hd(g), wd = _sd_wd(g)
    cdef Py_ssize_t nr, Q, ntiles, blk, t, q0, pc, k, blocks = (g.c + mr - 1) // mr
    cdef Py_ssize_t kd[STRIDED_MAX]
    cdef Py_ssize_t ka[STRIDED_MAX]
    cdef Py_ssize_t res[STRIDED_MAX]
    cdef floating* tile
    nr = (DIRECT_TILE_ELEMS // mr) if floating is float else (DIRECT_TILE_ELEMS // mr) // 2
    _sd_dim(pr, g.sh, g.kh, g.pt, g.h, &ta, &ilo, &ihi)
    if ihi <= ilo:
        return
    for pc in range(g.sw):
        _sd_dim(pc, g.sw, g.kw, g.pl, g.w, &tb, &jlo, &jhi)
        kd[pc] = g.m * ta * tb
        ka[pc] = _sd_packed(g, pr, pc) if kd[pc] else 0
        res[pc] = g.sw * jlo + pc - g.pl  # the column phase's first column in x
        if kd[pc] == 0:
            memset(tiles + res[pc] * DIRECT_TILE_ELEMS, 0,
                   DIRECT_TILE_ELEMS * sizeof(floating))
    dx += (g.sh * ilo + pr - g.pt) * g.w
    Q = (nb - 1) * hd * wd + (ihi - ilo) * wd  # the last image's unused rows: not computed
    ntiles = (Q + nr - 1) // nr
    for t in range(ntiles):
        q0 = t * nr
        for blk in range(blk0, blk1):
            for pc in range(g.sw):
                k = kd[pc]
                if k == 0:
                    continue
                tile = tiles + res[pc] * DIRECT_TILE_ELEMS
                if floating is float:
                    if mr == 8:
                        cnnc_direct_tile8_s(k, a + (ka[pc] * blocks + blk * k) * mr, dyp + q0,
                                            off + ka[pc], tile)
                    elif mr == 6:
                        cnnc_direct_tile6_s(k, a + (ka[pc] * blocks + blk * k) * mr, dyp + q0,
                                            off + ka[pc], tile)
                    else:
                        cnnc_direct_tile4_s(k, a + (ka[pc] * blocks + blk * k) * mr, dyp + q0,
                                            off + ka[pc], tile)
                else:
                    if mr == 8:
                        cnnc_direct_tile8_d(k, a + (ka[pc] * blocks + blk * k) * mr, dyp + q0,
                                            off + ka[pc], tile)
                    elif mr == 6:
                        cnnc_direct_tile6_d(k, a + (ka[pc] * blocks + blk * k) * mr, dyp + q0,
                                            off + ka[pc], tile)
                    else:
                        cnnc_direct_tile4_d(k, a + (ka[pc] * blocks + blk * k) * mr, dyp + q0,
                                            off + ka[pc], tile)
            _sd_store(tiles, nr, min(<Py_ssize_t> mr, g.c - blk * mr), q0, min(nr, Q - q0),
                      dx + blk * mr * g.h * g.w, g, hd, wd, ihi - ilo)


cdef void _sd_chunk_run(const floating* dy, floating* dx, const floating* a, const int* off,
                        floating* tiles, floating* dyp, const Geom* g, Py_ssize_t nb,
                        int mr, int n_threads) noexcept nogil:
    """dx of nb images; with n_threads > 1 the channel blocks of each row phase are shared."""
    cdef Py_ssize_t pr, blk, tid = 0, blocks = (g.c + mr - 1) // mr
    _sd_pad(dy, dyp, g, nb, _sd_images(g))
    for pr in range(g.sh):
        if n_threads == 1:
            _sd_rows(a, off, dyp, dx, tiles, g, nb, pr, mr, 0, blocks)
            continue
        with parallel(num_threads=n_threads):
            tid = threadid()
            for blk in prange(blocks, schedule="static"):
                _sd_rows(a, off, dyp, dx, tiles + tid * g.sw * DIRECT_TILE_ELEMS, g, nb, pr,
                         mr, blk, blk + 1)


cdef void _strided_bwd_data(const floating* dy, const floating* w, floating* dx, floating* ws,
                            const Geom* g, int n_threads) noexcept nogil:
    """dx = the adjoint of the strided conv, phase by phase (see above); ws:
    _strided_data_ws elements. Chunks of images go to the threads whole; a single chunk
    shares each row phase's channel blocks. Each dx element is one micro-kernel sum,
    whatever the thread count."""
    cdef int mr = _direct_mr_rows(g.c)
    cdef Py_ssize_t pr, pc, k = 0, ka, tid = 0, taps = g.m * g.kh * g.kw
    cdef Py_ssize_t blocks = (g.c + mr - 1) // mr, nb = _sd_images(g)
    cdef Py_ssize_t chunks = (g.n + nb - 1) // nb, per = _sd_chunk(g)
    cdef Py_ssize_t xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow, tile = g.sw * DIRECT_TILE_ELEMS
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, _sd_workers(g))
    cdef int* off = <int*> ws
    cdef floating* a = ws + taps
    cdef floating* tiles = a + blocks * mr * taps
    cdef floating* dyps = tiles + g.threads * tile
    for pr in range(min(g.sh, g.kh)):
        for pc in range(min(g.sw, g.kw)):
            ka = _sd_packed(g, pr, pc)
            _sd_pack(w, a + ka * blocks * mr, off + ka, g, pr, pc, mr)
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, chunks, workers)
        with parallel(num_threads=workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _sd_chunk_run(dy + k * nb * ys, dx + k * nb * xs, a, off, tiles + tid * tile,
                              dyps + tid * per, g, min(nb, g.n - k * nb), mr, 1)
                k = cnnc_queue_take(&queue, tid)
        return
    if 2.0 * g.m * g.kdim * g.oh * g.ow * nb < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for k in range(chunks):
        _sd_chunk_run(dy + k * nb * ys, dx + k * nb * xs, a, off, tiles, dyps, g,
                      min(nb, g.n - k * nb), mr, n_threads)

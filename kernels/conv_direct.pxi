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
    void cnnc_direct_ytile8_s(Py_ssize_t K, const float* a, const float* xp, const int* off,
                              const float* bias, int relu, float* y, Py_ssize_t plane, int rows,
                              Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t wp, Py_ssize_t ow)
    void cnnc_direct_ytile6_s(Py_ssize_t K, const float* a, const float* xp, const int* off,
                              const float* bias, int relu, float* y, Py_ssize_t plane, int rows,
                              Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t wp, Py_ssize_t ow)
    void cnnc_direct_ytile4_s(Py_ssize_t K, const float* a, const float* xp, const int* off,
                              const float* bias, int relu, float* y, Py_ssize_t plane, int rows,
                              Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t wp, Py_ssize_t ow)
    void cnnc_direct_ytile8_d(Py_ssize_t K, const double* a, const double* xp, const int* off,
                              const double* bias, int relu, double* y, Py_ssize_t plane, int rows,
                              Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t wp, Py_ssize_t ow)
    void cnnc_direct_ytile6_d(Py_ssize_t K, const double* a, const double* xp, const int* off,
                              const double* bias, int relu, double* y, Py_ssize_t plane, int rows,
                              Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t wp, Py_ssize_t ow)
    void cnnc_direct_ytile4_d(Py_ssize_t K, const double* a, const double* xp, const int* off,
                              const double* bias, int relu, double* y, Py_ssize_t plane, int rows,
                              Py_ssize_t q0, Py_ssize_t nq, Py_ssize_t wp, Py_ssize_t ow)
    void cnnc_direct_wgrad4x6_s(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const float* dy,
                                Py_ssize_t ldd, int mr, const float* xp, const int* off,
                                int kr, float* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad8x3_s(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const float* dy,
                                Py_ssize_t ldd, int mr, const float* xp, const int* off,
                                int kr, float* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad6x4_s(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const float* dy,
                                Py_ssize_t ldd, int mr, const float* xp, const int* off,
                                int kr, float* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad3x8_s(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const float* dy,
                                Py_ssize_t ldd, int mr, const float* xp, const int* off,
                                int kr, float* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad4x6_d(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const double* dy,
                                Py_ssize_t ldd, int mr, const double* xp, const int* off,
                                int kr, double* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad8x3_d(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const double* dy,
                                Py_ssize_t ldd, int mr, const double* xp, const int* off,
                                int kr, double* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad6x4_d(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const double* dy,
                                Py_ssize_t ldd, int mr, const double* xp, const int* off,
                                int kr, double* dw, Py_ssize_t ldw)
    void cnnc_direct_wgrad3x8_d(Py_ssize_t rows, const int* xrow, const int* drow,
                                Py_ssize_t len, Py_ssize_t xstep, const double* dy,
                                Py_ssize_t ldd, int mr, const double* xp, const int* off,
                                int kr, double* dw, Py_ssize_t ldw)

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
    DIRECT_TILE_ELEMS = 8 * 3 * DIRECT_VL  # elements of a tile (its q-range times rows)
    DIRECT_MAX_XP = 1048576  # a padded chunk of x above this: im2col instead
    DIRECT_BAND = 65536  # padded x read per band of forward tiles (~L2), in elements
    DIRECT_WG_COLS = 8192  # weight gradient: images per chunk until this many columns
    DIRECT_WG_SHAPES = 4  # weight-gradient micro-kernels: rows of dy x taps, see below

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
    """Offsets table, packed weights and bias (rows rounded up to the tile's)."""
    cdef int mr = _direct_mr(g)
    return g.kdim + (g.m + mr - 1) // mr * mr * (g.kdim + 1)


cdef inline Py_ssize_t _direct_workers(const Geom* g) noexcept nogil:
    """Threads that take whole images (each with its own padded copy)."""
    return max(1, min(g.threads, g.n))


cdef Py_ssize_t _direct_fwd_ws(const Geom* g) noexcept nogil:
    """Packed weights and bias, one padded image per image-taking thread."""
    return _direct_packed(g) + _direct_workers(g) * _direct_xp(g, 1)


cdef inline Py_ssize_t _direct_owv(const Geom* g) noexcept nogil:
    """An output row rounded up to whole vectors."""
    return (g.ow + DIRECT_VL - 1) // DIRECT_VL * DIRECT_VL


cdef inline bint _direct_wg_rows(const Geom* g) noexcept nogil:
    """Weight gradient: sum over output rows of whole vectors (OW = 16, 32: no waste)
    rather than over the flattened padded chunk (Wp - OW columns and the padding rows)."""
    return g.oh * _direct_owv(g) < _direct_hp(g) * _direct_wp(g)


cdef inline bint _direct_wg_ok(const Geom* g) noexcept nogil:
    """The direct weight gradient beats im2col + GEMM (measured: 1.5x at the seed CNN's 3
    input channels, 3x at LeNet-5's 1, about even at 32) for inputs of <= 32 channels when
    at most 15% of its columns are padding, or 100% with <= 8 channels, whose im2col runs
    are short (LeNet-5's conv2, 6 channels on 10x10: 1.14x; 16-24 channels with 33-100%
    padding: 0.8x); 3x3 layers from 32 channels take Winograd's.
    Not strided layers: on their phase planes it is no faster than im2col (ResNet-20's
    stage-2 entry: 2.7 vs 2.5 ms)."""
    cdef Py_ssize_t cols = g.oh * _direct_owv(g)
    if not _direct_wg_rows(g):
        cols = _direct_hp(g) * _direct_wp(g)
    return (_direct_ok(g) and g.sh == 1 and g.sw == 1 and g.c <= 32
            and 100 * cols <= (200 if g.c <= 8 else 115) * g.oh * g.ow
            and _direct_wg_per_worker(g) <= DIRECT_MAX_XP + COL_TILE)


cdef int[4] _wg_mr = [4, 8, 6, 3]  # the shapes of cnnc_direct_wgrad4x6 .. 3x8
cdef int[4] _wg_kr = [6, 3, 4, 8]


cdef inline int _direct_wg_shape(const Geom* g) noexcept nogil:
    """The micro-kernel shape that computes the fewest padded rows x taps of dW (4 x 6 on
    ties: its 10 loads per 24 FMAs are the fewest): 8 x 3 for 32 x 27 (seed CNN's
    3-channel conv), 6 x 4 for 6 x 25 (LeNet-5's first)."""
    cdef int s, best = 0
    cdef Py_ssize_t work, least = -1
    for s in range(DIRECT_WG_SHAPES):
        work = ((g.m + _wg_mr[s] - 1) // _wg_mr[s] * _wg_mr[s]
                * ((g.kdim + _wg_kr[s] - 1) // _wg_kr[s] * _wg_kr[s]))
        if least < 0 or work < least:
            best, least = s, work
    return best


cdef inline Py_ssize_t _direct_wg_images(const Geom* g) noexcept nogil:
    """Images per weight-gradient chunk: enough columns to amortise the lane sums."""
    cdef Py_ssize_t hw = _direct_hp(g) * _direct_wp(g)
    cdef Py_ssize_t cols = g.oh * _direct_owv(g) if _direct_wg_rows(g) else hw
    return max(1, min(g.n, DIRECT_WG_COLS // cols, DIRECT_MAX_XP // ((g.c + g.m) * hw)))


cdef inline Py_ssize_t _direct_cols(const Geom* g, Py_ssize_t nb) noexcept nogil:
    """Columns of the flat weight gradient's copy of dy (nb images), in whole vectors."""
    return (nb * _direct_hp(g) * _direct_wp(g) + DIRECT_VL - 1) // DIRECT_VL * DIRECT_VL


cdef inline Py_ssize_t _direct_wg_slots(const Geom* g) noexcept nogil:
    """Partial weight gradients summed separately (fixed by the shapes, as for im2col)."""
    cdef Py_ssize_t nb = _direct_wg_images(g), chunks = (g.n + nb - 1) // nb
    if g.m * g.kdim > WGRAD_SLOT_MAX_ELEMS:
        return 1
    return max(1, min(WGRAD_SLOTS, chunks))


cdef inline Py_ssize_t _direct_wg_per_worker(const Geom* g) noexcept nogil:
    """A padded chunk of x, and for the flat sum the matching zero-padded dy (by rows it
    reads dy in place)."""
    cdef Py_ssize_t nb = _direct_wg_images(g)
    return _direct_xp(g, nb) + (0 if _direct_wg_rows(g) else g.m * _direct_cols(g, nb))


cdef Py_ssize_t _direct_wg_ws(const Geom* g) noexcept nogil:
    """Offsets and row starts in x and dy, the workers' chunks, the partial sums."""
    cdef Py_ssize_t slots = _direct_wg_slots(g)
    return (g.kdim + 2 * _direct_wg_images(g) * g.oh
            + min(g.threads, slots) * _direct_wg_per_worker(g)
            + (slots * g.m * g.kdim if slots > 1 else 0))


cdef inline Py_ssize_t _direct_tap(const Geom* g, Py_ssize_t c, Py_ssize_t ki, Py_ssize_t kj,
                                   bint rows_first) noexcept nogil:
    """Index of tap (c, ki, kj): OIHW's (c, ki, kj) order, or (ki, c, kj) for the forward
    tiles (stride 1, and with a lane per image), whose taps of one kernel row are then
    contiguous (see _direct_tiles)."""
    if rows_first:
        return (ki * g.c + c) * g.kw + kj
    return (c * g.kh + ki) * g.kw + kj


cdef void _direct_offsets(const Geom* g, Py_ssize_t nb, int* off,
                          bint rows_first=False) noexcept nogil:
    """off[tap (c, ki, kj)] = c*nb*Hp*Wp + ki*dh*Wp + kj*dw; with stride, the tap's phase
    plane and its row and column in there (see _strided_pad)."""
    cdef Py_ssize_t c, ki, kj, wp = _direct_wp(g), plane = nb * _direct_hp(g) * wp
    cdef Py_ssize_t npw = min(g.sw, g.kw), phases = _strided_phases(g), ph
    for c in range(g.c):
        for ki in range(g.kh):
            for kj in range(g.kw):
                ph = ki * g.dh % g.sh * npw + kj * g.dw % g.sw
                off[_direct_tap(g, c, ki, kj, rows_first)] = <int> (
                    (c * phases + ph) * plane + ki * g.dh // g.sh * wp + kj * g.dw // g.sw)


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


cdef void _direct_pack_w(const floating* w, floating* a, const Geom* g, int mr,
                         bint rows_first=False) noexcept nogil:
    """a[blk, tap, i] = w[blk*mr + i, c, ki, kj] (0 past M): each tile's weights tap-major,
    taps in _direct_tap's order."""
    cdef Py_ssize_t blk, k, i, o, c, ki, kj, blocks = (g.m + mr - 1) // mr
    for blk in range(blocks):
        for c in range(g.c):
            for ki in range(g.kh):
                for kj in range(g.kw):
                    k = _direct_tap(g, c, ki, kj, rows_first)
                    for i in range(mr):
                        o = blk * mr + i
                        a[(blk * g.kdim + k) * mr + i] = (
                            w[((o * g.c + c) * g.kh + ki) * g.kw + kj] if o < g.m else 0)


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
                        const Geom* g, Py_ssize_t blk, Py_ssize_t t0, Py_ssize_t t1,
                        bint relu) noexcept nogil:
    """Output tiles t0 .. t1 of weight-row block blk, for one image, bias added (and relu).
    A tile sums only the kernel rows that reach a row of x from one of its output rows:
    the others read zero padding (a flipped backward-data pads by k - 1 - p: LeNet-5's
    conv2 reads 4 zero rows above and below its 10; its last tile takes 1 row in 5)."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t t, q0, nr, wp = _direct_wp(g), Q = g.oh * wp, m0 = blk * mr
    cdef Py_ssize_t P = g.oh * g.ow, blocks = (g.m + mr - 1) // mr, run = g.c * g.kw
    cdef Py_ssize_t oy0, oy1, ki0, ki1, k0, nk
    cdef int rows = <int> min(<Py_ssize_t> mr, g.m - m0)
    cdef const floating* ab = a + blk * g.kdim * mr
    cdef const floating* bb = a + blocks * mr * g.kdim + m0
    cdef floating* yb = y + m0 * P
    nr = (DIRECT_TILE_ELEMS // mr) if floating is float else (DIRECT_TILE_ELEMS // mr) // 2
    for t in range(t0, t1):
        q0 = t * nr
        # kernel rows ki with pt <= oy + ki*dh < pt + H for some output row oy of the tile
        oy0 = q0 // wp
        oy1 = (q0 + min(nr, Q - q0) - 1) // wp
        ki0 = min(g.kh, max(0, (g.pt - oy1 + g.dh - 1) // g.dh))
        ki1 = max(ki0, min(g.kh, (g.pt + g.h - 1 - oy0) // g.dh + 1))
        k0 = ki0 * run
        nk = (ki1 - ki0) * run
        if floating is float:
            if mr == 8:
                cnnc_direct_ytile8_s(nk, ab + k0 * mr, xp + q0, off + k0, bb, relu, yb, P,
                                    rows, q0, min(nr, Q - q0), wp, g.ow)
            elif mr == 6:
                cnnc_direct_ytile6_s(nk, ab + k0 * mr, xp + q0, off + k0, bb, relu, yb, P,
                                    rows, q0, min(nr, Q - q0), wp, g.ow)
            else:
                cnnc_direct_ytile4_s(nk, ab + k0 * mr, xp + q0, off + k0, bb, relu, yb, P,
                                    rows, q0, min(nr, Q - q0), wp, g.ow)
        else:
            if mr == 8:
                cnnc_direct_ytile8_d(nk, ab + k0 * mr, xp + q0, off + k0, bb, relu, yb, P,
                                    rows, q0, min(nr, Q - q0), wp, g.ow)
            elif mr == 6:
                cnnc_direct_ytile6_d(nk, ab + k0 * mr, xp + q0, off + k0, bb, relu, yb, P,
                                    rows, q0, min(nr, Q - q0), wp, g.ow)
            else:
                cnnc_direct_ytile4_d(nk, ab + k0 * mr, xp + q0, off + k0, bb, relu, yb, P,
                                    rows, q0, min(nr, Q - q0), wp, g.ow)


cdef void _direct_image(const floating* a, const floating* xp, const int* off, floating* y,
                        const Geom* g, Py_ssize_t blk0, Py_ssize_t blk1, int act,
                        floating act_param) noexcept nogil:
    """Row blocks blk0 .. blk1 of one image's output, a band of tiles at a time so that
    the band's padded rows stay in cache across the blocks. The tiles apply bias and relu;
    other activations run over the finished rows."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t nr, Q = g.oh * _direct_wp(g), tiles, band, i, blk, e
    cdef Py_ssize_t P = g.oh * g.ow, e0 = blk0 * mr * P, e1 = min(blk1 * mr, g.m) * P
    nr = (DIRECT_TILE_ELEMS // mr) if floating is float else (DIRECT_TILE_ELEMS // mr) // 2
    tiles = (Q + nr - 1) // nr
    band = max(1, DIRECT_BAND // (g.c * nr))
    for i in range((tiles + band - 1) // band):
        for blk in range(blk0, blk1):
            _direct_tiles(a, xp, off, y, g, blk, i * band, min(tiles, (i + 1) * band),
                          act == ACT_RELU)
    if act != ACT_NONE and act != ACT_RELU:
        for e in range(e0, e1):
            y[e] = _gemm_act(y[e], act, act_param)


cdef void _direct_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                      floating* ws, const Geom* g, int act, floating act_param,
                      int n_threads) noexcept nogil:
    """y = act(conv(x, w) + bias), stride 1; ws: _direct_fwd_ws elements. Images go to
    the threads whole; a single image splits its weight-row blocks instead."""
    cdef int mr = _direct_mr(g)
    cdef Py_ssize_t b = 0, blk, o, tid = 0, blocks = (g.m + mr - 1) // mr
    cdef Py_ssize_t xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow, per = _direct_xp(g, 1)
    cdef Py_ssize_t workers = min(<Py_ssize_t> n_threads, _direct_workers(g))
    cdef int* off = <int*> ws
    cdef floating* a = ws + g.kdim
    cdef floating* ab = a + blocks * mr * g.kdim
    cdef floating* xps = ab + blocks * mr
    _direct_offsets(g, 1, off, True)
    _direct_pack_w(w, a, g, mr, True)
    for o in range(blocks * mr):  # the bias after the weights, 0 past M (or without one)
        ab[o] = bias[o] if bias != NULL and o < g.m else 0
    cdef cnnc_queue queue
    if workers > 1:
        cnnc_queue_init(&queue, g.n, workers)
        with parallel(num_threads=workers):
            tid = threadid()
            b = cnnc_queue_take(&queue, tid)
            while b >= 0:
                _direct_pad(x + b * xs, xps + tid * per, g, 1, 1, 1)
                _direct_image(a, xps + tid * per, off, y + b * ys, g, 0, blocks, act,
                              act_param)
                b = cnnc_queue_take(&queue, tid)
        return
    if 2.0 * g.m * g.kdim * g.oh * g.ow < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for b in range(g.n):
        _direct_pad(x + b * xs, xps, g, 1, 1, n_threads)
        if n_threads == 1:
            _direct_image(a, xps, off, y + b * ys, g, 0, blocks, act, act_param)
            continue
        for blk in prange(blocks, num_threads=n_threads, schedule="static"):
            _direct_image(a, xps, off, y + b * ys, g, blk, blk + 1, act, act_param)


cdef void _direct_dy(const floating* dy, floating* dyv, const Geom* g, Py_ssize_t nb,
                     Py_ssize_t cols) noexcept nogil:
    """dy laid out as the flat micro-kernel sums it, zero at every other column:
    dyv[m, b*Hp*Wp + oy*Wp + ox]."""
    cdef Py_ssize_t m, b, oy, s, wp = _direct_wp(g), image = _direct_hp(g) * wp
    cdef floating* row
    for m in range(g.m):
        for b in range(nb):
            row = dyv + m * cols + b * image
            for oy in range(g.oh):  # each output row, then zeros to the next one's start
                memcpy(row + oy * wp, dy + ((b * g.m + m) * g.oh + oy) * g.ow,
                       g.ow * sizeof(floating))
                for s in range(g.ow, wp):
                    row[oy * wp + s] = 0
            memset(row + g.oh * wp, 0, (image - g.oh * wp) * sizeof(floating))
        memset(dyv + m * cols + nb * image, 0, (cols - nb * image) * sizeof(floating))


cdef void _direct_wg_call(int shape, Py_ssize_t rows, const int* xrow, const int* drow,
                          Py_ssize_t n, Py_ssize_t xstep, const floating* dy, Py_ssize_t ldd,
                          int mr, const floating* xp, const int* off, int kr, floating* dw,
                          Py_ssize_t ldw) noexcept nogil:
    """The weight-gradient micro-kernel of this shape (see _direct_wg_shape); x's vectors
    xstep apart (a vector's lanes: dense)."""
    if floating is float:
        if shape == 0:
            cnnc_direct_wgrad4x6_s(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)
        elif shape == 1:
            cnnc_direct_wgrad8x3_s(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)
        elif shape == 2:
            cnnc_direct_wgrad6x4_s(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)
        else:
            cnnc_direct_wgrad3x8_s(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)
    else:
        if shape == 0:
            cnnc_direct_wgrad4x6_d(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)
        elif shape == 1:
            cnnc_direct_wgrad8x3_d(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)
        elif shape == 2:
            cnnc_direct_wgrad6x4_d(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)
        else:
            cnnc_direct_wgrad3x8_d(rows, xrow, drow, n, xstep, dy, ldd, mr, xp, off, kr, dw, ldw)


cdef void _direct_wg_chunk(const floating* x, const floating* dy, floating* dw, floating* ws,
                           const int* off, const int* xrow, const int* drow, const Geom* g,
                           Py_ssize_t nb, int n_threads) noexcept nogil:
    """dw[M, K] += the sum over nb images of dy[m, q] * xp[off[k] + q], MR rows of dy by
    KR taps per micro-kernel call; each call owns its block of dw. By rows, dy is read in
    place (output row r at drow[r], its last vector masked); flat, from a padded copy."""
    cdef Py_ssize_t room = _direct_wg_images(g), cols = _direct_cols(g, room)
    cdef Py_ssize_t rows = nb * g.oh if _direct_wg_rows(g) else 1
    cdef Py_ssize_t n = g.ow if _direct_wg_rows(g) else cols
    cdef Py_ssize_t ldd = g.oh * g.ow if _direct_wg_rows(g) else cols
    cdef int shape = _direct_wg_shape(g), MR = _wg_mr[shape], KR = _wg_kr[shape]
    cdef Py_ssize_t mb, kb, mblocks = (g.m + MR - 1) // MR, kblocks = (g.kdim + KR - 1) // KR
    cdef floating* xp = ws
    cdef const floating* dyp = dy
    cdef int mr, kr
    _direct_pad(x, xp, g, nb, room, n_threads)
    if not _direct_wg_rows(g):
        _direct_dy(dy, ws + _direct_xp(g, room), g, nb, cols)
        dyp = ws + _direct_xp(g, room)
    if 2.0 * g.m * g.kdim * rows * n < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for mb in prange(mblocks, num_threads=n_threads, schedule="static"):
        mr = <int> min(<Py_ssize_t> MR, g.m - mb * MR)
        for kb in range(kblocks):
            kr = <int> min(<Py_ssize_t> KR, g.kdim - kb * KR)
            _direct_wg_call(shape, rows, xrow, drow, n, DIRECT_VL if floating is float
                            else DIRECT_VL // 2, dyp + mb * MR * ldd, ldd, mr, xp,
                            off + kb * KR, kr, dw + mb * MR * g.kdim + kb * KR, g.kdim)


cdef void _direct_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                        const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= sum over the batch, in chunks of images summed in a fixed order: into
    WGRAD_SLOTS partials (one thread each, added in order) when dW is small, else
    straight into dW with the threads splitting its rows. ws: _direct_wg_ws elements."""
    cdef Py_ssize_t nb = _direct_wg_images(g), chunks = (g.n + nb - 1) // nb
    cdef Py_ssize_t slots = _direct_wg_slots(g), size = g.m * g.kdim
    cdef Py_ssize_t per = _direct_wg_per_worker(g), k = 0, s = 0, tid = 0
    cdef Py_ssize_t xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow
    cdef Py_ssize_t b, oy
    cdef int* off = <int*> ws
    cdef int* xrow = off + g.kdim
    cdef int* drow = xrow + nb * g.oh
    cdef floating* scratch = ws + g.kdim + 2 * nb * g.oh
    cdef floating* parts = scratch + min(g.threads, slots) * per
    _direct_offsets(g, nb, off)
    xrow[0] = drow[0] = 0
    if _direct_wg_rows(g):  # where output row oy of image b starts in a padded plane, in dy
        for b in range(nb):
            for oy in range(g.oh):
                xrow[b * g.oh + oy] = <int> ((b * _direct_hp(g) + oy) * _direct_wp(g))
                drow[b * g.oh + oy] = <int> ((b * g.m * g.oh + oy) * g.ow)
    if slots == 1:
        if not accumulate:
            memset(dw, 0, size * sizeof(floating))
        for k in range(chunks):
            _direct_wg_chunk(x + k * nb * xs, dy + k * nb * ys, dw, scratch, off, xrow, drow,
                             g, min(nb, g.n - k * nb), n_threads)
        return
    cdef cnnc_queue queue
    cnnc_queue_init(&queue, slots, min(<Py_ssize_t> n_threads, slots))
    with parallel(num_threads=min(<Py_ssize_t> n_threads, slots)):
        tid = threadid()
        s = cnnc_queue_take(&queue, tid)
        while s >= 0:
            memset(parts + s * size, 0, size * sizeof(floating))
            for k in range(s * chunks // slots, (s + 1) * chunks // slots):
                _direct_wg_chunk(x + k * nb * xs, dy + k * nb * ys, parts + s * size,
                                 scratch + tid * per, off, xrow, drow, g,
                                 min(nb, g.n - k * nb), 1)
            s = cnnc_queue_take(&queue, tid)
    _wgrad_add_slots(parts, dw, slots, size, accumulate, n_threads)


cdef void _wgrad_add_slots(const floating* parts, floating* dw, Py_ssize_t slots,
                           Py_ssize_t size, bint accumulate, int n_threads) noexcept nogil:
    """dw (+)= the partial weight gradients, added in slot order."""
    cdef Py_ssize_t e, s
    cdef floating v
    for e in prange(size, num_threads=n_threads if size >= PARALLEL_MIN_ELEMS else 1,
                    schedule="static"):
        v = dw[e] if accumulate else 0
        for s in range(slots):
            v = v + parts[s * size + e]
        dw[e] = v

# Per-tap GEMM convolution, included by conv.pyx: for layers with few output pixels per
# image and many channels (VGG's last stages on CIFAR: 2x2 and 4x4 images, 256-512
# channels), where im2col spends most of its columns on padding and Winograd transforms
# and packs 16 copies of the weights for a handful of tiles.
#
# With x channels-last, xr[ih, iw, n, c], and the weights tap-major, wt[t, m, c], each
# (output pixel p = (i, j), tap t = (ki, kj)) pair whose input pixel (a, b) = (i*sh - pt +
# ki*dh, j - pl + kj*dw) lies inside x is one plain GEMM over the channels:
#
#     forward          Y[p] (N x M)    += xr[a, b] (N x C) @ wt[t]^T
#     backward-data    dXr[a, b] (N x C) += dYr[p] (N x M) @ wt[t]
#     weight gradient  dWt[t] (M x C)  += dYr[p]^T @ xr[a, b]
#
# Padding taps are skipped, so on a 2x2 image with padding 1 only 16 of the 36 pairs run
# (Winograd F(2x2, 3x3)'s multiply count, without its transformed copies). The pixels of
# one output row that a tap reaches are contiguous rows of xr and Y, so a tap costs one
# GEMM per output row, or a single one when it reaches whole rows (then the rows are
# contiguous too). Ungrouped, horizontal stride 1 (any dilation, vertical stride).
# Images go in chunks of at most TAPS_ELEMS elements of xr plus Y; the GEMMs run in a
# fixed order (chunk, tap, row) with the threads inside each, so the results do not
# depend on n_threads.

cdef enum:
    TAPS_ELEMS = 1048576  # one chunk's channels-last x (or dx) and Y (or dy)
    TAPS_MAX_PIXELS = 16  # output pixels per image (more: the other paths, measured)
    TAPS_MIN_CHANNELS = 64  # C and M at least this (thinner: not measured)
    TAPS_MIN_IMAGES = 4  # forward and weight gradient: fewer lose (see _taps_passes)
    TAPS_BLOCK = 64  # rows per block of the layout passes (see _taps_spread)
    TAPS_FWD = 1  # Geom.taps: the passes that take this path
    TAPS_DATA = 2
    TAPS_WG = 4

cdef int _taps_mode = 1  # 0: never, 1: where measured faster, 2: wherever it applies


def _set_taps(int mode) -> None:
    """Per-tap path: 0 never, 1 where measured faster (default), 2 wherever it applies
    (tests and benchmarks compare it against the other paths)."""
    global _taps_mode
    _taps_mode = mode


cdef inline Py_ssize_t _taps_image(const Geom* g) noexcept nogil:
    """Workspace elements per image: x (or dx) channels-last, and Y (or dy)."""
    return g.h * g.w * g.c + g.oh * g.ow * g.m


cdef inline Py_ssize_t _taps_images(const Geom* g) noexcept nogil:
    """Images per chunk."""
    return max(1, min(g.n, TAPS_ELEMS // _taps_image(g)))


cdef int _taps_passes(const Geom* g) noexcept nogil:
    """The passes (TAPS_FWD | TAPS_DATA | TAPS_WG) that take the per-tap path. Measured
    (1 thread, float32) against Winograd / im2col / the dot path: on <= 4x4 outputs with
    64-512 channels backward-data wins at any batch (1.3-1.5x at batch 1, up to 2.4x at
    2x2 and batch 64); forward and weight gradient from 4 images (batch 64 on 2x2: 2x and
    3.7x; 4x4: even and 1.3x) but not at batch 1, where the weights' layout passes cost
    more than the GEMMs (2-4x slower). On 8x8 outputs it loses (1.5x slower at batch 64).
    Where Winograd F(4x4) applies (4x4 outputs from 64 images), it takes the forward and
    backward-data: 1.15-1.3x these (VGG's 512-channel 4x4 layers at batch 64)."""
    cdef int passes = TAPS_FWD | TAPS_DATA | TAPS_WG
    if not (_taps_mode and g.path == PATH_IM2COL and g.groups == 1 and g.sw == 1
            and _taps_image(g) <= TAPS_ELEMS):
        return 0
    if _taps_mode == 2:
        return passes
    if g.oh * g.ow > TAPS_MAX_PIXELS or min(g.c, g.m) < TAPS_MIN_CHANNELS:
        return 0
    if g.n < TAPS_MIN_IMAGES:
        passes = TAPS_DATA
    if g.wino and g.wtile == 4:  # Winograd F(4x4) instead, its flipped conv too if it can
        passes &= ~TAPS_FWD
        if g.c % _wino_mr() == 0:
            passes &= ~TAPS_DATA
    return passes


cdef inline Py_ssize_t _taps_workspace(const Geom* g) noexcept nogil:
    """Tap-major weights (or their gradient), then one chunk of images."""
    return g.m * g.kdim + _taps_images(g) * _taps_image(g)


cdef void _taps_spread(const floating* src, floating* dst, Py_ssize_t rows, Py_ssize_t cols,
                       int n_threads) noexcept nogil:
    """dst[j, i] = src[i, j] for src [rows, cols] with few columns (pixels or taps): x to
    channels-last, dy to pixel-major, the weights to tap-major. In blocks of TAPS_BLOCK
    rows: the cols streams of dst are often a power of two apart (the same cache set), so
    each is written a whole block at a time."""
    cdef Py_ssize_t blk, i, j, i0, i1
    cdef Py_ssize_t blocks = (rows + TAPS_BLOCK - 1) // TAPS_BLOCK
    for blk in prange(blocks, num_threads=n_threads if rows * cols >= PARALLEL_MIN_ELEMS else 1,
                      schedule="static"):
        i0 = blk * TAPS_BLOCK
        i1 = min(i0 + TAPS_BLOCK, rows)
        for j in range(cols):
            for i in range(i0, i1):
                dst[j * rows + i] = src[i * cols + j]


cdef void _taps_gather(const floating* src, floating* dst, Py_ssize_t rows, Py_ssize_t cols,
                       const floating* bias, Py_ssize_t m, int act, floating act_param,
                       bint accumulate, int n_threads) noexcept nogil:
    """dst[i, j] (+)= act(src[j, i] + bias[i % m]): the inverse of _taps_spread (Y to
    NCHW with the epilogue, dX to NCHW, dWt to OIHW), in the same blocks."""
    cdef Py_ssize_t blk, i, j, i0, i1
    cdef Py_ssize_t blocks = (rows + TAPS_BLOCK - 1) // TAPS_BLOCK
    for blk in prange(blocks, num_threads=n_threads if rows * cols >= PARALLEL_MIN_ELEMS else 1,
                      schedule="static"):
        i0 = blk * TAPS_BLOCK
        i1 = min(i0 + TAPS_BLOCK, rows)
        for j in range(cols):
            if accumulate:
                for i in range(i0, i1):
                    dst[i * cols + j] = dst[i * cols + j] + src[j * rows + i]
            elif bias == NULL and act == ACT_NONE:
                for i in range(i0, i1):
                    dst[i * cols + j] = src[j * rows + i]
            else:
                for i in range(i0, i1):
                    dst[i * cols + j] = _gemm_act(src[j * rows + i] + (
                        0 if bias == NULL else bias[i % m]), act, act_param)


cdef void _taps_tap(int kind, const floating* xr, const floating* wt, floating* out,
                    const floating* dyr, const Geom* g, Py_ssize_t nb, Py_ssize_t t,
                    bint first, int n_threads) noexcept nogil:
    """The GEMMs of tap t over a chunk of nb images (see the top of the file). kind
    TAPS_FWD: out = Y [P, nb, M] += xr @ wt[t]^T; TAPS_DATA: out = dXr [H, W, nb, C] +=
    dYr @ wt[t]; TAPS_WG: out = dWt[t] [M, C] (first: overwritten) += dYr^T @ xr."""
    cdef Py_ssize_t ki = t // g.kw, kj = t % g.kw, ilo, ihi, jlo, jhi, i, span, rows, px, py
    cdef floating beta = 0 if first else 1
    cdef bint whole
    _tap_range(ki * g.dh - g.pt, g.sh, g.oh, g.h, &ilo, &ihi)
    _tap_range(kj * g.dw - g.pl, 1, g.ow, g.w, &jlo, &jhi)
    if ilo == ihi or jlo == jhi:  # a tap that only reads padding
        if kind == TAPS_WG and first:
            memset(out, 0, g.m * g.c * sizeof(floating))
        return
    # whole input rows: the tap's pixels of all its output rows are contiguous
    whole = jhi - jlo == g.w and g.w == g.ow and g.sh == 1
    i = ilo
    while i < ihi:
        span = ihi - i if whole else 1
        rows = span * (jhi - jlo) * nb
        px = ((i * g.sh - g.pt + ki * g.dh) * g.w + jlo - g.pl + kj * g.dw) * nb * g.c
        py = (i * g.ow + jlo) * nb * g.m
        if kind == TAPS_FWD:
            gemm(False, True, rows, g.m, g.c, 1, xr + px, g.c, wt, g.c, 1, out + py, g.m,
                 NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
        elif kind == TAPS_DATA:
            gemm(False, False, rows, g.c, g.m, 1, dyr + py, g.m, wt, g.c, 1, out + px, g.c,
                 NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
        else:
            gemm(True, False, g.m, g.c, rows, 1, dyr + py, g.m, xr + px, g.c, beta, out, g.c,
                 NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
            beta = 1
        i += span


cdef void _taps_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                    floating* ws, const Geom* g, int act, floating act_param,
                    int n_threads) noexcept nogil:
    """y = act(conv(x, w) + bias) by per-tap GEMMs; the epilogue runs in the scatter."""
    cdef Py_ssize_t c0, k, t, nb, taps = g.kh * g.kw, hw = g.h * g.w, P = g.oh * g.ow
    cdef Py_ssize_t ipt = _taps_images(g)
    cdef floating* wt = ws
    cdef floating* xr = ws + g.m * g.kdim
    cdef floating* yr = xr + ipt * hw * g.c
    _taps_spread(w, wt, g.m * g.c, taps, n_threads)
    for c0 in range((g.n + ipt - 1) // ipt):
        k = c0 * ipt
        nb = min(ipt, g.n - k)
        _taps_spread(x + k * g.c * hw, xr, nb * g.c, hw, n_threads)
        memset(yr, 0, P * nb * g.m * sizeof(floating))
        for t in range(taps):
            _taps_tap(TAPS_FWD, xr, wt + t * g.m * g.c, yr, NULL, g, nb, t, False, n_threads)
        _taps_gather(yr, y + k * g.m * P, nb * g.m, P, bias, g.m, act, act_param, False,
                     n_threads)


cdef void _taps_bwd_data(const floating* dy, const floating* w, floating* dx, floating* ws,
                         const Geom* g, int n_threads) noexcept nogil:
    """dx = the adjoint of _taps_fwd applied to dy (dx overwritten)."""
    cdef Py_ssize_t c0, k, t, nb, taps = g.kh * g.kw, hw = g.h * g.w, P = g.oh * g.ow
    cdef Py_ssize_t ipt = _taps_images(g)
    cdef floating* wt = ws
    cdef floating* dxr = ws + g.m * g.kdim
    cdef floating* dyr = dxr + ipt * hw * g.c
    _taps_spread(w, wt, g.m * g.c, taps, n_threads)
    for c0 in range((g.n + ipt - 1) // ipt):
        k = c0 * ipt
        nb = min(ipt, g.n - k)
        _taps_spread(dy + k * g.m * P, dyr, nb * g.m, P, n_threads)
        memset(dxr, 0, hw * nb * g.c * sizeof(floating))
        for t in range(taps):
            _taps_tap(TAPS_DATA, NULL, wt + t * g.m * g.c, dxr, dyr, g, nb, t, False,
                      n_threads)
        _taps_gather(dxr, dx + k * g.c * hw, nb * g.c, hw, NULL, 1, ACT_NONE, 0, False,
                     n_threads)


cdef void _taps_wgrad(const floating* x, const floating* dy, floating* dw, floating* ws,
                      const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= the weight gradient by per-tap GEMMs, summed over chunks in order into the
    tap-major dWt, which is then added to (or written over) dw."""
    cdef Py_ssize_t c0, k, t, nb, taps = g.kh * g.kw, hw = g.h * g.w, P = g.oh * g.ow
    cdef Py_ssize_t ipt = _taps_images(g)
    cdef floating* dwt = ws
    cdef floating* xr = ws + g.m * g.kdim
    cdef floating* dyr = xr + ipt * hw * g.c
    for c0 in range((g.n + ipt - 1) // ipt):
        k = c0 * ipt
        nb = min(ipt, g.n - k)
        _taps_spread(x + k * g.c * hw, xr, nb * g.c, hw, n_threads)
        _taps_spread(dy + k * g.m * P, dyr, nb * g.m, P, n_threads)
        for t in range(taps):
            _taps_tap(TAPS_WG, xr, NULL, dwt + t * g.m * g.c, dyr, g, nb, t, c0 == 0,
                      n_threads)
    _taps_gather(dwt, dw, g.m * g.c, taps, NULL, 1, ACT_NONE, 0, accumulate, n_threads)

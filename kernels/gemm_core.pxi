# GEMM core shared by the kernel modules (gemm, conv, ...): a .pyx uses it with
#
#     include "gemm_core.pxi"
#
# Row-major. C[m,n] = act(alpha * op(A) @ op(B) + beta * C + bias), op(X) = X or X^T.
# With trans_a, A is stored [k, m] (lda >= m), else [m, k] (lda >= k); likewise B.
# beta == 0 means C is not read (it may hold NaN). bias_mode ROW adds bias[m] per row,
# COL adds bias[n] per column. act_param is the leaky-relu slope. n_threads > 1
# parallelises inside: only call it so from outside a parallel region (callers inside
# their own prange pass 1). Results are bitwise identical for any n_threads.
#
# Structure (GotoBLAS/BLIS): per thread, loop over MC-row blocks of A, KC-deep slices of
# K, NC-column blocks of B; pack A's block into MR-row panels and B's block into NR-column
# panels (zero-padded), then run the MR x NR register-tiled micro-kernel of gemm_micro.h,
# which also applies beta, bias and activation as it writes C. Threads own disjoint runs
# of whole tiles (columns, or rows when there are more row tiles); K is never split
# across threads. Packing buffers are per thread (thread-local, 64-byte aligned), grown
# on demand and reused, so steady-state calls do not allocate. The micro-kernel path is
# picked at run time (avx512 > avx2 > portable; CNNC_GEMM_KERNEL or gemm.set_kernel force
# one).

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, tanh
from libc.string cimport memset

cdef extern from "gemm_micro.h" nogil:
    enum:
        GEMM_PORTABLE
        GEMM_AVX2
        GEMM_AVX512
    int cnnc_gemm_best_kernel()
    int cnnc_gemm_kernel()
    void cnnc_gemm_set_kernel(int kernel_id)
    ctypedef void (*cnnc_tile_s)(Py_ssize_t kc, const float* pa, const float* pb,
                                 Py_ssize_t ldb, Py_ssize_t pf, float* c, Py_ssize_t ldc,
                                 int rows, float alpha, float beta, const float* brow,
                                 const float* bcol, int act, float slope)
    ctypedef void (*cnnc_tile_d)(Py_ssize_t kc, const double* pa, const double* pb,
                                 Py_ssize_t ldb, Py_ssize_t pf, double* c, Py_ssize_t ldc,
                                 int rows, double alpha, double beta, const double* brow,
                                 const double* bcol, int act, double slope)
    int cnnc_gemm_mr(int kernel, int dbl)
    int cnnc_gemm_nr(int kernel, int dbl)
    cnnc_tile_s cnnc_gemm_tile_s(int kernel)
    cnnc_tile_d cnnc_gemm_tile_d(int kernel)
    cnnc_tile_s cnnc_gemm_half_s(int kernel)
    cnnc_tile_d cnnc_gemm_half_d(int kernel)
    ctypedef void (*cnnc_rows_s)(Py_ssize_t k, const float* a, Py_ssize_t ars, Py_ssize_t aks,
                                 const float* b, Py_ssize_t ldb, int nv, float* c,
                                 Py_ssize_t ldc, int rows, float alpha, float beta,
                                 const float* brow, const float* bcol, int act, float slope)
    ctypedef void (*cnnc_rows_d)(Py_ssize_t k, const double* a, Py_ssize_t ars,
                                 Py_ssize_t aks, const double* b, Py_ssize_t ldb, int nv,
                                 double* c, Py_ssize_t ldc, int rows, double alpha,
                                 double beta, const double* brow, const double* bcol, int act,
                                 double slope)
    cnnc_rows_s cnnc_gemm_rows_s(int kernel, int rows)
    cnnc_rows_d cnnc_gemm_rows_d(int kernel, int rows)
    int cnnc_rows_nv(int kernel, int rows)
    int cnnc_rows_vl(int kernel, int dbl)
    void* cnnc_gemm_buffer(int slot, size_t nbytes)
    void __builtin_prefetch(const void* addr)

cdef extern from "gemm_pack.h" nogil:
    void cnnc_pack_rows_s(const float* src, Py_ssize_t ld, int h, int width, Py_ssize_t kc,
                          float* dst)
    void cnnc_pack_rows_d(const double* src, Py_ssize_t ld, int h, int width, Py_ssize_t kc,
                          double* dst)

cdef enum:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_LEAKY = 2
    ACT_SIGMOID = 3
    ACT_TANH = 4

cdef enum:
    BIAS_NONE = 0
    BIAS_ROW = 1
    BIAS_COL = 2

# Cache blocking for a 32 KiB L1d / 1 MiB L2 per core (AMD Zen 4): one packed A micro-panel
# (MR x KC) stays in L1 while the packed B block (KC x NC) streams from L2.
cdef enum:
    GEMM_KC_BYTES = 1536            # KC = 384 floats / 192 doubles
    GEMM_B_BYTES = 524288           # KC x NC block of packed B: half of L2
    GEMM_MC = 480                   # rows of A packed at once (a multiple of every MR)
    GEMM_MAX_TILE = 256             # the largest MR x NR of any path
    GEMM_PACK_AHEAD = 8             # rows of B prefetched ahead while packing
    GEMM_MIN_PARALLEL_FLOPS = 2000000   # below this, threads cost more than they give
    # When B is read in place instead of packed (see _gemm_serial):
    GEMM_SMALL_B_BYTES = 65536      # any B this small
    GEMM_DIRECT_B_ROWS = 32         # with at most this many rows of A, a B that
    GEMM_DIRECT_B_BYTES = 8388608   # ... is this small (so in L3: at 24-32 rows of A,
                                    # B of 6.4-8 MB, 1.15-2.35x packing it)
    GEMM_DIRECT_B_DEPTH = 64        # ... or has at most this many rows (memory streams)
    GEMM_ROWS_MAX = 4               # op(A) with at most this many rows: _gemm_rows, but
    GEMM_ROWS_WIDE = 1024           # over 2 rows and this many columns of C only from
    GEMM_ROWS_DEEP = 256            # this depth (a conv's pixels: the packed path was up
                                    # to 1.5x faster at 3 rows, K = 64-128, N = 4096)


cdef inline void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      floating alpha, const floating* a, Py_ssize_t lda,
                      const floating* b, Py_ssize_t ldb,
                      floating beta, floating* c, Py_ssize_t ldc,
                      const floating* bias, int bias_mode, int act, floating act_param,
                      int n_threads) noexcept nogil:
    gemm_impl(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, bias_mode,
              act, act_param, n_threads)


# The body lives under a second name because gemm.pyx's Python-level `gemm` hides this
# module-level `gemm` there.
cdef void gemm_impl(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                    floating alpha, const floating* a, Py_ssize_t lda,
                    const floating* b, Py_ssize_t ldb,
                    floating beta, floating* c, Py_ssize_t ldc,
                    const floating* bias, int bias_mode, int act, floating act_param,
                    int n_threads) noexcept nogil:
    cdef int kernel = cnnc_gemm_kernel()
    cdef Py_ssize_t mr = cnnc_gemm_mr(kernel, floating is double)
    cdef Py_ssize_t nr = cnnc_gemm_nr(kernel, floating is double)
    cdef const floating* brow = bias if bias_mode == BIAS_ROW else NULL
    cdef const floating* bcol = bias if bias_mode == BIAS_COL else NULL
    cdef Py_ssize_t row_tiles = (m + mr - 1) // mr, col_tiles = (n + nr - 1) // nr
    cdef Py_ssize_t tiles, t, lo, hi
    cdef bint split_cols = col_tiles >= row_tiles
    # decided on the whole product, so that a thread's share never changes the path
    cdef bint rows = not trans_b and m <= GEMM_ROWS_MAX and (
        m <= 2 or n <= GEMM_ROWS_WIDE or k >= GEMM_ROWS_DEEP)
    if m <= 0 or n <= 0:
        return
    tiles = col_tiles if split_cols else row_tiles
    if 2.0 * m * n * k < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    n_threads = <int> min(<Py_ssize_t> n_threads, tiles)
    if n_threads <= 1:
        _gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, brow,
                     bcol, act, act_param, kernel, mr, nr, rows)
        return
    # Each thread owns a run of whole tiles, aligned to the one-thread tile grid, so every
    # element is computed by the same instructions whatever the thread count.
    for t in prange(n_threads, num_threads=n_threads, schedule="static"):
        lo = tiles * t // n_threads
        hi = tiles * (t + 1) // n_threads
        if split_cols:
            lo = lo * nr
            hi = min(hi * nr, n)
            _gemm_serial(trans_a, trans_b, m, hi - lo, k, alpha, a, lda,
                         b + (lo * ldb if trans_b else lo), ldb, beta, c + lo, ldc, brow,
                         bcol + lo if bcol != NULL else NULL, act, act_param, kernel, mr, nr,
                         rows)
        else:
            lo = lo * mr
            hi = min(hi * mr, m)
            _gemm_serial(trans_a, trans_b, hi - lo, n, k, alpha,
                         a + (lo if trans_a else lo * lda), lda, b, ldb, beta, c + lo * ldc,
                         ldc, brow + lo if brow != NULL else NULL, bcol, act, act_param,
                         kernel, mr, nr, False)  # rows: m <= 4, one row tile, never here


cdef void _gemm_serial(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       floating alpha, const floating* a, Py_ssize_t lda,
                       const floating* b, Py_ssize_t ldb, floating beta, floating* c,
                       Py_ssize_t ldc, const floating* brow, const floating* bcol, int act,
                       floating act_param, int kernel, Py_ssize_t mr,
                       Py_ssize_t nr, bint rows) noexcept nogil:
    """One thread's GEMM: loops ic (MC rows) > pc (KC depth) > jc (NC columns) > tiles;
    with `rows`, the row kernels instead (_gemm_rows).

    When B is small, or A has few rows (each element of B used once or twice), B is read
    in place instead of packed and the tile loops run column panel outermost.
    """
    if rows:
        _gemm_rows(trans_a, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, brow, bcol, act,
                   act_param, kernel)
        return
    cdef Py_ssize_t size = sizeof(floating)
    cdef Py_ssize_t kc_max = GEMM_KC_BYTES // size
    cdef Py_ssize_t n_kblocks = max((k + kc_max - 1) // kc_max, 1)
    cdef Py_ssize_t kc_cap = (k + n_kblocks - 1) // n_kblocks
    # Packing B pays when each panel is reused by many rows of A, or when B comes from
    # memory in many rows (packing reads it row by row; in place it is one stream per row).
    cdef bint direct_b = not trans_b and (k * n * size <= GEMM_SMALL_B_BYTES or (
        m <= GEMM_DIRECT_B_ROWS and (k <= GEMM_DIRECT_B_DEPTH
                                     or k * n * size <= GEMM_DIRECT_B_BYTES)))
    cdef Py_ssize_t nc = max(GEMM_B_BYTES // (max(kc_cap, 1) * size) // nr, 1) * nr
    cdef Py_ssize_t mc = min(<Py_ssize_t> GEMM_MC, ((m + mr - 1) // mr) * mr)
    cdef floating* pa
    cdef floating* pb
    cdef Py_ssize_t ic, q, p0, kc, jc, mcur, ncur, jc_b
    cdef floating beta_q
    cdef bint last
    if direct_b:
        nc = ((n + nr - 1) // nr) * nr
    pa = <floating*> cnnc_gemm_buffer(0, mc * kc_cap * size + 64)
    if direct_b:   # one tail panel
        pb = <floating*> cnnc_gemm_buffer(1, nr * kc_cap * size + 64)
    else:
        pb = <floating*> cnnc_gemm_buffer(1, min(nc, nr * ((n + nr - 1) // nr)) * kc_cap * size
                                          + 64)
    if pa == NULL or pb == NULL:   # out of memory: fall back to the unblocked loops
        _gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, brow,
                    bcol, act, act_param)
        return
    ic = 0
    while ic < m:
        mcur = min(mc, m - ic)
        for q in range(n_kblocks):
            # K is split evenly; blocks after the first accumulate into C, and only the
            # last adds the bias and applies the activation.
            p0 = k * q // n_kblocks
            kc = k * (q + 1) // n_kblocks - p0
            beta_q = beta if q == 0 else 1
            last = q == n_kblocks - 1
            _pack_a(trans_a, a, lda, ic, mcur, p0, kc, mr, pa)
            for jc_b in range((n + nc - 1) // nc):
                jc = jc_b * nc
                ncur = min(nc, n - jc)
                if direct_b:
                    _block_direct_b(kernel, kc, pa, b + p0 * ldb + jc, ldb, pb,
                                    c + ic * ldc + jc, ldc, mcur, ncur, mr, nr, alpha, beta_q,
                                    brow + ic if last and brow != NULL else NULL,
                                    bcol + jc if last and bcol != NULL else NULL,
                                    act if last else ACT_NONE, act_param)
                else:
                    _pack_b(trans_b, b, ldb, jc, ncur, p0, kc, nr, pb)
                    _block_packed(kernel, kc, pa, pb, c + ic * ldc + jc, ldc, mcur, ncur, mr,
                                  nr, alpha, beta_q,
                                  brow + ic if last and brow != NULL else NULL,
                                  bcol + jc if last and bcol != NULL else NULL,
                                  act if last else ACT_NONE, act_param)
        ic += mc


cdef inline void _block_packed(int kernel, Py_ssize_t kc, const floating* pa,
                               const floating* pb, floating* c, Py_ssize_t ldc, Py_ssize_t h,
                               Py_ssize_t w, Py_ssize_t mr, Py_ssize_t nr, floating alpha,
                               floating beta, const floating* brow, const floating* bcol,
                               int act, floating act_param) noexcept nogil:
    """C[:h, :w] from packed A (h rows) and packed B (w columns), row panel outermost so
    each A panel stays in L1 while B streams from L2."""
    cdef Py_ssize_t ir, jr, ir_b, jr_b
    for ir_b in range((h + mr - 1) // mr):
        ir = ir_b * mr
        for jr_b in range((w + nr - 1) // nr):
            jr = jr_b * nr
            _tile(kernel, kc, pa + ir * kc, pb + jr * kc, nr, 0, c + ir * ldc + jr, ldc,
                  min(mr, h - ir), min(nr, w - jr), mr, nr, alpha, beta,
                  brow + ir if brow != NULL else NULL, bcol + jr if bcol != NULL else NULL,
                  act, act_param)


cdef inline void _block_direct_b(int kernel, Py_ssize_t kc, const floating* pa,
                                 const floating* b, Py_ssize_t ldb, floating* tail,
                                 floating* c, Py_ssize_t ldc, Py_ssize_t h, Py_ssize_t w,
                                 Py_ssize_t mr, Py_ssize_t nr, floating alpha, floating beta,
                                 const floating* brow, const floating* bcol, int act,
                                 floating act_param) noexcept nogil:
    """C[:h, :w] from packed A and B read in place (rows ldb apart); only a last, partial
    column panel is copied (to `tail`), so no read passes B's last column."""
    cdef Py_ssize_t ir, jr, ir_b, jr_b, full = w // nr
    cdef const floating* src
    cdef Py_ssize_t ld, pf
    for jr_b in range((w + nr - 1) // nr):
        jr = jr_b * nr
        if jr_b < full:
            src, ld = b + jr, ldb
            pf = nr if jr_b + 1 < full else 0   # warm the next panel's rows
        else:
            _pack_b(False, b, ldb, jr, w - jr, 0, kc, nr, tail)
            src, ld, pf = tail, nr, 0
        for ir_b in range((h + mr - 1) // mr):
            ir = ir_b * mr
            _tile(kernel, kc, pa + ir * kc, src, ld, pf, c + ir * ldc + jr, ldc,
                  min(mr, h - ir), min(nr, w - jr), mr, nr, alpha, beta,
                  brow + ir if brow != NULL else NULL, bcol + jr if bcol != NULL else NULL,
                  act, act_param)


cdef inline void _pack_a(bint trans, const floating* a, Py_ssize_t lda, Py_ssize_t i0,
                         Py_ssize_t rows, Py_ssize_t p0, Py_ssize_t kc, Py_ssize_t mr,
                         floating* dst) noexcept nogil:
    """Rows i0..i0+rows, depth p0..p0+kc of op(A) as MR-row panels [p][MR], zero-padded."""
    cdef Py_ssize_t i, i_b, p, r, h
    cdef const floating* src
    for i_b in range((rows + mr - 1) // mr):
        i = i_b * mr
        h = min(mr, rows - i)
        if trans:   # A stored [k, m]: each depth's MR values are contiguous
            if h < mr:
                memset(dst, 0, kc * mr * sizeof(floating))
            src = a + p0 * lda + i0 + i
            for p in range(kc):
                for r in range(h):
                    dst[p * mr + r] = src[p * lda + r]
        else:
            _pack_rows(a + (i0 + i) * lda + p0, lda, h, mr, kc, dst)
        dst += kc * mr


cdef inline void _pack_rows(const floating* src, Py_ssize_t ld, Py_ssize_t h, Py_ssize_t width,
                            Py_ssize_t kc, floating* dst) noexcept nogil:
    """dst[p * width + r] = src[r * ld + p] (0 for r >= h): a transposing copy."""
    if floating is float:
        cnnc_pack_rows_s(src, ld, <int> h, <int> width, kc, dst)
    else:
        cnnc_pack_rows_d(src, ld, <int> h, <int> width, kc, dst)


cdef inline void _pack_b(bint trans, const floating* b, Py_ssize_t ldb, Py_ssize_t j0,
                         Py_ssize_t cols, Py_ssize_t p0, Py_ssize_t kc, Py_ssize_t nr,
                         floating* dst) noexcept nogil:
    """Depth p0..p0+kc, columns j0..j0+cols of op(B) as NR-column panels [p][NR]."""
    cdef Py_ssize_t j, j_b, p, r
    cdef Py_ssize_t panels = (cols + nr - 1) // nr, tail = cols - (panels - 1) * nr
    cdef Py_ssize_t line = 64 // sizeof(floating)   # elements per cache line
    cdef const floating* src
    cdef floating* d
    if trans:   # B stored [n, k]: each column of op(B) is a contiguous run of depth
        for j_b in range(panels):
            j = j_b * nr
            _pack_rows(b + (j0 + j) * ldb + p0, ldb, min(nr, cols - j), nr, kc,
                       dst + j_b * kc * nr)
        return
    if tail < nr:
        memset(dst + (panels - 1) * kc * nr, 0, kc * nr * sizeof(floating))
    # B stored [k, n]: walk each row of the block once, front to back, so the hardware
    # prefetcher sees one stream at a time instead of kc strided ones, and ask for the
    # row GEMM_PACK_AHEAD further down early, since each row is a short stream.
    for p in range(kc):
        src = b + (p0 + p) * ldb + j0
        if p + GEMM_PACK_AHEAD < kc:
            for r in range((cols + line - 1) // line):
                __builtin_prefetch(src + GEMM_PACK_AHEAD * ldb + r * line)
        d = dst + p * nr
        for j_b in range(panels - 1):
            for r in range(nr):
                d[r] = src[r]
            src += nr
            d += kc * nr
        for r in range(tail):
            d[r] = src[r]


cdef inline void _tile(int kernel, Py_ssize_t kc, const floating* pa, const floating* pb,
                       Py_ssize_t ldb, Py_ssize_t pf, floating* c, Py_ssize_t ldc,
                       Py_ssize_t h, Py_ssize_t w, Py_ssize_t mr, Py_ssize_t nr,
                       floating alpha, floating beta, const floating* brow,
                       const floating* bcol, int act, floating act_param) noexcept nogil:
    """One MR x NR tile of C, of which the top-left h x w is real.

    A tile at most NR/2 wide (only ever the last column panel) uses the half-width kernel.
    """
    cdef floating scratch[GEMM_MAX_TILE]
    cdef floating brow_pad[GEMM_MAX_TILE]
    cdef floating bcol_pad[GEMM_MAX_TILE]
    cdef Py_ssize_t i, j
    cdef bint half = 2 * w <= nr
    cdef Py_ssize_t width = nr // 2 if half else nr
    if h < mr and brow != NULL:   # the kernel reads MR row biases
        memset(brow_pad, 0, mr * sizeof(floating))
        for i in range(h):
            brow_pad[i] = brow[i]
        brow = brow_pad
    if w == width:   # the kernel writes only the h real rows
        _call_tile(half, kernel, kc, pa, pb, ldb, pf, c, ldc, <int> h, alpha, beta, brow, bcol,
                   act, act_param)
        return
    # Narrow tile: run the kernel on a scratch copy, so no read or write leaves C.
    memset(scratch, 0, mr * width * sizeof(floating))
    if beta != 0:
        for i in range(h):
            for j in range(w):
                scratch[i * width + j] = c[i * ldc + j]
    if bcol != NULL:
        memset(bcol_pad, 0, width * sizeof(floating))
        for j in range(w):
            bcol_pad[j] = bcol[j]
        bcol = bcol_pad
    _call_tile(half, kernel, kc, pa, pb, ldb, pf, scratch, width, <int> h, alpha, beta, brow,
               bcol, act, act_param)
    for i in range(h):
        for j in range(w):
            c[i * ldc + j] = scratch[i * width + j]


cdef inline void _call_tile(bint half, int kernel, Py_ssize_t kc, const floating* pa,
                            const floating* pb, Py_ssize_t ldb, Py_ssize_t pf, floating* c,
                            Py_ssize_t ldc, int rows, floating alpha, floating beta,
                            const floating* brow, const floating* bcol, int act,
                            floating act_param) noexcept nogil:
    if floating is float:
        (cnnc_gemm_half_s(kernel) if half else cnnc_gemm_tile_s(kernel))(
            kc, pa, pb, ldb, pf, c, ldc, rows, alpha, beta, brow, bcol, act, act_param)
    else:
        (cnnc_gemm_half_d(kernel) if half else cnnc_gemm_tile_d(kernel))(
            kc, pa, pb, ldb, pf, c, ldc, rows, alpha, beta, brow, bcol, act, act_param)


cdef inline floating _gemm_act(floating v, int act, floating act_param) noexcept nogil:
    if act == ACT_RELU:
        return v if v > 0 else 0
    if act == ACT_LEAKY:
        return v if v > 0 else v * act_param
    if act == ACT_SIGMOID:
        return 1 / (1 + exp(-v))
    if act == ACT_TANH:
        return tanh(v)
    return v


cdef void _gemm_rows(bint trans_a, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating alpha,
                     const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                     floating beta, floating* c, Py_ssize_t ldc, const floating* brow,
                     const floating* bcol, int act, floating act_param,
                     int kernel) noexcept nogil:
    """C for op(A) of 1..GEMM_ROWS_MAX rows (B not transposed): the row kernels over
    blocks of whole vectors of C, each reading its block of every row of B once; the last
    columns short of a vector by the narrower paths' kernels (AVX2's, then the portable
    16-byte ones), then in scalars. These are the same columns whatever the thread split
    (column runs start on whole tiles)."""
    cdef Py_ssize_t ars = 1 if trans_a else lda, aks = lda if trans_a else 1
    cdef Py_ssize_t j = 0, nv, vl, nvmax
    while True:
        vl = cnnc_rows_vl(kernel, floating is double)
        nvmax = cnnc_rows_nv(kernel, <int> m)
        while n - j >= vl:
            nv = min(nvmax, (n - j) // vl)
            if floating is float:
                cnnc_gemm_rows_s(kernel, <int> m)(k, a, ars, aks, b + j, ldb, <int> nv, c + j,
                                                  ldc, <int> m, alpha, beta, brow,
                                                  bcol + j if bcol != NULL else NULL, act,
                                                  act_param)
            else:
                cnnc_gemm_rows_d(kernel, <int> m)(k, a, ars, aks, b + j, ldb, <int> nv, c + j,
                                                  ldc, <int> m, alpha, beta, brow,
                                                  bcol + j if bcol != NULL else NULL, act,
                                                  act_param)
            j += nv * vl
        if kernel == GEMM_PORTABLE:
            break
        kernel = GEMM_AVX2 if kernel == GEMM_AVX512 else GEMM_PORTABLE
    if j < n:
        _gemm_rows_tail(m, n - j, k, alpha, a, ars, aks, b + j, ldb, beta, c + j, ldc, brow,
                        bcol + j if bcol != NULL else NULL, act, act_param)


cdef void _gemm_rows_tail(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating alpha,
                          const floating* a, Py_ssize_t ars, Py_ssize_t aks,
                          const floating* b, Py_ssize_t ldb, floating beta, floating* c,
                          Py_ssize_t ldc, const floating* brow, const floating* bcol, int act,
                          floating act_param) noexcept nogil:
    """_gemm_rows for fewer columns than a 16-byte vector (at most 3): B row by row,
    scalar sums in order."""
    cdef floating acc[GEMM_ROWS_MAX * 4]
    cdef Py_ssize_t i, j, p
    cdef floating av, v
    for i in range(m * n):
        acc[i] = 0
    for p in range(k):
        for i in range(m):
            av = a[i * ars + p * aks]
            for j in range(n):
                acc[i * n + j] += av * b[p * ldb + j]
    for i in range(m):
        for j in range(n):
            v = acc[i * n + j] * alpha
            if beta != 0:
                v = c[i * ldc + j] * beta + v
            if brow != NULL:
                v = v + brow[i]
            if bcol != NULL:
                v = v + bcol[j]
            c[i * ldc + j] = _gemm_act(v, act, act_param)


cdef void _gemm_plain(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      floating alpha, const floating* a, Py_ssize_t lda,
                      const floating* b, Py_ssize_t ldb, floating beta, floating* c,
                      Py_ssize_t ldc, const floating* brow, const floating* bcol, int act,
                      floating act_param) noexcept nogil:
    """Unblocked GEMM needing no memory, for when the packing buffers cannot be had."""
    cdef Py_ssize_t i, j, p
    cdef floating av, v
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        for p in range(k):
            av = alpha * (a[p * lda + i] if trans_a else a[i * lda + p])
            for j in range(n):
                c[i * ldc + j] += av * (b[j * ldb + p] if trans_b else b[p * ldb + j])
        for j in range(n):
            v = c[i * ldc + j]
            if brow != NULL:
                v = v + brow[i]
            if bcol != NULL:
                v = v + bcol[j]
            c[i * ldc + j] = _gemm_act(v, act, act_param)

"""Dense matrix multiply with a fused epilogue: the kernel under every conv and dense layer.

The work is done by ``gemm_core.pxi`` (packed, cache-blocked, register-blocked; see there),
except for one or two rows of A times a B stored [n, k] (the dot products at the end of
this module). This module is the Python entry point and validates everything before
releasing the GIL.
"""
import numpy as np

from cnnc.threads import effective_n_threads

cimport numpy as cnp
from cython cimport floating

include "gemm_core.pxi"

cnp.import_array()

_ACTS = {"none": ACT_NONE, "relu": ACT_RELU, "leaky_relu": ACT_LEAKY,
         "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH}
_BIAS_MODES = {None: BIAS_NONE, "row": BIAS_ROW, "col": BIAS_COL}
_KERNELS = {"portable": GEMM_PORTABLE, "avx2": GEMM_AVX2, "avx512": GEMM_AVX512}


def set_kernel(name: str) -> None:
    """Force the micro-kernel path: "avx512", "avx2", "portable", or "auto" (best available).

    Raises ValueError for an unknown name or a path this CPU cannot run. The choice is
    process-wide; the environment variable CNNC_GEMM_KERNEL sets the initial one.
    """
    if name == "auto":
        cnnc_gemm_set_kernel(cnnc_gemm_best_kernel())
        return
    if name not in _KERNELS:
        raise ValueError(f"unknown GEMM kernel {name!r}; expected one of "
                         f"{sorted(_KERNELS) + ['auto']}")
    if _KERNELS[name] > cnnc_gemm_best_kernel():
        raise ValueError(f"this CPU cannot run the {name!r} GEMM kernel "
                         f"(best available: {kernel_name(cnnc_gemm_best_kernel())!r})")
    cnnc_gemm_set_kernel(_KERNELS[name])


def kernel_name(kernel_id: int | None = None) -> str:
    """Name of the micro-kernel path in use (or of ``kernel_id``)."""
    kid = cnnc_gemm_kernel() if kernel_id is None else kernel_id
    return {v: k for k, v in _KERNELS.items()}[kid]


def available_kernels() -> list[str]:
    """The micro-kernel paths this CPU can run, slowest first."""
    best = cnnc_gemm_best_kernel()
    return [name for name, kid in _KERNELS.items() if kid <= best]


cdef Py_ssize_t _leading_dim(object x, str name, int typenum, bint* transposed) except -1:
    """Leading dimension of a 2-D operand with one unit-stride axis; sets `transposed` when
    it is the columns that lie contiguously (then x is stored as x.T row-major)."""
    if not cnp.PyArray_Check(x) or cnp.PyArray_NDIM(<cnp.ndarray> x) != 2:
        raise ValueError(f"gemm: {name} must be a 2-D numpy array, got "
                         f"{type(x).__name__} with shape {np.shape(x)}")
    cdef cnp.ndarray arr = <cnp.ndarray> x
    if cnp.PyArray_TYPE(arr) != typenum:
        raise ValueError(f"gemm: {name} has dtype {arr.dtype}, expected "
                         f"{cnp.PyArray_DescrFromType(typenum)} (all operands must share "
                         "float32 or float64)")
    cdef Py_ssize_t rows = cnp.PyArray_DIMS(arr)[0], cols = cnp.PyArray_DIMS(arr)[1]
    cdef Py_ssize_t s0 = cnp.PyArray_STRIDES(arr)[0], s1 = cnp.PyArray_STRIDES(arr)[1]
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(arr)
    transposed[0] = False
    if rows == 0 or cols == 0:   # nothing is read
        return max(cols, 1)
    # A size-1 axis may carry any stride: it is never stepped over.
    if (s1 == item or cols == 1) and (rows == 1 or (s0 > 0 and s0 % item == 0
                                                    and s0 >= cols * item)):
        return s0 // item if rows > 1 else cols
    if (s0 == item or rows == 1) and (cols == 1 or (s1 > 0 and s1 % item == 0
                                                    and s1 >= rows * item)):
        transposed[0] = True
        return s1 // item if cols > 1 else rows
    raise ValueError(f"gemm: {name} (strides {x.strides}) needs one axis with unit stride "
                     "and the other a positive multiple of the row length; "
                     "pass np.ascontiguousarray(...) instead")


cdef bint _overlap(cnp.ndarray x, cnp.ndarray y):
    """True when the byte ranges spanned by x and y intersect (a conservative test)."""
    cdef char* lo[2]
    cdef char* hi[2]
    cdef cnp.ndarray arr
    cdef int i, d
    cdef Py_ssize_t step
    for i in range(2):
        arr = x if i == 0 else y
        if cnp.PyArray_SIZE(arr) == 0:
            return False
        lo[i] = hi[i] = <char*> cnp.PyArray_DATA(arr)
        for d in range(cnp.PyArray_NDIM(arr)):
            step = (cnp.PyArray_DIMS(arr)[d] - 1) * cnp.PyArray_STRIDES(arr)[d]
            if step < 0:
                lo[i] += step
            else:
                hi[i] += step
        hi[i] += cnp.PyArray_ITEMSIZE(arr)
    return lo[0] < hi[1] and lo[1] < hi[0]


def gemm(a, b, c=None, *, trans_a: bool = False, trans_b: bool = False,
         alpha: float = 1.0, beta: float = 0.0, bias=None, bias_mode: str | None = None,
         act: str = "none", act_param: float = 0.01, n_threads: int | None = None,
         bind: bool = False):
    """C = act(alpha * op(A) @ op(B) + beta * C + bias), in place in ``c``; returns ``c``.

    a, b, c: 2-D float32 or float64 arrays, all the same dtype. op(X) is X, or X.T with
        ``trans_x``. A and B may be any view with one unit-stride axis (sliced rows,
        transposed arrays: read in place, not copied); C must have a unit inner stride
        (row-major rows, any row stride) and must not share memory with A, B or bias.
        Other layouts raise ValueError: copy them with np.ascontiguousarray first.
    c: None allocates a new [m, n] array (then beta must be 0). With beta == 0, C is not
        read, so it may hold anything.
    bias: 1-D contiguous array of the dtype, [m] with bias_mode="row" (conv: one per
        output channel) or [n] with bias_mode="col" (dense: one per output feature).
    act: "none", "relu", "leaky_relu" (slope act_param), "sigmoid" or "tanh".
    n_threads: None uses cnnc.threads.get_num_threads(). Results do not depend on it.
    bind: instead of running, return the validated call: calling it runs the GEMM on these
        arrays again (returning c) without checking them; the executor binds each op once
        per plan.
    """
    cdef bint a_t, b_t, c_t
    cdef int typenum
    if not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray> a) not in (cnp.NPY_FLOAT32,
                                                                           cnp.NPY_FLOAT64):
        raise ValueError(f"gemm: a must be a float32 or float64 numpy array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)}")
    typenum = cnp.PyArray_TYPE(<cnp.ndarray> a)
    cdef Py_ssize_t lda = _leading_dim(a, "a", typenum, &a_t)
    cdef Py_ssize_t ldb = _leading_dim(b, "b", typenum, &b_t)
    # An operand stored transposed flips the requested op.
    cdef bint ta = bool(trans_a) != a_t, tb = bool(trans_b) != b_t
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"gemm: inner dimensions differ: op(a) is [{m}, {k}], "
                         f"op(b) is [{kb}, {n}]")
    if act not in _ACTS:
        raise ValueError(f"gemm: unknown act {act!r}; expected one of {sorted(_ACTS)}")
    if bias_mode not in _BIAS_MODES:
        raise ValueError(f"gemm: bias_mode must be None, 'row' or 'col', got {bias_mode!r}")
    if c is None:
        if beta != 0:
            raise ValueError("gemm: beta != 0 needs an existing c")
        c = cnp.PyArray_EMPTY(2, [m, n], typenum, 0)
    if not cnp.PyArray_Check(c) or c.shape != (m, n):
        raise ValueError(f"gemm: c must be a 2-D array of shape ({m}, {n}), got "
                         f"shape {np.shape(c)}")
    cdef Py_ssize_t ldc = _leading_dim(c, "c", typenum, &c_t)
    if c_t:
        raise ValueError(f"gemm: c (strides {c.strides}) must have unit inner stride")
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> c):
        raise ValueError("gemm: c is read-only")
    if _overlap(c, a) or _overlap(c, b):
        raise ValueError("gemm: c must not overlap a or b")
    if (bias is None) != (bias_mode is None):
        raise ValueError("gemm: give bias and bias_mode together")
    if bias is not None:
        want = m if bias_mode == "row" else n
        if not cnp.PyArray_Check(bias) or bias.shape != (want,):
            raise ValueError(f"gemm: bias for bias_mode={bias_mode!r} must be a 1-D array of "
                             f"length {want}, got shape {np.shape(bias)}")
        if cnp.PyArray_TYPE(<cnp.ndarray> bias) != typenum:
            raise ValueError(f"gemm: bias has dtype {bias.dtype}, expected {a.dtype}")
        if bias.strides[0] != bias.itemsize and want > 1:
            raise ValueError("gemm: bias must be contiguous")
        if _overlap(c, bias):
            raise ValueError("gemm: c must not overlap bias")
    cdef _Call call = _Call.__new__(_Call)
    call.ta, call.tb, call.m, call.n, call.k = ta, tb, m, n, k
    call.lda, call.ldb, call.ldc = lda, ldb, ldc
    call.alpha, call.beta, call.act_param = alpha, beta, act_param
    call.bias_mode, call.act = _BIAS_MODES[bias_mode], _ACTS[act]
    call.nt = effective_n_threads(n_threads)
    call.dbl = typenum == cnp.NPY_FLOAT64
    call.pa, call.pb = cnp.PyArray_DATA(a), cnp.PyArray_DATA(b)
    call.pc = cnp.PyArray_DATA(c)
    call.pbias = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray> bias)
    call.keep = (a, b, c, bias)
    return call if bind else call()


cdef class _Call:
    """One validated GEMM on fixed arrays: calling it runs it again (no argument checks)
    and returns c."""
    cdef bint ta, tb, dbl
    cdef Py_ssize_t m, n, k, lda, ldb, ldc
    cdef double alpha, beta, act_param
    cdef int bias_mode, act, nt
    cdef void* pa
    cdef void* pb
    cdef void* pc
    cdef void* pbias
    cdef tuple keep

    def __call__(self):
        if self.m and self.n:
            with nogil:
                if self.dbl:
                    _run[double](self, NULL)
                else:
                    _run[float](self, NULL)
        return self.keep[2]


cdef void _run(_Call g, floating* _dtype) noexcept nogil:
    cdef const floating* pbias = <const floating*> g.pbias
    cdef const floating* brow = pbias if g.bias_mode == BIAS_ROW else NULL
    cdef const floating* bcol = pbias if g.bias_mode == BIAS_COL else NULL
    if g.m <= SMALL_M_DOTS and g.k >= DOTS_MIN_DEPTH and g.tb and not g.ta:
        _small_m(g.m, g.n, g.k, <floating> g.alpha, <const floating*> g.pa, g.lda,
                 <const floating*> g.pb, g.ldb, <floating> g.beta, <floating*> g.pc, g.ldc,
                 brow, bcol, g.act, <floating> g.act_param, g.nt)
    else:
        gemm_impl(g.ta, g.tb, g.m, g.n, g.k, <floating> g.alpha, <const floating*> g.pa,
                  g.lda, <const floating*> g.pb, g.ldb, <floating> g.beta, <floating*> g.pc,
                  g.ldc, pbias, g.bias_mode, g.act, <floating> g.act_param, g.nt)


# One or two rows of A (a dense layer's backward-data at batch 1-2) times B stored [n, k]:
# one dot product of contiguous rows per element of C, each row of B read once for all
# rows of A. (Few rows of A times B stored [k, n] take gemm_core's row kernels.)
cdef enum:
    SMALL_M_DOTS = 2             # rows of A up to which B's rows are dotted, when K is at
    DOTS_MIN_DEPTH = 64          # ... least this (a dot product costs more than its length)
    SMALL_M_BLOCK_BYTES = 2048   # row length of a block of C, so its rows stay in L1
    SMALL_M_UNIT_BYTES = 64      # threads own whole cache lines of each row of C


cdef void _small_m(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating alpha,
                   const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                   floating beta, floating* c, Py_ssize_t ldc, const floating* brow,
                   const floating* bcol, int act, floating act_param,
                   int n_threads) noexcept nogil:
    """gemm for few rows of A [m, k] and B stored [n, k]; threads split the columns.

    Every element of C is computed by the same sequence of operations whichever thread
    owns it, so results do not depend on the thread count.
    """
    cdef Py_ssize_t unit = SMALL_M_UNIT_BYTES // sizeof(floating)
    cdef Py_ssize_t units = (n + unit - 1) // unit
    cdef Py_ssize_t t, lo, hi
    if 2.0 * m * n * k < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    n_threads = <int> min(<Py_ssize_t> n_threads, units)
    if n_threads <= 1:
        _small_m_cols(m, 0, n, k, alpha, a, lda, b, ldb, beta, c, ldc, brow, bcol, act,
                      act_param)
        return
    for t in prange(n_threads, num_threads=n_threads, schedule="static"):
        lo = units * t // n_threads * unit
        hi = min(units * (t + 1) // n_threads * unit, n)
        _small_m_cols(m, lo, hi, k, alpha, a, lda, b, ldb, beta, c, ldc, brow, bcol, act,
                      act_param)


cdef void _small_m_cols(Py_ssize_t m, Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t k,
                        floating alpha, const floating* a, Py_ssize_t lda,
                        const floating* b, Py_ssize_t ldb, floating beta, floating* c,
                        Py_ssize_t ldc, const floating* brow, const floating* bcol, int act,
                        floating act_param) noexcept nogil:
    """Columns j0..j1 of C, a block of columns at a time."""
    cdef Py_ssize_t width = SMALL_M_BLOCK_BYTES // sizeof(floating)
    cdef Py_ssize_t q, jb, w
    for q in range((j1 - j0 + width - 1) // width):
        jb = j0 + q * width
        w = min(width, j1 - jb)
        _small_m_dots(m, w, k, alpha, a, lda, b + jb * ldb, ldb, beta, c + jb, ldc)
        _small_m_epilogue(m, w, c + jb, ldc, brow, bcol + jb if bcol != NULL else NULL, act,
                          act_param)


cdef void _small_m_dots(Py_ssize_t m, Py_ssize_t w, Py_ssize_t k, floating alpha,
                        const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                        floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """C[:m, :w] = alpha * A @ B.T + beta * C for A stored [m, k] and B [w, k]: each row
    of B is read once, for all m rows of A."""
    cdef Py_ssize_t i, j
    cdef floating s
    for j in range(w):
        for i in range(m):
            s = alpha * _dot(a + i * lda, b + j * ldb, k)
            c[i * ldc + j] = s if beta == 0 else beta * c[i * ldc + j] + s


cdef inline floating _dot(const floating* x, const floating* y, Py_ssize_t k) noexcept nogil:
    """sum(x[:k] * y[:k]) over 16 interleaved partial sums, which gcc keeps in vector
    registers (a fixed order, so it vectorises without -ffast-math), added pairwise."""
    cdef floating acc[16]
    cdef Py_ssize_t p = 0, j
    for j in range(16):
        acc[j] = 0
    while p + 16 <= k:
        for j in range(16):
            acc[j] += x[p + j] * y[p + j]
        p += 16
    for j in range(k - p):
        acc[j] += x[p + j] * y[p + j]
    # Written out level by level: a loop over the levels keeps acc in memory (2x slower).
    for j in range(8):
        acc[j] += acc[j + 8]
    for j in range(4):
        acc[j] += acc[j + 4]
    return (acc[0] + acc[2]) + (acc[1] + acc[3])


cdef void _small_m_epilogue(Py_ssize_t m, Py_ssize_t w, floating* c, Py_ssize_t ldc,
                            const floating* brow, const floating* bcol, int act,
                            floating act_param) noexcept nogil:
    """C[:m, :w] = act(C + bias), bias per row (brow) or per column (bcol) or none."""
    cdef Py_ssize_t i, j
    cdef floating* y
    cdef floating v
    if brow == NULL and bcol == NULL and act == ACT_NONE:
        return
    for i in range(m):
        y = c + i * ldc
        for j in range(w):
            v = y[j]
            if brow != NULL:
                v = v + brow[i]
            if bcol != NULL:
                v = v + bcol[j]
            y[j] = _gemm_act(v, act, act_param)

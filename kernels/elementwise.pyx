"""Elementwise kernels: bias add, activations, add, copy, scale, concat (forward and backward).

Activations are NCHW ([N, C, H, W]) or dense ([N, C]); channel means axis 1, and any
trailing axes are flattened into S = H*W. Every array is C-contiguous float32 or float64 (one
dtype per call). The caller allocates every output. Where an output may be the very same
array as an input (in-place), the docstring says so; any other overlap is a ValueError.

Activation backward rules read the forward *output* y, not x, so an in-place forward
(y is x) loses nothing: relu and leaky_relu (alpha >= 0) use the sign of y, sigmoid
y*(1-y), tanh 1-y^2.

add, the activations and their backward share one loop (`_run`): blocks of ELEM_BLOCK
elements, in each the inputs but the last summed in an L1 buffer, the last added in the
loop that applies the activation (or its derivative), so add + relu, and the sum of a
tensor's gradients + the derivative, read and write memory once.

Threads: elementwise loops are split statically over elements (blocks), each element has
one owner. The bias gradient is a per-channel sum owned by one thread and added in a fixed
order (over n, then over the spatial positions with four interleaved partial sums), so
every result is bitwise identical for any thread count.
"""
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cimport numpy as cnp

cnp.import_array()

include "elementwise_common.pxi"

cdef enum Act:
    IDENTITY, RELU, LEAKY, SIGMOID, TANH

cdef enum:
    BIAS_BLOCK = 64     # channels per task when the spatial size is small (dense layers)
    COPY_CHUNK = 65536  # bytes per task for copy
    ELEM_BLOCK = 2048   # elements per task of add and the activations: sums stay in L1


# ---------------------------------------------------------------------------------------
# bias


def bias_add_forward(x, bias, y, n_threads=None) -> None:
    """y[n, c, ...] = x[n, c, ...] + bias[c].

    Parameters
    ----------
    x : (N, C) or (N, C, H, W) float32/float64, IN
    bias : (C,) dtype of x, IN
    y : shape and dtype of x, OUT; may be x itself (in-place)
    n_threads : None for cnnc.get_num_threads()
    """
    _float_arg("x", x, ndim=(2, 3, 4))
    _like("bias", bias, "x", x, shape=(x.shape[1],))
    _like("y", y, "x", x, out=True)
    _no_alias("y", y, {"x": x, "bias": bias}, inplace=("x",))
    nt = _threads(n_threads, x.size)
    if x.size == 0:
        return
    if x.dtype == np.float32:
        _bias_add[float](_nck(x), bias, _nck(y), nt)
    else:
        _bias_add[double](_nck(x), bias, _nck(y), nt)


def bias_backward(dy, dbias, n_threads=None, bind: bool = False):
    """dbias[c] = sum of dy[n, c, ...] over n and the spatial positions.

    Parameters
    ----------
    dy : (N, C) or (N, C, H, W) float32/float64, IN
    dbias : (C,) dtype of dy, OUT (overwritten, not accumulated)
    bind : as add_forward's
    """
    _float_arg("dy", dy, ndim=(2, 3, 4))
    _like("dbias", dbias, "dy", dy, out=True, shape=(dy.shape[1],))
    _no_alias("dbias", dbias, {"dy": dy})
    cdef _BiasGradCall call = _BiasGradCall()
    call.dbl, call.empty, call.nt = dy.dtype == np.float64, dy.size == 0, _threads(n_threads,
                                                                                  dy.size)
    call.keep = (dy, dbias)
    if call.empty:
        pass
    elif call.dbl:
        call.dyd, call.dbd = _nck(dy), dbias
    else:
        call.dyf, call.dbf = _nck(dy), dbias
    if bind:
        return call
    call()


cdef class _BiasGradCall:
    """bias_backward on checked arrays (see bind)."""
    cdef tuple keep
    cdef float[:, :, ::1] dyf
    cdef float[::1] dbf
    cdef double[:, :, ::1] dyd
    cdef double[::1] dbd
    cdef bint dbl, empty
    cdef int nt

    def __call__(self) -> None:
        if self.empty:
            self.keep[1].fill(0)
        elif self.dbl:
            with nogil:
                _bias_grad[double](self.dyd, self.dbd, self.nt)
        else:
            with nogil:
                _bias_grad[float](self.dyf, self.dbf, self.nt)


cdef void _bias_add(const floating[:, :, ::1] x, const floating[::1] b, floating[:, :, ::1] y,
                    int nt) noexcept nogil:
    cdef Py_ssize_t C = x.shape[1], S = x.shape[2], r, n, c, s
    cdef floating v
    for r in prange(x.shape[0] * C, schedule="static", num_threads=nt):
        n = r // C
        c = r % C
        v = b[c]
        for s in range(S):
            y[n, c, s] = x[n, c, s] + v


cdef void _bias_grad_block(const floating[:, :, ::1] dy, floating[::1] db, Py_ssize_t c0,
                           Py_ssize_t c1) noexcept nogil:
    cdef double acc[BIAS_BLOCK]
    cdef Py_ssize_t n, c
    for c in range(c0, c1):
        acc[c - c0] = 0
    for n in range(dy.shape[0]):
        for c in range(c0, c1):
            acc[c - c0] += _row_sum(&dy[n, c, 0], dy.shape[2])
    for c in range(c0, c1):
        db[c] = <floating>acc[c - c0]


cdef void _bias_grad(const floating[:, :, ::1] dy, floating[::1] db, int nt) noexcept nogil:
    cdef Py_ssize_t C = dy.shape[1], block = BIAS_BLOCK if dy.shape[2] < 64 else 1
    cdef Py_ssize_t nb = (C + block - 1) // block, i
    for i in prange(nb, schedule="static", num_threads=nt):
        _bias_grad_block(dy, db, i * block, min(C, (i + 1) * block))


# ---------------------------------------------------------------------------------------
# activations, add, and their backward


def relu_forward(x, y, n_threads=None, bind: bool = False):
    """y = max(x, 0). x: any shape, float32/float64, IN; y: like x, OUT, may be x.
    bind: as add_forward's (so for every activation's forward)."""
    return _act_forward(x, y, RELU, 0.0, n_threads, bind)


def relu_backward(y, dy, dx, n_threads=None) -> None:
    """dx = dy where y > 0, else 0 (y: the forward output). dx may be dy."""
    _act_backward(y, [dy], dx, RELU, 0.0, n_threads)


def leaky_relu_forward(x, y, alpha: float, n_threads=None, bind: bool = False):
    """y = x if x > 0 else alpha*x (alpha >= 0). y may be x."""
    return _act_forward(x, y, LEAKY, _leaky_alpha(alpha), n_threads, bind)


def leaky_relu_backward(y, dy, dx, alpha: float, n_threads=None) -> None:
    """dx = dy if y > 0 else alpha*dy (y: the forward output; alpha >= 0). dx may be dy."""
    _act_backward(y, [dy], dx, LEAKY, _leaky_alpha(alpha), n_threads)


def sigmoid_forward(x, y, n_threads=None, bind: bool = False):
    """y = 1 / (1 + exp(-x)), evaluated without overflow for any x. y may be x."""
    return _act_forward(x, y, SIGMOID, 0.0, n_threads, bind)


def sigmoid_backward(y, dy, dx, n_threads=None) -> None:
    """dx = dy * y * (1 - y) (y: the forward output). dx may be dy."""
    _act_backward(y, [dy], dx, SIGMOID, 0.0, n_threads)


def tanh_forward(x, y, n_threads=None, bind: bool = False):
    """y = tanh(x). y may be x."""
    return _act_forward(x, y, TANH, 0.0, n_threads, bind)


def tanh_backward(y, dy, dx, n_threads=None) -> None:
    """dx = dy * (1 - y^2) (y: the forward output). dx may be dy."""
    _act_backward(y, [dy], dx, TANH, 0.0, n_threads)


def add_forward(xs, y, n_threads=None, activation: str = "none", alpha: float = 0.0,
                bind: bool = False):
    """y = act(xs[0] + xs[1] + ... + xs[k-1]), added left to right in the dtype of the inputs.
    With bind=True, checks the arguments and returns a callable that runs the kernel on
    them, unchecked (a plan binds each op once).

    The backward of a plain add is the identity fan-out: each input's gradient *is* dy, so
    the executor can hand the same buffer to every producer (or ``copy`` it when one of them
    updates its gradient in place). This kernel also sums the gradients that fan in to one
    tensor.

    Parameters
    ----------
    xs : sequence of k >= 1 arrays, all of one shape and dtype (float32/float64), IN
    y : shape and dtype of xs[0], OUT; may be one of the xs (in-place)
    activation : "none", "relu", "leaky_relu", "sigmoid" or "tanh", applied to the sum
    alpha : leaky_relu's slope (>= 0)
    """
    xs = _same_arrays("xs", xs)
    _like("y", y, "xs[0]", xs[0], out=True)
    _no_alias("y", y, {f"xs[{j}]": a for j, a in enumerate(xs)},
              inplace=tuple(f"xs[{j}]" for j in range(len(xs))))
    op, alpha = _activation(activation, alpha)
    return _call(xs, None, y, op, alpha, _threads(n_threads, y.size), bind)


def act_backward(y, dys, dx, activation: str, alpha: float = 0.0, n_threads=None,
                 bind: bool = False):
    """dx = (dys[0] + ... + dys[k-1]) * act'(y): the gradient through an activation whose
    output has k readers (their gradients are summed left to right in the dtype, then
    multiplied as by the ``*_backward`` kernel of the activation). bind: as add_forward's.

    Parameters
    ----------
    y : the activation's forward output, any shape, float32/float64, IN
    dys : sequence of k >= 1 arrays like y, IN
    dx : like y, OUT; may be one of the dys (in-place), must not overlap y
    activation : "none", "relu", "leaky_relu", "sigmoid" or "tanh"
    alpha : leaky_relu's slope (>= 0)
    """
    op, alpha = _activation(activation, alpha)
    return _act_backward(y, dys, dx, op, alpha, n_threads, bind)


_ACTIVATIONS = {"none": IDENTITY, "relu": RELU, "leaky_relu": LEAKY, "sigmoid": SIGMOID,
                "tanh": TANH}


def _activation(name, alpha) -> tuple:
    """(Act code, alpha) of an activation name; alpha checked for leaky_relu only."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {name!r}")
    op = _ACTIVATIONS[name]
    return op, (_leaky_alpha(alpha) if op == LEAKY else 0.0)


def _leaky_alpha(alpha) -> float:
    alpha = float(alpha)
    # the backward rule reads the sign of y, which equals the sign of x only for alpha >= 0
    if not alpha >= 0:
        raise ValueError(f"leaky_relu alpha must be >= 0, got {alpha}")
    return alpha


def _same_arrays(name: str, arrays) -> list:
    """`arrays` as a list of k >= 1 float arrays of one shape and dtype."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError(f"{name} must hold at least one array")
    _float_arg(f"{name}[0]", arrays[0])
    for j, a in enumerate(arrays[1:], 1):
        _like(f"{name}[{j}]", a, f"{name}[0]", arrays[0])
    return arrays


def _act_forward(x, y, int op, double alpha, n_threads, bint bind=False):
    _float_arg("x", x)
    _like("y", y, "x", x, out=True)
    _no_alias("y", y, {"x": x}, inplace=("x",))
    return _call([x], None, y, op, alpha, _threads(n_threads, x.size), bind)


def _act_backward(y, dys, dx, int op, double alpha, n_threads, bint bind=False):
    _float_arg("y", y)
    dys = _same_arrays("dys", dys)
    _like("dys[0]", dys[0], "y", y)
    _like("dx", dx, "y", y, out=True)
    _no_alias("dx", dx, {"y": y, **{f"dys[{j}]": a for j, a in enumerate(dys)}},
              inplace=tuple(f"dys[{j}]" for j in range(len(dys))))
    return _call(dys, y, dx, op, alpha, _threads(n_threads, y.size), bind)


def _call(list srcs, y, out, int op, double alpha, int nt, bint bind):
    """_run now, or (bind) a _RunCall that runs it on these checked arrays."""
    if not bind:
        _run(srcs, y, out, op, alpha, nt)
        return None
    cdef _RunCall call = _RunCall()
    call.srcs, call.y, call.out, call.op, call.alpha, call.nt = srcs, y, out, op, alpha, nt
    return call


cdef class _RunCall:
    """One _run on checked arrays (see add_forward's bind)."""
    cdef list srcs
    cdef object y, out
    cdef int op, nt
    cdef double alpha

    def __call__(self) -> None:
        _run(self.srcs, self.y, self.out, self.op, self.alpha, self.nt)


cdef int _run(list srcs, y, out, int op, double alpha, int nt) except -1:
    """out = act(sum of srcs) when y is None, else out = act'(y) * (sum of srcs); arrays
    checked by the caller (one shape and dtype, C-contiguous; out is one of srcs or
    overlaps none of them, and never overlaps y)."""
    cdef Py_ssize_t k = len(srcs), j
    cdef void* yp = NULL if y is None else cnp.PyArray_DATA(y)
    cdef void** p = <void**>malloc(k * sizeof(void*))
    if p == NULL:
        raise MemoryError()
    try:
        for j in range(k):  # the arrays stay alive in srcs while the pointers are used
            p[j] = cnp.PyArray_DATA(srcs[j])
        if out.dtype == np.float32:
            _blocks[float](<const float**>p, k, <const float*>yp,
                           <float*>cnp.PyArray_DATA(out), out.size, op, alpha, nt)
        else:
            _blocks[double](<const double**>p, k, <const double*>yp,
                            <double*>cnp.PyArray_DATA(out), out.size, op, alpha, nt)
    finally:
        free(p)
    return 0


cdef void _blocks(const floating** p, Py_ssize_t k, const floating* y, floating* out,
                  Py_ssize_t n, int op, double alpha, int nt) noexcept nogil:
    """_run over blocks of ELEM_BLOCK elements, one thread per block."""
    cdef Py_ssize_t b
    for b in prange((n + ELEM_BLOCK - 1) // ELEM_BLOCK, schedule="static", num_threads=nt):
        _block(p, k, y, out, b * ELEM_BLOCK, min(<Py_ssize_t>ELEM_BLOCK, n - b * ELEM_BLOCK),
               op, <floating>alpha)


cdef inline void _block(const floating** p, Py_ssize_t k, const floating* y, floating* out,
                        Py_ssize_t i0, Py_ssize_t n, int op, floating a) noexcept nogil:
    """One block of _run. All inputs but the last are summed into an L1 buffer (or taken
    as they are when there is one); the last is added in the loop that applies the
    activation or its derivative, so a two-input add + relu reads and writes memory
    once. out may be one of the inputs: each element is read from all of them before it
    is written."""
    cdef floating tmp[ELEM_BLOCK]
    cdef const floating* s = p[0] + i0
    cdef const floating* last = NULL if k == 1 else p[k - 1] + i0
    cdef Py_ssize_t j
    if k > 2:
        _add_row(p[0] + i0, p[1] + i0, tmp, n)
        for j in range(2, k - 1):
            _add_row(tmp, p[j] + i0, tmp, n)
        s = tmp
    if y == NULL:
        _act_fwd_row(s, last, out + i0, n, op, a)
    else:
        _act_bwd_row(y + i0, s, last, out + i0, n, op, a)


cdef inline void _add_row(const floating* a, const floating* b, floating* y,
                          Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = a[i] + b[i]


cdef inline floating _at(const floating* x, const floating* b, Py_ssize_t i) noexcept nogil:
    """x[i] + b[i], or x[i] when b is NULL (a loop-invariant test: the compiler makes two
    versions of each loop using it)."""
    return x[i] if b == NULL else x[i] + b[i]


cdef inline void _act_fwd_row(const floating* x, const floating* b, floating* y,
                              Py_ssize_t n, int op, floating a) noexcept nogil:
    """y[0:n] = act(x[0:n] + b[0:n]), or act(x[0:n]) when b is NULL; y may be x or b."""
    cdef Py_ssize_t i
    cdef floating v
    # one loop per activation, so each inner loop is branch-light and vectorisable
    if op == IDENTITY:
        if b != NULL:
            _add_row(x, b, y, n)
        elif y != x:
            memcpy(y, x, n * sizeof(floating))
    elif op == RELU:
        for i in range(n):
            v = _at(x, b, i)
            y[i] = v if v > 0 else 0
    elif op == LEAKY:
        for i in range(n):
            v = _at(x, b, i)
            y[i] = v if v > 0 else a * v
    elif op == SIGMOID:
        for i in range(n):
            y[i] = _sigmoid(_at(x, b, i))
    else:
        for i in range(n):
            y[i] = _tanh(_at(x, b, i))


cdef inline void _act_bwd_row(const floating* y, const floating* dy, const floating* b,
                              floating* dx, Py_ssize_t n, int op, floating a) noexcept nogil:
    """dx[0:n] = (dy[0:n] + b[0:n]) * act'(y[0:n]), or dy[0:n] * act'(y[0:n]) when b is
    NULL; dx may be dy or b."""
    cdef Py_ssize_t i
    cdef floating d
    if op == IDENTITY:
        _act_fwd_row(dy, b, dx, n, IDENTITY, a)
    elif op == RELU:
        for i in range(n):
            d = _at(dy, b, i)  # loaded unconditionally: a select, not a masked load
            dx[i] = d if y[i] > 0 else 0
    elif op == LEAKY:
        for i in range(n):
            d = _at(dy, b, i)
            dx[i] = d if y[i] > 0 else a * d
    elif op == SIGMOID:
        for i in range(n):
            dx[i] = _at(dy, b, i) * y[i] * (1 - y[i])
    else:
        for i in range(n):
            dx[i] = _at(dy, b, i) * (1 - y[i] * y[i])


# ---------------------------------------------------------------------------------------
# copy, scale


def copy(x, y, n_threads=None) -> None:
    """y = x (same shape and dtype; must not overlap)."""
    _float_arg("x", x)
    _like("y", y, "x", x, out=True)
    _no_alias("y", y, {"x": x})
    nt = _threads(n_threads, x.size)
    _copy_bytes(<const char*>cnp.PyArray_DATA(x), <char*>cnp.PyArray_DATA(y), x.nbytes, nt)


cdef void _copy_bytes(const char* src, char* dst, Py_ssize_t nbytes, int nt) noexcept nogil:
    cdef Py_ssize_t i, nchunks = (nbytes + COPY_CHUNK - 1) // COPY_CHUNK
    for i in prange(nchunks, schedule="static", num_threads=nt):
        memcpy(dst + i * COPY_CHUNK, src + i * COPY_CHUNK,
               min(<Py_ssize_t>COPY_CHUNK, nbytes - i * COPY_CHUNK))


def scale(x, alpha: float, y, n_threads=None) -> None:
    """y = alpha * x (alpha rounded to the dtype of x). y may be x (e.g. gradient clipping)."""
    _float_arg("x", x)
    _like("y", y, "x", x, out=True)
    _no_alias("y", y, {"x": x}, inplace=("x",))
    nt = _threads(n_threads, x.size)
    if x.dtype == np.float32:
        _scale[float](x.reshape(-1), float(alpha), y.reshape(-1), nt)
    else:
        _scale[double](x.reshape(-1), float(alpha), y.reshape(-1), nt)


cdef void _scale(const floating[::1] x, double alpha, floating[::1] y, int nt) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating a = <floating>alpha
    for i in prange(x.shape[0], schedule="static", num_threads=nt):
        y[i] = a * x[i]


# ---------------------------------------------------------------------------------------
# concat along channels


def concat_forward(xs, y, n_threads=None) -> None:
    """y = concatenation of xs along axis 1 (channels).

    Parameters
    ----------
    xs : sequence of k >= 1 arrays (N, C_j, ...) with equal N and trailing axes, IN
    y : (N, sum C_j, ...) of the same dtype, OUT; must overlap none of the xs
    """
    xs = _concat_args(xs, "xs", y, "y")
    _no_alias("y", y, {f"xs[{j}]": a for j, a in enumerate(xs)})
    _concat(xs, y, False, _threads(n_threads, y.size))


def concat_backward(dy, dxs, n_threads=None) -> None:
    """Split dy along axis 1 into dxs (the gradient of concat_forward).

    Parameters
    ----------
    dy : (N, sum C_j, ...) float32/float64, IN
    dxs : sequence of k arrays (N, C_j, ...) of dy's dtype, OUT; no overlaps
    """
    dxs = _concat_args(dxs, "dxs", dy, "dy", out=True)
    for j, a in enumerate(dxs):
        _no_alias(f"dxs[{j}]", a, {"dy": dy, **{f"dxs[{i}]": b for i, b in enumerate(dxs)
                                                if i != j}})
    _concat(dxs, dy, True, _threads(n_threads, dy.size))


def _concat_args(parts, parts_name, whole, whole_name, out=False):
    parts = list(parts)
    if not parts:
        raise ValueError(f"{parts_name} must hold at least one array")
    _float_arg(whole_name, whole, out=not out, ndim=(2, 3, 4))
    channels = 0
    for j, a in enumerate(parts):
        expected = (whole.shape[0], a.shape[1] if getattr(a, "ndim", 0) >= 2 else -1,
                    *whole.shape[2:])
        _like(f"{parts_name}[{j}]", a, whole_name, whole, out=out, shape=expected)
        channels += a.shape[1]
    if channels != whole.shape[1]:
        raise ValueError(f"{parts_name} have {channels} channels in all but {whole_name} has "
                         f"{whole.shape[1]}")
    return parts


cdef int _concat(list parts, whole, bint split, int nt) except -1:
    """Copy each part's per-sample block to / from its channel slice of whole."""
    cdef Py_ssize_t k = len(parts), n_batch = whole.shape[0], j, t
    cdef Py_ssize_t row = whole.nbytes // n_batch if n_batch else 0
    cdef char* base = <char*>cnp.PyArray_DATA(whole)
    cdef char** ptr = <char**>malloc(k * sizeof(char*))
    cdef Py_ssize_t* size = <Py_ssize_t*>malloc(k * sizeof(Py_ssize_t))
    cdef Py_ssize_t* offset = <Py_ssize_t*>malloc(k * sizeof(Py_ssize_t))
    if ptr == NULL or size == NULL or offset == NULL:
        _free3(ptr, size, offset)
        raise MemoryError()
    try:
        t = 0
        for j in range(k):
            ptr[j] = <char*>cnp.PyArray_DATA(parts[j])
            size[j] = parts[j].nbytes // n_batch if n_batch else 0
            offset[j] = t
            t += size[j]
        with nogil:
            for t in prange(n_batch * k, schedule="static", num_threads=nt):
                j = t % k
                if split:
                    memcpy(ptr[j] + (t // k) * size[j], base + (t // k) * row + offset[j],
                           size[j])
                else:
                    memcpy(base + (t // k) * row + offset[j], ptr[j] + (t // k) * size[j],
                           size[j])
    finally:
        _free3(ptr, size, offset)
    return 0


cdef void _free3(void* a, void* b, void* c) noexcept:
    free(a)
    free(b)
    free(c)

# The sqrt in the update loops must not set errno, or gcc cannot vectorise them:
# distutils: extra_compile_args = -fno-math-errno
"""Optimizer updates in place over flat parameter buffers, and gradient-norm clipping.

Every buffer is a 1-D C-contiguous float32/float64 array: the parameters p, their gradient
g, and the optimizer state (all of one length and dtype, the state zero-filled by the
caller before step 1). The formulas are PyTorch's (torch.optim, 2.x, single-tensor form)
and are written out in each docstring; t is the 1-based step count. Each element is
updated from its own values only, in the buffers' precision (as PyTorch does; the bias
corrections are hoisted out of the loop), so results do not depend on the thread count.
Hyper-parameter defaults are PyTorch's.
"""
from cython.parallel cimport prange

cimport numpy as cnp

from libc.math cimport sqrtf

include "elementwise_common.pxi"

cnp.import_array()

from cnnc._kernels.elementwise import scale as _scale

# The updates walk the buffers in chunks of this many elements, one thread per chunk: the
# chunks do not depend on the thread count, so neither does which element falls in the
# vectorised body of a chunk's loop and which in its scalar tail.
cdef enum:
    UPDATE_CHUNK = 8192
    SUM_LANES = 16      # partial sums per chunk in sum_squares: a power of 2


def sgd_step(param, grad, momentum_buf=None, *, lr: float, momentum: float = 0.0,
             dampening: float = 0.0, weight_decay: float = 0.0, nesterov=False,
             step=1, n_threads=None) -> None:
    """SGD with optional momentum, Nesterov momentum and L2 weight decay.

        g = grad + weight_decay * p
        if momentum != 0:
            buf = g                                        at t == 1
            buf = momentum * buf + (1 - dampening) * g     at t > 1
            g = g + momentum * buf   if nesterov   else   g = buf
        p = p - lr * g

    momentum_buf is required (IN/OUT) when momentum != 0, else ignored. Nesterov needs
    momentum > 0 and dampening == 0.
    """
    _non_negative(lr=lr)
    t = _step(step)
    sgd_bind(param, grad, momentum_buf, np.array([lr], np.float64), np.array([t], np.int64),
             momentum=momentum, dampening=dampening, weight_decay=weight_decay,
             nesterov=nesterov, n_threads=n_threads)()


def sgd_bind(param, grad, momentum_buf, lr, step, *, momentum: float = 0.0,
             dampening: float = 0.0, weight_decay: float = 0.0, nesterov=False,
             n_threads=None):
    """sgd_step on these arrays, checked once: returns a callable that runs the update,
    reading the learning rate and the 1-based step from the 1-element arrays lr (float64)
    and step (int64) when called, and checking them then (a training plan binds each
    update once)."""
    _non_negative(momentum=momentum, weight_decay=weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov momentum needs momentum > 0 and dampening == 0")
    for name, a, dtype in (("lr", lr, np.float64), ("step", step, np.int64)):
        if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == (1,)):
            raise ValueError(f"{name} must be a 1-element {np.dtype(dtype).name} array")
    use_buf = momentum != 0
    _optim_args(param, grad, {"momentum_buf": momentum_buf if use_buf else None},
                ("momentum_buf",) if use_buf else ())
    return _SgdCall(param, grad, momentum_buf if use_buf else None, lr, step, momentum,
                    dampening, weight_decay, nesterov, _threads(n_threads, param.size))


cdef class _SgdCall:
    """One SGD update bound to its arrays (see sgd_bind): lr and the step are read, and
    checked, at each call."""
    cdef object p, g, buf, lr, step
    cdef double momentum, dampening, wd
    cdef bint nesterov
    cdef int nt

    def __cinit__(self, p, g, buf, lr, step, double momentum, double dampening, double wd,
                  bint nesterov, int nt):
        self.p, self.g, self.buf, self.lr, self.step = p, g, buf, lr, step
        self.momentum, self.dampening, self.wd = momentum, dampening, wd
        self.nesterov, self.nt = nesterov, nt

    def __call__(self) -> None:
        cdef double lr = (<const double*> cnp.PyArray_DATA(self.lr))[0]
        cdef long long t = (<const long long*> cnp.PyArray_DATA(self.step))[0]
        if not lr >= 0:  # also NaN
            raise ValueError(f"lr must be >= 0, got {lr}")
        if t < 1:
            raise ValueError(f"step must be an int >= 1 (the 1-based update count), got {t}")
        _sgd_run(self.p, self.g, self.buf, lr, self.momentum, self.dampening, self.wd,
                 self.nesterov, t == 1, self.nt)


cdef void _sgd_run(cnp.ndarray p, cnp.ndarray g, cnp.ndarray buf, double lr,
                   double momentum, double dampening, double wd, bint nesterov, bint first,
                   int nt):
    """_sgd on checked arrays (buf None without momentum)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef const void* pg = cnp.PyArray_DATA(g)
    cdef void* pb = NULL if buf is None else cnp.PyArray_DATA(buf)
    if n == 0:
        return
    with nogil:
        if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
            _sgd[double](<double*> pp, <const double*> pg, <double*> pb, n, lr, momentum,
                         dampening, wd, nesterov, first, nt)
        else:
            _sgd[float](<float*> pp, <const float*> pg, <float*> pb, n, lr, momentum,
                        dampening, wd, nesterov, first, nt)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr: float = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, n_threads=None) -> None:
    """Adam with bias correction (weight decay as an L2 term added to the gradient).

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g                 (exp_avg)
        v = beta2 * v + (1 - beta2) * g^2               (exp_avg_sq)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, False,
          n_threads)


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr: float = 1e-3,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 1e-2, n_threads=None) -> None:
    """AdamW: Adam with decoupled weight decay, applied to p before the Adam update.

        p = p * (1 - lr * weight_decay)
        then adam_step's update with weight_decay = 0.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, True,
          n_threads)


def rmsprop_step(param, grad, square_avg, momentum_buf=None, grad_avg=None, *,
                 lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered=False,
                 n_threads=None) -> None:
    """RMSprop, optionally centered and with momentum.

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2                      (square_avg)
        centered:  a = alpha * a + (1 - alpha) * g             (grad_avg)
                   d = sqrt(v - a^2) + eps
        else:      d = sqrt(v) + eps
        momentum > 0:  buf = momentum * buf + g / d;  p = p - lr * buf
        else:          p = p - lr * g / d

    momentum_buf is required when momentum > 0, grad_avg when centered (IN/OUT).
    """
    _non_negative(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
    use_buf = momentum > 0
    states = {"square_avg": square_avg, "momentum_buf": momentum_buf if use_buf else None,
              "grad_avg": grad_avg if centered else None}
    required = ("square_avg",) + (("momentum_buf",) if use_buf else ()) + (
        ("grad_avg",) if centered else ())
    _optim_args(param, grad, states, required)
    nt = _threads(n_threads, param.size)
    momentum_buf, grad_avg = states["momentum_buf"], states["grad_avg"]
    if param.dtype == np.float32:
        _rmsprop[float](param, grad, square_avg, momentum_buf, grad_avg, lr, alpha, eps,
                        weight_decay, momentum, use_buf, centered, nt)
    else:
        _rmsprop[double](param, grad, square_avg, momentum_buf, grad_avg, lr, alpha, eps,
                         weight_decay, momentum, use_buf, centered, nt)


def sum_squares(x, n_threads=None) -> float:
    """sum(x^2) in double, in fixed-size chunks added in order (thread-count independent)."""
    _float_arg("x", x)
    nt = _threads(n_threads, x.size)
    partial = np.empty(max(1, (x.size + SUM_CHUNK - 1) // SUM_CHUNK))
    if x.dtype == np.float32:
        _sum_squares[float](x.reshape(-1), partial, nt)
    else:
        _sum_squares[double](x.reshape(-1), partial, nt)
    return _sum_partials(partial)


def global_norm(arrays, n_threads=None) -> float:
    """sqrt of the sum of sum_squares(a) over `arrays`, added in the order given."""
    total = 0.0
    for a in arrays:
        total += sum_squares(a, n_threads)
    return float(np.sqrt(total))


def clip_by_global_norm(grads, max_norm: float, n_threads=None) -> float:
    """Scale every gradient in place by max_norm / (norm + 1e-6) when that is < 1.

    norm = global_norm(grads) (PyTorch's ``clip_grad_norm_``). Returns norm before clipping.
    """
    max_norm = float(max_norm)
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    grads = list(grads)
    norm = global_norm(grads, n_threads)
    factor = max_norm / (norm + 1e-6)
    if factor < 1.0:
        for g in grads:
            _scale(g, factor, g, n_threads)
    return norm


def _optim_args(param, grad, states: dict, required: tuple):
    _float_arg("param", param, out=True, ndim=(1,))
    _like("grad", grad, "param", param)
    for name in required:
        if states[name] is None:
            raise ValueError(f"{name} is required with these hyper-parameters")
        _like(name, states[name], "param", param, out=True)
    written = {"param": param, **{k: v for k, v in states.items() if v is not None}}
    for name, a in written.items():
        _no_alias(name, a, {"grad": grad, **{k: v for k, v in written.items() if k != name}})


def _non_negative(**hyper):
    for name, value in hyper.items():
        if not value >= 0:  # also rejects NaN
            raise ValueError(f"{name} must be >= 0, got {value}")


def _step(step) -> int:
    if not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an int >= 1 (the 1-based update count), got {step!r}")
    return int(step)


def _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
          bint decoupled, n_threads):
    _optim_args(param, grad, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq},
                ("exp_avg", "exp_avg_sq"))
    t = _step(step)
    _non_negative(lr=lr, eps=eps, weight_decay=weight_decay)
    if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got ({beta1}, {beta2})")
    nt = _threads(n_threads, param.size)
    step_size = lr / (1.0 - beta1 ** t)
    bc2_sqrt = (1.0 - beta2 ** t) ** 0.5
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    l2 = 0.0 if decoupled else weight_decay
    if param.dtype == np.float32:
        _adam_update[float](param, grad, exp_avg, exp_avg_sq, beta1, beta2, eps, l2, decay,
                            step_size, bc2_sqrt, nt)
    else:
        _adam_update[double](param, grad, exp_avg, exp_avg_sq, beta1, beta2, eps, l2, decay,
                             step_size, bc2_sqrt, nt)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline Py_ssize_t _n_chunks(Py_ssize_t n) noexcept nogil:
    return (n + UPDATE_CHUNK - 1) // UPDATE_CHUNK


cdef void _sgd(floating* pp, const floating* pg, floating* pb, Py_ssize_t n, double lr,
               double momentum, double dampening, double wd, bint nesterov, bint first,
               int nt) noexcept nogil:
    """sgd_step on n elements at pp, pg and (with momentum, else NULL) pb."""
    cdef Py_ssize_t c, i0
    for c in prange(_n_chunks(n), schedule="static", num_threads=nt):
        i0 = c * UPDATE_CHUNK
        _sgd_chunk(pp + i0, pg + i0, pb + i0 if pb != NULL else NULL,
                   min(UPDATE_CHUNK, n - i0), lr, momentum, 1 - dampening, wd, nesterov,
                   first)


cdef inline void _sgd_chunk(floating* p, const floating* grad, floating* buf, Py_ssize_t n,
                            floating lr, floating momentum, floating damp, floating wd,
                            bint nesterov, bint first) noexcept nogil:
    """_sgd on n elements, buf NULL without momentum; damp = 1 - dampening. One loop per
    case, each free of per-element branches, so gcc vectorises it."""
    cdef Py_ssize_t i
    cdef floating g, b
    if buf == NULL:
        for i in range(n):
            p[i] = p[i] - lr * (grad[i] + wd * p[i])
    elif first:   # buf = g, not read (PyTorch's buffer starts as a copy of the gradient)
        for i in range(n):
            g = grad[i] + wd * p[i]
            buf[i] = g
            p[i] = p[i] - lr * (g + momentum * g if nesterov else g)
    elif nesterov:
        for i in range(n):
            g = grad[i] + wd * p[i]
            b = momentum * buf[i] + damp * g
            buf[i] = b
            p[i] = p[i] - lr * (g + momentum * b)
    else:
        for i in range(n):
            b = momentum * buf[i] + damp * (grad[i] + wd * p[i])
            buf[i] = b
            p[i] = p[i] - lr * b


cdef void _adam_update(floating[::1] p, const floating[::1] grad, floating[::1] m,
                       floating[::1] v, double beta1, double beta2, double eps, double l2,
                       double decay, double step_size, double bc2_sqrt, int nt) noexcept nogil:
    cdef Py_ssize_t n = p.shape[0], c, i0
    if n == 0:
        return
    cdef floating* pp = &p[0]
    cdef const floating* pg = &grad[0]
    cdef floating* pm = &m[0]
    cdef floating* pv = &v[0]
    for c in prange(_n_chunks(n), schedule="static", num_threads=nt):
        i0 = c * UPDATE_CHUNK
        _adam_chunk(pp + i0, pg + i0, pm + i0, pv + i0, min(UPDATE_CHUNK, n - i0), beta1,
                    1 - beta1, beta2, 1 - beta2, eps, l2, decay, step_size, 1 / bc2_sqrt)


cdef inline void _adam_chunk(floating* p, const floating* grad, floating* m, floating* v,
                             Py_ssize_t n, floating beta1, floating one_b1, floating beta2,
                             floating one_b2, floating eps, floating l2, floating decay,
                             floating step_size, floating inv_bc2) noexcept nogil:
    """_adam_update on n elements, in the parameters' precision (as PyTorch's)."""
    cdef Py_ssize_t i
    cdef floating g, mi, vi
    for i in range(n):
        g = grad[i] + l2 * p[i]
        mi = beta1 * m[i] + one_b1 * g
        vi = beta2 * v[i] + one_b2 * g * g
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * mi / (_sqrt(vi) * inv_bc2 + eps)


cdef void _rmsprop(floating[::1] p, const floating[::1] grad, floating[::1] sq,
                   floating[::1] buf, floating[::1] gavg, double lr, double alpha, double eps,
                   double wd, double momentum, bint use_buf, bint centered,
                   int nt) noexcept nogil:
    cdef Py_ssize_t n = p.shape[0], c, i0
    if n == 0:
        return
    cdef floating* pp = &p[0]
    cdef const floating* pg = &grad[0]
    cdef floating* ps = &sq[0]
    cdef floating* pb = &buf[0] if use_buf else NULL
    cdef floating* pa = &gavg[0] if centered else NULL
    for c in prange(_n_chunks(n), schedule="static", num_threads=nt):
        i0 = c * UPDATE_CHUNK
        _rmsprop_chunk(pp + i0, pg + i0, ps + i0, pb + i0 if use_buf else NULL,
                       pa + i0 if centered else NULL, min(UPDATE_CHUNK, n - i0), lr, alpha,
                       1 - alpha, eps, wd, momentum)


cdef inline void _rmsprop_chunk(floating* p, const floating* grad, floating* sq,
                                floating* buf, floating* gavg, Py_ssize_t n, floating lr,
                                floating alpha, floating one_alpha, floating eps, floating wd,
                                floating momentum) noexcept nogil:
    """_rmsprop on n elements; buf NULL without momentum, gavg NULL unless centered."""
    cdef Py_ssize_t i
    cdef floating g, v, a, d
    for i in range(n):
        g = grad[i] + wd * p[i]
        v = alpha * sq[i] + one_alpha * g * g
        sq[i] = v
        if gavg != NULL:
            a = alpha * gavg[i] + one_alpha * g
            gavg[i] = a
            v = v - a * a
        d = _sqrt(v) + eps
        if buf != NULL:
            g = momentum * buf[i] + g / d
            buf[i] = g
            p[i] = p[i] - lr * g
        else:
            p[i] = p[i] - lr * g / d


cdef void _sum_squares(const floating[::1] x, double[::1] partial, int nt) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], c, i0
    for c in prange(partial.shape[0], schedule="static", num_threads=nt):
        i0 = c * SUM_CHUNK
        partial[c] = _chunk_sum_squares(&x[i0], min(n, i0 + SUM_CHUNK) - i0) if n else 0.0


cdef inline double _chunk_sum_squares(const floating* x, Py_ssize_t n) noexcept nogil:
    """sum(x[:n]^2) in double over SUM_LANES interleaved partial sums, which gcc keeps in
    vector registers (the summation order is fixed, so this vectorises without
    -ffast-math), then added pairwise in a fixed order."""
    cdef double acc[SUM_LANES]
    cdef Py_ssize_t i = 0, j, width
    for j in range(SUM_LANES):
        acc[j] = 0
    while i + SUM_LANES <= n:
        for j in range(SUM_LANES):
            acc[j] += <double>x[i + j] * x[i + j]
        i += SUM_LANES
    for j in range(n - i):
        acc[j] += <double>x[i + j] * x[i + j]
    width = SUM_LANES // 2
    while width > 0:
        for j in range(width):
            acc[j] += acc[j + width]
        width //= 2
    return acc[0]

"""Batch normalisation: forward in training and inference, and backward.

x is (N, C) or (N, C, H, W); statistics are per channel c over the m = N (or N*H*W)
values of that channel. Per-channel vectors (gamma, beta, running means and variances) are
(C,) of x's dtype; the batch statistics that training saves for the backward (mean and
invstd) are (C,) float64, so that the backward can recompute the forward's normalised
values exactly (see Backward).

Training:   mean and var = the biased variance, from one pass of shifted sums in double:
            with k = the channel's first value, s1 = sum(x - k), s2 = sum((x - k)^2),
            mean = k + s1/m, var = s2/m - (s1/m)^2 (k is within a few standard deviations
            of the mean, so the subtraction loses little, even for a large offset),
            invstd = 1 / sqrt(var + eps),  y = (x - mean) * invstd * gamma + beta,
            then y = max(y, 0) with activation="relu"; y in x's precision, from the mean
            split into two values of it (x - mean stays exact near a large mean; float32
            forward 1.3-1.6x faster than in double).
Running statistics use the Keras momentum convention (PyTorch's momentum is 1 - ours):
            running_mean = momentum * running_mean + (1 - momentum) * mean
            running_var  = momentum * running_var  + (1 - momentum) * var * m / (m - 1)
i.e. the unbiased variance feeds the running estimate (as PyTorch does) while the biased
one normalises. Defaults: momentum 0.99, eps 1e-3 (Keras); PyTorch's BatchNorm2d
(momentum=0.1, eps=1e-5) is momentum=0.9, eps=1e-5 here.
Inference:  y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
Backward, with xhat = (x - mean) * invstd (saved mean and invstd, not recomputed), and dy
set to 0 where the forward's relu output was 0, when it had one:
            dbeta = sum(dy),  dgamma = sum(dy * xhat),
            dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m).
Relu's gate comes from x, not from the forward's output: the backward normalises x again,
with the constants the forward derived from the same saved statistics and gamma and beta
and by the same arithmetic (_affine, _affine_small), so it zeroes exactly the values the
forward's relu zeroed, and reads one tensor fewer, twice (ResNet-20's relu batchnorms in
its training step, on two threads: 1.2x at 32x32, 1.35x at 16x16).

Passes over memory: training forward and backward make two each, one for the sums and one
to write y (dx), both over the rows (n, c) of H*W values in memory order, which the
hardware prefetchers stream; each row's sums go to the workspace, and each channel's total
is its rows' sums added in image order. A channel-by-channel order measured slower, and
its second pass does not hit the cache either: the rows of a block of channels lie C*H*W
apart, a power of two in the usual networks, so they fall into a few L2 sets. With a fused
relu the backward's first pass writes the gated dy into dx, a GATE_CHUNK piece at a time
(summed while in L1), and the second pass reads it from there. Planes of at most 16
values (SMALL_PLANE) instead go by blocks of whole channels, SPAN values an image:
per-element partial sums run down the images in L1, then add across the plane, and the
second pass writes the block the same way; rows of a few values cost more to set up than
to process (3-5x slower at 2x2 and 4x4).

Threads: each pass over rows gives each thread one contiguous range of them, the same
part of memory (the same images, for N >= threads) the conv kernels before and after give
that thread, so the data a thread reads is mostly data it wrote. Split by channels, half
of every pass read what the other core had written: ResNet-20's training step on two
threads lost 2-4% to it where the two vCPUs shared an L3, 1.2x where they did not. The
channels' totals and constants are split by channel between the passes. Each sum has a
fixed order (per row: LANES interleaved partial sums added pairwise, per GATE_CHUNK piece
in backward; then the rows in image order; for small planes, each position down n, then
the positions in order), so every result is bitwise identical for any thread count.
"""
from cython.parallel cimport parallel, prange

include "elementwise_common.pxi"

cdef extern from "work_share.h" nogil:
    ctypedef struct cnnc_queue:
        pass
    void cnnc_queue_init(cnnc_queue* q, long long items, int threads)
    long long cnnc_queue_take(cnnc_queue* q, int tid)

cdef enum:
    BLOCKS_PER_THREAD = 8  # row (or small-plane channel) blocks of a pass per thread, taken
                           # through the work queue (work_share.h): a slowed core's last
                           # blocks go to the other threads
    LANES = 16     # interleaved partial sums of a row: vectorisable without reassociation
    GATE_CHUNK = 256   # elements of a row gated by relu and summed at a time: small
                       # enough that the streams advance together
    SPAN = 512     # small planes: elements of a block of whole channels (per image)
    SMALL_PLANE = 16  # the largest planes that take the small-plane paths (measured with cold
                      # caches, as in a network: 8x8 planes run faster as rows); one bound
                      # for forward and backward, whose relu gates must agree


def batchnorm_forward_train(x, gamma, beta, y, save_mean, save_invstd, running_mean,
                            running_var, momentum: float = 0.99, eps: float = 1e-3,
                            n_threads=None, activation: str = "none", workspace=None,
                            bind: bool = False):
    """Normalise with the batch statistics (then relu, if asked); save the statistics for
    backward; update the running ones. With bind=True, checks the arguments and returns a
    callable that runs the kernel on them, unchecked (a plan binds each op once).

    Parameters
    ----------
    x : (N, C) or (N, C, H, W) float32/float64 with N*H*W >= 2, IN
    gamma, beta : (C,), IN
    y : like x, OUT; may be x (in-place), but backward needs x, so only when x is not kept
    save_mean, save_invstd : (C,) float64, OUT: the batch mean and 1/sqrt(var + eps)
    running_mean, running_var : (C,), IN/OUT (updated in place), or both None
    momentum : in [0, 1], Keras convention (see the module docstring)
    eps : > 0
    activation : "none", or "relu" (y = max(normalised, 0))
    workspace : 1-D float64 of at least batchnorm_workspace_size(x.shape) elements, or
        None (one is made)
    """
    _float_arg("x", x, ndim=(2, 3, 4))
    vec = (x.shape[1],)
    _like("gamma", gamma, "x", x, shape=vec)
    _like("beta", beta, "x", x, shape=vec)
    _like("y", y, "x", x, out=True)
    _saved("save_mean", save_mean, x, out=True)
    _saved("save_invstd", save_invstd, x, out=True)
    if (running_mean is None) != (running_var is None):
        raise ValueError("pass both running_mean and running_var, or neither")
    track = running_mean is not None
    if track:
        _like("running_mean", running_mean, "x", x, out=True, shape=vec)
        _like("running_var", running_var, "x", x, out=True, shape=vec)
    args = {"x": x, "gamma": gamma, "beta": beta, "y": y, "save_mean": save_mean,
            "save_invstd": save_invstd, "running_mean": running_mean,
            "running_var": running_var}
    for name in ("y", "save_mean", "save_invstd", "running_mean", "running_var"):
        if args[name] is not None:
            _no_alias(name, args[name], {k: v for k, v in args.items() if k != name},
                      inplace=("x",) if name == "y" else ())
    momentum, eps = float(momentum), _eps(eps)
    if activation not in ("none", "relu"):
        raise ValueError(f"activation must be 'none' or 'relu', got {activation!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    m = x.size // x.shape[1] if x.shape[1] else 0
    if x.shape[1] and m < 2:
        raise ValueError(f"batchnorm training needs at least 2 values per channel (N*H*W), "
                         f"got {m}: the batch variance is undefined")
    call = _TrainCall()
    call.arrays = (_nck(x), gamma, beta, _nck(y), save_mean, save_invstd, running_mean,
                   running_var, *_work(workspace, x, args))
    call.dbl, call.empty = x.dtype == np.float64, x.size == 0
    call.track, call.relu, call.momentum, call.eps = track, activation == "relu", momentum, eps
    call.nt = _threads(n_threads, x.size)
    if bind:
        return call
    call()


cdef class _TrainCall:
    """batchnorm_forward_train on checked arrays (see bind)."""
    cdef tuple arrays
    cdef bint dbl, empty, track, relu
    cdef double momentum, eps
    cdef int nt

    def __call__(self) -> None:
        if self.empty:
            return
        x, gamma, beta, y, mean, invstd, rmean, rvar, work, part = self.arrays
        if self.dbl:
            _train[double](x, gamma, beta, y, mean, invstd, rmean, rvar, self.track,
                           self.momentum, self.eps, self.relu, work, part, self.nt)
        else:
            _train[float](x, gamma, beta, y, mean, invstd, rmean, rvar, self.track,
                          self.momentum, self.eps, self.relu, work, part, self.nt)


def batchnorm_forward_infer(x, gamma, beta, running_mean, running_var, y, eps: float = 1e-3,
                            n_threads=None) -> None:
    """y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.

    x : (N, C) or (N, C, H, W), IN; gamma, beta, running_mean, running_var : (C,), IN;
    y : like x, OUT, may be x (in-place).
    """
    _float_arg("x", x, ndim=(2, 3, 4))
    vec = (x.shape[1],)
    inputs = {"x": x, "gamma": gamma, "beta": beta, "running_mean": running_mean,
              "running_var": running_var}
    for name in ("gamma", "beta", "running_mean", "running_var"):
        _like(name, inputs[name], "x", x, shape=vec)
    _like("y", y, "x", x, out=True)
    _no_alias("y", y, inputs, inplace=("x",))
    eps = _eps(eps)
    nt = _threads(n_threads, x.size)
    if x.size == 0:
        return
    mul = gamma / np.sqrt(running_var.astype(np.float64) + eps)
    if x.dtype == np.float32:
        _infer[float](_nck(x), beta, running_mean, mul, _nck(y), nt)
    else:
        _infer[double](_nck(x), beta, running_mean, mul, _nck(y), nt)


def batchnorm_backward(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta,
                       n_threads=None, activation: str = "none", beta=None, workspace=None,
                       bind: bool = False):
    """dx, dgamma, dbeta of training-mode batchnorm (formulas in the module docstring).
    With bind=True, returns a callable that runs it again, unchecked (as the forward's).

    x, dy : (N, C) or (N, C, H, W), IN; gamma : (C,), IN; save_mean, save_invstd : (C,)
    float64, IN (as saved by batchnorm_forward_train); dx : like x, OUT, may be dy
    (in-place); dgamma, dbeta : (C,), OUT (overwritten, not accumulated);
    activation : "none", or "relu" when the forward had it: dy is then the gradient of its
    output, taken as 0 where that output was 0 (found from x, gamma and beta);
    beta : (C,), IN, the forward's (None: zeros); read only with activation="relu".
    workspace : as batchnorm_forward_train's.
    """
    _float_arg("x", x, ndim=(2, 3, 4))
    vec = (x.shape[1],)
    _like("dy", dy, "x", x)
    _like("gamma", gamma, "x", x, shape=vec)
    _saved("save_mean", save_mean, x)
    _saved("save_invstd", save_invstd, x)
    if activation not in ("none", "relu"):
        raise ValueError(f"activation must be 'none' or 'relu', got {activation!r}")
    relu = activation == "relu"
    if relu and beta is None:
        beta = np.zeros(vec, x.dtype)
    if relu:
        _like("beta", beta, "x", x, shape=vec)
    _like("dx", dx, "x", x, out=True)
    _like("dgamma", dgamma, "x", x, out=True, shape=vec)
    _like("dbeta", dbeta, "x", x, out=True, shape=vec)
    args = {"x": x, "dy": dy, "gamma": gamma, "save_mean": save_mean,
            "save_invstd": save_invstd, "dx": dx, "dgamma": dgamma, "dbeta": dbeta,
            "beta": beta if relu else None}
    for name in ("dx", "dgamma", "dbeta"):
        _no_alias(name, args[name], {k: v for k, v in args.items() if k != name},
                  inplace=("dy",) if name == "dx" else ())
    call = _BackwardCall()
    call.arrays = (_nck(x), _nck(dy), gamma, beta if relu else None, save_mean, save_invstd,
                   _nck(dx), dgamma, dbeta, *_work(workspace, x, args))
    call.dbl, call.empty, call.relu = x.dtype == np.float64, x.size == 0, relu
    call.nt = _threads(n_threads, x.size)
    if bind:
        return call
    call()


cdef class _BackwardCall:
    """batchnorm_backward on checked arrays (see bind)."""
    cdef tuple arrays
    cdef bint dbl, empty, relu
    cdef int nt

    def __call__(self) -> None:
        x, dy, gamma, beta, mean, invstd, dx, dgamma, dbeta, work, part = self.arrays
        if self.empty:
            dgamma.fill(0)
            dbeta.fill(0)
        elif self.dbl:
            _backward[double](x, dy, gamma, beta, mean, invstd, dx, dgamma, dbeta, self.relu,
                              work, part, self.nt)
        else:
            _backward[float](x, dy, gamma, beta, mean, invstd, dx, dgamma, dbeta, self.relu,
                             work, part, self.nt)


def batchnorm_workspace_size(x_shape) -> int:
    """float64 elements of the workspace of batchnorm_forward_train and batchnorm_backward
    for x of shape x_shape: four constants per channel and two sums per (image, channel)."""
    n, c = int(x_shape[0]), int(x_shape[1])
    return 4 * c + 2 * n * c


def _work(workspace, x, args):
    """The workspace's two parts, (4, C) and (N*C, 2): checked, or made when None."""
    need = batchnorm_workspace_size(x.shape)
    if workspace is None:
        workspace = np.empty(need)
    else:
        _float_arg("workspace", workspace, out=True, ndim=(1,))
        if workspace.dtype != np.float64 or workspace.shape[0] < need:
            raise ValueError(f"workspace is {workspace.dtype}[{workspace.shape[0]}]; need "
                             f"float64[{need}] (see batchnorm_workspace_size)")
        _no_alias("workspace", workspace, args)
    c = x.shape[1]
    return workspace[:4 * c].reshape(4, c), workspace[4 * c:need].reshape(-1, 2)


def _saved(name: str, a, x, out: bool = False) -> None:
    """Check `a` is a saved batch statistic for x: (C,) float64, C-contiguous."""
    _float_arg(name, a, out)
    if a.dtype != np.float64 or a.shape != (x.shape[1],):
        raise ValueError(f"{name} must be float64 of shape ({x.shape[1]},) (a saved batch "
                         f"statistic), got {a.dtype} of shape {a.shape}")


def _eps(eps) -> float:
    eps = float(eps)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return eps


cdef inline double _lanes_total(double* a) noexcept nogil:
    """a[0] + ... + a[LANES-1], added pairwise (a fixed order); overwrites a."""
    cdef Py_ssize_t w = LANES // 2, j
    while w:
        for j in range(w):
            a[j] += a[j + w]
        w //= 2
    return a[0]


cdef inline void _shifted_sums(const floating* x, double k, Py_ssize_t n, double* s1,
                               double* s2) noexcept nogil:
    """s1 += sum(x[i] - k) and s2 += sum((x[i] - k)^2) over i < n, in double."""
    cdef double a[LANES]
    cdef double b[LANES]
    cdef double d
    cdef Py_ssize_t i, j, body = n - n % LANES
    if body:
        for j in range(LANES):
            a[j] = 0
            b[j] = 0
        i = 0
        while i < body:
            for j in range(LANES):
                d = x[i + j] - k
                a[j] += d
                b[j] += d * d
            i += LANES
        s1[0] += _lanes_total(a)
        s2[0] += _lanes_total(b)
    for i in range(body, n):
        d = x[i] - k
        s1[0] += d
        s2[0] += d * d


cdef inline void _gate(const floating* dy, const floating* x, floating* g, Py_ssize_t n,
                       const double* k) noexcept nogil:
    """The gradient reaching the normalisation from a fused relu: dy where the forward's
    normalised value of x (by _affine, from k = shift, mul, add as the forward had them)
    is > 0, else 0, written to g[0:n] (g may be dy). The select has a loop of its own:
    inside the double-precision loops below the compiler would not vectorise it."""
    cdef Py_ssize_t i
    cdef floating d, hi, lo, m, a
    _row_consts(k[0], k[1], k[2], &hi, &lo, &m, &a)
    for i in range(n):
        d = dy[i]
        g[i] = d if _affine(x[i], hi, lo, m, a) > 0 else 0


cdef inline void _grad_sums(const floating* g, const floating* x, double mean, Py_ssize_t n,
                            double* sdy, double* sdyx) noexcept nogil:
    """sdy += sum(g) and sdyx += sum(g * (x - mean)) over i < n, in double."""
    cdef double a[LANES]
    cdef double b[LANES]
    cdef double v[LANES]
    cdef Py_ssize_t i, j, body = n - n % LANES
    if body:
        for j in range(LANES):
            a[j] = 0
            b[j] = 0
        i = 0
        while i < body:  # three loops: as one, gcc vectorised only b's sums
            for j in range(LANES):
                v[j] = g[i + j]
            for j in range(LANES):
                a[j] += v[j]
            for j in range(LANES):
                b[j] += v[j] * (x[i + j] - mean)
            i += LANES
        sdy[0] += _lanes_total(a)
        sdyx[0] += _lanes_total(b)
    for i in range(body, n):
        sdy[0] += g[i]
        sdyx[0] += g[i] * (x[i] - mean)


cdef inline void _grad_sums_row(const floating* dy, const floating* x, floating* g,
                                double mean, Py_ssize_t n, double* sdy, double* sdyx,
                                const double* gate) noexcept nogil:
    """_grad_sums of one row's gradient: dy, or (gate not NULL) relu's (see _gate), which is
    written to g (the row of dx) first; GATE_CHUNK elements at a time either way, so both
    add in one order."""
    cdef Py_ssize_t i = 0, k
    while i < n:
        k = min(<Py_ssize_t>GATE_CHUNK, n - i)
        if gate != NULL:
            _gate(dy + i, x + i, g + i, k, gate)
        _grad_sums(dy + i if gate == NULL else g + i, x + i, mean, k, sdy, sdyx)
        i += k


cdef inline void _normalise_row(const floating* x, floating* y, Py_ssize_t n, double shift,
                                double mul, double add, bint relu) noexcept nogil:
    """y[i] = (x[i] - shift) * mul + add for i < n (then max(y, 0) if relu); y may be x.
    In x's precision, the shift split in two (see _centred)."""
    cdef Py_ssize_t i
    cdef floating v, hi, lo, m, a
    _row_consts(shift, mul, add, &hi, &lo, &m, &a)
    if relu:
        for i in range(n):
            v = _affine(x[i], hi, lo, m, a)
            y[i] = v if v > 0 else 0
    else:
        for i in range(n):
            y[i] = _affine(x[i], hi, lo, m, a)


cdef inline void _row_consts(double shift, double mul, double add, floating* hi, floating* lo,
                             floating* m, floating* a) noexcept nogil:
    """The row path's constants in x's precision: the shift split in two (see _centred)."""
    hi[0] = <floating>shift
    lo[0] = <floating>(shift - hi[0])
    m[0] = <floating>mul
    a[0] = <floating>add


cdef inline floating _affine(floating x, floating hi, floating lo, floating m,
                             floating a) noexcept nogil:
    """The row path's normalised value (x - shift) * mul + add: the forward's output and,
    from the same constants, the backward's relu gate."""
    return _centred(x, hi, lo) * m + a


cdef inline floating _affine_small(floating x, double shift, double mul,
                                   double add) noexcept nogil:
    """The small-plane paths' normalised value: in double, rounded once (forward's output
    and backward's relu gate)."""
    return <floating>((x - shift) * mul + add)


cdef inline floating _centred(floating x, floating hi, floating lo) noexcept nogil:
    """x - (hi + lo), hi + lo the mean to twice x's precision: x - hi is exact for x within
    a factor 2 of hi (Sterbenz), so a value near a large mean loses nothing to the
    cancellation, and the per-element passes run in x's precision (float32: 16 lanes a
    vector, no conversions; 1.5-2x faster than in double)."""
    return (x - hi) - lo


cdef inline void _grad_x(const floating* g, const floating* x, floating* dx, Py_ssize_t n,
                         double mean, double k1, double k2, double k3) noexcept nogil:
    """dx[i] = k1 * g[i] - k2 - (x[i] - mean) * k3 for i < n, in double; dx may be g."""
    cdef Py_ssize_t i
    for i in range(n):
        dx[i] = <floating>(k1 * g[i] - k2 - (x[i] - mean) * k3)


cdef void _train(const floating[:, :, ::1] x, const floating[::1] gamma,
                 const floating[::1] beta, floating[:, :, ::1] y, double[::1] save_mean,
                 double[::1] save_invstd, floating[::1] running_mean,
                 floating[::1] running_var, bint track, double momentum, double eps,
                 bint relu, double[:, ::1] work, double[:, ::1] part, int nt) noexcept nogil:
    """The forward: small planes by channel ranges; rows by the passes in the module
    docstring, in one parallel region (a barrier between passes)."""
    cdef Py_ssize_t C = x.shape[1], R = x.shape[0] * x.shape[1], t, k = 0
    cdef Py_ssize_t blocks = min(R, nt * BLOCKS_PER_THREAD), cb = min(C, nt * BLOCKS_PER_THREAD)
    cdef cnnc_queue first, second
    if x.shape[2] <= SMALL_PLANE:
        cnnc_queue_init(&first, cb, nt)
        for t in prange(nt, schedule="static", num_threads=nt):
            k = cnnc_queue_take(&first, t)
            while k >= 0:
                _train_small(x, gamma, beta, y, save_mean, save_invstd, running_mean,
                             running_var, track, momentum, eps, relu, work, k * C // cb,
                             (k + 1) * C // cb)
                k = cnnc_queue_take(&first, t)
        return
    cnnc_queue_init(&first, blocks, nt)
    cnnc_queue_init(&second, blocks, nt)
    with parallel(num_threads=nt):
        for t in prange(nt, schedule="static"):
            k = cnnc_queue_take(&first, t)
            while k >= 0:
                _row_sums(x, part, k * R // blocks, (k + 1) * R // blocks)
                k = cnnc_queue_take(&first, t)
        for t in prange(nt, schedule="static"):
            _train_stats(x, gamma, save_mean, save_invstd, running_mean, running_var, track,
                         momentum, eps, work, part, t * C // nt, (t + 1) * C // nt)
        for t in prange(nt, schedule="static"):
            k = cnnc_queue_take(&second, t)
            while k >= 0:
                _train_rows(x, beta, y, relu, work, k * R // blocks, (k + 1) * R // blocks)
                k = cnnc_queue_take(&second, t)


cdef void _row_sums(const floating[:, :, ::1] x, double[:, ::1] part, Py_ssize_t r0,
                    Py_ssize_t r1) noexcept nogil:
    """part[r] = the shifted sums of row r = (n, c) (shift: the channel's first value)."""
    cdef Py_ssize_t r, S = x.shape[2], C = x.shape[1], c = r0 % C
    cdef const floating* row = &x[0, 0, 0] + r0 * S
    for r in range(r0, r1):
        part[r, 0] = 0
        part[r, 1] = 0
        _shifted_sums(row, x[0, c, 0], S, &part[r, 0], &part[r, 1])
        row += S
        c = _next_channel(c, C)


cdef void _train_stats(const floating[:, :, ::1] x, const floating[::1] gamma,
                       double[::1] save_mean, double[::1] save_invstd,
                       floating[::1] running_mean, floating[::1] running_var, bint track,
                       double momentum, double eps, double[:, ::1] work,
                       const double[:, ::1] part, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Channels [c0, c1): their rows' sums added in image order, then the statistics."""
    cdef Py_ssize_t n, c, C = x.shape[1]
    cdef double m = x.shape[0] * x.shape[2]
    for c in range(c0, c1):
        work[0, c] = 0
        work[1, c] = 0
        work[2, c] = x[0, c, 0]
        for n in range(x.shape[0]):
            work[0, c] += part[n * C + c, 0]
            work[1, c] += part[n * C + c, 1]
        _stats(save_mean, save_invstd, running_mean, running_var, track, gamma, momentum, eps,
               m, work, c)


cdef void _train_rows(const floating[:, :, ::1] x, const floating[::1] beta,
                      floating[:, :, ::1] y, bint relu, const double[:, ::1] work,
                      Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """y's rows [r0, r1)."""
    cdef Py_ssize_t r, S = x.shape[2], C = x.shape[1], c = r0 % C
    cdef const floating* row = &x[0, 0, 0] + r0 * S
    cdef floating* out = &y[0, 0, 0] + r0 * S
    for r in range(r0, r1):
        _normalise_row(row, out, S, work[2, c], work[3, c], beta[c], relu)
        row += S
        out += S
        c = _next_channel(c, C)


cdef inline Py_ssize_t _next_channel(Py_ssize_t c, Py_ssize_t C) noexcept nogil:
    """The channel of the row after one of channel c (rows go in memory order; cheaper
    than a division per row)."""
    return 0 if c + 1 == C else c + 1


cdef inline void _stats(double[::1] save_mean, double[::1] save_invstd,
                        floating[::1] running_mean, floating[::1] running_var, bint track,
                        const floating[::1] gamma, double momentum, double eps, double m,
                        double[:, ::1] work, Py_ssize_t c) noexcept nogil:
    """Channel c's statistics from work[0:3, c] = s1, s2, the shift k: work[2, c] becomes
    the mean, work[3, c] gamma * invstd; saves them and updates the running ones."""
    cdef double d = work[0, c] / m  # mean - k
    cdef double var = max(work[1, c] / m - d * d, 0.0)
    cdef double invstd = 1 / sqrt(var + eps)
    work[2, c] += d
    work[3, c] = gamma[c] * invstd
    save_mean[c] = work[2, c]
    save_invstd[c] = invstd
    if track:
        running_mean[c] = <floating>(momentum * running_mean[c] + (1 - momentum) * work[2, c])
        running_var[c] = <floating>(momentum * running_var[c]
                                    + (1 - momentum) * var * m / (m - 1))


cdef inline void _spread(double* e, const double[:, ::1] work, Py_ssize_t row, Py_ssize_t c0,
                         Py_ssize_t c1, Py_ssize_t S) noexcept nogil:
    """e[(c - c0) * S + s] = work[row, c] for c0 <= c < c1, s < S: per-channel values laid
    out like a block of channels, so the loops over a block are plain vector loops."""
    cdef Py_ssize_t c, s
    for c in range(c0, c1):
        for s in range(S):
            e[(c - c0) * S + s] = work[row, c]


cdef inline void _fold(double* total, const double* a, Py_ssize_t c0, Py_ssize_t c1,
                       Py_ssize_t S) noexcept nogil:
    """total[c] = a[(c - c0) * S] + ... + a[(c - c0) * S + S - 1], in that order."""
    cdef Py_ssize_t c, s
    cdef double t
    for c in range(c0, c1):
        t = 0
        for s in range(S):
            t += a[(c - c0) * S + s]
        total[c] = t


cdef void _train_small(const floating[:, :, ::1] x, const floating[::1] gamma,
                       const floating[::1] beta, floating[:, :, ::1] y,
                       double[::1] save_mean, double[::1] save_invstd,
                       floating[::1] running_mean, floating[::1] running_var, bint track,
                       double momentum, double eps, bint relu, double[:, ::1] work,
                       Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Channels [c0, c1) of planes of at most SPAN values: the sums, the statistics and y,
    a block of whole channels at a time (at most SPAN values per image). Rows of a few
    values cost more to set up than to process, so the sums run down the images, one
    accumulator per element of the block (then added across the plane), and the block's
    second pass finds it in L2."""
    cdef double a[SPAN]
    cdef double b[SPAN]
    cdef double e[SPAN]
    cdef Py_ssize_t n, i, L, c, cb, ce, S = x.shape[2], step = SPAN // x.shape[2]
    cdef double m = x.shape[0] * S, v
    cdef const floating* p
    cdef floating* q
    cdef floating r
    cb = c0
    while cb < c1:
        ce = min(cb + step, c1)
        L = (ce - cb) * S
        for c in range(cb, ce):
            work[2, c] = x[0, c, 0]
        _spread(e, work, 2, cb, ce, S)
        for i in range(L):
            a[i] = 0
            b[i] = 0
        for n in range(x.shape[0]):
            p = &x[n, cb, 0]
            for i in range(L):
                v = p[i] - e[i]
                a[i] += v
                b[i] += v * v
        _fold(&work[0, 0], a, cb, ce, S)
        _fold(&work[1, 0], b, cb, ce, S)
        for c in range(cb, ce):
            _stats(save_mean, save_invstd, running_mean, running_var, track, gamma, momentum,
                   eps, m, work, c)
            work[0, c] = beta[c]
        _spread(a, work, 2, cb, ce, S)
        _spread(b, work, 3, cb, ce, S)
        _spread(e, work, 0, cb, ce, S)
        for n in range(x.shape[0]):
            p = &x[n, cb, 0]
            q = &y[n, cb, 0]
            if relu:
                for i in range(L):
                    r = _affine_small(p[i], a[i], b[i], e[i])
                    q[i] = r if r > 0 else 0
            else:
                for i in range(L):
                    q[i] = _affine_small(p[i], a[i], b[i], e[i])
        cb = ce


cdef void _infer(const floating[:, :, ::1] x, const floating[::1] beta,
                 const floating[::1] shift, const double[::1] mul, floating[:, :, ::1] y,
                 int nt) noexcept nogil:
    """y = (x - shift) * mul + beta per channel, over (n, c) rows in parallel."""
    cdef Py_ssize_t C = x.shape[1], r, n, c
    for r in prange(x.shape[0] * C, schedule="static", num_threads=nt):
        n = r // C
        c = r % C
        _normalise_row(&x[n, c, 0], &y[n, c, 0], x.shape[2], shift[c], mul[c], beta[c], False)


cdef void _backward(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                    const floating[::1] gamma, const floating[::1] beta,
                    const double[::1] mean, const double[::1] invstd,
                    floating[:, :, ::1] dx, floating[::1] dgamma, floating[::1] dbeta,
                    bint relu, double[:, ::1] work, double[:, ::1] part, int nt) noexcept nogil:
    """The backward, as the forward goes (_train)."""
    cdef Py_ssize_t C = x.shape[1], R = x.shape[0] * x.shape[1], t, k = 0
    cdef Py_ssize_t blocks = min(R, nt * BLOCKS_PER_THREAD), cb = min(C, nt * BLOCKS_PER_THREAD)
    cdef cnnc_queue first, second
    if x.shape[2] <= SMALL_PLANE:
        cnnc_queue_init(&first, cb, nt)
        for t in prange(nt, schedule="static", num_threads=nt):
            k = cnnc_queue_take(&first, t)
            while k >= 0:
                _backward_small(x, dy, gamma, beta, mean, invstd, dx, dgamma, dbeta, relu,
                                work, k * C // cb, (k + 1) * C // cb)
                k = cnnc_queue_take(&first, t)
        return
    cnnc_queue_init(&first, blocks, nt)
    cnnc_queue_init(&second, blocks, nt)
    with parallel(num_threads=nt):
        for t in prange(nt, schedule="static"):
            k = cnnc_queue_take(&first, t)
            while k >= 0:
                _grad_row_sums(x, dy, gamma, beta, mean, invstd, dx, relu, part,
                               k * R // blocks, (k + 1) * R // blocks)
                k = cnnc_queue_take(&first, t)
        for t in prange(nt, schedule="static"):
            _grad_stats(gamma, mean, invstd, dgamma, dbeta, x.shape[0], x.shape[2], work,
                        part, t * C // nt, (t + 1) * C // nt)
        for t in prange(nt, schedule="static"):
            k = cnnc_queue_take(&second, t)
            while k >= 0:
                _grad_rows(x, dy, dx, relu, mean, work, k * R // blocks, (k + 1) * R // blocks)
                k = cnnc_queue_take(&second, t)


cdef void _grad_row_sums(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                         const floating[::1] gamma, const floating[::1] beta,
                         const double[::1] mean, const double[::1] invstd,
                         floating[:, :, ::1] dx, bint relu, double[:, ::1] part,
                         Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """part[r] = sum(g) and sum(g * (x - mean)) over row r = (n, c); g = dy, or with relu
    its gradient (see _gate), which is written to dx for the last pass."""
    cdef Py_ssize_t r, S = x.shape[2], C = x.shape[1], c = r0 % C, off = r0 * S
    cdef double gate[3]  # the forward's shift, mul, add for channel c
    for r in range(r0, r1):
        part[r, 0] = 0
        part[r, 1] = 0
        _gate_consts(gamma, beta, mean, invstd, c, gate)
        _grad_sums_row(&dy[0, 0, 0] + off, &x[0, 0, 0] + off, &dx[0, 0, 0] + off, mean[c], S,
                       &part[r, 0], &part[r, 1], gate if relu else NULL)
        off += S
        c = _next_channel(c, C)


cdef void _grad_stats(const floating[::1] gamma, const double[::1] mean,
                      const double[::1] invstd, floating[::1] dgamma, floating[::1] dbeta,
                      Py_ssize_t N, Py_ssize_t S, double[:, ::1] work,
                      const double[:, ::1] part, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Channels [c0, c1): their rows' sums added in image order, then dgamma, dbeta and
    the constants of dx."""
    cdef Py_ssize_t n, c, C = gamma.shape[0]
    for c in range(c0, c1):
        work[0, c] = 0
        work[1, c] = 0
        for n in range(N):
            work[0, c] += part[n * C + c, 0]
            work[1, c] += part[n * C + c, 1]
        _grad_consts(gamma, mean, invstd, dgamma, dbeta, N * S, work, c)


cdef void _grad_rows(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                     floating[:, :, ::1] dx, bint relu, const double[::1] mean,
                     const double[:, ::1] work, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """dx's rows [r0, r1) (g read from dx with relu, else from dy)."""
    cdef Py_ssize_t r, S = x.shape[2], C = x.shape[1], c = r0 % C, off = r0 * S
    cdef const floating* g = &dx[0, 0, 0] if relu else &dy[0, 0, 0]
    for r in range(r0, r1):
        _grad_x(g + off, &x[0, 0, 0] + off, &dx[0, 0, 0] + off, S, mean[c], work[2, c],
                work[0, c], work[1, c])
        off += S
        c = _next_channel(c, C)


cdef inline void _gate_consts(const floating[::1] gamma, const floating[::1] beta,
                              const double[::1] mean, const double[::1] invstd, Py_ssize_t c,
                              double* k) noexcept nogil:
    """k = channel c's shift, mul and add as the forward computed them (see _stats): the
    saved float64 mean and gamma * invstd, and beta (not read without relu)."""
    k[0] = mean[c]
    k[1] = <double>gamma[c] * invstd[c]
    k[2] = beta[c] if beta is not None else 0


cdef inline void _grad_consts(const floating[::1] gamma, const double[::1] mean,
                              const double[::1] invstd, floating[::1] dgamma,
                              floating[::1] dbeta, double m, double[:, ::1] work,
                              Py_ssize_t c) noexcept nogil:
    """dbeta[c], dgamma[c] from the sums work[0:2, c] = sum(g), sum(g * (x - mean)); then
    work[0:4, c] = k2, k3, k1, mean for dx = k1*g - k2 - (x - mean)*k3, with
    k1 = gamma*invstd, k2 = k1*sum(g)/m, k3 = k1*invstd^2*sum(g*(x - mean))/m."""
    cdef double k1 = <double>gamma[c] * invstd[c]
    dbeta[c] = <floating>work[0, c]
    dgamma[c] = <floating>(work[1, c] * invstd[c])
    work[0, c] = k1 * work[0, c] / m
    work[1, c] = k1 * invstd[c] * invstd[c] * work[1, c] / m
    work[2, c] = k1
    work[3, c] = mean[c]


cdef inline void _gate_small(const floating* dy, const floating* x, floating* g,
                             Py_ssize_t n, const double* shift, const double* mul,
                             const double* add) noexcept nogil:
    """_gate for a block of small planes: the forward's values by _affine_small, from
    per-element constants."""
    cdef Py_ssize_t i
    cdef floating d
    for i in range(n):
        d = dy[i]
        g[i] = d if _affine_small(x[i], shift[i], mul[i], add[i]) > 0 else 0


cdef void _backward_small(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                          const floating[::1] gamma, const floating[::1] beta,
                          const double[::1] mean, const double[::1] invstd,
                          floating[:, :, ::1] dx, floating[::1] dgamma, floating[::1] dbeta,
                          bint relu, double[:, ::1] work, Py_ssize_t c0,
                          Py_ssize_t c1) noexcept nogil:
    """Channels [c0, c1) of planes of at most SPAN values: the sums, dgamma, dbeta and dx,
    by blocks of whole channels as in _train_small (relu's gradient goes through dx)."""
    cdef double a[SPAN]
    cdef double b[SPAN]
    cdef double e[SPAN]
    cdef double f[SPAN]
    cdef double gm[SPAN]
    cdef double ga[SPAN]
    cdef double k[3]
    cdef Py_ssize_t n, i, L, c, cb, ce, S = x.shape[2], step = SPAN // x.shape[2]
    cdef double m = x.shape[0] * S, v
    cdef const floating* p
    cdef const floating* g
    cdef floating* q
    cb = c0
    while cb < c1:
        ce = min(cb + step, c1)
        L = (ce - cb) * S
        for c in range(cb, ce):
            work[3, c] = mean[c]
            if relu:
                _gate_consts(gamma, beta, mean, invstd, c, k)
                for i in range(S):
                    gm[(c - cb) * S + i] = k[1]
                    ga[(c - cb) * S + i] = k[2]
        _spread(e, work, 3, cb, ce, S)
        for i in range(L):
            a[i] = 0
            b[i] = 0
        for n in range(x.shape[0]):
            p = &x[n, cb, 0]
            g = &dx[n, cb, 0] if relu else &dy[n, cb, 0]
            if relu:
                _gate_small(&dy[n, cb, 0], p, &dx[n, cb, 0], L, e, gm, ga)
            for i in range(L):
                v = g[i]
                a[i] += v
                b[i] += v * (p[i] - e[i])
        _fold(&work[0, 0], a, cb, ce, S)
        _fold(&work[1, 0], b, cb, ce, S)
        for c in range(cb, ce):
            _grad_consts(gamma, mean, invstd, dgamma, dbeta, m, work, c)
        _spread(a, work, 2, cb, ce, S)
        _spread(b, work, 0, cb, ce, S)
        _spread(f, work, 1, cb, ce, S)
        for n in range(x.shape[0]):
            p = &x[n, cb, 0]
            q = &dx[n, cb, 0]
            g = q if relu else &dy[n, cb, 0]
            for i in range(L):
                q[i] = <floating>(a[i] * g[i] - b[i] - (p[i] - e[i]) * f[i])
        cb = ce

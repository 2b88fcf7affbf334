"""Softmax and the losses: softmax cross-entropy (sparse labels or dense targets), sigmoid
binary cross-entropy from logits, binary cross-entropy on probabilities, mean squared error.

Softmax and cross-entropy work over axis 1 of (N, K) or (N, K, H, W) scores (K classes; a
segmentation output has a class vector per pixel). Each loss returns the *mean* as a Python
float: over the N (or N*H*W) positions for the cross-entropies, over all elements for BCE
and MSE, as Keras and PyTorch define them by default. When a gradient array is passed the
loss also writes d(mean loss)/d(input) into it; the gradient may be the very same array as
the logits / predictions (in-place), never the targets.

Stability: log-softmax is computed as (z - max) - log(sum exp(z - max)) and each term
(max - z_k) >= 0 is added separately, so large logits (1e4) neither overflow nor cancel;
sigmoid BCE uses max(z, 0) - z*t + log1p(exp(-|z|)). Sums are in double.

Threads: positions (elements for BCE/MSE) are cut into fixed chunks; one thread computes a
chunk's partial sum and the partials are added in chunk order, so the loss is bitwise the
same for any thread count; gradients are elementwise.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t

cimport numpy as cnp

include "elementwise_common.pxi"

cnp.import_array()

cdef enum:
    POS_CHUNK = 64  # positions per partial sum for the cross-entropies

cdef enum Loss:
    BCE_LOGITS, BCE_PROBS, MSE


# ---------------------------------------------------------------------------------------
# softmax


def softmax_forward(x, y, n_threads=None, bind: bool = False):
    """y = softmax of x over axis 1: exp(x_k - max) / sum_j exp(x_j - max).

    x : (N, K) or (N, K, H, W) float32/float64, IN; y : like x, OUT, may be x (in-place).
    bind : instead of running, return a callable that runs it again on these arrays,
        unchecked (a plan binds each op once).
    """
    _float_arg("x", x, ndim=(2, 3, 4))
    _like("y", y, "x", x, out=True)
    _no_alias("y", y, {"x": x}, inplace=("x",))
    return _softmax_call(x, None, y, _threads(n_threads, x.size), bind)


def softmax_backward(y, dy, dx, n_threads=None, bind: bool = False):
    """dx_k = y_k * (dy_k - sum_j dy_j * y_j) over axis 1 (y: the forward output).

    y, dy : (N, K) or (N, K, H, W), IN; dx : like y, OUT, may be dy (in-place).
    bind : as softmax_forward's.
    """
    _float_arg("y", y, ndim=(2, 3, 4))
    _like("dy", dy, "y", y)
    _like("dx", dx, "y", y, out=True)
    _no_alias("dx", dx, {"y": y, "dy": dy}, inplace=("dy",))
    return _softmax_call(y, dy, dx, _threads(n_threads, y.size), bind)


def _softmax_call(a, b, out, int nt, bint bind):
    """Run (or bind) the softmax forward (b None) or backward on checked arrays."""
    cdef _SoftmaxCall call = _SoftmaxCall()
    call.keep = (a, b, out)
    call.pa = cnp.PyArray_DATA(a)
    call.pb = NULL if b is None else cnp.PyArray_DATA(b)
    call.pout = cnp.PyArray_DATA(out)
    call.n, call.k = a.shape[0], a.shape[1]
    call.s = a.size // max(1, call.n * call.k)
    call.dbl, call.nt = a.dtype == np.float64, nt
    if bind:
        return call
    call()


cdef class _SoftmaxCall:
    """softmax_forward / softmax_backward on checked arrays, held in `keep`."""
    cdef tuple keep
    cdef void* pa
    cdef void* pb
    cdef void* pout
    cdef Py_ssize_t n, k, s
    cdef bint dbl
    cdef int nt

    def __call__(self) -> None:
        if self.n * self.k * self.s == 0:
            return
        with nogil:
            if self.pb == NULL and self.dbl:
                _softmax_fwd[double](<const double*> self.pa, <double*> self.pout, self.n,
                                     self.k, self.s, self.nt)
            elif self.pb == NULL:
                _softmax_fwd[float](<const float*> self.pa, <float*> self.pout, self.n,
                                    self.k, self.s, self.nt)
            elif self.dbl:
                _softmax_bwd[double](<const double*> self.pa, <const double*> self.pb,
                                     <double*> self.pout, self.n, self.k, self.s, self.nt)
            else:
                _softmax_bwd[float](<const float*> self.pa, <const float*> self.pb,
                                    <float*> self.pout, self.n, self.k, self.s, self.nt)


cdef double _class_max(const floating* z, Py_ssize_t K, Py_ssize_t S) noexcept nogil:
    """The largest of z[k * S], k < K (a position's class scores, S apart)."""
    cdef Py_ssize_t k
    cdef double m = z[0]
    for k in range(1, K):
        if z[k * S] > m:
            m = z[k * S]
    return m


cdef double _log_sum_exp(const floating* z, Py_ssize_t K, Py_ssize_t S,
                         double m) noexcept nogil:
    """log(sum_k exp(z[k * S] - m)) for m the class max (so logsumexp = m + result)."""
    cdef Py_ssize_t k
    cdef double total = 0
    for k in range(K):
        total += exp(z[k * S] - m)
    return log(total)


cdef void _softmax_fwd(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t K,
                       Py_ssize_t S, int nt) noexcept nogil:
    """Over positions p = (n, s) of x viewed as (N, K, S): element k at (n*K + k)*S + s."""
    cdef Py_ssize_t p, n, s, k, base
    cdef double m, logsum
    for p in prange(N * S, schedule="static", num_threads=nt):
        n = p // S
        s = p % S
        base = n * K * S + s
        m = _class_max(x + base, K, S)
        logsum = _log_sum_exp(x + base, K, S, m)
        for k in range(K):
            y[base + k * S] = <floating>exp(x[base + k * S] - m - logsum)


cdef void _softmax_bwd(const floating* y, const floating* dy, floating* dx, Py_ssize_t N,
                       Py_ssize_t K, Py_ssize_t S, int nt) noexcept nogil:
    cdef Py_ssize_t p, n, s, k, base
    cdef double dot
    for p in prange(N * S, schedule="static", num_threads=nt):
        n = p // S
        s = p % S
        base = n * K * S + s
        dot = 0
        for k in range(K):
            dot = dot + <double>dy[base + k * S] * y[base + k * S]
        for k in range(K):
            dx[base + k * S] = <floating>(y[base + k * S] * (dy[base + k * S] - dot))


# ---------------------------------------------------------------------------------------
# softmax cross-entropy


def softmax_xent_sparse(logits, labels, dlogits=None, label_smoothing: float = 0.0,
                        ignore_index=None, n_threads=None) -> float:
    """Mean softmax cross-entropy against integer class labels (fused log-softmax + NLL).

    With smoothing e the target of a position with label y is t_k = (1-e)[k == y] + e/K, and
    loss = sum_k t_k * (logsumexp(z) - z_k), averaged over the positions whose label is not
    ``ignore_index`` (0.0, with a zero gradient, if there are none). PyTorch's
    ``cross_entropy(z, y, label_smoothing=e, ignore_index=i)``.

    Parameters
    ----------
    logits : (N, K) or (N, K, H, W) float32/float64, IN
    labels : (N,) or (N, H, W) int64 in [0, K) or equal to ignore_index, IN
    dlogits : like logits or None, OUT: (softmax(z) - t) / count (0 at ignored positions);
        may be logits itself (in-place)
    label_smoothing : e in [0, 1]
    ignore_index : an int label that contributes nothing, or None
    n_threads : None for cnnc.get_num_threads()

    Returns the mean loss (float).
    """
    _float_arg("logits", logits, ndim=(2, 3, 4))
    _labels_arg("labels", labels, (logits.shape[0], *logits.shape[2:]))
    eps = _smoothing(label_smoothing)
    _check_grad("dlogits", dlogits, logits, {"labels": labels})
    nt = _threads(n_threads, logits.size)
    has_ignore = ignore_index is not None
    ignore = int(ignore_index) if has_ignore else 0
    lab = labels.reshape(labels.shape[0], -1)
    cdef Py_ssize_t bad = 0, count = 0
    _count_labels(lab, logits.shape[1], has_ignore, ignore, &bad, &count)
    if bad:
        raise ValueError(f"softmax_xent_sparse: {bad} labels lie outside [0, {logits.shape[1]})"
                         + (f" and are not ignore_index={ignore}" if has_ignore else ""))
    if count == 0:
        if dlogits is not None:
            dlogits.fill(0)
        return 0.0
    partial = np.empty(_n_chunks(labels.size, POS_CHUNK))
    z, dz = _nck(logits), None if dlogits is None else _nck(dlogits)
    if logits.dtype == np.float32:
        _xent_sparse[float](z, lab, dz, eps, has_ignore, ignore, 1.0 / count, partial, nt)
    else:
        _xent_sparse[double](z, lab, dz, eps, has_ignore, ignore, 1.0 / count, partial, nt)
    return _sum_partials(partial) / count


def softmax_xent_dense(logits, targets, dlogits=None, label_smoothing: float = 0.0,
                       n_threads=None) -> float:
    """Mean softmax cross-entropy against one-hot or probability targets over axis 1.

    t'_k = (1-e) t_k + e/K; loss = sum_k t'_k * (logsumexp(z) - z_k), averaged over the N
    (or N*H*W) positions. The gradient is (softmax(z) * sum_k t'_k - t') / count, which is
    softmax(z) - t' for targets that sum to 1. PyTorch's ``cross_entropy`` with probability
    targets; Keras ``categorical_crossentropy(from_logits=True)``.

    logits : (N, K) or (N, K, H, W), IN; targets : like logits, IN;
    dlogits : like logits or None, OUT, may be logits (in-place). Returns the mean loss.
    """
    _float_arg("logits", logits, ndim=(2, 3, 4))
    _like("targets", targets, "logits", logits)
    eps = _smoothing(label_smoothing)
    _check_grad("dlogits", dlogits, logits, {"targets": targets})
    nt = _threads(n_threads, logits.size)
    count = logits.size // logits.shape[1] if logits.shape[1] else 0  # N * H * W
    if count == 0:
        if dlogits is not None:
            dlogits.fill(0)
        return 0.0
    partial = np.empty(_n_chunks(count, POS_CHUNK))
    z, t, dz = _nck(logits), _nck(targets), None if dlogits is None else _nck(dlogits)
    if logits.dtype == np.float32:
        _xent_dense[float](z, t, dz, eps, 1.0 / count, partial, nt)
    else:
        _xent_dense[double](z, t, dz, eps, 1.0 / count, partial, nt)
    return _sum_partials(partial) / count


def _smoothing(e) -> float:
    e = float(e)
    if not 0.0 <= e <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {e}")
    return e


def _check_grad(name, grad, ref, others):
    if grad is None:
        return
    _like(name, grad, "logits", ref, out=True)
    _no_alias(name, grad, {"logits": ref, **others}, inplace=("logits",))


def _n_chunks(n, chunk):
    return max(1, (n + chunk - 1) // chunk)


cdef void _count_labels(const int64_t[:, ::1] lab, Py_ssize_t K, bint has_ignore,
                        int64_t ignore, Py_ssize_t* bad, Py_ssize_t* count) noexcept nogil:
    cdef Py_ssize_t n, s
    cdef int64_t y
    for n in range(lab.shape[0]):
        for s in range(lab.shape[1]):
            y = lab[n, s]
            if has_ignore and y == ignore:
                continue
            if y < 0 or y >= K:
                bad[0] += 1
            else:
                count[0] += 1


cdef void _xent_sparse(const floating[:, :, ::1] z, const int64_t[:, ::1] lab,
                       floating[:, :, ::1] dz, double eps, bint has_ignore, int64_t ignore,
                       double inv, double[::1] partial, int nt) noexcept nogil:
    cdef Py_ssize_t S = z.shape[2], total = z.shape[0] * S, c
    for c in prange(partial.shape[0], schedule="static", num_threads=nt):
        partial[c] = _xent_sparse_chunk(z, lab, dz, eps, has_ignore, ignore, inv,
                                        c * POS_CHUNK, min(total, (c + 1) * POS_CHUNK))


cdef double _xent_sparse_chunk(const floating[:, :, ::1] z, const int64_t[:, ::1] lab,
                               floating[:, :, ::1] dz, double eps, bint has_ignore,
                               int64_t ignore, double inv, Py_ssize_t p0,
                               Py_ssize_t p1) noexcept nogil:
    cdef Py_ssize_t K = z.shape[1], S = z.shape[2], p, n, s, k, y
    cdef double m, logsum, spread, loss = 0, off = eps / K
    for p in range(p0, p1):
        n = p // S
        s = p % S
        y = lab[n, s]
        if has_ignore and y == ignore:
            if dz is not None:
                for k in range(K):
                    dz[n, k, s] = 0
            continue
        m = _class_max(&z[n, 0, s], K, S)
        logsum = _log_sum_exp(&z[n, 0, s], K, S, m)
        # lse - z_k = (m - z_k) + logsum, both terms >= 0: no cancellation
        spread = 0
        for k in range(K):
            spread += m - z[n, k, s]
        loss += (1 - eps) * ((m - z[n, y, s]) + logsum) + off * (spread + K * logsum)
        if dz is not None:  # reads z[n, k, s] before writing dz[n, k, s]: in-place is safe
            for k in range(K):
                dz[n, k, s] = <floating>((exp(z[n, k, s] - m - logsum) - off
                                          - (1 - eps) * (k == y)) * inv)
    return loss


cdef void _xent_dense(const floating[:, :, ::1] z, const floating[:, :, ::1] t,
                      floating[:, :, ::1] dz, double eps, double inv, double[::1] partial,
                      int nt) noexcept nogil:
    cdef Py_ssize_t total = z.shape[0] * z.shape[2], c
    for c in prange(partial.shape[0], schedule="static", num_threads=nt):
        partial[c] = _xent_dense_chunk(z, t, dz, eps, inv, c * POS_CHUNK,
                                       min(total, (c + 1) * POS_CHUNK))


cdef double _xent_dense_chunk(const floating[:, :, ::1] z, const floating[:, :, ::1] t,
                              floating[:, :, ::1] dz, double eps, double inv, Py_ssize_t p0,
                              Py_ssize_t p1) noexcept nogil:
    cdef Py_ssize_t K = z.shape[1], S = z.shape[2], p, n, s, k
    cdef double m, logsum, tk, tsum, loss = 0, off = eps / K
    for p in range(p0, p1):
        n = p // S
        s = p % S
        m = _class_max(&z[n, 0, s], K, S)
        logsum = _log_sum_exp(&z[n, 0, s], K, S, m)
        tsum = 0
        for k in range(K):
            tk = (1 - eps) * t[n, k, s] + off
            tsum += tk
            loss += tk * ((m - z[n, k, s]) + logsum)
        if dz is not None:
            for k in range(K):
                tk = (1 - eps) * t[n, k, s] + off
                dz[n, k, s] = <floating>((exp(z[n, k, s] - m - logsum) * tsum - tk) * inv)
    return loss


# ---------------------------------------------------------------------------------------
# binary cross-entropy and mean squared error (elementwise, averaged over all elements)


def sigmoid_bce_logits(logits, targets, dlogits=None, n_threads=None) -> float:
    """Mean binary cross-entropy of sigmoid(z) against targets t, from the logits z.

    loss_i = max(z, 0) - z*t + log1p(exp(-|z|)) (= -t log s - (1-t) log(1-s), s = sigmoid(z),
    without overflow for any |z|); gradient (sigmoid(z) - t) / count. PyTorch's
    ``binary_cross_entropy_with_logits``; Keras ``binary_crossentropy(from_logits=True)``.

    logits : any shape, float32/float64, IN; targets : like logits (values in [0, 1]), IN;
    dlogits : like logits or None, OUT, may be logits (in-place). Returns the mean loss.
    """
    return _elementwise_loss(logits, targets, dlogits, BCE_LOGITS, 0.0, n_threads)


def bce_probs(probs, targets, dprobs=None, eps: float = 1e-7, n_threads=None) -> float:
    """Mean binary cross-entropy on probabilities (the output of a sigmoid layer).

    p' = clip(p, eps, 1-eps); loss_i = -(t log p' + (1-t) log(1-p')); gradient
    (p' - t) / (p' (1-p')) / count where eps < p < 1-eps and 0 where the clip is active.
    Keras ``binary_crossentropy`` (epsilon 1e-7); computed in double.

    probs, targets : same shape, IN; dprobs : like probs or None, OUT, may be probs.
    """
    eps = float(eps)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"bce_probs eps must lie in [0, 0.5), got {eps}")
    return _elementwise_loss(probs, targets, dprobs, BCE_PROBS, eps, n_threads)


def mse(pred, target, dpred=None, n_threads=None) -> float:
    """Mean squared error mean((pred - target)^2); gradient 2 (pred - target) / count.

    pred, target : same shape, IN; dpred : like pred or None, OUT, may be pred.
    """
    return _elementwise_loss(pred, target, dpred, MSE, 0.0, n_threads)


def _elementwise_loss(x, t, dx, int kind, double eps, n_threads):
    _float_arg("prediction", x)
    _like("target", t, "prediction", x)
    if dx is not None:
        _like("gradient", dx, "prediction", x, out=True)
        _no_alias("gradient", dx, {"prediction": x, "target": t}, inplace=("prediction",))
    nt = _threads(n_threads, x.size)
    if x.size == 0:
        return 0.0
    partial = np.empty(_n_chunks(x.size, SUM_CHUNK))
    dflat = None if dx is None else dx.reshape(-1)
    if x.dtype == np.float32:
        _ew_loss[float](x.reshape(-1), t.reshape(-1), dflat, kind, eps, partial, nt)
    else:
        _ew_loss[double](x.reshape(-1), t.reshape(-1), dflat, kind, eps, partial, nt)
    return _sum_partials(partial) / x.size


cdef void _ew_loss(const floating[::1] x, const floating[::1] t, floating[::1] dx, int kind,
                   double eps, double[::1] partial, int nt) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], c
    for c in prange(partial.shape[0], schedule="static", num_threads=nt):
        partial[c] = _ew_loss_chunk(x, t, dx, kind, eps, 1.0 / n, c * SUM_CHUNK,
                                    min(n, (c + 1) * SUM_CHUNK))


cdef double _ew_loss_chunk(const floating[::1] x, const floating[::1] t, floating[::1] dx,
                           int kind, double eps, double inv, Py_ssize_t i0,
                           Py_ssize_t i1) noexcept nogil:
    cdef Py_ssize_t i
    cdef double v, tv, g, loss = 0
    for i in range(i0, i1):
        v = x[i]
        tv = t[i]
        if kind == BCE_LOGITS:
            loss += max(v, 0.0) - v * tv + log1p(exp(-abs(v)))
            g = _sigmoid(v) - tv
        elif kind == BCE_PROBS:
            g = min(max(v, eps), 1 - eps)
            loss -= tv * log(g) + (1 - tv) * log(1 - g)
            g = (g - tv) / (g * (1 - g)) if eps < v < 1 - eps else 0.0
        else:
            g = v - tv
            loss += g * g
            g = 2 * g
        if dx is not None:
            dx[i] = <floating>(g * inv)
    return loss

"""Batch normalisation: forward in training and inference, and backward.

x is (N, C) or (N, C, H, W); statistics are per channel c over the m = N (or N*H*W)
values of that channel. Per-channel vectors (gamma, beta, means, variances) are (C,) of
x's dtype.

Training:   mean = sum(x) / m,  var = sum((x - mean)^2) / m  (two passes, in double),
            invstd = 1 / sqrt(var + eps),  y = (x - mean) * invstd * gamma + beta.
Running statistics use the Keras momentum convention (PyTorch's momentum is 1 - ours):
            running_mean = momentum * running_mean + (1 - momentum) * mean
            running_var  = momentum * running_var  + (1 - momentum) * var * m / (m - 1)
i.e. the unbiased variance feeds the running estimate (as PyTorch does) while the biased
one normalises. Defaults: momentum 0.99, eps 1e-3 (Keras); PyTorch's BatchNorm2d
(momentum=0.1, eps=1e-5) is momentum=0.9, eps=1e-5 here.
Inference:  y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
Backward, with xhat = (x - mean) * invstd (saved mean and invstd, not recomputed):
            dbeta = sum(dy),  dgamma = sum(dy * xhat),
            dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m).

Threads: per-channel sums have one owner and a fixed order (n, then positions with four
interleaved partial sums); the elementwise passes are split over (n, c) rows. Results are
bitwise identical for any thread count.
"""
from cython.parallel cimport prange

include "elementwise_common.pxi"

cdef enum:
    BN_BLOCK = 64  # channels per task when the spatial size is small (dense layers)


def batchnorm_forward_train(x, gamma, beta, y, save_mean, save_invstd, running_mean,
                            running_var, momentum: float = 0.99, eps: float = 1e-3,
                            n_threads=None) -> None:
    """Normalise with the batch statistics; save them for backward; update running stats.

    Parameters
    ----------
    x : (N, C) or (N, C, H, W) float32/float64 with N*H*W >= 2, IN
    gamma, beta : (C,), IN
    y : like x, OUT; may be x (in-place), but backward needs x, so only when x is not kept
    save_mean, save_invstd : (C,), OUT: the batch mean and 1/sqrt(var + eps)
    running_mean, running_var : (C,), IN/OUT (updated in place), or both None
    momentum : in [0, 1], Keras convention (see the module docstring)
    eps : > 0
    """
    _float_arg("x", x, ndim=(2, 3, 4))
    vec = (x.shape[1],)
    _like("gamma", gamma, "x", x, shape=vec)
    _like("beta", beta, "x", x, shape=vec)
    _like("y", y, "x", x, out=True)
    _like("save_mean", save_mean, "x", x, out=True, shape=vec)
    _like("save_invstd", save_invstd, "x", x, out=True, shape=vec)
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
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    m = x.size // x.shape[1] if x.shape[1] else 0
    if x.shape[1] and m < 2:
        raise ValueError(f"batchnorm training needs at least 2 values per channel (N*H*W), "
                         f"got {m}: the batch variance is undefined")
    nt = _threads(n_threads, x.size)
    if x.size == 0:
        return
    mean, var, mul = np.empty(x.shape[1]), np.empty(x.shape[1]), np.empty(x.shape[1])
    if x.dtype == np.float32:
        _train[float](_nck(x), gamma, beta, _nck(y), save_mean, save_invstd, running_mean,
                      running_var, track, momentum, eps, mean, var, mul, nt)
    else:
        _train[double](_nck(x), gamma, beta, _nck(y), save_mean, save_invstd, running_mean,
                       running_var, track, momentum, eps, mean, var, mul, nt)


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
    shift, mul, add = np.empty(x.shape[1]), np.empty(x.shape[1]), np.empty(x.shape[1])
    if x.dtype == np.float32:
        _infer[float](_nck(x), gamma, beta, running_mean, running_var, _nck(y), eps,
                      shift, mul, add, nt)
    else:
        _infer[double](_nck(x), gamma, beta, running_mean, running_var, _nck(y), eps,
                       shift, mul, add, nt)


def batchnorm_backward(x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta,
                       n_threads=None) -> None:
    """dx, dgamma, dbeta of training-mode batchnorm (formulas in the module docstring).

    x, dy : (N, C) or (N, C, H, W), IN; gamma, save_mean, save_invstd : (C,), IN (as saved by
    batchnorm_forward_train); dx : like x, OUT, may be dy (in-place); dgamma, dbeta : (C,),
    OUT (overwritten, not accumulated).
    """
    _float_arg("x", x, ndim=(2, 3, 4))
    vec = (x.shape[1],)
    _like("dy", dy, "x", x)
    for name, a in (("gamma", gamma), ("save_mean", save_mean), ("save_invstd", save_invstd)):
        _like(name, a, "x", x, shape=vec)
    _like("dx", dx, "x", x, out=True)
    _like("dgamma", dgamma, "x", x, out=True, shape=vec)
    _like("dbeta", dbeta, "x", x, out=True, shape=vec)
    args = {"x": x, "dy": dy, "gamma": gamma, "save_mean": save_mean,
            "save_invstd": save_invstd, "dx": dx, "dgamma": dgamma, "dbeta": dbeta}
    for name in ("dx", "dgamma", "dbeta"):
        _no_alias(name, args[name], {k: v for k, v in args.items() if k != name},
                  inplace=("dy",) if name == "dx" else ())
    nt = _threads(n_threads, x.size)
    if x.size == 0:
        dgamma.fill(0)
        dbeta.fill(0)
        return
    sdy, sdyx = np.empty(x.shape[1]), np.empty(x.shape[1])
    if x.dtype == np.float32:
        _backward[float](_nck(x), _nck(dy), gamma, save_mean, save_invstd, _nck(dx), dgamma,
                         dbeta, sdy, sdyx, nt)
    else:
        _backward[double](_nck(x), _nck(dy), gamma, save_mean, save_invstd, _nck(dx), dgamma,
                          dbeta, sdy, sdyx, nt)


def _eps(eps) -> float:
    eps = float(eps)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return eps


cdef inline Py_ssize_t _block(Py_ssize_t spatial) noexcept nogil:
    return BN_BLOCK if spatial < 64 else 1


cdef void _moments_block(const floating[:, :, ::1] x, double[::1] mean, double[::1] var,
                         Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Mean and biased variance of channels [c0, c1): two passes, each sum in double."""
    cdef double acc[BN_BLOCK]
    cdef Py_ssize_t n, c, S = x.shape[2]
    cdef double m = x.shape[0] * S
    for c in range(c0, c1):
        acc[c - c0] = 0
    for n in range(x.shape[0]):
        for c in range(c0, c1):
            acc[c - c0] += _row_sum(&x[n, c, 0], S)
    for c in range(c0, c1):
        mean[c] = acc[c - c0] / m
        acc[c - c0] = 0
    for n in range(x.shape[0]):
        for c in range(c0, c1):
            acc[c - c0] += _row_dot_centred(&x[n, c, 0], mean[c], &x[n, c, 0], mean[c], S)
    for c in range(c0, c1):
        var[c] = acc[c - c0] / m


cdef void _grad_sums_block(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                           const floating[::1] mean, double[::1] sdy, double[::1] sdyx,
                           Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """sum(dy) and sum(dy * (x - mean)) of channels [c0, c1)."""
    cdef double acc[BN_BLOCK]
    cdef double acc2[BN_BLOCK]
    cdef Py_ssize_t n, c, S = x.shape[2]
    for c in range(c0, c1):
        acc[c - c0] = 0
        acc2[c - c0] = 0
    for n in range(x.shape[0]):
        for c in range(c0, c1):
            acc[c - c0] += _row_sum(&dy[n, c, 0], S)
            acc2[c - c0] += _row_dot_centred(&dy[n, c, 0], 0.0, &x[n, c, 0], mean[c], S)
    for c in range(c0, c1):
        sdy[c] = acc[c - c0]
        sdyx[c] = acc2[c - c0]


cdef void _affine(const floating[:, :, ::1] x, const double[::1] shift, const double[::1] mul,
                  const floating[::1] add, floating[:, :, ::1] y, int nt) noexcept nogil:
    """y[n, c, s] = (x[n, c, s] - shift[c]) * mul[c] + add[c]."""
    cdef Py_ssize_t C = x.shape[1], r, n, c, s
    for r in prange(x.shape[0] * C, schedule="static", num_threads=nt):
        n = r // C
        c = r % C
        for s in range(x.shape[2]):
            y[n, c, s] = <floating>((x[n, c, s] - shift[c]) * mul[c] + add[c])


cdef void _train(const floating[:, :, ::1] x, const floating[::1] gamma,
                 const floating[::1] beta, floating[:, :, ::1] y, floating[::1] save_mean,
                 floating[::1] save_invstd, floating[::1] running_mean,
                 floating[::1] running_var, bint track, double momentum, double eps,
                 double[::1] mean, double[::1] var, double[::1] mul, int nt) noexcept nogil:
    cdef Py_ssize_t C = x.shape[1], block = _block(x.shape[2]), i, c
    cdef double m = x.shape[0] * x.shape[2], invstd
    for i in prange((C + block - 1) // block, schedule="static", num_threads=nt):
        _moments_block(x, mean, var, i * block, min(C, (i + 1) * block))
    for c in range(C):
        invstd = 1 / sqrt(var[c] + eps)
        save_mean[c] = <floating>mean[c]
        save_invstd[c] = <floating>invstd
        mul[c] = gamma[c] * invstd
        if track:
            running_mean[c] = <floating>(momentum * running_mean[c] + (1 - momentum) * mean[c])
            running_var[c] = <floating>(momentum * running_var[c]
                                        + (1 - momentum) * var[c] * m / (m - 1))
    _affine(x, mean, mul, beta, y, nt)


cdef void _infer(const floating[:, :, ::1] x, const floating[::1] gamma,
                 const floating[::1] beta, const floating[::1] running_mean,
                 const floating[::1] running_var, floating[:, :, ::1] y, double eps,
                 double[::1] shift, double[::1] mul, double[::1] add, int nt) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(x.shape[1]):
        shift[c] = running_mean[c]
        mul[c] = gamma[c] / sqrt(<double>running_var[c] + eps)
    _affine(x, shift, mul, beta, y, nt)


cdef void _backward(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                    const floating[::1] gamma, const floating[::1] mean,
                    const floating[::1] invstd, floating[:, :, ::1] dx, floating[::1] dgamma,
                    floating[::1] dbeta, double[::1] sdy, double[::1] sdyx,
                    int nt) noexcept nogil:
    cdef Py_ssize_t C = x.shape[1], block = _block(x.shape[2]), i, r, n, c, s
    cdef double m = x.shape[0] * x.shape[2], k1, k2, k3
    for i in prange((C + block - 1) // block, schedule="static", num_threads=nt):
        _grad_sums_block(x, dy, mean, sdy, sdyx, i * block, min(C, (i + 1) * block))
    for c in range(C):
        dbeta[c] = <floating>sdy[c]
        dgamma[c] = <floating>(sdyx[c] * invstd[c])
    # dx = k1*dy - k2 - (x - mean)*k3 with k1 = gamma*invstd, k2 = k1*sum(dy)/m,
    # k3 = k1*invstd^2*sum(dy*(x - mean))/m; sdy, sdyx now hold k2, k3
    for c in range(C):
        k1 = <double>gamma[c] * invstd[c]
        sdy[c] = k1 * sdy[c] / m
        sdyx[c] = k1 * invstd[c] * invstd[c] * sdyx[c] / m
    for r in prange(x.shape[0] * C, schedule="static", num_threads=nt):
        n = r // C
        c = r % C
        k1 = <double>gamma[c] * invstd[c]
        k2 = sdy[c]
        k3 = sdyx[c]
        for s in range(x.shape[2]):
            dx[n, c, s] = <floating>(k1 * dy[n, c, s] - k2 - (x[n, c, s] - mean[c]) * k3)

"""cnnc._kernels.batchnorm against numpy (float64), finite differences and (optionally) torch."""
import numpy as np
import pytest

from cnnc._kernels import batchnorm as B
from kernel_checks import numeric_grad

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-11, atol=1e-12)}
SHAPES = [(2, 1), (3, 7), (65, 17), (2, 3, 1, 1), (1, 5, 3, 7), (4, 31, 2, 3), (2, 2, 9, 13),
          (127, 3), (2, 3, 37, 41),  # the last: rows longer than the kernel's chunks
          # planes of at most 16 values go by blocks of whole channels (512 values an
          # image): several blocks, the last one partial
          (2, 1031), (3, 131, 3, 3), (5, 67, 4, 4), (7, 45, 2, 2), (2, 9, 1, 17)]


def rand(rng, shape, dtype, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


def axes(x):
    return (0,) + tuple(range(2, x.ndim))


def per_channel(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def make(rng, shape, dtype):
    c = shape[1]
    # an offset mean and a spread scale test the two-pass variance
    x = rand(rng, shape, dtype, 3.0, 5.0)
    return x, rand(rng, c, dtype), rand(rng, c, dtype), rand(rng, c, dtype), \
        rng.uniform(0.5, 2, c).astype(dtype)


def stats(gamma):
    """Empty saved statistics (mean, invstd) for gamma's channels: float64 always."""
    return np.empty(gamma.shape), np.empty(gamma.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_train_matches_numpy(shape, dtype):
    rng = np.random.default_rng(1)
    x, gamma, beta, rm, rv = make(rng, shape, dtype)
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    y, (mean, invstd) = np.empty_like(x), stats(gamma)
    B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm, rv, momentum=0.9, eps=1e-3)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(axes(x)), x64.var(axes(x))
    m = x.size // x.shape[1]
    want = (x64 - per_channel(mu, x)) / np.sqrt(per_channel(var, x) + 1e-3)
    want = want * per_channel(gamma, x) + per_channel(beta, x)
    np.testing.assert_allclose(y, want, **TOL[dtype])
    np.testing.assert_allclose(mean, mu, **TOL[dtype])
    np.testing.assert_allclose(invstd, 1 / np.sqrt(var + 1e-3), **TOL[dtype])
    np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mu, **TOL[dtype])
    np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var * m / (m - 1), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_infer_matches_numpy(shape, dtype):
    rng = np.random.default_rng(2)
    x, gamma, beta, rm, rv = make(rng, shape, dtype)
    y = np.empty_like(x)
    B.batchnorm_forward_infer(x, gamma, beta, rm, rv, y, eps=1e-5)
    want = (x.astype(np.float64) - per_channel(rm, x)) / np.sqrt(per_channel(rv, x) + 1e-5)
    np.testing.assert_allclose(y, want * per_channel(gamma, x) + per_channel(beta, x),
                               **TOL[dtype])
    B.batchnorm_forward_infer(x, gamma, beta, rm, rv, x, eps=1e-5)  # in-place
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_numpy(shape, dtype):
    rng = np.random.default_rng(3)
    x, gamma, beta, _, _ = make(rng, shape, dtype)
    dy = rand(rng, shape, dtype)
    y, (mean, invstd) = np.empty_like(x), stats(gamma)
    B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, None, None)
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    B.batchnorm_backward(x, dy, gamma, mean, invstd, dx, dgamma, dbeta)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    xhat = (x64 - per_channel(mean, x)) * per_channel(invstd, x)
    m = x.size // x.shape[1]
    want_db, want_dg = dy64.sum(axes(x)), (dy64 * xhat).sum(axes(x))
    want_dx = per_channel(gamma * invstd, x) / m * (
        m * dy64 - per_channel(want_db, x) - xhat * per_channel(want_dg, x))
    scale = np.abs(dy64).sum(axes(x)).max()  # sums: compare relative to their magnitude
    np.testing.assert_allclose(dbeta, want_db, rtol=TOL[dtype]["rtol"],
                               atol=TOL[dtype]["atol"] * scale)
    np.testing.assert_allclose(dgamma, want_dg, rtol=TOL[dtype]["rtol"],
                               atol=TOL[dtype]["atol"] * scale)
    np.testing.assert_allclose(dx, want_dx, **TOL[dtype])
    B.batchnorm_backward(x, dy, gamma, mean, invstd, dy, dgamma, dbeta)  # dx in place of dy
    np.testing.assert_array_equal(dy, dx)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3), (2, 2, 5, 4)])  # small planes, rows
def test_backward_finite_differences(shape):
    rng = np.random.default_rng(4)
    x, gamma, beta, _, _ = make(rng, shape, np.float64)
    c = rand(rng, shape, np.float64)
    y, (mean, invstd) = np.empty_like(x), stats(gamma)

    def loss():
        B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, None, None, eps=1e-3)
        return float((c * y).sum())

    loss()
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    B.batchnorm_backward(x, c, gamma, mean, invstd, dx, dgamma, dbeta)
    tol = dict(rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dx.ravel(), numeric_grad(loss, x, range(x.size)), **tol)
    np.testing.assert_allclose(dgamma, numeric_grad(loss, gamma, range(shape[1])), **tol)
    np.testing.assert_allclose(dbeta, numeric_grad(loss, beta, range(shape[1])), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(65, 17), (4, 31, 2, 3), (2, 3, 37, 41), (3, 70, 3, 3)])
def test_fused_relu_is_relu_of_the_output_and_masks_the_gradient(shape, dtype):
    rng = np.random.default_rng(8)
    x, gamma, beta, rm, rv = make(rng, shape, dtype)
    dy = rand(rng, shape, dtype)
    y, (mean, invstd) = np.empty_like(x), stats(gamma)
    B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm.copy(), rv.copy())
    r = np.empty_like(x)
    rm1, rv1 = rm.copy(), rv.copy()
    B.batchnorm_forward_train(x, gamma, beta, r, mean, invstd, rm1, rv1, activation="relu")
    np.testing.assert_array_equal(r, np.maximum(y, 0))  # bitwise: same arithmetic
    dx = assert_relu_gate_is_the_forwards(x, dy, r, gamma, beta, mean, invstd)
    dg, db = np.empty_like(gamma), np.empty_like(gamma)
    B.batchnorm_backward(x, dy, gamma, mean, invstd, dy, dg, db, activation="relu",
                         beta=beta)  # dx in place of dy
    np.testing.assert_array_equal(dy, dx)


def assert_relu_gate_is_the_forwards(x, dy, y, gamma, beta, mean, invstd):
    """The fused relu's backward gives bitwise what the plain backward gives on dy zeroed
    where the forward's output y is 0; returns that dx."""
    dx, dg, db = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    B.batchnorm_backward(x, np.where(y > 0, dy, 0), gamma, mean, invstd, dx, dg, db)
    fdx, fdg, fdb = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    B.batchnorm_backward(x, dy, gamma, mean, invstd, fdx, fdg, fdb, activation="relu",
                         beta=beta)
    for got, want in ((fdx, dx), (fdg, dg), (fdb, db)):
        np.testing.assert_array_equal(got, want)
    return dx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(64, 5, 9, 11), (256, 6, 3, 3), (40, 3, 1, 1)])
def test_fused_relu_gate_agrees_with_the_forward_at_the_kink(shape, dtype):
    """The backward finds relu's zeros from x: with beta set so that whole classes of
    values land on the kink (x takes a few values; an offset mean), it must still zero
    exactly where the forward's output is 0, for rows and small planes alike."""
    rng = np.random.default_rng(11)
    x = (rng.integers(-3, 4, shape) * 0.25 + 1e3).astype(dtype)
    gamma = rng.uniform(0.5, 2, shape[1]).astype(dtype)
    y, (mean, invstd) = np.empty_like(x), stats(gamma)
    B.batchnorm_forward_train(x, gamma, np.zeros_like(gamma), y, mean, invstd, None, None)
    # beta = minus the normalised value of x's second-lowest class: those land on 0 +- ulps
    beta = -((1e3 - 0.5 - mean) * invstd * gamma).astype(dtype)
    B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, None, None, activation="relu")
    kink = x == np.asarray(1e3 - 0.5, dtype)
    assert kink.any() and (np.abs(y[kink]) < 1e-5).all()  # 0, or a rounding error above it
    assert_relu_gate_is_the_forwards(x, rand(rng, shape, dtype), y, gamma, beta, mean, invstd)


@pytest.mark.parametrize("shape", [(3, 4, 2, 3), (2, 3, 5, 4)])  # a small plane, rows
def test_fused_relu_backward_finite_differences(shape):
    rng = np.random.default_rng(9)
    x, gamma, beta, _, _ = make(rng, shape, np.float64)
    c = rand(rng, x.shape, np.float64)
    y, (mean, invstd) = np.empty_like(x), stats(gamma)

    def loss():
        B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, None, None,
                                  activation="relu")
        return float((c * y).sum())

    loss()
    pre = (x - per_channel(mean, x)) * per_channel(invstd * gamma, x) + per_channel(beta, x)
    assert np.abs(pre).min() > 1e-3 and (pre < 0).any()  # no value near relu's kink
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    B.batchnorm_backward(x, c, gamma, mean, invstd, dx, dgamma, dbeta, activation="relu",
                         beta=beta)
    tol = dict(rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dx.ravel(), numeric_grad(loss, x, range(x.size)), **tol)
    np.testing.assert_allclose(dgamma, numeric_grad(loss, gamma, range(shape[1])), **tol)
    np.testing.assert_allclose(dbeta, numeric_grad(loss, beta, range(shape[1])), **tol)


def test_matches_torch_batchnorm2d_over_several_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    bn = torch.nn.BatchNorm2d(4, eps=1e-5, momentum=0.1).double()
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    rm, rv = np.zeros(4), np.ones(4)
    for _ in range(3):
        x, dy = rng.standard_normal((3, 4, 5, 2)) * 2 + 1, rng.standard_normal((3, 4, 5, 2))
        tx = torch.from_numpy(x).requires_grad_()
        ty = bn(tx)
        ty.backward(torch.from_numpy(dy))
        y, mean, invstd = np.empty_like(x), np.empty(4), np.empty(4)
        B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm, rv, momentum=0.9,
                                  eps=1e-5)
        dx, dg, db = np.empty_like(x), np.empty(4), np.empty(4)
        B.batchnorm_backward(x, dy, gamma, mean, invstd, dx, dg, db)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(dg, bn.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(db, bn.bias.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-12)
        bn.weight.grad = bn.bias.grad = None


@pytest.mark.parametrize("shape", [(64, 2, 16, 16), (256, 2, 2, 2)])  # rows, small planes
def test_float32_statistics_survive_a_large_offset(shape):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(shape) * 1e-2 + 1e3).astype(np.float32)
    y, mean, invstd = np.empty_like(x), np.empty(2), np.empty(2)
    B.batchnorm_forward_train(x, np.ones(2, np.float32), np.zeros(2, np.float32), y, mean,
                              invstd, None, None, eps=1e-8)
    x64 = x.astype(np.float64)
    std = x64.std(axis=(0, 2, 3))
    np.testing.assert_allclose(1 / invstd, std, rtol=1e-4)
    # the normalised values too: x - mean cancels 5 digits here, in float32 arithmetic
    want = (x64 - per_channel(x64.mean(axis=(0, 2, 3)), x)) / per_channel(std, x)
    np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("activation", ["none", "relu"])
def test_results_are_bitwise_equal_for_any_thread_count(activation):
    """Row ranges split at image boundaries, inside an image, inside a lone image."""
    rng = np.random.default_rng(7)
    for shape in [(8, 48, 31, 33), (5, 7, 40, 40), (1, 40, 32, 32), (4099, 70),
                  (2, 3, 37, 41), (6, 301, 3, 3), (9, 77, 4, 4)]:
        x, gamma, beta, rm, rv = make(rng, shape, np.float32)
        dy = rand(rng, shape, np.float32)
        results = []
        for nt in (1, 2, 3):
            outs = [np.empty_like(x), *stats(gamma), rm.copy(), rv.copy(), np.empty_like(x),
                    np.empty_like(gamma), np.empty_like(gamma)]
            y, mean, invstd, rm1, rv1, dx, dg, db = outs
            B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm1, rv1, n_threads=nt,
                                      activation=activation)
            B.batchnorm_backward(x, dy, gamma, mean, invstd, dx, dg, db, n_threads=nt,
                                 activation=activation, beta=beta)
            results.append(outs)
        for other in results[1:]:
            for a, b in zip(results[0], other):
                np.testing.assert_array_equal(a, b)


def test_a_given_workspace_is_used_and_checked():
    rng = np.random.default_rng(13)
    shape = (3, 4, 9, 9)
    x, gamma, beta, rm, rv = make(rng, shape, np.float32)
    dy = rand(rng, shape, np.float32)
    need = B.batchnorm_workspace_size(shape)
    assert need == 4 * 4 + 2 * 3 * 4
    results = []
    for ws in (None, np.full(need + 5, np.nan)):
        outs = [np.empty_like(x), *stats(gamma), np.empty_like(x), np.empty_like(gamma),
                np.empty_like(gamma)]
        y, mean, invstd, dx, dg, db = outs
        B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, None, None, workspace=ws)
        B.batchnorm_backward(x, dy, gamma, mean, invstd, dx, dg, db, workspace=ws)
        results.append(outs)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    y, mean, invstd = np.empty_like(x), *stats(gamma)
    for bad, match in [(np.empty(need - 1), "need float64"),
                       (np.empty(need, np.float32), "need float64"),
                       (np.empty((need, 1)), "dimensions")]:
        with pytest.raises(ValueError, match=match):
            B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, None, None,
                                      workspace=bad)
    x, gamma, beta, rm, rv = make(rng, shape, np.float64)
    shared = np.empty(need + x.size)  # dx, then the workspace from dx's last element
    with pytest.raises(ValueError, match="workspace overlaps dx"):
        B.batchnorm_backward(x, x.copy(), gamma, *stats(gamma), shared[:x.size].reshape(shape),
                             np.empty_like(gamma), np.empty_like(gamma),
                             workspace=shared[x.size - 1:])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bound_calls_rerun_on_the_arrays_as_they_are_then(dtype):
    """bind=True checks once; each call then computes from the arrays' current contents,
    as a fresh checked call does."""
    rng = np.random.default_rng(12)
    for shape in [(4, 5, 6, 7), (9, 6, 3, 3)]:
        x, gamma, beta, rm, rv = make(rng, shape, dtype)
        dy = rand(rng, shape, dtype)
        bound = [np.empty_like(x), *stats(gamma), rm.copy(), rv.copy(), np.empty_like(x),
                 np.empty_like(gamma), np.empty_like(gamma)]
        y, mean, invstd, rm1, rv1, dx, dg, db = bound
        fwd = B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm1, rv1,
                                        activation="relu", bind=True)
        bwd = B.batchnorm_backward(x, dy, gamma, mean, invstd, dx, dg, db, activation="relu",
                                   beta=beta, bind=True)
        x[...] = rand(rng, shape, dtype, 2.0, -1.0)
        dy[...] = rand(rng, shape, dtype)
        for _ in range(2):  # the running statistics move at each call
            fwd()
            bwd()
        fresh = [np.empty_like(x), *stats(gamma), rm.copy(), rv.copy(), np.empty_like(x),
                 np.empty_like(gamma), np.empty_like(gamma)]
        y2, mean2, invstd2, rm2, rv2, dx2, dg2, db2 = fresh
        for _ in range(2):
            B.batchnorm_forward_train(x, gamma, beta, y2, mean2, invstd2, rm2, rv2,
                                      activation="relu")
            B.batchnorm_backward(x, dy, gamma, mean2, invstd2, dx2, dg2, db2,
                                 activation="relu", beta=beta)
        for a, b in zip(bound, fresh):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(5, 67, 4, 4), (3, 131, 3, 3), (2, 9, 5, 5)])
def test_no_writes_outside_outputs(shape):
    """Outputs carved from NaN-filled buffers: the borders stay NaN, the inside is set."""
    rng = np.random.default_rng(10)
    x, gamma, beta, rm, rv = make(rng, shape, np.float32)
    dy = rand(rng, shape, np.float32)
    c = shape[1]
    bufs = [np.full(n + 64, np.nan, t) for n, t in ((x.size, np.float32), (x.size, np.float32),
                                                    (c, np.float64), (c, np.float64),
                                                    (c, np.float32), (c, np.float32))]
    y, dx, mean, invstd, dg, db = (b[32:-32].reshape(s) for b, s in
                                   zip(bufs, [shape, shape, c, c, c, c]))
    for nt in (1, 2):
        B.batchnorm_forward_train(x, gamma, beta, y, mean, invstd, rm, rv, n_threads=nt,
                                  activation="relu")
        B.batchnorm_backward(x, dy, gamma, mean, invstd, dx, dg, db, n_threads=nt,
                             activation="relu", beta=beta)
        for buf in bufs:
            assert np.isnan(buf[:32]).all() and np.isnan(buf[-32:]).all()
            assert not np.isnan(buf[32:-32]).any()


def test_bad_inputs_raise_value_error():
    x = np.ones((2, 3, 4, 4), np.float32)
    v = np.ones(3, np.float32)
    y, mean, invstd = np.empty_like(x), np.empty(3), np.empty(3)
    bad = [
        lambda: B.batchnorm_forward_train(x[:1, :, :1, :1].copy(), v, v, y[:1, :, :1, :1].copy(),
                                          mean, invstd, None, None),  # one value per channel
        lambda: B.batchnorm_forward_train(x, np.ones(4, np.float32), v, y, mean, invstd, None,
                                          None),
        lambda: B.batchnorm_forward_train(x, v, v, y, mean, invstd, v.copy(), None),
        lambda: B.batchnorm_forward_train(x, v, v, y, mean, mean, None, None),  # outputs alias
        lambda: B.batchnorm_forward_train(x, v, v, y, mean, invstd, None, None, momentum=1.5),
        lambda: B.batchnorm_forward_train(x, v, v, y, mean, invstd, None, None, eps=0.0),
        lambda: B.batchnorm_forward_infer(x, v, v, v, v.astype(np.float64), y),
        lambda: B.batchnorm_backward(x, x, v, mean, invstd, x, np.empty_like(v),
                                     np.empty_like(v)),  # dx may not be x
        lambda: B.batchnorm_backward(x, x.copy(), v, mean, invstd, y, v, np.empty_like(v)),
        lambda: B.batchnorm_forward_train(x, v, v, y, mean, invstd, None, None,
                                          activation="tanh"),
        lambda: B.batchnorm_forward_train(x, v, v, y, v.copy(), invstd, None, None),
        lambda: B.batchnorm_backward(x, x.copy(), v, v, invstd, y, np.empty_like(v),
                                     np.empty_like(v)),  # saved statistics are float64
        lambda: B.batchnorm_backward(x, x.copy(), v, mean, invstd, y, np.empty_like(v),
                                     np.empty_like(v), activation="tanh"),
        lambda: B.batchnorm_backward(x, x.copy(), v, mean, invstd, y, np.empty_like(v),
                                     np.empty_like(v), activation="relu",
                                     beta=v[:2]),  # beta's shape
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()

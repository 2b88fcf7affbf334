"""cnnc._kernels.loss against numpy (float64) and central finite differences."""
import numpy as np
import pytest

from cnnc._kernels import loss as L
from kernel_checks import numeric_grad, rand

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
# (N, K) dense and (N, K, H, W) per-pixel scores
SHAPES = [(1, 1), (1, 2), (3, 7), (17, 3), (2, 31), (65, 10), (1, 3, 4, 5), (2, 17, 3, 3),
          (3, 2, 1, 33), (2, 127, 1, 1)]


def log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def one_hot(labels, k):
    """(N, ...) labels -> (N, K, ...) one-hot targets."""
    return np.moveaxis(np.eye(k)[labels], -1, 1)


# -- softmax ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_forward_backward_match_numpy(shape, dtype):
    rng = np.random.default_rng(1)
    x, dy = rand(rng, shape, dtype, 3.0), rand(rng, shape, dtype)
    y = np.empty_like(x)
    L.softmax_forward(x, y)
    p = np.exp(log_softmax(x))
    np.testing.assert_allclose(y, p, **TOL[dtype])
    dx = np.empty_like(x)
    L.softmax_backward(y, dy, dx)
    y64 = y.astype(np.float64)
    want = y64 * (dy - (dy * y64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(dx, want, **TOL[dtype])
    L.softmax_forward(x, x)  # in-place
    np.testing.assert_array_equal(x, y)


def test_softmax_backward_finite_differences():
    rng = np.random.default_rng(2)
    x, c = rand(rng, (2, 5, 3, 2), np.float64), rand(rng, (2, 5, 3, 2), np.float64)
    y = np.empty_like(x)

    def loss():
        L.softmax_forward(x, y)
        return float((c * y).sum())

    L.softmax_forward(x, y)
    dx = np.empty_like(x)
    L.softmax_backward(y.copy(), c, dx)
    idx = range(x.size)
    np.testing.assert_allclose(dx.ravel(), numeric_grad(loss, x, idx), rtol=1e-6, atol=1e-9)


def test_softmax_of_huge_logits_is_finite():
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32)
    y = np.empty_like(x)
    L.softmax_forward(x, y)
    np.testing.assert_allclose(y, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)


# -- softmax cross-entropy ----------------------------------------------------------------

def xent_reference(z, t, eps):
    """Mean over positions of -sum_k t'_k log softmax(z)_k, and its gradient."""
    k = z.shape[1]
    t = (1 - eps) * t + eps / k
    lp = log_softmax(z)
    count = z.size // k
    loss = -(t * lp).sum() / count
    grad = (np.exp(lp) * t.sum(axis=1, keepdims=True) - t) / count
    return loss, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_sparse_xent_matches_numpy(shape, eps, dtype):
    rng = np.random.default_rng(3)
    z = rand(rng, shape, dtype, 2.0)
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    d = np.empty_like(z)
    loss = L.softmax_xent_sparse(z, labels, d, label_smoothing=eps)
    want, grad = xent_reference(z, one_hot(labels, shape[1]), eps)
    np.testing.assert_allclose(loss, want, **TOL[dtype])
    np.testing.assert_allclose(d, grad, **TOL[dtype])
    assert L.softmax_xent_sparse(z, labels, None, label_smoothing=eps) == loss
    L.softmax_xent_sparse(z, labels, z, label_smoothing=eps)  # in-place gradient
    np.testing.assert_array_equal(z, d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_xent_matches_numpy(shape, dtype):
    rng = np.random.default_rng(4)
    z = rand(rng, shape, dtype, 2.0)
    t = rng.random(shape)
    t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    d = np.empty_like(z)
    loss = L.softmax_xent_dense(z, t, d, label_smoothing=0.05)
    want, grad = xent_reference(z, t.astype(np.float64), 0.05)
    np.testing.assert_allclose(loss, want, **TOL[dtype])
    np.testing.assert_allclose(d, grad, **TOL[dtype])


def test_sparse_xent_ignore_index():
    rng = np.random.default_rng(5)
    z = rand(rng, (3, 4, 2, 5), np.float64)
    labels = rng.integers(0, 4, (3, 2, 5))
    labels[0, 1, :3] = 255
    labels[2, 0, 4] = 255
    keep = labels != 255
    d = np.empty_like(z)
    loss = L.softmax_xent_sparse(z, labels, d, ignore_index=255, label_smoothing=0.2)
    t = one_hot(np.where(keep, labels, 0), 4) * 0.8 + 0.05
    lp = log_softmax(z)
    per_pos = -(t * lp).sum(axis=1)
    np.testing.assert_allclose(loss, per_pos[keep].mean(), rtol=1e-12)
    grad = (np.exp(lp) - t) / keep.sum() * keep[:, None]
    np.testing.assert_allclose(d, grad, rtol=1e-12, atol=1e-15)
    all_ignored = np.full_like(labels, 255)
    assert L.softmax_xent_sparse(z, all_ignored, d, ignore_index=255) == 0.0
    np.testing.assert_array_equal(d, 0)


@pytest.mark.parametrize("sparse", [True, False])
def test_xent_gradient_finite_differences(sparse):
    rng = np.random.default_rng(6)
    z = rand(rng, (3, 5, 2, 3), np.float64, 2.0)
    labels = rng.integers(0, 5, (3, 2, 3))
    t = rng.random(z.shape)  # dense targets need not sum to 1 for the gradient rule

    def loss():
        if sparse:
            return L.softmax_xent_sparse(z, labels, None, label_smoothing=0.1)
        return L.softmax_xent_dense(z, t, None, label_smoothing=0.1)

    d = np.empty_like(z)
    if sparse:
        L.softmax_xent_sparse(z, labels, d, label_smoothing=0.1)
    else:
        L.softmax_xent_dense(z, t, d, label_smoothing=0.1)
    np.testing.assert_allclose(d.ravel(), numeric_grad(loss, z, range(z.size)), rtol=1e-6,
                               atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_xent_is_stable_for_huge_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [3e4, 3e4, -3e4]], dtype)
    labels = np.array([0, 0, 1])
    d = np.empty_like(z)
    loss = L.softmax_xent_sparse(z, labels, d)
    # per sample: 0, 2e4 + log 2, log 2
    np.testing.assert_allclose(loss, (2e4 + 2 * np.log(2)) / 3, rtol=1e-6)
    assert np.all(np.isfinite(d))
    np.testing.assert_allclose(d * 3, [[0, 0, 0], [-1, 0.5, 0.5], [0.5, -0.5, 0]], atol=1e-6)


# -- binary cross-entropy and mse ---------------------------------------------------------

def sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (33, 3), (2, 1, 5, 7), (127,)])
def test_elementwise_losses_match_numpy(shape, dtype):
    rng = np.random.default_rng(7)
    z = rand(rng, shape, dtype, 3.0)
    t = rng.random(shape).astype(dtype)
    z64, t64, n = z.astype(np.float64), t.astype(np.float64), z.size
    d = np.empty_like(z)
    tol = dict(rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-7 if dtype == np.float32
               else 1e-14)
    s = sigmoid(z64)
    loss = L.sigmoid_bce_logits(z, t, d)
    np.testing.assert_allclose(loss, -np.mean(t64 * np.log(s) + (1 - t64) * np.log1p(-s)),
                               **tol)
    np.testing.assert_allclose(d, (s - t64) / n, **tol)
    p = s.astype(dtype)
    loss = L.bce_probs(p, t, d)
    p64 = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    np.testing.assert_allclose(loss, -np.mean(t64 * np.log(p64) + (1 - t64) * np.log(1 - p64)),
                               **tol)
    np.testing.assert_allclose(d, (p64 - t64) / (p64 * (1 - p64)) / n, **tol)
    loss = L.mse(z, t, d)
    np.testing.assert_allclose(loss, np.mean((z64 - t64) ** 2), **tol)
    np.testing.assert_allclose(d, 2 * (z64 - t64) / n, **tol)
    L.mse(z, t, z)  # in-place gradient
    np.testing.assert_array_equal(z, d)


@pytest.mark.parametrize("name", ["bce_logits", "bce_probs", "mse"])
def test_elementwise_loss_gradients_finite_differences(name):
    rng = np.random.default_rng(8)
    t = rng.random((4, 1, 3, 2))
    x = rng.uniform(0.05, 0.95, t.shape) if name == "bce_probs" else rng.standard_normal(t.shape)
    fn = {"bce_logits": L.sigmoid_bce_logits, "bce_probs": L.bce_probs, "mse": L.mse}[name]
    d = np.empty_like(x)
    fn(x, t, d)
    np.testing.assert_allclose(d.ravel(), numeric_grad(lambda: fn(x, t), x, range(x.size)),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_bce_is_stable_for_huge_logits(dtype):
    z = np.array([1e4, -1e4, 1e4, -1e4, 80.0], dtype)
    t = np.array([1, 0, 0, 1, 1], dtype)
    d = np.empty_like(z)
    with np.errstate(all="raise"):
        loss = L.sigmoid_bce_logits(z, t, d)
    np.testing.assert_allclose(loss, 2e4 / 5, rtol=1e-6)
    np.testing.assert_allclose(d * 5, [0, 0, 1, -1, 0], atol=1e-6)


def test_bce_probs_clips_and_zeroes_gradient_outside():
    p = np.array([0.0, 1.0, 0.5])
    t = np.array([1.0, 0.0, 1.0])
    d = np.empty_like(p)
    loss = L.bce_probs(p, t, d, eps=1e-7)
    np.testing.assert_allclose(loss, (-2 * np.log(1e-7) + np.log(2)) / 3, rtol=1e-9)
    np.testing.assert_allclose(d, [0, 0, -2 / 3], rtol=1e-12)


# -- threads and bad input ----------------------------------------------------------------

def test_one_and_two_threads_are_bitwise_equal():
    rng = np.random.default_rng(9)
    z = rand(rng, (4099, 10), np.float32, 3.0)
    labels = rng.integers(0, 10, 4099)
    seg = rand(rng, (4, 5, 65, 63), np.float32)
    seg_labels = rng.integers(0, 5, (4, 65, 63))
    flat = rand(rng, (300007,), np.float32)
    t = rng.random(flat.shape).astype(np.float32)
    calls = [
        lambda d, n: L.softmax_xent_sparse(z, labels, d, 0.1, None, n),
        lambda d, n: L.softmax_xent_sparse(seg, seg_labels, d, 0.0, 3, n),
        lambda d, n: L.sigmoid_bce_logits(flat, t, d, n),
        lambda d, n: L.mse(flat, t, d, n),
    ]
    for call, ref in zip(calls, [z, seg, flat, flat]):
        d1, d2 = np.empty_like(ref), np.empty_like(ref)
        assert call(d1, 1) == call(d2, 2)
        np.testing.assert_array_equal(d1, d2)


def test_bad_inputs_raise_value_error():
    z = np.zeros((4, 3), np.float32)
    labels = np.array([0, 1, 2, 1])
    bad = [
        lambda: L.softmax_xent_sparse(z, np.array([0, 1, 3, 1]), None),     # label >= K
        lambda: L.softmax_xent_sparse(z, np.array([0, -1, 2, 1]), None),    # label < 0
        lambda: L.softmax_xent_sparse(z, labels.astype(np.int32), None),    # label dtype
        lambda: L.softmax_xent_sparse(z, labels[:3], None),                 # label shape
        lambda: L.softmax_xent_sparse(z, labels, None, label_smoothing=1.5),
        lambda: L.softmax_xent_sparse(z, labels, np.empty((4, 3))),         # grad dtype
        lambda: L.softmax_xent_dense(z, z, z[::-1]),                        # grad overlaps t
        lambda: L.softmax_xent_dense(z, np.zeros((4, 4), np.float32)),
        lambda: L.softmax_forward(np.zeros(3), np.zeros(3)),                # rank
        lambda: L.mse(z, np.zeros((4, 3))),
        lambda: L.bce_probs(z, z, eps=0.7),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()

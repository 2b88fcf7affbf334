"""cnnc._kernels.elementwise against numpy (float64) and central finite differences."""
import numpy as np
import pytest

from cnnc._kernels import elementwise as ew
from kernel_checks import numeric_grad, rand

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
SHAPES = [(1, 1), (2, 3), (7, 17), (33, 65), (127, 2), (1, 3, 7, 7), (2, 17, 3, 5),
          (3, 31, 1, 1), (1, 2, 1, 33), (2, 7, 9, 13)]


# -- bias ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_add_and_grad_match_numpy(shape, dtype):
    rng = np.random.default_rng(1)
    x, b = rand(rng, shape, dtype), rand(rng, shape[1], dtype)
    y = np.empty_like(x)
    ew.bias_add_forward(x, b, y)
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    np.testing.assert_allclose(y, x.astype(np.float64) + b.reshape(bshape), **TOL[dtype])
    db = np.empty_like(b)
    ew.bias_backward(x, db)
    axes = (0,) + tuple(range(2, x.ndim))
    np.testing.assert_allclose(db, x.astype(np.float64).sum(axes), rtol=TOL[dtype]["rtol"],
                               atol=10 * TOL[dtype]["atol"])
    ew.bias_add_forward(x, b, x)  # in-place
    np.testing.assert_array_equal(x, y)


def test_bias_grad_finite_differences():
    rng = np.random.default_rng(2)
    x, b = rand(rng, (3, 5, 4, 3), np.float64), rand(rng, 5, np.float64)
    c = rand(rng, x.shape, np.float64)
    y = np.empty_like(x)

    def loss():
        ew.bias_add_forward(x, b, y)
        return float((c * y).sum())

    db = np.empty_like(b)
    ew.bias_backward(c, db)
    np.testing.assert_allclose(db, numeric_grad(loss, b, range(5)), rtol=1e-7, atol=1e-8)


def test_bias_grad_of_empty_batch_is_zero():
    db = np.ones(3)
    ew.bias_backward(np.zeros((0, 3, 2, 2)), db)
    np.testing.assert_array_equal(db, 0)


# -- activations --------------------------------------------------------------------------

def _leaky(x, a=0.3):
    return np.where(x > 0, x, a * x)


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))  # stable reference


ACTS = {
    "relu": (lambda x, y, **k: ew.relu_forward(x, y, **k),
             lambda y, dy, dx, **k: ew.relu_backward(y, dy, dx, **k),
             lambda x: np.maximum(x, 0), lambda x, y: (x > 0).astype(float)),
    "leaky_relu": (lambda x, y, **k: ew.leaky_relu_forward(x, y, 0.3, **k),
                   lambda y, dy, dx, **k: ew.leaky_relu_backward(y, dy, dx, 0.3, **k),
                   _leaky, lambda x, y: np.where(x > 0, 1.0, 0.3)),
    "sigmoid": (lambda x, y, **k: ew.sigmoid_forward(x, y, **k),
                lambda y, dy, dx, **k: ew.sigmoid_backward(y, dy, dx, **k),
                _sigmoid, lambda x, y: y * (1 - y)),
    "tanh": (lambda x, y, **k: ew.tanh_forward(x, y, **k),
             lambda y, dy, dx, **k: ew.tanh_backward(y, dy, dx, **k),
             np.tanh, lambda x, y: 1 - y * y),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 17, 3, 5), (1, 127), (33, 31)])
def test_activation_matches_numpy(name, shape, dtype):
    fwd, bwd, ref, dref = ACTS[name]
    rng = np.random.default_rng(3)
    x, dy = rand(rng, shape, dtype, 3.0), rand(rng, shape, dtype)
    y = np.empty_like(x)
    fwd(x, y)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, ref(x64), **TOL[dtype])
    dx = np.empty_like(x)
    bwd(y, dy, dx)
    np.testing.assert_allclose(dx, dy * dref(x64, y.astype(np.float64)), **TOL[dtype])
    fwd(x, x)  # in-place forward, then in-place backward
    np.testing.assert_array_equal(x, y)
    bwd(y, dy, dy)
    np.testing.assert_array_equal(dy, dx)


@pytest.mark.parametrize("name", ACTS)
def test_activation_backward_finite_differences(name):
    fwd, bwd, _, _ = ACTS[name]
    rng = np.random.default_rng(4)
    x = rand(rng, (3, 4, 5, 2), np.float64, 2.0)
    if name in ("relu", "leaky_relu"):  # keep a band around the kink out of the check
        x = np.where(np.abs(x) < 1e-3, 0.5, x)
    c, h = rand(rng, x.shape, np.float64), 1e-6
    y, yp, ym, dx = (np.empty_like(x) for _ in range(4))
    fwd(x, y)
    fwd(x + h, yp)
    fwd(x - h, ym)
    bwd(y, c, dx)
    np.testing.assert_allclose(dx, c * (yp - ym) / (2 * h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_are_stable_for_huge_inputs(dtype):
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype)
    y = np.empty_like(x)
    with np.errstate(all="raise"):
        ew.sigmoid_forward(x, y)
        assert np.all(np.isfinite(y)) and y[0] == 0 and y[-1] == 1 and y[3] == 0.5
        ew.tanh_forward(x, y)
        assert y[0] == -1 and y[-1] == 1


def test_leaky_relu_rejects_negative_alpha():
    x = np.ones(3)
    with pytest.raises(ValueError, match="alpha"):
        ew.leaky_relu_forward(x, x, -0.1)


# -- add, copy, scale ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_add_sums_left_to_right(k, dtype):
    rng = np.random.default_rng(5)
    xs = [rand(rng, (3, 7, 5), dtype) for _ in range(k)]
    y = np.empty_like(xs[0])
    ew.add_forward(xs, y)
    expected = xs[0].copy()
    for a in xs[1:]:
        expected = expected + a  # same dtype, same order: bitwise equal
    np.testing.assert_array_equal(y, expected)
    ew.add_forward(xs, xs[-1])  # in-place into one of the inputs
    np.testing.assert_array_equal(xs[-1], expected)


def test_add_backward_is_fan_out_by_finite_differences():
    rng = np.random.default_rng(6)
    xs = [rand(rng, (2, 3), np.float64) for _ in range(3)]
    c, y = rand(rng, (2, 3), np.float64), np.empty((2, 3))

    def loss():
        ew.add_forward(xs, y)
        return float((c * y).sum())

    for a in xs:  # d<c, sum xs>/dxs_j = c: the identity fan-out
        np.testing.assert_allclose(numeric_grad(loss, a, range(6)), c.ravel(), rtol=1e-8)


FUSED = {"none": lambda x: x, "relu": lambda x: np.maximum(x, 0), "leaky_relu": _leaky,
         "sigmoid": _sigmoid, "tanh": np.tanh}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", FUSED)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_add_with_an_activation_is_the_sum_then_the_activation(k, act, dtype):
    rng = np.random.default_rng(10)
    shape = (3, 5, 29, 31)  # several blocks of the kernel and a remainder
    xs = [rand(rng, shape, dtype, 2.0) for _ in range(k)]
    y = np.empty_like(xs[0])
    ew.add_forward(xs, y, activation=act, alpha=0.3)
    total = np.empty_like(y)
    ew.add_forward(xs, total)
    np.testing.assert_allclose(y, FUSED[act](total.astype(np.float64)), **TOL[dtype])
    if act != "none":  # bitwise the unfused pair: the sum, then the activation kernel
        unfused = np.empty_like(y)
        ACTS[act][0](total, unfused)
        np.testing.assert_array_equal(y, unfused)
    for j in range(k):  # in place into any one input
        xj = xs[j].copy()
        ew.add_forward([xj if i == j else a for i, a in enumerate(xs)], xj, activation=act,
                       alpha=0.3)
        np.testing.assert_array_equal(xj, y)


def test_add_with_an_activation_backward_by_finite_differences():
    rng = np.random.default_rng(11)
    xs = [rand(rng, (2, 3, 4, 5), np.float64) for _ in range(2)]
    c, y = rand(rng, (2, 3, 4, 5), np.float64), np.empty((2, 3, 4, 5))

    def loss():
        ew.add_forward(xs, y, activation="tanh")
        return float((c * y).sum())

    loss()
    dx = np.empty_like(y)
    ew.act_backward(y, [c], dx, "tanh")  # every input's gradient
    for a in xs:
        np.testing.assert_allclose(numeric_grad(loss, a, range(a.size)), dx.ravel(),
                                   rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", FUSED)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_act_backward_sums_the_gradients_first(k, act, dtype):
    rng = np.random.default_rng(12)
    shape = (2, 7, 33, 35)
    y = rand(rng, shape, dtype)
    if act == "relu":
        y = np.maximum(y, 0)
    dys = [rand(rng, shape, dtype) for _ in range(k)]
    total = np.empty_like(y)
    ew.add_forward(dys, total)
    want = np.empty_like(y)
    if act == "none":
        want[...] = total
    else:  # bitwise the unfused pair: the sum, then the activation's backward kernel
        ACTS[act][1](y, total, want)
    dx = np.empty_like(y)
    ew.act_backward(y, dys, dx, act, 0.3)
    np.testing.assert_array_equal(dx, want)
    ew.act_backward(y, dys, dys[-1], act, 0.3)  # in place into one of the gradients
    np.testing.assert_array_equal(dys[-1], want)


def test_add_and_act_backward_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(13)
    shape = (8, 33, 17, 19)
    xs = [rand(rng, shape, np.float32) for _ in range(3)]
    outs = []
    for nt in (1, 2):
        y, dx = np.empty(shape, np.float32), np.empty(shape, np.float32)
        ew.add_forward(xs, y, n_threads=nt, activation="sigmoid")
        ew.act_backward(y, xs[:2], dx, "sigmoid", n_threads=nt)
        outs.append((y, dx))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bound_add_and_act_backward_rerun_on_the_arrays_as_they_are_then(dtype):
    rng = np.random.default_rng(14)
    shape = (3, 5, 7, 9)
    xs = [rand(rng, shape, dtype) for _ in range(2)]
    y, dx = np.empty(shape, dtype), np.empty(shape, dtype)
    add = ew.add_forward(xs, y, activation="relu", bind=True)
    back = ew.act_backward(y, xs, dx, "relu", bind=True)
    assert add is not None and ew.add_forward(xs, y) is None
    for _ in range(2):
        for x in xs:
            x[...] = rand(rng, shape, dtype)
        add()
        back()
        want_y, want_dx = np.empty_like(y), np.empty_like(dx)
        ew.add_forward(xs, want_y, activation="relu")
        ew.act_backward(want_y, xs, want_dx, "relu")
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(dx, want_dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_copy_and_scale(dtype):
    rng = np.random.default_rng(7)
    x = rand(rng, (300001,), dtype)  # several copy chunks and a remainder
    y = np.empty_like(x)
    ew.copy(x, y, n_threads=2)
    np.testing.assert_array_equal(x, y)
    ew.scale(x, 0.37, y)
    np.testing.assert_array_equal(y, dtype(0.37) * x)
    ew.scale(y, -2.0, y)
    np.testing.assert_array_equal(y, dtype(-2.0) * (dtype(0.37) * x))


# -- concat -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels,tail", [((1,), (3, 3)), ((2, 3), ()), ((1, 7, 17), (5, 3)),
                                           ((33, 1), (1, 1)), ((3, 4), (2, 7))])
@pytest.mark.parametrize("n", [1, 3])
def test_concat_forward_and_backward(n, channels, tail, dtype):
    rng = np.random.default_rng(8)
    xs = [rand(rng, (n, c, *tail), dtype) for c in channels]
    y = np.empty((n, sum(channels), *tail), dtype)
    ew.concat_forward(xs, y)
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=1))
    dy = rand(rng, y.shape, dtype)
    dxs = [np.empty_like(a) for a in xs]
    ew.concat_backward(dy, dxs)
    for got, want in zip(dxs, np.split(dy, np.cumsum(channels)[:-1], axis=1)):
        np.testing.assert_array_equal(got, want)


# -- threads ------------------------------------------------------------------------------

def test_one_and_two_threads_are_bitwise_equal():
    rng = np.random.default_rng(9)
    for shape in [(16, 96, 17, 19), (4099, 130)]:  # spatial and dense bias gradients
        dy = rand(rng, shape, np.float32)
        one, two = np.empty(shape[1], np.float32), np.empty(shape[1], np.float32)
        ew.bias_backward(dy, one, n_threads=1)
        ew.bias_backward(dy, two, n_threads=2)
        np.testing.assert_array_equal(one, two)
    x = rand(rng, (8, 64, 33, 33), np.float32, 3.0)
    for fn in (ew.sigmoid_forward, ew.tanh_forward, ew.relu_forward):
        a, b = np.empty_like(x), np.empty_like(x)
        fn(x, a, n_threads=1)
        fn(x, b, n_threads=2)
        np.testing.assert_array_equal(a, b)


# -- bad input ----------------------------------------------------------------------------

def test_bad_inputs_raise_value_error():
    x = np.ones((2, 3, 4, 4), np.float32)
    y = np.empty_like(x)
    bad = [
        lambda: ew.relu_forward(x.astype(np.int32), y),             # dtype
        lambda: ew.relu_forward(x, np.empty((2, 3, 4, 5), np.float32)),  # shape
        lambda: ew.relu_forward(x, y.astype(np.float64)),           # mixed dtypes
        lambda: ew.relu_forward(x[:, :, ::2], y[:, :, ::2]),        # not contiguous
        lambda: ew.relu_forward(x.ravel()[1:], x.ravel()[:-1]),     # partial overlap
        lambda: ew.relu_forward([1.0, 2.0], y),                     # not an array
        lambda: ew.bias_add_forward(x, np.ones(4, np.float32), y),  # bias length
        lambda: ew.bias_add_forward(np.ones(3, np.float32), np.ones(3, np.float32),
                                    np.ones(3, np.float32)),        # rank
        lambda: ew.bias_backward(x, np.ones(3, np.float64)),
        lambda: ew.add_forward([], y),
        lambda: ew.add_forward([x, x[:1]], y),
        lambda: ew.add_forward([x, x], y, activation="softmax"),
        lambda: ew.add_forward([x, x], y, activation="leaky_relu", alpha=-1.0),
        lambda: ew.act_backward(y, [x, x[:1]], np.empty_like(x), "relu"),
        lambda: ew.act_backward(y, [x], y, "relu"),                 # dx overlaps y
        lambda: ew.act_backward(y, [], np.empty_like(x), "relu"),
        lambda: ew.concat_forward([x, x], y),                       # channel count
        lambda: ew.concat_forward([x[:1, :1], x[:1, 1:]], x[:1]),   # parts overlap y
        lambda: ew.copy(x, x),
        lambda: ew.relu_forward(x, y, n_threads=0),
    ]
    ro = np.empty_like(x)
    ro.flags.writeable = False
    bad.append(lambda: ew.relu_forward(x, ro))
    for call in bad:
        with pytest.raises(ValueError):
            call()

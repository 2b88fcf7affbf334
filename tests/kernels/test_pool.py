"""Pooling kernels against numpy float64 references and finite differences."""
import itertools

import numpy as np
import pytest

from cnnc._kernels import pool

RNG = np.random.default_rng(3)

# (H, W, kernel, stride, padding (t, b, l, r), ceil_mode)
CASES = [
    (1, 1, 1, 1, (0, 0, 0, 0), False),
    (2, 3, 2, 2, (0, 0, 0, 0), True),
    (7, 7, 2, 2, (0, 0, 0, 0), False),
    (7, 7, 2, 2, (0, 0, 0, 0), True),
    (7, 5, 3, 2, (1, 1, 1, 1), False),
    (7, 5, 3, 2, (1, 1, 1, 1), True),
    (17, 6, 3, 3, (0, 2, 1, 0), True),
    (6, 17, (3, 2), (1, 3), (2, 1, 0, 1), False),
    (3, 3, 3, 1, (0, 0, 0, 0), False),        # kernel == input
    (7, 7, 2, 3, (1, 0, 0, 1), True),         # stride > kernel
    (31, 2, (3, 1), (2, 1), (1, 2, 0, 0), True),
    (2, 2, 2, 2, (0, 0, 0, 0), False),         # max-pool units of one window
    (4, 8, 2, 2, (0, 0, 0, 0), False),         # units of four windows
]


# Max-pool fast paths: windows inside the input (any kernel, rows of outputs at once) and
# 2x2 stride 2 (blocks of 16 outputs, the last block moved back; rows under 16 in one
# loop); edge windows (padding, ceil mode) by the clipping loop. Widths give output rows
# of < 8, 8-15, 16, 17 and 33 windows. (H, W, kernel, stride, padding, ceil_mode)
FAST_CASES = [
    (4, 10, 2, 2, (0, 0, 0, 0), False),      # 5 per row
    (5, 29, 2, 2, (0, 0, 0, 0), False),      # 14, odd: last row and column unused
    (6, 32, 2, 2, (0, 0, 0, 0), False),      # exactly one block of 16
    (7, 35, 2, 2, (0, 0, 0, 0), True),       # 17 interior + a ceil-mode edge column
    (9, 66, 2, 2, (1, 0, 1, 0), False),      # padded top and left edges
    (8, 67, 2, 2, (0, 1, 1, 1), True),       # edges on three sides
    (3, 3, 2, 2, (1, 1, 1, 1), False),       # every window at an edge
    (11, 40, 3, 1, (1, 1, 1, 1), False),     # general interior path, stride 1
    (9, 37, 3, 2, (0, 0, 0, 0), True),
    (8, 41, (2, 3), (1, 2), (1, 0, 0, 1), False),
    # even planes without padding, 1-15 windows a row: by units (rows of windows of all
    # planes in a row, whole or one window at a time)
    (2, 2, 2, 2, (0, 0, 0, 0), False),
    (4, 4, 2, 2, (0, 0, 0, 0), True),
    (8, 8, 2, 2, (0, 0, 0, 0), False),
    (16, 16, 2, 2, (0, 0, 0, 0), False),
    (6, 4, 2, 2, (0, 0, 0, 0), False),
    (2, 16, 2, 2, (0, 0, 0, 0), False),
    (10, 2, 2, 2, (0, 0, 0, 0), False),
    (28, 28, 2, 2, (0, 0, 0, 0), False),     # LeNet-5's pools: 14 and 5 windows a row
    (10, 10, 2, 2, (0, 0, 0, 0), False),
    (6, 30, 2, 2, (0, 0, 0, 0), True),
]


def _geom(kernel, stride):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    return kh, kw, sh, sw


def _windows(h, w, kernel, stride, pad, ceil_mode):
    """Yield (i, j, rows, cols, divisor_with_pad) per output; rows/cols clipped to the input."""
    kh, kw, sh, sw = _geom(kernel, stride)
    oh, ow = pool.pool2d_output_size((h, w), kernel, stride, pad, ceil_mode)
    for i, j in itertools.product(range(oh), range(ow)):
        h0, w0 = i * sh - pad[0], j * sw - pad[2]
        rows = slice(max(h0, 0), min(h0 + kh, h))
        cols = slice(max(w0, 0), min(w0 + kw, w))
        full = (min(h0 + kh, h + pad[1]) - h0) * (min(w0 + kw, w + pad[3]) - w0)
        yield i, j, rows, cols, full


def ref_pool(x, kernel, stride, pad, ceil_mode, mode, include_pad=True):
    n, c, h, w = x.shape
    oh, ow = pool.pool2d_output_size((h, w), kernel, stride, pad, ceil_mode)
    y = np.empty((n, c, oh, ow))
    for i, j, rows, cols, full in _windows(h, w, kernel, stride, pad, ceil_mode):
        win = x[:, :, rows, cols].astype(np.float64)
        if mode == "max":
            y[:, :, i, j] = win.max(axis=(2, 3))
        else:
            count = full if include_pad else win.shape[2] * win.shape[3]
            y[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return y


def test_output_size_matches_pytorch_rule():
    assert pool.pool2d_output_size((7, 7), 2, 2, 0, False) == (3, 3)
    assert pool.pool2d_output_size((7, 7), 2, 2, 0, True) == (4, 4)
    # ceil mode never starts a window in the bottom/right padding
    assert pool.pool2d_output_size((6, 6), 3, 3, 1, True) == (3, 3)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        pool.pool2d_output_size((7, 7), 2, 2, 2, False)
    with pytest.raises(ValueError, match="larger than the padded input"):
        pool.pool2d_output_size((2, 2), 5, 1, 1, False)


def _out(x, kernel, stride, pad, ceil_mode):
    oh, ow = pool.pool2d_output_size(x.shape[2:], kernel, stride, pad, ceil_mode)
    return np.empty(x.shape[:2] + (oh, ow), x.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_maxpool_forward(case, dtype):
    h, w, k, s, pad, ceil_mode = case
    x = RNG.standard_normal((2, 3, h, w)).astype(dtype)
    y = _out(x, k, s, pad, ceil_mode)
    am = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, am, k, s, pad, ceil_mode, n_threads=2)
    np.testing.assert_array_equal(y, ref_pool(x, k, s, pad, ceil_mode, "max"))
    planes = x.reshape(6, h * w)
    np.testing.assert_array_equal(np.take_along_axis(planes, am.reshape(6, -1), 1),
                                  y.reshape(6, -1))


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_avgpool_forward(case, dtype, include_pad):
    h, w, k, s, pad, ceil_mode = case
    x = RNG.standard_normal((2, 3, h, w)).astype(dtype)
    y = _out(x, k, s, pad, ceil_mode)
    pool.avgpool2d_forward(x, y, k, s, pad, ceil_mode, include_pad, n_threads=2)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, ref_pool(x, k, s, pad, ceil_mode, "avg", include_pad),
                               rtol=tol, atol=tol)


def _fd_grad(f, x, dy, eps=1e-6):
    """Central differences of <dy, f(x)> with respect to every element of x."""
    g = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = np.vdot(dy, f(x))
        x[idx] = old - eps
        down = np.vdot(dy, f(x))
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def _min_gap(x, case):
    """Smallest gap between the top two values of any window (ties make max non-smooth)."""
    h, w, k, s, pad, ceil_mode = case
    gap = np.inf
    for *_, rows, cols, _ in _windows(h, w, k, s, pad, ceil_mode):
        win = np.sort(x[:, :, rows, cols].reshape(x.shape[0] * x.shape[1], -1), axis=1)
        if win.shape[1] > 1:
            gap = min(gap, np.min(win[:, -1] - win[:, -2]))
    return gap


@pytest.mark.parametrize("case", CASES + FAST_CASES)
def test_maxpool_backward_finite_differences(case):
    h, w, k, s, pad, ceil_mode = case
    x = RNG.standard_normal((1, 2, h, w))
    if _min_gap(x, case) < 1e-4:
        pytest.skip("near-tie in a window")

    def f(v):
        y = _out(v, k, s, pad, ceil_mode)
        pool.maxpool2d_forward(v, y, None, k, s, pad, ceil_mode)
        return y

    y = f(x)
    dy = RNG.standard_normal(y.shape)
    am = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, am, k, s, pad, ceil_mode)
    dx_saved, dx_recomputed = np.empty_like(x), np.empty_like(x)
    pool.maxpool2d_backward(dy, am, None, dx_saved, k, s, pad, ceil_mode)
    pool.maxpool2d_backward(dy, None, x, dx_recomputed, k, s, pad, ceil_mode)
    np.testing.assert_array_equal(dx_saved, dx_recomputed)
    np.testing.assert_allclose(dx_saved, _fd_grad(f, x, dy), atol=1e-8)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_avgpool_backward_finite_differences(case, include_pad):
    h, w, k, s, pad, ceil_mode = case
    x = RNG.standard_normal((1, 2, h, w))

    def f(v):
        y = _out(v, k, s, pad, ceil_mode)
        pool.avgpool2d_forward(v, y, k, s, pad, ceil_mode, include_pad)
        return y

    dy = RNG.standard_normal(f(x).shape)
    dx = np.empty_like(x)
    pool.avgpool2d_backward(dy, dx, k, s, pad, ceil_mode, include_pad)
    np.testing.assert_allclose(dx, _fd_grad(f, x, dy), atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_avgpool(dtype):
    x = RNG.standard_normal((3, 5, 7, 17)).astype(dtype)
    y = np.empty((3, 5, 1, 1), dtype)
    pool.global_avgpool2d_forward(x, y, n_threads=2)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y[:, :, 0, 0], x.astype(np.float64).mean(axis=(2, 3)),
                               rtol=tol, atol=tol)
    dy = RNG.standard_normal((3, 5)).astype(dtype)
    dx = np.empty_like(x)
    pool.global_avgpool2d_backward(dy, dx, n_threads=2)
    np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / (7 * 17), x.shape),
                               rtol=tol, atol=tol)


def test_global_avgpool_backward_finite_differences():
    x = RNG.standard_normal((2, 3, 3, 2))
    dy = RNG.standard_normal((2, 3))

    def f(v):
        y = np.empty((2, 3))
        pool.global_avgpool2d_forward(v, y)
        return y

    dx = np.empty_like(x)
    pool.global_avgpool2d_backward(dy, dx)
    np.testing.assert_allclose(dx, _fd_grad(f, x, dy), atol=1e-8)


def test_threads_bitwise_equal():
    x = RNG.standard_normal((3, 5, 33, 31)).astype(np.float32)
    args = (3, 2, (1, 1, 0, 1), True)
    results = []
    for nt in (1, 2):
        y = _out(x, *args[:3], True)
        am = np.empty(y.shape, np.int32)
        pool.maxpool2d_forward(x, y, am, *args, n_threads=nt)
        ya = np.empty_like(y)
        pool.avgpool2d_forward(x, ya, *args, False, n_threads=nt)
        dy = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
        dxm, dxa = np.empty_like(x), np.empty_like(x)
        pool.maxpool2d_backward(dy, am, None, dxm, *args, n_threads=nt)
        pool.avgpool2d_backward(dy, dxa, *args, False, n_threads=nt)
        results.append((y, am, ya, dxm, dxa))
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


def test_empty_batch():
    x = np.empty((0, 3, 5, 5), np.float32)
    y = np.empty((0, 3, 2, 2), np.float32)
    pool.maxpool2d_forward(x, y, None, 2)
    pool.avgpool2d_forward(x, y, 2)


def test_bad_inputs_raise():
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = np.empty((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        pool.maxpool2d_forward(x, np.empty((2, 3, 4, 4), np.float32), None, 2)
    with pytest.raises(ValueError, match="dtype"):
        pool.maxpool2d_forward(x, y.astype(np.float64), None, 2)
    with pytest.raises(ValueError, match="float32 or float64"):
        pool.avgpool2d_forward(x.astype(np.int64), y, 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        pool.avgpool2d_forward(np.asfortranarray(x), y, 2)
    with pytest.raises(ValueError, match="4 dimensions"):
        pool.avgpool2d_forward(x[0], y, 2)
    with pytest.raises(ValueError, match="overlaps"):
        pool.maxpool2d_forward(x, x.reshape(-1)[:54].reshape(2, 3, 3, 3), None, 2)
    with pytest.raises(ValueError, match="int32"):
        pool.maxpool2d_forward(x, y, np.empty(y.shape, np.int64), 2)
    with pytest.raises(ValueError, match="exactly one"):
        pool.maxpool2d_backward(y, None, None, np.empty_like(x), 2)
    bad = np.full(y.shape, 36, np.int32)
    with pytest.raises(ValueError, match="outside the input plane or their window"):
        pool.maxpool2d_backward(y, bad, None, np.empty_like(x), 2)
    with pytest.raises(ValueError, match="n_threads"):
        pool.avgpool2d_forward(x, y, 2, n_threads=0)
    with pytest.raises(ValueError, match="global average"):
        pool.global_avgpool2d_forward(x, np.empty((2, 4), np.float32))
    ro = np.empty_like(y)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        pool.avgpool2d_forward(x, ro, 2)


def ref_argmax(x, kernel, stride, pad, ceil_mode):
    """Per output, the plane index of its window's first maximum in row-major order, or of
    its last NaN when it has one (PyTorch's rule)."""
    n, c, h, w = x.shape
    oh, ow = pool.pool2d_output_size((h, w), kernel, stride, pad, ceil_mode)
    am = np.empty((n, c, oh, ow), np.int64)
    index = np.arange(h * w).reshape(h, w)
    for i, j, rows, cols, _ in _windows(h, w, kernel, stride, pad, ceil_mode):
        win = x[:, :, rows, cols].reshape(n, c, -1)
        ids = index[rows, cols].reshape(-1)
        nan = np.isnan(win)
        last_nan = win.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
        first_max = np.argmax(np.where(nan, -np.inf, win), axis=2)
        am[:, :, i, j] = ids[np.where(nan.any(axis=2), last_nan, first_max)]
    return am


def ref_backward(dy, am, x_shape):
    """dx: each dy added at its window's winner."""
    n, c, h, w = x_shape
    dx = np.zeros((n * c, h * w))
    np.add.at(dx, (np.arange(n * c)[:, None], am.reshape(n * c, -1)), dy.reshape(n * c, -1))
    return dx.reshape(x_shape)


def _draw(kind, shape, dtype):
    if kind == "normal":
        x = RNG.standard_normal(shape)
    elif kind == "ties":  # few distinct values: most windows hold several maxima
        x = RNG.integers(-1, 2, shape).astype(np.float64)
        x[RNG.random(shape) < 0.1] = -0.0
    else:  # NaN at random places, some windows holding two
        x = RNG.standard_normal(shape)
        x[RNG.random(shape) < 0.15] = np.nan
    return x.astype(dtype)


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", FAST_CASES)
def test_maxpool_fast_paths(case, dtype, kind):
    h, w, k, s, pad, ceil_mode = case
    x = _draw(kind, (2, 3, h, w), dtype)
    want_am = ref_argmax(x, k, s, pad, ceil_mode)
    y, y_only = _out(x, k, s, pad, ceil_mode), _out(x, k, s, pad, ceil_mode)
    am = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, am, k, s, pad, ceil_mode, n_threads=2)
    pool.maxpool2d_forward(x, y_only, None, k, s, pad, ceil_mode, n_threads=1)
    np.testing.assert_array_equal(am, want_am)
    planes = x.reshape(6, h * w)
    want_y = np.take_along_axis(planes, want_am.reshape(6, -1), 1).reshape(y.shape)
    assert y.tobytes() == want_y.tobytes() == y_only.tobytes()  # NaN payloads and -0.0 too
    dy = RNG.standard_normal(y.shape).astype(dtype)
    dx_saved, dx_recomputed = np.full_like(x, 7.0), np.full_like(x, 7.0)
    pool.maxpool2d_backward(dy, am, None, dx_saved, k, s, pad, ceil_mode, n_threads=2)
    pool.maxpool2d_backward(dy, None, x, dx_recomputed, k, s, pad, ceil_mode, n_threads=1)
    np.testing.assert_array_equal(dx_saved, dx_recomputed)
    tol = 1e-5 if dtype == np.float32 else 1e-13  # overlapping windows add in dx's dtype
    np.testing.assert_allclose(dx_saved, ref_backward(dy.astype(np.float64), want_am, x.shape),
                               rtol=tol, atol=tol)


def test_maxpool_fast_paths_threads_bitwise_equal():
    x = _draw("ties", (3, 5, 33, 66), np.float32)
    for k, s, pad, ceil_mode in [(2, 2, (0, 1, 1, 0), True), (3, 1, (1, 1, 1, 1), False)]:
        results = []
        for nt in (1, 2):
            y = _out(x, k, s, pad, ceil_mode)
            am = np.empty(y.shape, np.int32)
            pool.maxpool2d_forward(x, y, am, k, s, pad, ceil_mode, n_threads=nt)
            dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
            dxa, dxx = np.empty_like(x), np.empty_like(x)
            pool.maxpool2d_backward(dy, am, None, dxa, k, s, pad, ceil_mode, n_threads=nt)
            pool.maxpool2d_backward(dy, None, x, dxx, k, s, pad, ceil_mode, n_threads=nt)
            results.append((y, am, dxa, dxx))
        for a, b in zip(*results):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("shape", [(3, 50, 2, 2), (5, 37, 4, 4), (3, 11, 8, 6), (4, 9, 16, 16),
                                   (5, 13, 28, 28), (7, 11, 10, 10), (3, 9, 30, 6)])
def test_maxpool_units_across_chunks_and_threads(shape):
    """More units than one chunk of the unit paths (128 rows of windows); two threads split
    the units inside a plane; both dtypes against the reference, bitwise across threads."""
    for dtype in (np.float32, np.float64):
        x = _draw("ties", shape, dtype)
        want_am = ref_argmax(x, 2, 2, (0, 0, 0, 0), False)
        dy = RNG.standard_normal(want_am.shape).astype(dtype)
        want_dx = ref_backward(dy.astype(np.float64), want_am, x.shape)
        results = []
        for nt in (1, 2):
            y, am = _out(x, 2, 2, 0, False), np.empty(want_am.shape, np.int32)
            pool.maxpool2d_forward(x, y, am, 2, n_threads=nt)
            np.testing.assert_array_equal(am, want_am)
            dxa, dxx = np.empty_like(x), np.empty_like(x)
            pool.maxpool2d_backward(dy, am, None, dxa, 2, n_threads=nt)
            pool.maxpool2d_backward(dy, None, x, dxx, 2, n_threads=nt)
            np.testing.assert_array_equal(dxa, want_dx)
            results.append((y, am, dxa, dxx))
        for a, b in zip(*results):
            assert a.tobytes() == b.tobytes()


def test_maxpool_units_no_writes_outside_outputs():
    """Outputs carved from NaN-filled buffers (argmax from -1-filled ones) stay inside."""
    for shape in [(3, 50, 2, 2), (5, 37, 4, 4), (2, 7, 8, 8), (3, 5, 16, 16), (3, 7, 28, 28),
                  (5, 3, 10, 10)]:
        x = RNG.standard_normal(shape).astype(np.float32)
        oshape = shape[:2] + (shape[2] // 2, shape[3] // 2)
        size, osize = int(np.prod(shape)), int(np.prod(oshape))
        ybuf = np.full(osize + 64, np.nan, np.float32)
        abuf = np.full(osize + 64, -1, np.int32)
        dbuf = np.full(size + 64, np.nan, np.float32)
        y, am = ybuf[32:-32].reshape(oshape), abuf[32:-32].reshape(oshape)
        dx = dbuf[32:-32].reshape(shape)
        pool.maxpool2d_forward(x, y, am, 2, n_threads=2)
        pool.maxpool2d_backward(y, am, None, dx, 2, n_threads=2)
        for buf, unset in ((ybuf, np.isnan), (dbuf, np.isnan), (abuf, lambda a: a == -1)):
            assert unset(buf[:32]).all() and unset(buf[-32:]).all()
            assert not unset(buf[32:-32]).any()


def test_maxpool_backward_rejects_argmax_outside_a_2x2_plane():
    x = RNG.standard_normal((2, 3, 2, 2)).astype(np.float32)
    y, am = np.empty((2, 3, 1, 1), np.float32), np.empty((2, 3, 1, 1), np.int32)
    pool.maxpool2d_forward(x, y, am, 2)
    for bad in (4, -1):
        am2 = am.copy()
        am2[1, 2, 0, 0] = bad
        with pytest.raises(ValueError, match="outside the input plane or their window"):
            pool.maxpool2d_backward(y, am2, None, np.empty_like(x), 2, n_threads=2)


def test_maxpool_backward_rejects_argmax_outside_its_window():
    x = RNG.standard_normal((1, 2, 4, 34)).astype(np.float32)
    y = np.empty((1, 2, 2, 17), np.float32)
    am = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, y, am, 2)
    am[0, 1, 1, 9] = am[0, 1, 1, 8]  # inside the plane, but another window's element
    with pytest.raises(ValueError, match="outside the input plane or their window"):
        pool.maxpool2d_backward(y, am, None, np.empty_like(x), 2)


def test_bound_calls_rerun_and_check_argmax():
    """bind=True validates once; each call reads the arrays' current contents, and a bound
    backward still refuses argmax entries outside their windows."""
    x = RNG.standard_normal((1, 2, 4, 34)).astype(np.float32)
    y, am = np.empty((1, 2, 2, 17), np.float32), np.empty((1, 2, 2, 17), np.int32)
    fwd = pool.maxpool2d_forward(x, y, am, 2, bind=True)
    for _ in range(2):
        x[...] = RNG.standard_normal(x.shape)
        fwd()
        np.testing.assert_array_equal(y, x.reshape(1, 2, 2, 2, 17, 2).max(axis=(3, 5)))
    dy, dx = RNG.standard_normal(y.shape).astype(np.float32), np.empty_like(x)
    bwd = pool.maxpool2d_backward(dy, am, None, dx, 2, bind=True)
    bwd()
    assert np.isclose(dx.sum(), dy.sum(), rtol=1e-5)
    am[0, 1, 1, 9] = am[0, 1, 1, 8]  # inside the plane, but another window's element
    with pytest.raises(ValueError, match="argmax"):
        bwd()
    g = np.empty((1, 2), np.float32)
    avg = pool.global_avgpool2d_forward(x, g, bind=True)
    avg()
    np.testing.assert_allclose(g, x.mean(axis=(2, 3)), rtol=1e-5)

"""cnnc._kernels.gemm against a float64 numpy reference, on every micro-kernel path.

Debug build (Cython bounds checks, -O1 -g), then these tests, then the normal build again:
    touch kernels/gemm.pyx
    CNNC_DEBUG_BUILD=1 CNNC_KERNELS=gemm python setup.py build_ext --inplace --force
    python -m pytest tests/kernels/test_gemm.py -q
    touch kernels/gemm.pyx && CNNC_KERNELS=gemm python setup.py build_ext --inplace --force
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnc._kernels import gemm as g

KERNELS = g.available_kernels()
ODD = (1, 2, 3, 7, 17, 31, 33, 65, 127)
ACTS = {
    "none": lambda x, s: x,
    "relu": lambda x, s: np.maximum(x, 0),
    "leaky_relu": lambda x, s: np.where(x > 0, x, x * s),
    "sigmoid": lambda x, s: 1 / (1 + np.exp(-x)),
    "tanh": lambda x, s: np.tanh(x),
}


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Run the test with the micro-kernel path forced, then restore the default."""
    g.set_kernel(request.param)
    yield request.param
    g.set_kernel("auto")


def _mat(rng, shape, dtype, trans):
    """A random operand of logical shape `shape`, stored transposed when `trans`."""
    x = rng.standard_normal(shape[::-1] if trans else shape)
    return x.astype(dtype)


def _check(out, a, b, c0, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None,
           bias_mode=None, act="none", act_param=0.01):
    """Assert `out` equals the float64 reference within a rounding bound that grows with K."""
    a64 = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    b64 = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    pre = alpha * a64 @ b64
    size = abs(alpha) * np.abs(a64) @ np.abs(b64)
    if beta != 0:
        pre = pre + beta * c0
        size = size + abs(beta) * np.abs(c0)
    if bias is not None:
        bias64 = bias.astype(np.float64)
        shaped = bias64[:, None] if bias_mode == "row" else bias64[None, :]
        pre = pre + shaped
        size = size + np.abs(shaped)
    ref = ACTS[act](pre, act_param)
    eps = np.finfo(out.dtype).eps
    bound = (a64.shape[1] + 8) * eps * (size + 1)   # activations are 1-Lipschitz
    err = np.abs(out.astype(np.float64) - ref)
    worst = err.argmax()
    assert np.all(err <= bound), f"error {err.flat[worst]:.3g} > bound {bound.flat[worst]:.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (2, 3, 7), (7, 17, 31), (33, 65, 2),
                                   (31, 127, 33), (127, 7, 65), (65, 33, 127), (3, 1, 17)])
def test_matches_reference(kernel, dtype, trans_a, trans_b, m, n, k):
    rng = np.random.default_rng(m * 10000 + n * 100 + k)
    a = _mat(rng, (m, k), dtype, trans_a)
    b = _mat(rng, (k, n), dtype, trans_b)
    out = g.gemm(a, b, trans_a=trans_a, trans_b=trans_b, n_threads=1)
    assert out.shape == (m, n) and out.dtype == dtype
    _check(out, a, b, None, trans_a=trans_a, trans_b=trans_b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_crosses_every_block(kernel, dtype):
    # K spans several KC blocks, N several NC blocks, M two MC blocks: the bias and the
    # activation must be applied once, after the last K block.
    rng = np.random.default_rng(1)
    m, n, k = 500, 1100, 900
    a, b = _mat(rng, (m, k), dtype, False), _mat(rng, (k, n), dtype, True)
    bias = rng.standard_normal(m).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    out = g.gemm(a, b, c0.copy(), trans_b=True, alpha=0.5, beta=-1.5, bias=bias,
                 bias_mode="row", act="leaky_relu", act_param=0.2, n_threads=2)
    _check(out, a, b, c0, trans_b=True, alpha=0.5, beta=-1.5, bias=bias, bias_mode="row",
           act="leaky_relu", act_param=0.2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, True)])
def test_strided_views(kernel, dtype, trans_a, trans_b):
    """Sliced operands whose leading dimension exceeds their width, and a sliced C."""
    rng = np.random.default_rng(2)
    m, n, k = 33, 65, 17
    a_store = rng.standard_normal((70, 90)).astype(dtype)
    b_store = rng.standard_normal((80, 100)).astype(dtype)
    a = a_store[3:3 + k, 5:5 + m] if trans_a else a_store[3:3 + m, 5:5 + k]
    b = b_store[1:1 + n, 2:2 + k] if trans_b else b_store[1:1 + k, 2:2 + n]
    c_store = np.full((50, 90), np.nan, dtype)
    c = c_store[4:4 + m, 7:7 + n]
    out = g.gemm(a, b, c, trans_a=trans_a, trans_b=trans_b, n_threads=2)
    assert out is c
    _check(c, a, b, None, trans_a=trans_a, trans_b=trans_b)
    assert np.isnan(c_store[:4]).all() and np.isnan(c_store[:, :7]).all()
    assert np.isnan(c_store[4 + m:]).all() and np.isnan(c_store[:, 7 + n:]).all()


def test_transposed_arrays_are_taken_as_views(kernel):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((17, 31))
    b = rng.standard_normal((17, 7))
    b2 = rng.standard_normal((31, 7))
    # a.T is column-major: gemm reads it through the transposed path, without a copy.
    _check(g.gemm(a.T, b), a.T, b, None)
    _check(g.gemm(a.T, b2.T, trans_a=True, trans_b=True), a, b2, None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-0.7, 0.0), (1.0, 1.0), (2.5, -0.3)])
def test_alpha_beta(kernel, dtype, alpha, beta):
    rng = np.random.default_rng(4)
    m, n, k = 17, 33, 31
    a, b = _mat(rng, (m, k), dtype, False), _mat(rng, (k, n), dtype, False)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    c = np.full((m, n), np.nan, dtype) if beta == 0 else c0.copy()
    g.gemm(a, b, c, alpha=alpha, beta=beta)
    assert np.isfinite(c).all()   # beta == 0 never reads the NaNs
    _check(c, a, b, c0, alpha=alpha, beta=beta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias_mode", ["row", "col"])
@pytest.mark.parametrize("act", list(ACTS))
def test_bias_and_activation(kernel, dtype, bias_mode, act):
    rng = np.random.default_rng(5)
    m, n, k = 31, 65, 7
    a, b = _mat(rng, (m, k), dtype, False), _mat(rng, (k, n), dtype, False)
    bias = rng.standard_normal(m if bias_mode == "row" else n).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    out = g.gemm(a, b, c0.copy(), beta=0.5, bias=bias, bias_mode=bias_mode, act=act,
                 act_param=0.1)
    _check(out, a, b, c0, beta=0.5, bias=bias, bias_mode=bias_mode, act=act, act_param=0.1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [6, 12, 20, 24, 48])
def test_column_tails(kernel, dtype, n):
    # A last column panel of exactly or under half the tile width (NR is 4..32 by path and
    # dtype) goes through the half-width kernels, with and without a scratch tile.
    rng = np.random.default_rng(n)
    m, k = 9, 13
    a, b = _mat(rng, (m, k), dtype, False), _mat(rng, (k, n), dtype, False)
    bias = rng.standard_normal(n).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    out = g.gemm(a, b, c0.copy(), beta=0.7, bias=bias, bias_mode="col", act="leaky_relu",
                 act_param=0.3)
    _check(out, a, b, c0, beta=0.7, bias=bias, bias_mode="col", act="leaky_relu",
           act_param=0.3)


def test_empty_depth_gives_epilogue_of_c():
    rng = np.random.default_rng(6)
    a, b = np.zeros((3, 0)), np.zeros((0, 5))
    c0 = rng.standard_normal((3, 5))
    bias = rng.standard_normal(5)
    out = g.gemm(a, b, c0.copy(), beta=2.0, bias=bias, bias_mode="col", act="tanh")
    np.testing.assert_allclose(out, np.tanh(2 * c0 + bias), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [(127, 2000, 65), (1000, 33, 129), (65, 127, 400),
                                   (17, 30001, 20), (10, 8, 13000)])
def test_threads_bitwise_equal(kernel, dtype, m, n, k):
    # Covers column and row splits, packed B and B read in place, several K blocks, and a
    # thread left with 2 rows (the packed path still: the path is the whole product's).
    rng = np.random.default_rng(7)
    a, b = _mat(rng, (m, k), dtype, True), _mat(rng, (k, n), dtype, False)
    bias = rng.standard_normal(n).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    outs = [g.gemm(a, b, c0.copy(), trans_a=True, beta=0.3, bias=bias, bias_mode="col",
                   act="sigmoid", n_threads=t) for t in (1, 2, 3)]
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    _check(outs[0], a, b, c0, trans_a=True, beta=0.3, bias=bias, bias_mode="col", act="sigmoid")


# A few rows of op(A) (dense layers at batch 1..4) stream B in place instead of packing it:
# B as is for up to 4 rows (row kernels: blocks of whole vectors, then a scalar tail),
# B stored transposed (dot products) for up to 2 rows and K >= 64.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (33, 67), (150, 130), (300, 17), (1027, 5)])
def test_small_m_matches_reference(kernel, dtype, m, trans_a, trans_b, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    a = _mat(rng, (m, k), dtype, trans_a)
    b = _mat(rng, (k, n), dtype, trans_b)
    out = g.gemm(a, b, trans_a=trans_a, trans_b=trans_b, n_threads=1)
    _check(out, a, b, None, trans_a=trans_a, trans_b=trans_b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-0.7, 0.0), (1.0, 1.0), (2.5, -0.3)])
def test_small_m_alpha_beta_bias_act(kernel, dtype, m, trans_b, alpha, beta):
    rng = np.random.default_rng(10 + m)
    n, k = 523, 97
    a, b = _mat(rng, (m, k), dtype, False), _mat(rng, (k, n), dtype, trans_b)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    for bias_mode, act in [(None, "none"), ("col", "relu"), ("row", "leaky_relu"),
                           ("col", "sigmoid"), ("row", "tanh")]:
        bias = None if bias_mode is None else rng.standard_normal(
            m if bias_mode == "row" else n).astype(dtype)
        c = np.full((m, n), np.nan, dtype) if beta == 0 else c0.copy()
        g.gemm(a, b, c, trans_b=trans_b, alpha=alpha, beta=beta, bias=bias,
               bias_mode=bias_mode, act=act, act_param=0.2)
        _check(c, a, b, c0, trans_b=trans_b, alpha=alpha, beta=beta, bias=bias,
               bias_mode=bias_mode, act=act, act_param=0.2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,trans_b", [(3, False), (2, True)])
def test_small_m_strided_views(dtype, m, trans_b):
    """Sliced A, B and C (leading dimensions past the width, C not cache-line aligned)."""
    rng = np.random.default_rng(11)
    n, k = 77, 70
    a = rng.standard_normal((6, 90)).astype(dtype)[1:1 + m, 3:3 + k]
    b_store = rng.standard_normal((90, 100)).astype(dtype)
    b = b_store[2:2 + n, 5:5 + k] if trans_b else b_store[2:2 + k, 5:5 + n]
    c_store = np.full((8, 90), np.nan, dtype)
    c = c_store[1:1 + m, 3:3 + n]
    g.gemm(a, b, c, trans_b=trans_b)
    _check(c, a, b, None, trans_b=trans_b)
    assert np.isnan(c_store[:1]).all() and np.isnan(c_store[:, :3]).all()
    assert np.isnan(c_store[1 + m:]).all() and np.isnan(c_store[:, 3 + n:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k,trans_b", [(1, 4099, 300, False), (4, 1001, 700, False),
                                           (3, 2003, 400, False), (3, 2003, 100, False),
                                           (1, 3001, 350, True), (2, 1999, 600, True)])
def test_small_m_threads_bitwise_equal(dtype, m, n, k, trans_b):
    # Threads split C's columns; a C whose rows start off a cache line checks that where
    # the split falls does not change any element.
    rng = np.random.default_rng(12)
    a, b = _mat(rng, (m, k), dtype, False), _mat(rng, (k, n), dtype, trans_b)
    bias = rng.standard_normal(n).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    outs = []
    for t in (1, 2, 3):
        c = np.empty((m, n + 1), dtype)[:, 1:]
        c[...] = c0
        outs.append(g.gemm(a, b, c, trans_b=trans_b, alpha=0.9, beta=0.3, bias=bias,
                           bias_mode="col", act="relu", n_threads=t))
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    _check(outs[0], a, b, c0, trans_b=trans_b, alpha=0.9, beta=0.3, bias=bias,
           bias_mode="col", act="relu")


def test_kernel_switch():
    assert g.kernel_name() == KERNELS[-1]
    for name in KERNELS:
        g.set_kernel(name)
        assert g.kernel_name() == name
    g.set_kernel("auto")
    assert g.kernel_name() == KERNELS[-1]
    with pytest.raises(ValueError, match="unknown GEMM kernel"):
        g.set_kernel("sse9")


def test_kernel_from_environment():
    code = "from cnnc._kernels import gemm; print(gemm.kernel_name())"
    env = dict(os.environ, CNNC_GEMM_KERNEL="portable")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "portable"


def test_bad_inputs_rejected():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((4, 5))
    b = rng.standard_normal((5, 6))
    cases = [
        (dict(a=a, b=rng.standard_normal((4, 6))), "inner dimensions"),
        (dict(a=a, b=b.astype(np.float32)), "dtype"),
        (dict(a=a.astype(np.int64), b=b), "float32 or float64"),
        (dict(a=a[0], b=b), "2-D"),
        (dict(a=a, b=b, c=np.empty((4, 7))), "shape"),
        (dict(a=a, b=b, c=np.empty((4, 6), np.float32)), "dtype"),
        (dict(a=a[:, ::2], b=b[:3]), "unit stride"),
        (dict(a=a, b=b, c=np.empty((6, 4)).T), "unit inner stride"),
        (dict(a=a, b=b, bias=np.ones(6)), "together"),
        (dict(a=a, b=b, bias=np.ones(5), bias_mode="col"), "length 6"),
        (dict(a=a, b=b, bias=np.ones(4), bias_mode="diag"), "bias_mode"),
        (dict(a=a, b=b, act="gelu"), "unknown act"),
        (dict(a=a, b=b, c=np.ones((4, 6)), beta=1.0, n_threads=0), "threads"),
        (dict(a=a, b=b, beta=1.0), "existing c"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            g.gemm(**kwargs)
    frozen = np.empty((4, 6))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        g.gemm(a, b, frozen)


def test_aliasing_rejected():
    store = np.random.default_rng(9).standard_normal((6, 6))
    with pytest.raises(ValueError, match="overlap"):
        g.gemm(store, store.copy(), store)
    with pytest.raises(ValueError, match="overlap"):
        g.gemm(store[:3, :3].copy(), store[:3, 3:], store[1:4, 3:])
    c = np.empty((6, 6))
    with pytest.raises(ValueError, match="overlap"):
        g.gemm(store, store.copy(), c, bias=c[0], bias_mode="col")


def test_bound_gemm_reruns_on_the_same_arrays():
    """bind=True validates once; each call reads the operands' current contents."""
    rng = np.random.default_rng(11)
    for m in (3, 37):  # the streamed few-row path and the packed path
        a = rng.standard_normal((m, 29)).astype(np.float32)
        b = rng.standard_normal((29, 45)).astype(np.float32)
        bias = rng.standard_normal(45).astype(np.float32)
        c = np.empty((m, 45), np.float32)
        call = g.gemm(a, b, c, bias=bias, bias_mode="col", act="relu", bind=True)
        for _ in range(2):
            a[...] = rng.standard_normal(a.shape)
            assert call() is c
            np.testing.assert_allclose(c, np.maximum(a @ b + bias, 0), rtol=1e-5, atol=1e-5)

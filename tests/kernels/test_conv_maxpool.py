"""conv2d_maxpool_forward, a 3x3 conv and a 2x2 stride-2 max-pool in one pass (Winograd
F(4x4) with the tiles in vector lanes), against a float64 reference: the conv, its
activation, then the pool."""
import numpy as np
import pytest

from cnnc._kernels import conv

from test_conv import ref_conv

# (n, c, h, w, m, padding)
CASES = [
    (1, 32, 31, 31, 64, 0),          # the seed CNN's conv2: the 29th row and column dropped
    (1, 3, 64, 64, 32, 0),           # its conv1: 16 tile columns and a wasted one
    (2, 5, 9, 11, 13, 1),            # 'same'; M not a multiple of 8; images share a chunk
    (3, 7, 17, 6, 9, (2, 0, 1, 3)),  # asymmetric padding, wider than 1
    (1, 1, 4, 4, 1, 0),              # a 2x2 conv output, one pooled value
    (1, 32, 64, 64, 8, 0),           # bands of tile rows (v over WINO_V_ELEMS)
    (2, 4, 5, 40, 3, 2),             # one tile row, a row of several vectors
    (5, 2, 6, 7, 17, 1),
]
ACTS = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
        "leaky_relu": lambda v: np.where(v > 0, v, 0.1 * v),
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh}


def arrays(case, dtype, seed=0):
    n, c, h, w, m, pad = case
    rng = np.random.default_rng(seed + n + c + h + m)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = (rng.standard_normal((m, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    return x, wt, b, pad


def reference(x, wt, b, pad, act):
    """float64: act(conv), pooled; and the largest pre-activation (the scale of F(4x4)'s
    rounding)."""
    pre = ref_conv(x, wt, b, 1, pad, 1, 1)
    y = ACTS[act](pre)
    n, m, oh, ow = y.shape
    ph, pw = oh // 2, ow // 2
    pooled = y[:, :, :2 * ph, :2 * pw].reshape(n, m, ph, 2, pw, 2).max(axis=(3, 5))
    return pooled, np.abs(pre).max()


def pooled_shape(x, wt, pad):
    oh, ow = conv.conv2d_output_size(x.shape[2:], (3, 3), 1, pad)
    return (x.shape[0], wt.shape[0], oh // 2, ow // 2)


def run(x, wt, b, pad, act=None, n_threads=1, y=None, ws=None):
    if y is None:
        y = np.full(pooled_shape(x, wt, pad), np.nan, x.dtype)
    if ws is None:
        ws = np.empty(conv.conv2d_maxpool_workspace_size(x.shape, wt.shape, pad, n_threads),
                      x.dtype)
    conv.conv2d_maxpool_forward(x, wt, b, y, pad, act=act, act_param=0.1, workspace=ws,
                                n_threads=n_threads)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_matches_conv_then_pool(case, dtype):
    x, wt, b, pad = arrays(case, dtype)
    tol = 3e-5 if dtype == np.float32 else 1e-12
    for act in ACTS:
        want, scale = reference(x, wt, b, pad, act)
        got = run(x, wt, b, pad, act)
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, err_msg=str(act))
    # no bias: the same as a zero bias
    want, scale = reference(x, wt, np.zeros_like(b), pad, "relu")
    got = run(x, wt, None, pad, "relu")
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("case", CASES[:3] + CASES[5:])
def test_threads_agree_and_nothing_outside_is_touched(case):
    """Two threads give one thread's bytes; x read from inside NaN-bordered memory, y and
    the workspace (its exact size) carved from NaN-filled buffers: their borders stay NaN,
    y's inside is all set."""
    x0, wt, b, pad = arrays(case, np.float32)
    xbuf = np.full(x0.size + 64, np.nan, np.float32)
    x = xbuf[32:-32].reshape(x0.shape)
    x[...] = x0
    shape = pooled_shape(x, wt, pad)
    outs = []
    for nt in (1, 2):
        size = conv.conv2d_maxpool_workspace_size(x.shape, wt.shape, pad, nt)
        ybuf = np.full(int(np.prod(shape)) + 64, np.nan, np.float32)
        wbuf = np.full(size + 64, np.nan, np.float32)
        y = run(x, wt, b, pad, "relu", nt, ybuf[32:-32].reshape(shape), wbuf[32:-32])
        for buf in (ybuf, wbuf):
            assert np.isnan(buf[:32]).all() and np.isnan(buf[-32:]).all()
        assert not np.isnan(y).any()
        outs.append(y.tobytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kept_weights_are_remade_only_when_told(dtype):
    x, wt, b, pad = arrays(CASES[2], dtype)
    shape = pooled_shape(x, wt, pad)
    ws = np.empty(conv.conv2d_maxpool_workspace_size(x.shape, wt.shape, pad), dtype)
    y, kept = np.empty(shape, dtype), np.empty(shape, dtype)
    plain = conv.conv2d_maxpool_forward(x, wt, b, y, pad, "relu", workspace=ws, bind=True)
    call = conv.conv2d_maxpool_forward(x, wt, b, kept, pad, "relu", workspace=ws, bind=True,
                                       keep_weights=True)
    assert call.keeps_weights and not plain.keeps_weights
    for _ in range(2):
        call()
        plain()
        np.testing.assert_array_equal(kept, y)
    wt *= -0.5
    call()
    plain()
    assert not np.array_equal(kept, y)
    call.weights_changed()
    call()
    np.testing.assert_array_equal(kept, y)


def test_shapes_it_does_not_take_are_refused_clearly():
    x = np.ones((1, 4, 8, 8), np.float32)
    w3, w5 = np.ones((2, 4, 3, 3), np.float32), np.ones((2, 4, 5, 5), np.float32)
    assert conv.conv2d_maxpool_supported(x.shape, w3.shape)
    assert not conv.conv2d_maxpool_supported(x.shape, w5.shape)
    assert not conv.conv2d_maxpool_supported((1, 4, 3, 3), w3.shape)  # a 1x1 conv output
    assert not conv.conv2d_maxpool_supported(x.shape, (2, 3, 3, 3))   # channels disagree
    with pytest.raises(ValueError, match="3x3 kernels"):
        conv.conv2d_maxpool_workspace_size(x.shape, w5.shape)
    ws = np.empty(conv.conv2d_maxpool_workspace_size(x.shape, w3.shape), np.float32)
    with pytest.raises(ValueError, match=r"y has shape \(1, 2, 4, 4\), expected \(1, 2, 3, 3\)"):
        conv.conv2d_maxpool_forward(x, w3, None, np.empty((1, 2, 4, 4), np.float32),
                                    workspace=ws)
    with pytest.raises(ValueError, match="workspace"):
        conv.conv2d_maxpool_forward(x, w3, None, np.empty((1, 2, 3, 3), np.float32),
                                    workspace=ws[:-1])


def test_it_pays_for_thin_layers_only():
    assert conv.conv2d_maxpool_pays((1, 32, 31, 31), (64, 32, 3, 3))
    assert not conv.conv2d_maxpool_pays((1, 64, 16, 16), (128, 64, 3, 3))


def test_random_shapes_match_conv_then_pool():
    """60 drawn layers (sizes 2-44, asymmetric padding 0-3, 1-40 channels, one or two
    threads, either dtype, each activation): the half-vector and band edges land
    anywhere."""
    rng = np.random.default_rng(123)
    for _ in range(60):
        n, c, m = (int(v) for v in rng.integers(1, (4, 41, 21)))
        h, w = (int(v) for v in rng.integers(2, 45, 2))
        pad = tuple(int(v) for v in rng.integers(0, 4, 4))
        dtype = np.float32 if rng.random() < 0.7 else np.float64
        act = list(ACTS)[int(rng.integers(0, len(ACTS)))]
        n_threads = int(rng.integers(1, 3))
        if h + pad[0] + pad[1] < 4 or w + pad[2] + pad[3] < 4:
            assert not conv.conv2d_maxpool_supported((n, c, h, w), (m, c, 3, 3), pad)
            continue
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = (rng.standard_normal((m, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
        b = rng.standard_normal(m).astype(dtype)
        want, scale = reference(x, wt, b, pad, act)
        got = run(x, wt, b, pad, act, n_threads)
        tol = 3e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale,
                                   err_msg=str((n, c, h, w, m, pad, act, n_threads)))

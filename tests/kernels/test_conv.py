"""Convolution kernels against numpy float64 references, adjoint identities and finite
differences."""
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnc._kernels import conv

RNG = np.random.default_rng(7)


def _quad(p):
    if isinstance(p, int):
        return (p,) * 4
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def ref_conv(x, w, b, stride, pad, dil, groups):
    """Plain float64 conv2d: loop over kernel taps, einsum over channels."""
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = _pair(stride), _pair(dil), _quad(pad)
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, m, oh, ow))
    mg = m // groups
    for g in range(groups):
        xg, wg = xp[:, g * cg:(g + 1) * cg], w[g * mg:(g + 1) * mg].astype(np.float64)
        for ki in range(kh):
            for kj in range(kw):
                patch = xg[:, :, ki * dh:ki * dh + (oh - 1) * sh + 1:sh,
                           kj * dw:kj * dw + (ow - 1) * sw + 1:sw]
                y[:, g * mg:(g + 1) * mg] += np.einsum("ncij,mc->nmij", patch, wg[:, :, ki, kj])
    if b is not None:
        y += b[None, :, None, None]
    return y


def ref_conv_transpose(x, w, b, stride, pad, out_pad, dil, groups):
    """Plain float64 ConvTranspose2d: scatter every input pixel, then crop the padding."""
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = _pair(stride), _pair(dil), _quad(pad)
    oph, opw = _pair(out_pad)
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    oh = (h - 1) * sh - pt - pb + dh * (kh - 1) + oph + 1
    ow = (wd - 1) * sw - pl - pr + dw * (kw - 1) + opw + 1
    full = np.zeros((n, cog * groups, pt + oh + h * sh + dh * kh, pl + ow + wd * sw + dw * kw))
    cig = cin // groups
    for g in range(groups):
        xg, wg = x[:, g * cig:(g + 1) * cig].astype(np.float64), w[g * cig:(g + 1) * cig]
        for ki in range(kh):
            for kj in range(kw):
                full[:, g * cog:(g + 1) * cog, ki * dh:ki * dh + (h - 1) * sh + 1:sh,
                     kj * dw:kj * dw + (wd - 1) * sw + 1:sw] += np.einsum(
                         "ncij,cm->nmij", xg, wg[:, :, ki, kj])
    y = full[:, :, pt:pt + oh, pl:pl + ow].copy()
    if b is not None:
        y += b[None, :, None, None]
    return y


ACTS = {
    None: lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "leaky_relu": lambda v: np.where(v > 0, v, 0.1 * v),
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
}

# (N, C, H, W, M, (kh, kw), stride, padding, dilation, groups)
CONV_CASES = [
    (1, 1, 1, 1, 1, (1, 1), 1, 0, 1, 1),
    (2, 3, 7, 7, 4, (3, 3), 1, 1, 1, 1),
    (2, 2, 8, 9, 5, (1, 1), 1, 0, 1, 1),                   # 1x1 path
    (1, 3, 7, 7, 2, (1, 1), 2, 0, 1, 1),                   # 1x1 with stride: sampled
    (2, 4, 9, 8, 6, (1, 1), (2, 3), (1, 0, 2, 1), 1, 2),   # ... padding, groups 2
    (1, 4, 17, 5, 6, (3, 2), 2, (0, 1, 1, 0), 1, 2),       # asymmetric padding, groups 2
    (3, 4, 6, 6, 4, (3, 3), 1, 1, 1, 2),
    (2, 4, 9, 7, 4, (3, 3), 1, 1, 1, 4),                   # depthwise
    (1, 3, 8, 8, 6, (3, 3), 2, (0, 1, 0, 1), 1, 3),        # depthwise, multiplier 2, TF same
    (2, 2, 9, 9, 2, (3, 3), 1, 2, 2, 2),                   # depthwise, dilation 2
    (1, 2, 7, 7, 3, (7, 7), 1, 0, 1, 1),                   # kernel == input
    (2, 3, 31, 17, 4, (2, 2), 3, 0, 1, 1),                 # stride > kernel
    (1, 2, 17, 17, 3, (3, 3), 2, 2, 2, 1),                 # dilation 2, padding 2
    (1, 5, 33, 3, 2, (5, 3), (3, 1), (2, 0, 1, 1), (1, 2), 1),
    (2, 6, 5, 4, 4, (2, 3), (1, 2), 1, 1, 2),
    # Winograd needs >= 256 output tiles per call at 64 channels (fewer: im2col)
    (3, 64, 31, 31, 64, (3, 3), 1, 1, 1, 1),               # Winograd, chunks span images
    (29, 65, 6, 5, 64, (3, 3), 1, (0, 2, 1, 0), 1, 1),     # Winograd, asymmetric, odd sizes
    (64, 64, 3, 3, 64, (3, 3), 1, 0, 1, 1),                # Winograd, kernel == input
    # at most 4 output pixels in the call: weight rows dotted with the columns
    (1, 20, 2, 2, 70, (3, 3), 1, 1, 1, 1),                 # row and K % 16 tails
    (2, 6, 3, 2, 5, (2, 2), 1, 0, 1, 1),                   # two images share the columns
    (1, 6, 3, 3, 4, (3, 3), 2, 1, 1, 2),                   # stride 2, groups 2
    (1, 100, 2, 2, 300, (3, 3), 1, 1, 1, 1),               # row blocks on two threads
]

# Weight gradients from transposed columns (kw * C/groups >= 16, small dW):
# images sharing a chunk, one image in several column tiles, stride, dilation, groups.
WGRAD_T_CASES = [
    (5, 8, 7, 6, 5, (3, 3), 1, (0, 2, 1, 0), 1, 1),
    (2, 16, 30, 25, 6, (3, 3), 1, 1, 1, 1),
    (3, 16, 9, 11, 4, (3, 2), 2, (1, 0, 0, 1), 1, 1),
    (2, 8, 12, 13, 3, (3, 3), 1, 2, 2, 1),
    (2, 24, 8, 9, 6, (2, 3), (2, 1), 1, (1, 2), 2),
    (4, 9, 5, 5, 7, (5, 5), 1, 0, 1, 1),
    (3, 6, 14, 14, 16, (5, 5), 1, 0, 1, 1),                # LeNet-5's conv2
    (2, 2, 9, 20, 3, (3, 9), 1, (1, 1, 4, 4), 1, 1),       # 2 channels, wide kernel
]

# The direct stride-1 path (conv_direct.pxi): thin inputs whose weight gradient is direct
# too, summed by output rows (OW = 32, 28) or over the flattened padded chunk (OW = 40);
# dilation; M not a multiple of the 8-, 6- or 4-row tiles; padding larger than the kernel
# (the flipped backward-data then has negative padding); one image on several row blocks.
DIRECT_CASES = [
    (3, 3, 32, 32, 16, (3, 3), 1, 1, 1, 1),
    (2, 1, 28, 28, 6, (5, 5), 1, 2, 1, 1),
    (2, 4, 40, 40, 5, (3, 3), 1, 1, 1, 1),
    (2, 3, 30, 30, 7, (3, 3), 1, 2, 2, 1),
    (3, 16, 9, 13, 13, (3, 3), 1, (3, 0, 4, 1), 1, 1),
    (1, 20, 11, 7, 9, (2, 3), 1, 0, 1, 1),
    (1, 24, 12, 12, 40, (3, 3), 1, 1, 1, 1),
    (2, 6, 14, 14, 16, (5, 5), 1, 0, 1, 1),                # LeNet-5's conv2: dx on 6 rows
    (2, 24, 16, 16, 20, (3, 3), 1, 1, 1, 1),               # direct weight gradient, 24 ch
    (2, 3, 20, 32, 32, (3, 3), 1, 0, 1, 1),                # seed CNN's conv1: 8x3 dW tiles,
    (2, 2, 18, 18, 3, (2, 2), 1, 0, 1, 1),                 # rows of 30 (a masked tail); 3x8
    (2, 2, 5, 20, 3, (3, 3), 1, (12, 5, 0, 0), 1, 1),      # forward tiles on zero rows only
]

# Winograd with the tiles in vector lanes (3x3 stride 1, 16-64 channels): whole images
# per chunk (one, or three), odd outputs with padding 0 (whose flipped backward-data,
# 64 -> 32 channels, takes it too), asymmetric padding and M not a multiple of 8,
# padding larger than the kernel (negative in the flipped conv), bands of tile rows, and
# 64 -> 64 channels with too few tiles for the GEMM Winograd.
WVEC_CASES = [
    (2, 16, 32, 32, 16, (3, 3), 1, 1, 1, 1),
    (3, 32, 16, 16, 32, (3, 3), 1, 1, 1, 1),
    (2, 32, 13, 11, 64, (3, 3), 1, 0, 1, 1),
    (2, 17, 9, 13, 23, (3, 3), 1, (0, 2, 1, 0), 1, 1),
    (1, 20, 9, 13, 16, (3, 3), 1, (3, 0, 4, 1), 1, 1),
    (2, 16, 48, 48, 16, (3, 3), 1, (1, 2, 2, 1), 1, 1),
    (1, 64, 8, 8, 64, (3, 3), 1, 1, 1, 1),
    (2, 64, 7, 9, 64, (3, 3), 1, 1, 1, 1),
]

# Winograd F(4x4) with a lane per image (16-64 channels, from 16 images): one group of 16
# on 2x2 tiles; 28 images (float32's second group 12 lanes full, float64's four groups)
# with odd sizes, asymmetric padding and partial tiles; padding 4 on the left; 6 bands of
# tile rows; 64 input channels; ResNet-20's stage 2.
WBAT_CASES = [
    (16, 16, 8, 8, 16, (3, 3), 1, 1, 1, 1),
    (28, 17, 15, 13, 24, (3, 3), 1, (0, 2, 1, 0), 1, 1),
    (16, 20, 9, 9, 16, (3, 3), 1, (3, 0, 4, 1), 1, 1),
    (16, 16, 48, 40, 16, (3, 3), 1, 1, 1, 1),
    (16, 64, 8, 8, 24, (3, 3), 1, 1, 1, 1),
    (32, 32, 16, 16, 32, (3, 3), 1, 1, 1, 1),
]
# ... and its weight gradient: chunks deep enough for the lane sums, or GEMMs (M*C > 1024)
WBAT_WGRAD_CASES = [WBAT_CASES[i] for i in (1, 3, 4, 5)]

# The direct path with a lane per image (conv_lanes.pxi: 4-32 channels, C*kh*kw >= 100, at
# most 24 output columns, from 16 images; the weight gradient up to 16 channels),
# with the passes each takes (forward, backward-data, weight gradient): LeNet-5's conv2
# (its flipped backward-data too); 28 images (float32's second group 12 lanes full) with
# stride (2, 1), asymmetric padding, a 3x5 kernel and M = 20; dilation 2 (the flipped conv
# too); stride 3 with M = 6 (6 x 4 tiles); padding larger than the kernel (output rows that
# read zero rows only, negative padding in the flipped conv); 5x5 on 20x20 (its flipped conv
# 24 columns) and ResNet-20's 16 -> 32 entry (16 columns). Widths of 5-24 columns, most rows
# ending in a narrowed tile.
LANES_CASES = {
    (16, 6, 14, 14, 16, (5, 5), 1, 0, 1, 1): (True, True, True),
    (28, 7, 9, 11, 20, (3, 5), (2, 1), (1, 0, 2, 1), 1, 1): (True, False, True),
    (16, 8, 12, 12, 9, (5, 5), 1, 4, 2, 1): (True, True, True),
    (32, 4, 13, 13, 6, (5, 5), 3, 2, 1, 1): (True, False, True),
    (16, 5, 7, 9, 7, (5, 5), 1, (6, 1, 0, 5), 1, 1): (True, True, True),
    (16, 12, 20, 20, 10, (5, 5), 1, 2, 1, 1): (True, True, True),
    (16, 16, 32, 32, 32, (3, 3), 2, 1, 1, 1): (True, False, True),
}

# Winograd F(4x4, 3x3) (>= 64 channels, M a multiple of 8, >= 256 2x2 tiles in the call):
# whole 4x4 tiles; partial tiles with asymmetric padding; odd C (its flipped backward-data,
# M = 65, takes F(2x2)); M = 68 is not a multiple of 8, so F(2x2) throughout.
WINO4_CASES = [
    (16, 64, 8, 8, 64, (3, 3), 1, 1, 1, 1),
    (6, 64, 15, 13, 72, (3, 3), 1, (0, 2, 1, 0), 1, 1),
    (2, 65, 23, 21, 64, (3, 3), 1, 1, 1, 1),
    (16, 64, 8, 8, 68, (3, 3), 1, 1, 1, 1),
]

# Strided layers split into phase planes (conv_strided.pxi; 3x3 and larger kernels,
# dilation 1): ResNet-20's stage 2 and 3 convs, odd and even sizes, paddings 0-2 and asymmetric, 5x5,
# M not a multiple of the 8-row tile, strides larger than the kernel (phases no tap
# reaches: zero in dx), stride in one dimension only, a 1-pixel-wide input; the 1x1
# shortcut takes the sampled 1x1 path.
STRIDED_CASES = [
    (3, 16, 32, 32, 32, (3, 3), 2, 1, 1, 1),
    (2, 32, 16, 16, 64, (3, 3), 2, 1, 1, 1),
    (2, 5, 9, 7, 6, (3, 3), 2, 0, 1, 1),
    (3, 7, 10, 11, 9, (3, 3), 2, 2, 1, 1),
    (2, 3, 13, 12, 4, (5, 5), 2, 2, 1, 1),
    (2, 4, 11, 9, 5, (3, 3), 2, (0, 1, 1, 0), 1, 1),
    (2, 6, 12, 13, 8, (3, 2), (2, 3), (1, 0, 2, 1), 1, 1),
    (1, 4, 9, 9, 7, (2, 2), 3, 1, 1, 1),
    (5, 2, 7, 5, 3, (3, 3), (2, 1), 1, 1, 1),
    (5, 3, 6, 1, 4, (3, 3), 2, 1, 1, 1),
    (2, 8, 8, 8, 16, (1, 1), 2, 0, 1, 1),
]


# 1x1 layers with a stride or padding (sampled, then the 1x1 path's GEMMs)
POINTWISE_CASES = [
    (3, 16, 32, 32, 32, (1, 1), 2, 0, 1, 1),               # ResNet-20's shortcuts
    (2, 32, 16, 16, 64, (1, 1), 2, 0, 1, 1),
    (2, 5, 9, 7, 6, (1, 1), 2, 0, 1, 1),                   # odd sizes
    (2, 4, 9, 8, 6, (1, 1), (2, 3), (1, 0, 2, 1), 1, 1),   # padding, unequal strides
    (3, 6, 11, 10, 4, (1, 1), 3, 1, 2, 2),                 # groups, dilation (no effect)
    (1, 3, 5, 5, 7, (1, 1), 1, 1, 1, 1),                   # stride 1 with padding
    (2, 300, 15, 15, 40, (1, 1), 2, 0, 1, 1),              # two units per image
    (1, 2, 1, 1, 3, (1, 1), 2, (0, 2, 0, 3), 1, 1),        # samples mostly padding
    (3, 600, 5, 5, 512, (1, 1), 2, 0, 1, 1),               # large dW: no partial sums
    (1, 16384, 11, 32, 2, (1, 1), 2, (1, 0, 0, 1), 1, 1),  # a unit per output row
]


def _case_arrays(case, dtype, rng=RNG):
    n, c, h, w, m, k, stride, pad, dil, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((m, c // groups) + k).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    oh, ow = conv.conv2d_output_size((h, w), k, stride, pad, dil)
    return x, wt, b, (n, m, oh, ow), dict(stride=stride, padding=pad, dilation=dil,
                                          groups=groups)


def _ws(x_shape, w_shape, kw, dtype, n_threads=1, transpose=False):
    if transpose:
        size = conv.conv_transpose2d_workspace_size(x_shape, w_shape, n_threads=n_threads, **kw)
    else:
        size = conv.conv2d_workspace_size(x_shape, w_shape, n_threads=n_threads, **kw)
    return np.full(size, np.nan, dtype) if size else None


def forward(x, wt, b, y_shape, kw, act=None, n_threads=1):
    y = np.full(y_shape, np.nan, x.dtype)
    conv.conv2d_forward(x, wt, b, y, act=act, act_param=0.1,
                        workspace=_ws(x.shape, wt.shape, kw, x.dtype, n_threads),
                        n_threads=n_threads, **kw)
    return y


def backward(x, wt, dy, kw, n_threads=1, accumulate=False, dw=None, db=None):
    ws = _ws(x.shape, wt.shape, kw, x.dtype, n_threads)
    dx = np.full(x.shape, np.nan, x.dtype)
    conv.conv2d_backward_data(dy, wt, dx, workspace=ws, n_threads=n_threads, **kw)
    dw = np.full(wt.shape, np.nan, x.dtype) if dw is None else dw
    db = np.full(wt.shape[0], np.nan, x.dtype) if db is None else db
    conv.conv2d_backward_weight(x, dy, dw, db, accumulate=accumulate, workspace=ws,
                                n_threads=n_threads, **kw)
    return dx, dw, db


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward(case, dtype):
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for act, bias in ((None, None), ("relu", b)):
        y = forward(x, wt, bias, y_shape, kw, act)
        ref = ACTS[act](ref_conv(x, wt, bias, kw["stride"], kw["padding"], kw["dilation"],
                                 kw["groups"]))
        # rounding grows with the sums' size (Winograd F(4x4)'s float32 sums: ~1e-5 of it)
        np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * max(1, np.abs(ref).max()))


@pytest.mark.parametrize("act", ["leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 2, 6, 17)])
def test_conv_forward_activations(case, act):
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64)
    ref = ACTS[act](ref_conv(x, wt, b, kw["stride"], kw["padding"], kw["dilation"],
                             kw["groups"]))
    np.testing.assert_allclose(forward(x, wt, b, y_shape, kw, act), ref, rtol=1e-12,
                               atol=1e-12)


def ref_backward(x, wt, dy, kw):
    """dx and dw of <dy, conv(x, w)> from the reference, via its linearity in each input."""
    def f(a, b):
        return ref_conv(a, b, None, kw["stride"], kw["padding"], kw["dilation"], kw["groups"])
    dx = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):  # conv is linear in x: column by column
        e = np.zeros(x.shape)
        e[idx] = 1
        dx[idx] = np.vdot(dy, f(e, wt))
    dw = np.zeros(wt.shape)
    for idx in np.ndindex(wt.shape):
        e = np.zeros(wt.shape)
        e[idx] = 1
        dw[idx] = np.vdot(dy, f(x, e))
    return dx, dw


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_adjoint_identity(case):
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64)
    dy = RNG.standard_normal(y_shape)
    dx, dw, db = backward(x, wt, dy, kw)
    y = forward(x, wt, None, y_shape, kw)
    # <dy, conv(x, w)> = <conv_backward_data(dy), x> = <conv_backward_weight(x, dy), w>
    lhs = np.vdot(dy, y)
    np.testing.assert_allclose(np.vdot(dx, x), lhs, rtol=1e-11)
    np.testing.assert_allclose(np.vdot(dw, wt), lhs, rtol=1e-11)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_backward_float32_matches_float64(case):
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64)
    dy = RNG.standard_normal(y_shape)
    ref = backward(x, wt, dy, kw)
    got = backward(x.astype(np.float32), wt.astype(np.float32), dy.astype(np.float32), kw)
    for a, r in zip(got, ref):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 3, 4, 7, 8, 9, 11, 13)])
def test_conv_backward_against_reference(case):
    """Per-element reference gradients on small shapes (the reference is linear, so its
    derivative along a unit vector is exact)."""
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64)
    x, dy = x[:1], RNG.standard_normal((1,) + y_shape[1:])
    dx, dw, _ = backward(x, wt, dy, kw)
    ref_dx, ref_dw = ref_backward(x, wt, dy, kw)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-11, atol=1e-11)


def _fd(f, v, dy, eps=1e-6):
    g = np.empty_like(v)
    for idx in np.ndindex(v.shape):
        old = v[idx]
        v[idx] = old + eps
        up = np.vdot(dy, f())
        v[idx] = old - eps
        down = np.vdot(dy, f())
        v[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 2, 5, 7)]
                         + [DIRECT_CASES[i] for i in (3, 4)]
                         + [(1, 16, 5, 7, 16, (3, 3), 1, (1, 0, 2, 1), 1, 1),
                            (1, 2, 9, 8, 3, (3, 3), 2, 1, 1, 1),       # strided, one image
                            (1, 1, 11, 9, 2, (5, 5), 2, 2, 1, 1),
                            (1, 2, 8, 9, 3, (3, 2), (2, 3), (1, 0, 2, 1), 1, 1)])
def test_conv_backward_finite_differences(case):
    """Through the fused bias + tanh epilogue: d tanh = 1 - y^2, then conv backward."""
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64)
    x = x[:1]
    y_shape = (1,) + y_shape[1:]
    dz = RNG.standard_normal(y_shape)

    def f():
        return forward(x, wt, b, y_shape, kw, "tanh")

    dy = dz * (1 - f() ** 2)
    dx, dw, db = backward(x, wt, dy, kw)
    # atol: central differences at eps = 1e-6 of sums of ~100 terms of order 1 carry
    # ~1e-16 * 100 / 2e-6 = 5e-9 of rounding (a portable build's order: 1.6e-8)
    np.testing.assert_allclose(dx, _fd(f, x, dz), rtol=1e-6, atol=3e-8)
    np.testing.assert_allclose(dw, _fd(f, wt, dz), rtol=1e-6, atol=3e-8)
    np.testing.assert_allclose(db, _fd(f, b, dz), rtol=1e-6, atol=3e-8)


def ref_weight_grad(x, dy, w_shape, stride, pad, dil, groups):
    """Plain float64 weight gradient: per kernel tap, dy against the shifted input."""
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = _pair(stride), _pair(dil), _quad(pad)
    m, cg, kh, kw = w_shape
    mg, (oh, ow) = m // groups, dy.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    grad = np.zeros(w_shape)
    for g in range(groups):
        xg, dyg = xp[:, g * cg:(g + 1) * cg], dy[:, g * mg:(g + 1) * mg].astype(np.float64)
        for ki in range(kh):
            for kj in range(kw):
                patch = xg[:, :, ki * dh:ki * dh + (oh - 1) * sh + 1:sh,
                           kj * dw:kj * dw + (ow - 1) * sw + 1:sw]
                grad[g * mg:(g + 1) * mg, :, ki, kj] = np.einsum("nmij,ncij->mc", dyg, patch)
    return grad


@pytest.mark.parametrize("case", WGRAD_T_CASES + [CONV_CASES[i] for i in (1, 4, 14, 15)]
                         + DIRECT_CASES + STRIDED_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_weight_gradient(case, dtype):
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    _, dw, db = backward(x, wt, dy, kw)
    ref = ref_weight_grad(x, dy, wt.shape, kw["stride"], kw["padding"], kw["dilation"],
                          kw["groups"])
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(dw, ref, rtol=tol, atol=tol * np.abs(ref).max())
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=tol,
                               atol=tol * y_shape[2] * y_shape[3])
    # accumulate adds to what dw holds; results do not depend on the thread count
    dw0 = RNG.standard_normal(wt.shape).astype(dtype)
    _, dw2, _ = backward(x, wt, dy, kw, n_threads=2, accumulate=True, dw=dw0.copy())
    np.testing.assert_allclose(dw2, dw0 + ref, rtol=tol, atol=tol * np.abs(ref).max())
    _, dw1, _ = backward(x, wt, dy, kw, n_threads=1, accumulate=True, dw=dw0.copy())
    assert dw1.tobytes() == dw2.tobytes()


def test_backward_weight_accumulates():
    x, wt, b, y_shape, kw = _case_arrays(CONV_CASES[5], np.float64)
    dy = RNG.standard_normal(y_shape)
    _, dw, db = backward(x, wt, dy, kw)
    dw0, db0 = RNG.standard_normal(wt.shape), RNG.standard_normal(wt.shape[0])
    _, dw2, db2 = backward(x, wt, dy, kw, accumulate=True, dw=dw0.copy(), db=db0.copy())
    np.testing.assert_allclose(dw2, dw + dw0, rtol=1e-12)
    np.testing.assert_allclose(db2, db + db0, rtol=1e-12)


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 2, 6, 12)])
@pytest.mark.parametrize("n", [0, 1])
def test_conv_small_batches(case, n):
    x, wt, b, y_shape, kw = _case_arrays(case, np.float32)
    x, y_shape = x[:n].copy(), (n,) + y_shape[1:]
    y = forward(x, wt, b, y_shape, kw)
    np.testing.assert_allclose(y, ref_conv(x, wt, b, kw["stride"], kw["padding"],
                                           kw["dilation"], kw["groups"]), rtol=1e-4, atol=1e-4)
    dy = RNG.standard_normal(y_shape).astype(np.float32)
    dx, dw, db = backward(x, wt, dy, kw)
    if n == 0:
        assert not dw.any() and not db.any()


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 2, 5, 6, 12, 14, 15, 16, 18, 20)]
                         + WGRAD_T_CASES[:2] + DIRECT_CASES + WVEC_CASES[2:5]
                         + STRIDED_CASES)
@pytest.mark.parametrize("n", [1, 3, 23])
def test_conv_threads_bitwise_equal(case, n):
    """n = 23 splits small images into several multi-image chunks shared by the threads."""
    x, wt, b, y_shape, kw = _case_arrays(case, np.float32)
    x = np.concatenate([x] * n)[:n]
    y_shape = (n,) + y_shape[1:]
    dy = RNG.standard_normal(y_shape).astype(np.float32)
    runs = [(forward(x, wt, b, y_shape, kw, "relu", nt),) + backward(x, wt, dy, kw, nt)
            for nt in (1, 2, 3)]
    for outs in zip(*runs):
        assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DIRECT_CASES)
def test_direct_path_matches_im2col(case, dtype):
    """The direct path against the reference, and against im2col + GEMM on every output."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    runs = []
    for direct in (True, False):
        conv._set_direct(direct)
        try:
            runs.append((forward(x, wt, b, y_shape, kw, "relu"),) + backward(x, wt, dy, kw))
        finally:
            conv._set_direct(True)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    ref = ACTS["relu"](ref_conv(x, wt, b, kw["stride"], kw["padding"], kw["dilation"], 1))
    np.testing.assert_allclose(runs[0][0], ref, rtol=tol, atol=tol * np.abs(ref).max())
    for got, want in zip(*runs):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("act", [None, "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("case", [DIRECT_CASES[i] for i in (0, 1, 5, 9)])
def test_direct_forward_activations(case, act):
    """The direct tiles store bias (+ relu) straight into y; other activations run over
    the finished rows: every image, and one image's row blocks on 2 threads."""
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64)
    for bias in (b, None):
        ref = ACTS[act](ref_conv(x, wt, bias, kw["stride"], kw["padding"], kw["dilation"], 1))
        for nt in (1, 2):
            np.testing.assert_allclose(forward(x, wt, bias, y_shape, kw, act, nt), ref,
                                       rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(forward(x[:1], wt, bias, (1,) + y_shape[1:], kw, act, nt),
                                       ref[:1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", STRIDED_CASES)
def test_strided_path_matches_im2col(case, dtype):
    """The polyphase path against the reference, and against im2col + GEMM on every
    output, with a fused activation."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    runs = []
    for strided in (True, False):
        conv._set_strided(strided)
        try:
            runs.append((forward(x, wt, b, y_shape, kw, "leaky_relu"),)
                        + backward(x, wt, dy, kw))
        finally:
            conv._set_strided(True)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    ref = ACTS["leaky_relu"](ref_conv(x, wt, b, kw["stride"], kw["padding"], 1, 1))
    np.testing.assert_allclose(runs[0][0], ref, rtol=tol, atol=tol * np.abs(ref).max())
    for got, want in zip(*runs):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POINTWISE_CASES)
def test_pointwise_path_matches_im2col(case, dtype):
    """The sampled 1x1 path against the reference and im2col + GEMM, with a fused
    activation; bitwise the same on two threads."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    runs = []
    for enabled, nt in ((True, 1), (True, 2), (False, 1)):
        conv._set_pointwise(enabled)
        try:
            runs.append((forward(x, wt, b, y_shape, kw, "leaky_relu", nt),)
                        + backward(x, wt, dy, kw, nt))
        finally:
            conv._set_pointwise(True)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    ref = ACTS["leaky_relu"](ref_conv(x, wt, b, kw["stride"], kw["padding"], 1, kw["groups"]))
    np.testing.assert_allclose(runs[0][0], ref, rtol=tol, atol=tol * np.abs(ref).max())
    for one, two, im2col in zip(*runs):
        np.testing.assert_array_equal(one, two)
        np.testing.assert_allclose(one, im2col, rtol=tol, atol=tol * np.abs(im2col).max())


def test_strided_workspace_bound():
    """ResNet-20's strided layers stay within the documented workspace bound."""
    for x_shape, w_shape in [((64, 16, 32, 32), (32, 16, 3, 3)),
                             ((64, 32, 16, 16), (64, 32, 3, 3)),
                             ((1, 3, 224, 224), (64, 3, 7, 7)),
                             ((64, 16, 32, 32), (32, 16, 1, 1)),
                             ((32, 1024, 14, 14), (2048, 1024, 1, 1))]:
        k = w_shape[1] * w_shape[2] * w_shape[3]
        for nt in (1, 2):
            assert conv.conv2d_workspace_size(x_shape, w_shape, 2, 1, n_threads=nt) <= (
                nt * (max(2 * conv.COL_TILE_ELEMS, k) + conv.COL_TILE_ELEMS)
                + 4 * w_shape[0] * k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WVEC_CASES)
def test_wino_vec_matches_other_paths(case, dtype):
    """The vector Winograd path (forward, flipped backward-data) against the reference,
    and against the path the layer takes without it, with every activation it fuses."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for act in (None, "relu", "leaky_relu", "tanh"):
        runs = []
        for enabled in (True, False):
            conv._set_wino_vec(enabled)
            try:
                runs.append((forward(x, wt, b, y_shape, kw, act),) + backward(x, wt, dy, kw))
            finally:
                conv._set_wino_vec(True)
        ref = ACTS[act](ref_conv(x, wt, b, kw["stride"], kw["padding"], kw["dilation"], 1))
        np.testing.assert_allclose(runs[0][0], ref, rtol=tol, atol=tol * np.abs(ref).max())
        assert runs[0][0].tobytes() != runs[1][0].tobytes()  # it did take another path
        for got, want in zip(*runs):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def _assert_threads_agree_inside(case, x, wt, b, y_shape, kw, dy):
    """Two threads give one thread's bytes in all three passes; nothing outside the
    outputs is written."""
    one, two = ((forward(x, wt, b, y_shape, kw, "relu", nt),) + backward(x, wt, dy, kw, nt)
                for nt in (1, 2))
    for a, b2 in zip(one, two):
        assert a.tobytes() == b2.tobytes()
    _assert_writes_inside(case)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WBAT_CASES)
def test_wino_batch_matches_other_paths(case, dtype):
    """Winograd with a lane per image (forward with every activation it fuses, flipped
    backward-data, and the weight gradient where its chunks are deep enough) against the
    reference and against the paths the layer takes without it; tolerances scale with the
    largest pre-activation (float32 F(4x4) rounds to ~1e-5 of it). Two threads give the
    same bytes; nothing outside the outputs is written."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    pre = ref_conv(x, wt, b, kw["stride"], kw["padding"], kw["dilation"], 1)
    for act in (None, "relu", "leaky_relu", "tanh"):
        runs = []
        for enabled in (True, False):
            conv._set_wino_batch(enabled)
            try:
                runs.append((forward(x, wt, b, y_shape, kw, act),) + backward(x, wt, dy, kw))
            finally:
                conv._set_wino_batch(True)
        np.testing.assert_allclose(runs[0][0], ACTS[act](pre), rtol=tol,
                                   atol=tol * np.abs(pre).max())
        assert runs[0][0].tobytes() != runs[1][0].tobytes()  # it did take another path
        assert (runs[0][2].tobytes() != runs[1][2].tobytes()) == (case in WBAT_WGRAD_CASES)
        np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=tol,
                                   atol=tol * np.abs(pre).max())
        for got, want in zip(runs[0][1:], runs[1][1:]):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    if dtype == np.float32:
        _assert_threads_agree_inside(case, x, wt, b, y_shape, kw, dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WBAT_CASES)
def test_worker_stride_gives_the_same_bytes(case, dtype):
    """With a worker stride (each thread's scratch at a fixed place in a shared workspace,
    the shared data after them) the batch-lanes paths give the same bytes as without, at
    1-3 threads and at a stride larger than any path needs; the kernels refuse a
    workspace sized without it."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    per = conv.conv2d_worker_scratch(x.shape, wt.shape, n_threads=2, **kw)
    assert per > 0
    for nt in (1, 2, 3):
        want = (forward(x, wt, b, y_shape, kw, "relu", nt),) + backward(x, wt, dy, kw, nt)
        for stride in (per, per + 37):
            size = conv.conv2d_workspace_size(x.shape, wt.shape, n_threads=nt,
                                              worker_stride=stride, **kw)
            ws = RNG.standard_normal(size).astype(dtype)  # scratch: any contents
            y, dx = np.empty(y_shape, dtype), np.empty_like(x)
            dw, db = np.empty_like(wt), np.empty(wt.shape[0], dtype)
            conv.conv2d_forward(x, wt, b, y, act="relu", workspace=ws, n_threads=nt,
                                worker_stride=stride, **kw)
            conv.conv2d_backward_data(dy, wt, dx, workspace=ws, n_threads=nt,
                                      worker_stride=stride, **kw)
            conv.conv2d_backward_weight(x, dy, dw, db, workspace=ws, n_threads=nt,
                                        worker_stride=stride, **kw)
            for got, ref in zip((y, dx, dw, db), want):
                assert got.tobytes() == ref.tobytes()
    natural = conv.conv2d_workspace_size(x.shape, wt.shape, n_threads=2, **kw)
    strided = conv.conv2d_workspace_size(x.shape, wt.shape, n_threads=2,
                                         worker_stride=per + 4096, **kw)
    if strided > natural:
        with pytest.raises(ValueError, match="workspace"):
            conv.conv2d_forward(x, wt, b, np.empty(y_shape, dtype),
                                workspace=np.empty(natural, dtype), n_threads=2,
                                worker_stride=per + 4096, **kw)
    with pytest.raises(ValueError, match="worker_stride"):
        conv.conv2d_workspace_size(x.shape, wt.shape, worker_stride=-1, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(LANES_CASES))
def test_lanes_path_matches_other_paths(case, dtype):
    """The direct path with a lane per image against the references (forward with every
    activation it fuses; backward-data as the transposed conv of dy; the weight gradient)
    and against the paths the layer takes without it. Two threads give the same bytes;
    nothing outside the outputs is written."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    stride, pad, dil = kw["stride"], kw["padding"], kw["dilation"]
    assert conv._lanes_passes(x.shape, wt.shape, stride, pad, dil) == LANES_CASES[case]
    tol = 1e-4 if dtype == np.float32 else 1e-12
    pre = ref_conv(x, wt, b, stride, pad, dil, 1)
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = _pair(stride), _pair(dil), _quad(pad)
    out_pad = (x.shape[2] - ((y_shape[2] - 1) * sh - pt - pb + dh * (wt.shape[2] - 1) + 1),
               x.shape[3] - ((y_shape[3] - 1) * sw - pl - pr + dw * (wt.shape[3] - 1) + 1))
    refs = (ref_conv_transpose(dy, wt, None, stride, pad, out_pad, dil, 1),
            ref_weight_grad(x, dy, wt.shape, stride, pad, dil, 1))
    for act in (None, "relu", "leaky_relu", "tanh"):
        runs = []
        for enabled in (True, False):
            conv._set_lanes(enabled)
            try:
                runs.append((forward(x, wt, b, y_shape, kw, act),) + backward(x, wt, dy, kw)[:2])
            finally:
                conv._set_lanes(True)
        np.testing.assert_allclose(runs[0][0], ACTS[act](pre), rtol=tol,
                                   atol=tol * np.abs(pre).max())
        for got, want in zip(runs[0][1:], refs):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
        for got, want in zip(*runs):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    if dtype == np.float32:
        _assert_threads_agree_inside(case, x, wt, b, y_shape, kw, dy)


@pytest.mark.parametrize("case", [c for c, passes in LANES_CASES.items() if passes[1]])
def test_lanes_path_finite_differences(case):
    """Through the fused bias + tanh: dx and dW at 24 random entries each against central
    differences (float64; every entry of these 16-image layers would take minutes)."""
    rng = np.random.default_rng(3)
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64, rng)
    dz = rng.standard_normal(y_shape)

    def f():
        return forward(x, wt, b, y_shape, kw, "tanh")

    dx, dw, _ = backward(x, wt, dz * (1 - f() ** 2), kw)
    for v, grad in ((x, dx), (wt, dw)):
        for flat in rng.choice(v.size, 24, replace=False):
            idx = np.unravel_index(flat, v.shape)
            old = v[idx]
            v[idx] = old + 1e-6
            up = np.vdot(dz, f())
            v[idx] = old - 1e-6
            down = np.vdot(dz, f())
            v[idx] = old
            # rounding: sums of ~10^4 terms of order 1 at eps = 1e-6
            assert abs(grad[idx] - (up - down) / 2e-6) <= 1e-6 * abs(grad[idx]) + 1e-6


def _wino4_runs(case, dtype, n_threads=1):
    """Forward (relu), backward-data, weight gradient with F(4x4) allowed, then without
    (the same draws on every call); GEMM Winograd's, the lane-per-image path kept out."""
    rng = np.random.default_rng(5)
    x, wt, b, y_shape, kw = _case_arrays(case, dtype, rng)
    dy = rng.standard_normal(y_shape).astype(dtype)
    runs = []
    for enabled in (True, False):
        conv._set_wino4(enabled)
        conv._set_wino_batch(False)
        try:
            runs.append((forward(x, wt, b, y_shape, kw, "relu", n_threads),)
                        + backward(x, wt, dy, kw, n_threads)[:2])
        finally:
            conv._set_wino4(True)
            conv._set_wino_batch(True)
    return x, wt, b, dy, kw, runs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINO4_CASES)
def test_wino4_matches_reference(case, dtype):
    """F(4x4) against the reference and against F(2x2) on every output; it takes another
    path exactly where it applies."""
    x, wt, b, dy, kw, runs = _wino4_runs(case, dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    ref = ACTS["relu"](ref_conv(x, wt, b, 1, kw["padding"], 1, 1))
    np.testing.assert_allclose(runs[0][0], ref, rtol=tol, atol=tol * np.abs(ref).max())
    assert (runs[0][0].tobytes() != runs[1][0].tobytes()) == (case[4] % 8 == 0)
    for got, want in zip(*runs):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("case", WINO4_CASES[:3])
def test_wino4_adjoint_and_threads(case):
    """float64: backward-data and the weight gradient are the forward's adjoints; float32:
    two threads give the same bytes as one, and nothing outside the outputs is written."""
    x, wt, _, y_shape, kw = _case_arrays(case, np.float64)
    dy = RNG.standard_normal(y_shape)
    y = forward(x, wt, None, y_shape, kw)
    dx, dw, _ = backward(x, wt, dy, kw)
    lhs = np.vdot(dy, y)
    np.testing.assert_allclose(np.vdot(dx, x), lhs, rtol=1e-11)
    np.testing.assert_allclose(np.vdot(dw, wt), lhs, rtol=1e-11)
    one, two = (_wino4_runs(case, np.float32, nt)[5][0] for nt in (1, 2))
    for a, b2 in zip(one, two):
        assert a.tobytes() == b2.tobytes()
    _assert_writes_inside(case)


@pytest.mark.parametrize("kernel", ["avx2", "portable"])
def test_wino_panels_of_other_gemm_kernels(kernel):
    """The Winograd GEMMs read U and V in the micro-kernel's panels: with the narrower MR and
    NR of the other kernels (float64 panels narrower than the 16 transform lanes), F(4x4)
    and F(2x2) still match the reference in all three passes."""
    code = f"""
import sys, numpy as np
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_conv import WINO4_CASES, _wino4_runs, ref_conv, ACTS
for case in WINO4_CASES[:2]:
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
        x, wt, b, dy, kw, runs = _wino4_runs(case, dtype)
        ref = ACTS["relu"](ref_conv(x, wt, b, 1, kw["padding"], 1, 1))
        np.testing.assert_allclose(runs[0][0], ref, rtol=tol, atol=tol * np.abs(ref).max())
        for got, want in zip(*runs):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
print("ok")
"""
    env = dict(os.environ, CNNC_GEMM_KERNEL=kernel)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# per-tap GEMMs (conv_taps.pxi): the first three take it by default (few output pixels,
# >= 64 channels; forward and weight gradient from 4 images), the rest under _set_taps(2)
TAPS_CASES = [
    (5, 64, 2, 2, 72, (3, 3), 1, 1, 1, 1),                 # VGG's 2x2 stage, small
    (4, 70, 4, 3, 64, (3, 3), 1, (0, 2, 1, 0), 1, 1),      # asymmetric padding, 4x4 output
    (2, 64, 3, 4, 65, (3, 3), 1, 1, 1, 1),                 # 2 images: backward-data only
    (3, 5, 7, 6, 6, (3, 2), (2, 1), (0, 1, 1, 0), (1, 2), 1),  # vertical stride, dilation
    (2, 3, 1, 1, 4, (3, 3), 1, 1, 1, 1),                   # only the centre tap reads x
    (3, 6, 5, 5, 7, (2, 3), 1, (1, 0, 2, 1), 1, 1),        # partial rows, whole rows
    (1, 4, 3, 3, 5, (3, 3), 1, 0, 1, 1),                   # kernel == input
    (3, 40, 100, 100, 20, (1, 2), 1, (0, 0, 0, 1), 1, 1),  # one image per chunk
]


def _with_taps(mode, run):
    conv._set_taps(mode)
    try:
        return run()
    finally:
        conv._set_taps(1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TAPS_CASES)
def test_taps_path_matches_reference(case, dtype):
    """The per-tap path (forced, and by default) against the references and against the
    path the layer takes without it; accumulation and thread counts for the gradient."""
    x, wt, b, y_shape, kw = _case_arrays(case, dtype)
    dy = RNG.standard_normal(y_shape).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    ref_y = ACTS["relu"](ref_conv(x, wt, b, kw["stride"], kw["padding"], kw["dilation"], 1))
    ref_dw = ref_weight_grad(x, dy, wt.shape, kw["stride"], kw["padding"], kw["dilation"], 1)
    runs = [_with_taps(mode, lambda: (forward(x, wt, b, y_shape, kw, "relu"),)
                       + backward(x, wt, dy, kw)) for mode in (2, 1, 0)]
    np.testing.assert_allclose(runs[0][0], ref_y, rtol=tol, atol=tol * np.abs(ref_y).max())
    np.testing.assert_allclose(runs[0][2], ref_dw, rtol=tol, atol=tol * np.abs(ref_dw).max())
    for run in runs[1:]:
        for got, want in zip(runs[0], run):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    dw0 = RNG.standard_normal(wt.shape).astype(dtype)
    acc = [_with_taps(2, lambda: backward(x, wt, dy, kw, nt, True, dw0.copy())[1])
           for nt in (1, 2)]
    np.testing.assert_allclose(acc[0], dw0 + ref_dw, rtol=tol, atol=tol * np.abs(ref_dw).max())
    assert acc[0].tobytes() == acc[1].tobytes()


@pytest.mark.parametrize("case", TAPS_CASES[:7])
def test_taps_path_gradients(case):
    """Forced per-tap path, float64: adjoint identities, then finite differences through
    the bias + tanh epilogue on the first image."""
    x, wt, b, y_shape, kw = _case_arrays(case, np.float64)
    dy = RNG.standard_normal(y_shape)

    def check():
        dx, dw, _ = backward(x, wt, dy, kw)
        lhs = np.vdot(dy, forward(x, wt, None, y_shape, kw))
        np.testing.assert_allclose(np.vdot(dx, x), lhs, rtol=1e-11)
        np.testing.assert_allclose(np.vdot(dw, wt), lhs, rtol=1e-11)
        x1, shape1 = x[:1].copy(), (1,) + y_shape[1:]
        dz = dy[:1]

        def f():
            return forward(x1, wt, b, shape1, kw, "tanh")

        dx1, dw1, _ = backward(x1, wt, dz * (1 - f() ** 2), kw)
        np.testing.assert_allclose(dx1, _fd(f, x1, dz), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(dw1, _fd(f, wt, dz), rtol=1e-6, atol=1e-8)

    _with_taps(2, check)


@pytest.mark.parametrize("mode", [1, 2])
def test_taps_path_threads_and_bounds(mode):
    """Bitwise equal for 1 and 2 threads; no write outside the outputs."""
    def check():
        for case in TAPS_CASES[:7]:
            x, wt, b, y_shape, kw = _case_arrays(case, np.float32)
            dy = RNG.standard_normal(y_shape).astype(np.float32)
            runs = [(forward(x, wt, b, y_shape, kw, "relu", nt),) + backward(x, wt, dy, kw, nt)
                    for nt in (1, 2)]
            for a, a2 in zip(*runs):
                assert a.tobytes() == a2.tobytes()
            _assert_writes_inside(case)

    _with_taps(mode, check)


def test_taps_workspace_bound():
    """VGG-11's CIFAR layers under the documented bound n_threads * (max(2**20, K) + 2**19)
    + 4*M*K, at batch 64 and 1."""
    for x_shape, w_shape in [((64, 512, 2, 2), (512, 512, 3, 3)),
                             ((64, 256, 4, 4), (512, 256, 3, 3)),
                             ((1, 512, 4, 4), (512, 512, 3, 3))]:
        k = w_shape[1] * w_shape[2] * w_shape[3]
        for nt in (1, 2):
            assert conv.conv2d_workspace_size(x_shape, w_shape, 1, 1, n_threads=nt) <= (
                nt * (max(2 * conv.COL_TILE_ELEMS, k) + conv.COL_TILE_ELEMS)
                + 4 * w_shape[0] * k)


def _assert_writes_inside(case):
    """Outputs carved from NaN-filled buffers: the borders stay NaN, the inside is set."""
    x, wt, b, y_shape, kw = _case_arrays(case, np.float32)
    dy = RNG.standard_normal(y_shape).astype(np.float32)
    shapes = {"y": y_shape, "dx": x.shape, "dw": wt.shape}
    bufs = {k: np.full(np.prod(s) + 64, np.nan, np.float32) for k, s in shapes.items()}
    y, dx, dw = (bufs[k][32:32 + np.prod(s)].reshape(s) for k, s in shapes.items())
    ws = _ws(x.shape, wt.shape, kw, np.float32, 2)
    conv.conv2d_forward(x, wt, b, y, workspace=ws, n_threads=2, **kw)
    conv.conv2d_backward_data(dy, wt, dx, workspace=ws, n_threads=2, **kw)
    conv.conv2d_backward_weight(x, dy, dw, None, workspace=ws, n_threads=2, **kw)
    for buf in bufs.values():
        assert np.isnan(buf[:32]).all() and np.isnan(buf[-32:]).all()
        assert not np.isnan(buf[32:-32]).any()


def test_no_writes_outside_outputs():
    for case in (CONV_CASES[1:9] + WGRAD_T_CASES[:2] + DIRECT_CASES + WVEC_CASES
                 + STRIDED_CASES + POINTWISE_CASES):
        _assert_writes_inside(case)


def test_workspace_is_bounded_and_tiled():
    """A layer whose un-tiled im2col needs 1.2M elements runs in the bounded workspace."""
    x = RNG.standard_normal((2, 32, 64, 64)).astype(np.float32)
    wt = RNG.standard_normal((8, 32, 3, 3)).astype(np.float32)
    kw = dict(stride=1, padding=1, dilation=1, groups=1)
    size = conv.conv2d_workspace_size(x.shape, wt.shape, n_threads=2, **kw)
    # per thread: one im2col tile, and the channels-last copy of x the weight gradient uses
    assert size <= 2 * (conv.COL_TILE_ELEMS + 32 * 64 * 64) + 4 * 8 * 288 < 2 * 32 * 9 * 64 * 64
    # the documented bound, n_threads * (max(2**20, K) + 2**19) + 4*M*K, on VGG-16 and
    # ResNet-20 layers
    for x_shape, w_shape, nt in [((1, 64, 224, 224), (64, 64, 3, 3), 2),
                                 ((8, 3, 224, 224), (64, 3, 3, 3), 2),
                                 ((64, 64, 8, 8), (64, 64, 3, 3), 2),
                                 ((64, 16, 32, 32), (32, 16, 3, 3), 4),
                                 ((64, 32, 16, 16), (32, 32, 3, 3), 2),
                                 ((1, 63, 40, 4000), (16, 63, 3, 3), 2),
                                 # Winograd F(4x4): VGG-11's 8x8 and 16x16 layers
                                 ((64, 256, 8, 8), (256, 256, 3, 3), 1),
                                 ((64, 128, 8, 8), (256, 128, 3, 3), 2),
                                 ((64, 64, 16, 16), (128, 64, 3, 3), 1),
                                 ((32, 32, 31, 31), (64, 32, 3, 3), 1),
                                 # ... with a lane per image: bands of larger images
                                 ((16, 32, 128, 128), (32, 32, 3, 3), 2),
                                 ((64, 16, 64, 64), (16, 16, 3, 3), 2),
                                 # a lane per image: LeNet-5's conv2, 32 channels
                                 ((64, 6, 14, 14), (16, 6, 5, 5), 2),
                                 ((64, 32, 12, 12), (32, 32, 5, 5), 2),
                                 # GEMM Winograd's F(4x4) weight gradient, two partial Z
                                 ((16, 64, 256, 256), (64, 64, 3, 3), 2),
                                 ((16, 64, 256, 256), (64, 64, 3, 3), 1)]:
        k = w_shape[1] * w_shape[2] * w_shape[3]
        assert conv.conv2d_workspace_size(x_shape, w_shape, 1, 1, n_threads=nt) <= (
            nt * (max(2 * conv.COL_TILE_ELEMS, k) + conv.COL_TILE_ELEMS) + 4 * w_shape[0] * k)
    y = np.empty((2, 8, 64, 64), np.float32)
    conv.conv2d_forward(x, wt, None, y, workspace=np.empty(size, np.float32), n_threads=2, **kw)
    np.testing.assert_allclose(y, ref_conv(x, wt, None, 1, 1, 1, 1), rtol=1e-4, atol=1e-3)
    dy = RNG.standard_normal(y.shape).astype(np.float32)
    dx, dw = np.empty_like(x), np.empty_like(wt)
    conv.conv2d_backward_data(dy, wt, dx, workspace=np.empty(size, np.float32), **kw)
    conv.conv2d_backward_weight(x, dy, dw, workspace=np.empty(size, np.float32), **kw)
    lhs = np.vdot(dy.astype(np.float64), y)  # float32 sums cancel: compare with the scale
    scale = np.linalg.norm(dy) * np.linalg.norm(y)
    assert abs(np.vdot(dx.astype(np.float64), x) - lhs) < 1e-5 * scale
    assert abs(np.vdot(dw.astype(np.float64), wt) - lhs) < 1e-5 * scale
    with pytest.raises(ValueError, match="workspace"):
        conv.conv2d_forward(x, wt, None, y, workspace=np.empty(size - 1, np.float32),
                            n_threads=2, **kw)


def test_bad_inputs_raise():
    x, wt, b, y_shape, kw = _case_arrays(CONV_CASES[1], np.float32)
    y = np.empty(y_shape, np.float32)
    ws = _ws(x.shape, wt.shape, kw, np.float32, 2)
    call = dict(workspace=ws, n_threads=2, **kw)
    with pytest.raises(ValueError, match="channels"):
        conv.conv2d_forward(x, wt[:, :2].copy(), b, y, **call)
    with pytest.raises(ValueError, match="shape"):
        conv.conv2d_forward(x, wt, b, y[:, :2].copy(), **call)
    with pytest.raises(ValueError, match="dtype"):
        conv.conv2d_forward(x, wt.astype(np.float64), b, y, **call)
    with pytest.raises(ValueError, match="C-contiguous"):
        conv.conv2d_forward(x[:, :, ::-1], wt, b, y, **call)
    with pytest.raises(ValueError, match="bias"):
        conv.conv2d_forward(x, wt, b[:2].copy(), y, **call)
    big = np.empty(x.size + ws.size, np.float32)
    x_in_big = big[:x.size].reshape(x.shape)
    with pytest.raises(ValueError, match="overlaps"):
        conv.conv2d_forward(x_in_big, wt, b, y, workspace=big, n_threads=2, **kw)
    with pytest.raises(ValueError, match="activation"):
        conv.conv2d_forward(x, wt, b, y, act="swish", **call)
    with pytest.raises(ValueError, match="groups"):
        conv.conv2d_forward(x, wt, b, y, workspace=ws, stride=1, padding=1, groups=0)
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d_output_size((3, 3), 5, 1, 0, 1)
    with pytest.raises(ValueError, match="needs a workspace"):
        conv.conv2d_forward(x, wt, b, y, n_threads=2, **kw)
    with pytest.raises(ValueError, match="overlaps"):
        dy = np.empty(y_shape, np.float32)
        conv.conv2d_backward_weight(x, dy, dy.reshape(-1)[:wt.size].reshape(wt.shape), **call)
    with pytest.raises(ValueError, match="output_padding"):
        conv.conv_transpose2d_output_size((4, 4), 3, 2, 1, 2, 1)
    with pytest.raises(ValueError, match="scale"):
        conv.upsample_nearest2d_forward(x, y, 0)


# (N, Cin, H, W, Cout, (kh, kw), stride, padding, output_padding, dilation, groups)
TRANSPOSE_CASES = [
    (2, 3, 4, 5, 2, (3, 3), 2, 1, 1, 1, 1),
    (1, 4, 3, 3, 6, (2, 2), 2, 0, 0, 1, 2),
    (1, 2, 5, 4, 3, (3, 2), (1, 3), (1, 0, 0, 1), (0, 2), (2, 1), 1),
    (2, 4, 3, 4, 4, (3, 3), 2, 1, 1, 1, 4),               # depthwise in the conv view
    (1, 3, 6, 6, 5, (1, 1), 1, 0, 0, 1, 1),               # 1x1
    (2, 6, 4, 5, 3, (1, 1), 2, 0, 1, 1, 1),               # 1x1 stride 2: sampled path
    (1, 2, 1, 1, 3, (4, 4), 3, 0, 0, 1, 1),               # 1x1 input, stride > 1
]


def _transpose_arrays(case, dtype):
    n, cin, h, w, cout, k, stride, pad, op, dil, groups = case
    x = RNG.standard_normal((n, cin, h, w)).astype(dtype)
    wt = RNG.standard_normal((cin, cout // groups) + k).astype(dtype)
    b = RNG.standard_normal(cout).astype(dtype)
    oh, ow = conv.conv_transpose2d_output_size((h, w), k, stride, pad, op, dil)
    kw = dict(stride=stride, padding=pad, output_padding=op, dilation=dil, groups=groups)
    return x, wt, b, (n, cout, oh, ow), kw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose(case, dtype):
    x, wt, b, y_shape, kw = _transpose_arrays(case, dtype)
    ws = _ws(x.shape, wt.shape, kw, dtype, 2, transpose=True)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    y = np.full(y_shape, np.nan, dtype)
    conv.conv_transpose2d_forward(x, wt, b, y, act="relu", workspace=ws, n_threads=2, **kw)
    ref = np.maximum(ref_conv_transpose(x, wt, b, kw["stride"], kw["padding"],
                                        kw["output_padding"], kw["dilation"], kw["groups"]), 0)
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    # backward: <dy, T(x)> = <T_backward_data(dy), x> = <T_backward_weight(x, dy), w>
    dy = RNG.standard_normal(y_shape).astype(dtype)
    dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    conv.conv_transpose2d_backward_data(dy, wt, dx, workspace=ws, n_threads=2, **kw)
    conv.conv_transpose2d_backward_weight(x, dy, dw, db, workspace=ws, n_threads=2, **kw)
    lin = ref_conv_transpose(x, wt, None, kw["stride"], kw["padding"], kw["output_padding"],
                             kw["dilation"], kw["groups"])
    lhs = np.vdot(dy.astype(np.float64), lin)
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    # the sums cancel: compare against the scale of their terms, not of the result
    np.testing.assert_allclose(np.vdot(dx.astype(np.float64), x), lhs, rtol=rtol,
                               atol=rtol * np.linalg.norm(dx) * np.linalg.norm(x))
    np.testing.assert_allclose(np.vdot(dw.astype(np.float64), wt), lhs, rtol=rtol,
                               atol=rtol * np.linalg.norm(dw) * np.linalg.norm(wt))
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=rtol,
                               atol=rtol)


@pytest.mark.parametrize("case", TRANSPOSE_CASES[:4])
def test_conv_transpose_backward_finite_differences(case):
    x, wt, b, y_shape, kw = _transpose_arrays(case, np.float64)
    x, y_shape = x[:1], (1,) + y_shape[1:]
    dy = RNG.standard_normal(y_shape)
    ws = _ws(x.shape, wt.shape, kw, np.float64, 1, transpose=True)

    def f():
        y = np.empty(y_shape)
        conv.conv_transpose2d_forward(x, wt, b, y, workspace=ws, **kw)
        return y

    dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty_like(b)
    conv.conv_transpose2d_backward_data(dy, wt, dx, workspace=ws, **kw)
    conv.conv_transpose2d_backward_weight(x, dy, dw, db, workspace=ws, **kw)
    np.testing.assert_allclose(dx, _fd(f, x, dy), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(dw, _fd(f, wt, dy), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(db, _fd(f, b, dy), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1, 2, (3, 2)])
def test_upsample_nearest(scale, dtype):
    sh, sw = _pair(scale)
    x = RNG.standard_normal((2, 3, 5, 7)).astype(dtype)
    y = np.empty((2, 3, 5 * sh, 7 * sw), dtype)
    conv.upsample_nearest2d_forward(x, y, scale, n_threads=2)
    np.testing.assert_array_equal(y, x.repeat(sh, axis=2).repeat(sw, axis=3))
    dy = RNG.standard_normal(y.shape).astype(dtype)
    dx = np.empty_like(x)
    conv.upsample_nearest2d_backward(dy, dx, scale, n_threads=2)
    ref = dy.astype(np.float64).reshape(2, 3, 5, sh, 7, sw).sum(axis=(3, 5))
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(dx, ref, rtol=tol, atol=tol)


def test_upsample_backward_finite_differences():
    x = RNG.standard_normal((1, 2, 3, 2))
    dy = RNG.standard_normal((1, 2, 6, 6))

    def f():
        y = np.empty((1, 2, 6, 6))
        conv.upsample_nearest2d_forward(x, y, (2, 3))
        return y

    dx = np.empty_like(x)
    conv.upsample_nearest2d_backward(dy, dx, (2, 3))
    np.testing.assert_allclose(dx, _fd(f, x, dy), rtol=1e-7, atol=1e-8)


def test_bound_call_reruns_on_the_same_arrays():
    """bind=True validates once; each call then reads what the arrays hold at that time."""
    x, wt, b, y_shape, kw = _case_arrays(DIRECT_CASES[0], np.float32)
    y = np.empty(y_shape, np.float32)
    ws = _ws(x.shape, wt.shape, kw, np.float32)
    call = conv.conv2d_forward(x, wt, b, y, workspace=ws, bind=True, **kw)
    for _ in range(2):
        x[...] = RNG.standard_normal(x.shape)
        call()
        np.testing.assert_array_equal(y, forward(x, wt, b, y_shape, kw))
    dy = RNG.standard_normal(y_shape).astype(np.float32)
    dw = np.empty_like(wt)
    call = conv.conv2d_backward_weight(x, dy, dw, None, workspace=ws, bind=True, **kw)
    call()
    np.testing.assert_array_equal(dw, backward(x, wt, dy, kw)[1])
    with pytest.raises(ValueError, match="shape"):
        conv.conv2d_forward(x, wt, b, y[:1], workspace=ws, bind=True, **kw)


# Kept transformed weights (keep_weights=True, inference): vector Winograd (batch 1),
# a lane per image (batch 16), GEMM Winograd (96 channels); the direct path keeps none.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c,h,m,keeps", [(1, 16, 12, 24, True), (16, 16, 12, 16, True),
                                           (8, 96, 12, 96, True), (2, 3, 12, 8, False)])
def test_kept_weights_are_remade_only_when_told(dtype, n, c, h, m, keeps):
    from cnnc._kernels import gemm
    rng = np.random.default_rng(n + c + m)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    w = rng.standard_normal((m, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    ws = np.empty(conv.conv2d_workspace_size(x.shape, w.shape, 1, 1), dtype)
    y, kept = np.empty((n, m, h, h), dtype), np.empty((n, m, h, h), dtype)
    plain = conv.conv2d_forward(x, w, b, y, 1, 1, act="relu", workspace=ws, bind=True)
    call = conv.conv2d_forward(x, w, b, kept, 1, 1, act="relu", workspace=ws, bind=True,
                               keep_weights=True)
    assert call.keeps_weights == keeps
    for _ in range(2):
        call()
        plain()
        np.testing.assert_array_equal(kept, y)
    want = np.maximum(ref_conv(x, w, b, 1, 1, 1, 1), 0)
    scale = (3e-5 if dtype == np.float32 else 1e-12) * np.abs(want).max()
    np.testing.assert_allclose(kept, want, rtol=0, atol=scale)
    w *= -0.5
    call()
    plain()
    assert not np.array_equal(kept, y) if keeps else np.array_equal(kept, y)
    call.weights_changed()
    call()
    np.testing.assert_array_equal(kept, y)
    # a GEMM kernel of another MR lays U out anew: remade, not misread
    try:
        gemm.set_kernel("avx2" if "avx2" in gemm.available_kernels() else "portable")
        call()
        plain()
        np.testing.assert_array_equal(kept, y)
    finally:
        gemm.set_kernel("auto")

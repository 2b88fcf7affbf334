"""The affine-warp kernel against a float64 numpy reference, and the Augmentation on top."""
import numpy as np
import pytest

from cnnc._kernels.augment import FILL_MODES, warp_affine
from cnnc.data.augment import Augmentation, affine_matrices
from cnnc.errors import DataError


def fold(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Reference index rule per axis; -1 = outside (cval)."""
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "reflect":
        p = np.mod(i, 2 * n)
        return np.where(p < n, p, 2 * n - 1 - p)
    return np.mod(i, n)


def reference_warp(src, mats, out_hw, mode, cval, bilinear):
    """float64 reference of the sampling rule in kernels/augment.pyx."""
    n, c, h, w = src.shape
    ys, xs = np.mgrid[0:out_hw[0], 0:out_hw[1]].astype(np.float64)
    out = np.empty((n, c, *out_hw))
    for k in range(n):
        m = mats[k]
        sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        padded = np.concatenate([src[k].astype(np.float64), np.full((c, h, 1), cval)], axis=2)
        padded = np.concatenate([padded, np.full((c, 1, w + 1), cval)], axis=1)

        def tap(iy, ix):  # index -1 reads the cval row/column appended above
            fy, fx = fold(iy, h, mode), fold(ix, w, mode)
            fx = np.where(fy < 0, -1, fx)
            fy = np.where(fx < 0, -1, fy)
            return padded[:, fy, fx]

        if not bilinear:
            out[k] = tap(np.floor(sy + 0.5).astype(np.int64), np.floor(sx + 0.5).astype(np.int64))
            continue
        x0, y0 = np.floor(sx), np.floor(sy)
        fx, fy = sx - x0, sy - y0
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        out[k] = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
                  + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
    return out


def random_images(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


def warp(src, mats, mode="constant", cval=0.0, bilinear=True, n_threads=1, out_hw=None):
    out = np.empty((*src.shape[:2], *(out_hw or src.shape[2:])), src.dtype)
    warp_affine(src, out, mats, mode, cval, bilinear, n_threads)
    return out


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("mode", FILL_MODES)
def test_identity_is_exact(mode, bilinear):
    x = random_images((3, 2, 7, 9))
    assert np.array_equal(warp(x, affine_matrices(3, 7, 9), mode, 0.5, bilinear), x)


@pytest.mark.parametrize("bilinear", [True, False])
def test_flips_equal_numpy(bilinear):
    x = random_images((2, 3, 6, 5))
    assert np.array_equal(warp(x, affine_matrices(2, 6, 5, flip_x=True), bilinear=bilinear),
                          x[..., ::-1])
    assert np.array_equal(warp(x, affine_matrices(2, 6, 5, flip_y=True), bilinear=bilinear),
                          x[..., ::-1, :])


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("dy, dx", [(2, -3), (-1, 4), (0, 9), (-7, 0)])
def test_whole_pixel_shifts_equal_numpy(dy, dx, bilinear):
    x = random_images((2, 2, 7, 8))
    mats = affine_matrices(2, 7, 8, shift_x=dx, shift_y=dy)
    assert np.array_equal(warp(x, mats, "wrap", bilinear=bilinear),
                          np.roll(x, (dy, dx), axis=(2, 3)))
    pad = ((0, 0), (0, 0), (10, 10), (10, 10))
    crop = (slice(None), slice(None), slice(10 - dy, 17 - dy), slice(10 - dx, 18 - dx))
    for mode, np_mode in [("nearest", "edge"), ("reflect", "symmetric")]:
        assert np.array_equal(warp(x, mats, mode, bilinear=bilinear),
                              np.pad(x, pad, mode=np_mode)[crop]), mode
    expected = np.pad(x, pad, constant_values=0.25)[crop]
    assert np.array_equal(warp(x, mats, "constant", 0.25, bilinear), expected)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_by_quarter_turns_equals_rot90(k):
    x = random_images((2, 3, 7, 7))
    mats = affine_matrices(2, 7, 7, rotation=k * np.pi / 2)
    assert np.array_equal(warp(x, mats, bilinear=False), np.rot90(x, k, axes=(2, 3)))


def random_matrices(n, scale, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0, scale, (n, 2, 3)) + np.array([[1.0, 0, 0], [0, 1.0, 0]])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("mode", FILL_MODES)
def test_random_warps_match_reference(mode, bilinear, dtype, tol):
    x = random_images((4, 3, 9, 6), dtype, seed=1)
    mats = random_matrices(4, 0.5, seed=2)
    mats[:, :, 2] *= 15  # large offsets: most taps fall outside and exercise the fill mode
    got = warp(x, mats, mode, -0.75, bilinear, out_hw=(5, 11))
    np.testing.assert_allclose(got, reference_warp(x, mats, (5, 11), mode, -0.75, bilinear),
                               rtol=0, atol=tol)


def test_thread_count_does_not_change_results():
    x = random_images((13, 3, 16, 12))
    mats = random_matrices(13, 0.3, seed=3)
    for mode in FILL_MODES:
        one = warp(x, mats, mode, n_threads=1)
        assert np.array_equal(one, warp(x, mats, mode, n_threads=2))
        assert np.array_equal(one, warp(x, mats, mode, n_threads=5))


def test_integer_masks_sample_nearest_only():
    m = np.random.default_rng(0).integers(0, 5, (2, 1, 6, 6))
    mats = affine_matrices(2, 6, 6, rotation=np.pi / 2)
    assert np.array_equal(warp(m, mats, bilinear=False), np.rot90(m, 1, axes=(2, 3)))
    with pytest.raises(ValueError, match="nearest"):
        warp(m, mats, bilinear=True)


def test_absurd_matrices_stay_in_bounds():
    x = random_images((3, 2, 5, 4))
    mats = np.array([[[1e300, -1e300, 1e300], [1e300, 1e300, -1e300]],
                     [[0, 0, -1e17], [0, 0, 1e17]],
                     [[1e-300, 0, 3.5e9], [0, 1e-300, -2e9]]])
    for mode in FILL_MODES:
        for bilinear in (True, False):
            out = warp(x, mats, mode, 0.5, bilinear)
            assert np.all(np.isfinite(out))
            assert np.all((out >= -1) & (out <= 1))


def test_bad_arguments_raise():
    x = random_images((2, 1, 4, 4))
    out = np.empty_like(x)
    good = affine_matrices(2, 4, 4)
    with pytest.raises(ValueError, match="fill_mode"):
        warp_affine(x, out, good, "mirror")
    with pytest.raises(ValueError, match="finite"):
        warp_affine(x, out, np.full((2, 2, 3), np.nan))
    with pytest.raises(ValueError, match="mats"):
        warp_affine(x, out, good[:1])
    with pytest.raises(ValueError, match="dst"):
        warp_affine(x, np.empty((2, 3, 4, 4), np.float32), good)
    with pytest.raises(ValueError, match="overlap"):
        warp_affine(x, x, good)
    with pytest.raises(ValueError):
        warp_affine(x, out.astype(np.float64), good)
    warp_affine(x[:0], out[:0], good[:0])  # empty batch: nothing to do


def test_augmentation_is_reproducible_and_varies():
    aug = Augmentation(rotation_range=30, width_shift_range=0.2, height_shift_range=0.1,
                       shear_range=10, zoom_range=0.2, horizontal_flip=True,
                       vertical_flip=True, fill_mode="reflect")
    x = random_images((6, 3, 12, 10))
    a, _ = aug.apply(np.random.default_rng(7), x, n_threads=1)
    b, _ = aug.apply(np.random.default_rng(7), x, n_threads=2)
    c, _ = aug.apply(np.random.default_rng(8), x, n_threads=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, x)
    mats = aug.matrices(np.random.default_rng(7), 6, 12, 10)
    np.testing.assert_allclose(a, reference_warp(x, mats, (12, 10), "reflect", 0.0, True),
                               atol=1e-6)


def test_masks_move_with_their_images():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, (5, 11, 13))
    x = np.stack([masks, 3 - masks], axis=1).astype(np.float32)
    aug = Augmentation(rotation_range=40, zoom_range=0.3, width_shift_range=0.3,
                       horizontal_flip=True, fill_mode="constant", interpolation="nearest")
    out, out_masks = aug.apply(np.random.default_rng(3), x, masks)
    assert out_masks.dtype == np.int64 and out_masks.shape == masks.shape
    assert np.array_equal(out[:, 0], out_masks)
    assert np.array_equal(out[:, 1], np.where(out[:, 0] + out[:, 1] == 0, 0, 3 - out_masks))


def test_rescale_only_needs_no_warp():
    x = random_images((2, 1, 3, 3))
    out, _ = Augmentation(rescale=2.0).apply(None, x)
    assert np.array_equal(out, x * np.float32(2.0))


@pytest.mark.parametrize("bad", [dict(fill_mode="mirror"), dict(zoom_range=1.5),
                                 dict(rotation_range=-1), dict(interpolation="cubic"),
                                 dict(zoom_range=(1.2, 0.8)), dict(contrast_range=1.0),
                                 dict(noise_std=-0.1)])
def test_bad_augmentation_settings(bad):
    with pytest.raises(DataError):
        Augmentation(**bad)


def test_colour_changes():
    x = random_images((6, 3, 5, 7))
    masks = np.random.default_rng(1).integers(0, 3, (6, 5, 7))
    out, m = Augmentation(brightness_range=0.2).apply(np.random.default_rng(2), x, masks)
    shift = (out - x).reshape(6, -1)
    assert np.allclose(shift, shift[:, :1], atol=1e-6)          # one value per image
    assert np.all(np.abs(shift[:, 0]) <= 0.2) and np.ptp(shift[:, 0]) > 0
    assert np.array_equal(m, masks)                            # masks keep their labels
    out, _ = Augmentation(contrast_range=0.5).apply(np.random.default_rng(3), x)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-6)
    ratio = (out - out.mean(axis=(1, 2, 3), keepdims=True)) / \
        (x - x.mean(axis=(1, 2, 3), keepdims=True))
    factors = np.median(ratio.reshape(6, -1), axis=1)
    assert np.all((factors >= 0.5 - 1e-4) & (factors <= 1.5 + 1e-4)) and np.ptp(factors) > 0
    big = random_images((4, 3, 64, 64))
    out, _ = Augmentation(noise_std=0.1).apply(np.random.default_rng(4), big)
    assert abs(float((out - big).std()) - 0.1) < 0.005
    again, _ = Augmentation(noise_std=0.1).apply(np.random.default_rng(4), big)
    assert np.array_equal(out, again)                          # seeded: reproducible

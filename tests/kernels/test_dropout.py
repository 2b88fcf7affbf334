"""cnnc._kernels.dropout: the Philox generator, mask statistics, regeneration, gradients."""
import numpy as np
import pytest

from cnnc._kernels import dropout as D

N_DRAWS = 1_000_000


def keep_mask(n, rate, seed, step, dtype=np.float64):
    x = np.ones(n, dtype)
    y = np.empty_like(x)
    D.dropout_forward(x, y, rate, seed, step)
    return y != 0


def within(observed, p, n, k=5.0):
    """|observed - p| is within k standard errors of a mean of n Bernoulli(p) draws."""
    return abs(observed - p) <= k * np.sqrt(p * (1 - p) / n)


def test_philox_known_answers():
    # Random123's published philox4x32-10 test vectors: (counter, key) -> words
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((2**32 - 1,) * 4, (2**32 - 1,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, words in cases:
        assert D.philox4x32_10(counter, key) == words


def test_mask_follows_the_documented_counter_layout():
    rate, seed, step = 0.5, (7 << 32) | 3, (5 << 32) | 9
    mask = keep_mask(10, rate, seed, step)
    threshold = int(rate * 2**32)
    for i in range(10):
        words = D.philox4x32_10((i // 4, 0, 9, 5), (3, 7))
        assert mask[i] == (words[i % 4] >= threshold)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_keep_rate_is_one_minus_rate(rate):
    mask = keep_mask(N_DRAWS, rate, seed=12345, step=1)
    assert within(mask.mean(), 1 - rate, N_DRAWS)
    for lane in range(4):  # each of the four words of a Philox block
        assert within(mask[lane::4].mean(), 1 - rate, N_DRAWS // 4)


def test_masks_are_independent_across_seeds_steps_and_neighbours():
    a = keep_mask(N_DRAWS, 0.5, seed=1, step=1)
    others = [keep_mask(N_DRAWS, 0.5, seed=2, step=1),
              keep_mask(N_DRAWS, 0.5, seed=1 + (1 << 32), step=1),  # high key word only
              keep_mask(N_DRAWS, 0.5, seed=1, step=2)]
    for b in others:
        assert within((a & b).mean(), 0.25, N_DRAWS)
        assert (a != b).any()
    assert within((a[:-1] & a[1:]).mean(), 0.25, N_DRAWS - 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 17, 33, 127])
def test_forward_scales_kept_and_backward_regenerates_the_mask(n, dtype):
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    y, dx = np.empty_like(x), np.empty_like(x)
    D.dropout_forward(x, y, 0.3, seed=99, step=4)
    D.dropout_backward(dy, dx, 0.3, seed=99, step=4)
    mask = keep_mask(1000, 0.3, 99, 4)[:n]  # counter-based: a prefix is the same mask
    scale = dtype(1 / 0.7)
    np.testing.assert_array_equal(y, np.where(mask, x * scale, 0))
    np.testing.assert_array_equal(dx, np.where(mask, dy * scale, 0))
    D.dropout_forward(x, x, 0.3, seed=99, step=4)  # in-place
    np.testing.assert_array_equal(x, y)


def test_spatial_tensor_and_zero_rate():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 7))
    y = np.empty_like(x)
    D.dropout_forward(x, y, 0.0, seed=1, step=1)
    np.testing.assert_array_equal(y, x)
    D.dropout_forward(x, y, 0.5, seed=1, step=1)
    flat = np.empty(x.size)
    D.dropout_forward(x.ravel().copy(), flat, 0.5, seed=1, step=1)
    np.testing.assert_array_equal(y.ravel(), flat)  # the mask is over the flat index


def test_backward_finite_differences():
    rng = np.random.default_rng(3)
    x, c = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    y, dx, h = np.empty_like(x), np.empty_like(x), 1e-6

    def loss(v):
        D.dropout_forward(v, y, 0.4, seed=5, step=2)
        return float((c * y).sum())

    D.dropout_backward(c, dx, 0.4, seed=5, step=2)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        assert np.isclose(dx.flat[i], (loss(x + e) - loss(x - e)) / (2 * h), rtol=1e-7,
                          atol=1e-9)


def test_one_and_two_threads_are_bitwise_equal():
    x = np.random.default_rng(4).standard_normal(300_001).astype(np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    D.dropout_forward(x, a, 0.25, seed=3, step=8, n_threads=1)
    D.dropout_forward(x, b, 0.25, seed=3, step=8, n_threads=2)
    np.testing.assert_array_equal(a, b)


def test_bad_inputs_raise_value_error():
    x = np.ones(8, np.float32)
    bad = [
        lambda: D.dropout_forward(x, np.empty_like(x), 1.0, 0, 0),
        lambda: D.dropout_forward(x, np.empty_like(x), -0.1, 0, 0),
        lambda: D.dropout_forward(x, np.empty_like(x), 0.5, -1, 0),
        lambda: D.dropout_forward(x, np.empty_like(x), 0.5, 0, 2**64),
        lambda: D.dropout_forward(x, np.empty_like(x), 0.5, 1.5, 0),
        lambda: D.dropout_forward(x, np.empty(8), 0.5, 0, 0),
        lambda: D.dropout_backward(x[1:], x[:-1], 0.5, 0, 0),
        lambda: D.philox4x32_10((0, 0, 0), (0, 0)),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()

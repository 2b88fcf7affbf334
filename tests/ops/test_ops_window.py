"""The window arithmetic shared by conv and pooling, against direct counts."""
import itertools
import math

import pytest

from cnnc.ops.registry import RuleError
from cnnc.ops.window import (same_pads, transpose_output_size, window_output_size)


def count_windows(size, k, s, lo, hi, d=1, ceil_mode=False):
    """Enumerate window starts (padded coordinates) and keep the valid ones."""
    k_eff = (k - 1) * d + 1
    padded = size + lo + hi
    n = 0
    for t in range(0, padded + s):
        if t % s:
            continue
        if not ceil_mode:
            n += t + k_eff <= padded
        else:
            # windows may hang off the end by less than a stride, but must start in the
            # input or the left padding
            n += t + k_eff - padded < s and t < lo + size
    return n


SIZES = range(1, 14)


@pytest.mark.parametrize("k,s,d", list(itertools.product((1, 2, 3, 4, 5), (1, 2, 3, 4),
                                                          (1, 2))))
def test_valid_and_explicit_padding_match_enumeration(k, s, d):
    for size, lo, hi in itertools.product(SIZES, (0, 1, 2), (0, 1, 3)):
        if size + lo + hi < (k - 1) * d + 1:
            continue
        for ceil_mode in (False, True):
            got = window_output_size(size, k, s, lo, hi, d, ceil_mode)
            assert got == count_windows(size, k, s, lo, hi, d, ceil_mode), \
                (size, k, s, lo, hi, d, ceil_mode)


@pytest.mark.parametrize("k,s,d", list(itertools.product((1, 2, 3, 4, 5, 7), (1, 2, 3),
                                                          (1, 2))))
def test_same_padding_is_tf_same_upper(k, s, d):
    for size in SIZES:
        lo, hi = same_pads(size, k, s, d)
        # TF: out = ceil(H / s); total pad = max((out - 1) * s + (k - 1) * d + 1 - H, 0)
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        assert (lo, hi) == (total // 2, total - total // 2)
        assert hi >= lo  # the odd pixel goes to the bottom/right
        assert window_output_size(size, k, s, lo, hi, d) == math.ceil(size / s)
        assert count_windows(size, k, s, lo, hi, d) == math.ceil(size / s)


def test_same_even_kernel_stride_2_examples():
    assert same_pads(224, 7, 2) == (2, 3)   # ResNet stem under Keras 'same'
    assert same_pads(8, 2, 2) == (0, 0)
    assert same_pads(7, 2, 2) == (0, 1)
    assert same_pads(5, 4, 1) == (1, 2)
    assert same_pads(6, 4, 2) == (1, 1)


def test_ceil_mode_examples():
    # the last window would start in the right padding: PyTorch drops it
    assert window_output_size(5, 2, 2, 1, 1, ceil_mode=True) == 3
    assert window_output_size(5, 2, 2, 0, 0, ceil_mode=False) == 2
    assert window_output_size(5, 2, 2, 0, 0, ceil_mode=True) == 3
    assert window_output_size(112, 3, 2, 0, 0, ceil_mode=True) == 56  # GoogLeNet pools
    assert window_output_size(112, 3, 2, 0, 0) == 55


def test_stride_larger_than_kernel():
    assert window_output_size(10, 2, 3, 0, 0) == 3   # starts 0, 3, 6 (9 would overhang)
    assert window_output_size(11, 2, 3, 0, 0) == 4
    assert count_windows(11, 2, 3, 0, 0) == 4


def test_window_larger_than_padded_input():
    with pytest.raises(RuleError, match=r"larger than its padded input \(4\)"):
        window_output_size(2, 3, 1, 1, 1, dilation=2)


@pytest.mark.parametrize("k,s,p,op", [(k, s, p, op) for k in (1, 2, 3, 4, 5)
                                      for s in (1, 2, 3) for p in (0, 1, 2)
                                      for op in range(s)])
def test_transpose_output_inverts_conv(k, s, p, op):
    for size in range(1, 9):
        out = (size - 1) * s + k - 2 * p + op
        if out <= 0:
            with pytest.raises(RuleError, match="would make an output of size"):
                transpose_output_size(size, k, s, p, p, op)
            continue
        got = transpose_output_size(size, k, s, p, p, op)
        assert got == out
        if out + 2 * p >= k:  # conv of the result (same k, s, p) gives the size back
            assert window_output_size(got, k, s, p, p) == size

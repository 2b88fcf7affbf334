"""The prefetching batch iterator, and the helpers on Split / DataSource."""
import threading

import numpy as np
import pytest

from cnnc.data import (Augmentation, Batches, DataSource, Split, check_fits, shapes, shuffled,
                       standardize, validation_split)
from cnnc.errors import DataError


def numbered(n=10, hw=(2, 3)) -> Split:
    x = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, *hw), np.float32)
    return Split(x, np.arange(n, dtype=np.int64))


def batches_alive() -> int:
    return sum(t.name == "cnnc-batches" and t.is_alive() for t in threading.enumerate())


def test_in_order_without_rng():
    split = numbered(10)
    got = list(Batches(split, 4))
    assert [len(y) for _, y in got] == [4, 4, 2] and len(Batches(split, 4)) == 3
    assert np.array_equal(np.concatenate([y for _, y in got]), split.y)
    assert np.array_equal(np.concatenate([x for x, _ in got]), split.x)
    dropped = list(Batches(split, 4, drop_last=True))
    assert len(dropped) == 2 == len(Batches(split, 4, drop_last=True))


def test_shuffled_order_is_seeded():
    split = numbered(23)
    first = [y for _, y in Batches(split, 5, rng=np.random.default_rng(3), prefetch=1)]
    again = [y for _, y in Batches(split, 5, rng=np.random.default_rng(3), prefetch=4)]
    other = [y for _, y in Batches(split, 5, rng=np.random.default_rng(4))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert sorted(np.concatenate(first).tolist()) == list(range(23))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
    for x, y in zip(first, first):
        assert np.array_equal(x, y)


def test_augmented_batches_are_reproducible_and_masks_follow():
    src = shapes(classes=3, size=16, count=12, task="segment", seed=1, test_count=0)
    aug = Augmentation(rotation_range=30, horizontal_flip=True, interpolation="nearest",
                       fill_mode="constant")
    runs = [list(Batches(src.train, 5, rng=np.random.default_rng(9), augment=aug,
                         n_threads=t)) for t in (1, 2)]
    for (xa, ya), (xb, yb) in zip(*runs):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        assert ya.shape == (len(xa), 16, 16) and ya.dtype == np.int64
    with pytest.raises(DataError, match="Generator"):
        Batches(src.train, 5, augment=aug)
    boxes = shapes(classes=2, size=16, count=4, task="detect", test_count=0).train
    with pytest.raises(DataError, match="detection boxes"):
        Batches(boxes, 2, rng=np.random.default_rng(0), augment=aug)


class FailingAugmentation(Augmentation):
    def apply(self, rng, x, masks=None, n_threads=None):
        if x[0, 0, 0, 0] >= 4:  # the second batch of numbered()
            raise RuntimeError("broken image 4")
        return x, masks


def test_producer_errors_reach_the_consumer():
    seen = []
    with pytest.raises(RuntimeError, match="broken image 4"):
        for _, y in Batches(numbered(12), 4, augment=FailingAugmentation()):
            seen.append(y)
    assert len(seen) == 1
    assert batches_alive() == 0


def test_leaving_early_stops_the_thread():
    for _ in Batches(numbered(1000, (1, 1)), 1, prefetch=2):
        break
    assert batches_alive() == 0


def test_bad_batch_settings():
    with pytest.raises(DataError):
        Batches(numbered(), 0)
    with pytest.raises(DataError):
        Batches(numbered(), 2, prefetch=0)


def test_validation_split_and_shuffle():
    split = numbered(20)
    train, val = validation_split(split, 0.25, seed=1)
    assert len(train) == 15 and len(val) == 5
    assert sorted(np.concatenate([train.y, val.y]).tolist()) == list(range(20))
    assert np.array_equal(validation_split(split, 0.25, seed=1)[1].y, val.y)
    with pytest.raises(DataError):
        validation_split(split, 1.0)
    mixed = shuffled(split, seed=2)
    assert sorted(mixed.y.tolist()) == list(range(20)) and not np.array_equal(mixed.y, split.y)
    assert np.array_equal(mixed.x[:, 0, 0, 0], mixed.y.astype(np.float32))


def test_standardize():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (50, 2, 4, 4)).astype(np.float32)
    src = DataSource(Split(x, np.zeros(50, np.int64)), Split(x[:5], np.zeros(5, np.int64)),
                     ("a",))
    out = standardize(src, mean="train", std="train")
    np.testing.assert_allclose(out.train.x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.train.x.std(axis=(0, 2, 3)), 1, atol=1e-5)
    np.testing.assert_allclose(standardize(src, mean=(1, 2), std=2).test.x[:, 1],
                               (x[:5, 1] - 2) / 2, rtol=1e-6)
    with pytest.raises(DataError):
        standardize(src, std=0)


def test_check_fits_names_both_shapes():
    src = shapes(classes=2, size=16, count=4, channels=3, test_count=0)
    check_fits(src, (3, 16, 16))
    with pytest.raises(DataError, match=r"\[3, 16, 16\].*\[1, 16, 16\]") as err:
        check_fits(src, (1, 16, 16))
    assert "channel" in str(err.value)
    with pytest.raises(DataError, match=r"\[3, 28, 28\]") as err:
        check_fits(src, (3, 28, 28))
    assert "size=" in str(err.value)

"""The synthetic shapes set: determinism, balance, channels, masks and boxes."""
import numpy as np
import pytest

from cnnc.data import SHAPE_KINDS, load_source, shapes
from cnnc.errors import DataError


def test_deterministic_from_seed():
    a = shapes(classes=4, size=24, count=40, seed=5)
    b = shapes(classes=4, size=24, count=40, seed=5)
    c = shapes(classes=4, size=24, count=40, seed=6)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.x, c.train.x)
    # the test split comes from its own stream: it does not depend on the training count
    d = shapes(classes=4, size=24, count=80, seed=5, test_count=10)
    assert np.array_equal(a.test.x, d.test.x)


def test_balanced_classes_and_value_range():
    src = shapes(classes=6, size=20, count=100, channels=1, seed=1)
    assert np.bincount(src.train.y).tolist() == [17, 17, 17, 17, 16, 16]
    assert src.classes == SHAPE_KINDS[:6] and src.task == "classify"
    assert src.train.x.dtype == np.float32 and src.train.y.dtype == np.int64
    assert src.train.x.min() >= 0 and src.train.x.max() <= 1
    assert len(src.test) == 25


@pytest.mark.parametrize("channels, size", [(1, 16), (3, 33), (5, 9)])
def test_any_channel_count_and_size(channels, size):
    src = shapes(classes=3, size=size, count=12, channels=channels, test_count=0)
    assert src.input_shape == (channels, size, size) and src.test is None
    if channels > 1:  # colours are tinted per channel, not grey
        assert np.abs(np.diff(src.train.x.mean(axis=(2, 3)), axis=1)).max() > 0.02


def test_segmentation_masks_match_the_pixels():
    src = shapes(classes=5, size=32, count=60, task="segment", objects=1, noise=0.0, seed=2)
    x, masks = src.train.x, src.train.y
    assert masks.shape == (60, 32, 32) and src.classes[0] == "background"
    for img, mask in zip(x, masks):
        kinds = np.unique(mask)
        assert kinds[0] == 0 and len(kinds) == 2  # background and one shape
        inside, outside = img[:, mask > 0], img[:, mask == 0]
        # the shape's colour differs from the background by >= 0.3 in mean brightness;
        # the background ramp can take away at most 0.125 of it
        assert abs(inside.mean() - outside.mean()) > 0.15
        assert inside.std(axis=1).max() < 0.15  # one flat colour (edges are anti-aliased)


def test_boxes_enclose_the_masks():
    kwargs = dict(classes=4, size=40, count=30, objects=1, seed=3, test_count=0)
    seg = shapes(task="segment", **kwargs).train.y
    det = shapes(task="detect", **kwargs).train.y
    assert det.shape == (30, 1, 5)
    for mask, (kind, x0, y0, x1, y1) in zip(seg, det[:, 0]):
        ys, xs = np.nonzero(mask)
        assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert np.all(mask[mask > 0] == kind + 1)


def test_several_objects_per_image():
    src = shapes(classes=3, size=48, count=20, task="segment", objects=3, seed=4)
    assert src.train.y.max() <= 3 and (src.train.y > 0).mean() > 0.05
    with pytest.raises(DataError, match="objects=1"):
        shapes(objects=2)


@pytest.mark.parametrize("bad", [dict(classes=0), dict(classes=len(SHAPE_KINDS) + 1),
                                 dict(size=4), dict(count=0), dict(task="regress"),
                                 dict(noise=2.0), dict(test_count=-1), dict(size=32.0)])
def test_bad_arguments(bad):
    with pytest.raises(DataError):
        shapes(**{"count": 10, **bad})


def test_registry_builds_the_same_set():
    direct = shapes(classes=2, size=16, count=8)
    spec = load_source("shapes", [], {"classes": 2, "size": 16, "count": 8})
    assert np.array_equal(direct.train.x, spec.train.x)

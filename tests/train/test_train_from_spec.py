import numpy as np
import pytest

from cnnc.data import shapes
from cnnc.dsl import load_text
from cnnc.errors import CnncError, DataError
from cnnc.train.from_spec import augmentation, check_classes, load_data, outputs_logits

NET = """network N
input image: [3, 16, 20]
layers {{ conv(4, kernel=3) flatten dense({units}) {act} }}
train {{
    data = shapes(classes=3, size=16, count=24)
    loss = sparse_categorical_crossentropy
    {extra}
}}
"""


def _spec(units=3, act="softmax", extra=""):
    return load_text(NET.format(units=units, act=act, extra=extra))


def test_outputs_logits():
    assert not outputs_logits(_spec().graph)
    assert not outputs_logits(_spec(1, "sigmoid").graph)
    assert outputs_logits(_spec(3, "").graph)


def test_augmentation_from_the_spec():
    spec = _spec(extra="augment {\n flip = both\n rotation = 10\n shift = 0.05\n crop = 2\n}")
    aug = augmentation(spec.train, 16, 20)
    assert aug.horizontal_flip and aug.vertical_flip and aug.rotation_range == 10
    assert aug.width_shift_range == pytest.approx(0.1)        # crop 2 of 20 > shift 0.05
    assert aug.height_shift_range == pytest.approx(0.125)     # crop 2 of 16
    assert aug.fill_mode == "constant"
    assert augmentation(_spec().train, 16, 20) is None
    colour = _spec(extra="augment {\n brightness = 0.2\n contrast = 0.3\n noise = 0.01\n}")
    aug = augmentation(colour.train, 16, 20)
    assert (aug.brightness_range, aug.contrast_range, aug.noise_std) == (0.2, 0.3, 0.01)
    assert not aug.is_geometric


def test_check_classes():
    check_classes(shapes(classes=3, size=8, count=6), _spec().graph)
    check_classes(shapes(classes=2, size=8, count=6), _spec(1, "sigmoid").graph)
    with pytest.raises(DataError, match="has 3 classes .*1 unit, enough for 2"):
        check_classes(shapes(classes=3, size=8, count=6), _spec(1, "sigmoid").graph)


def test_data_override_picks_a_loader(tmp_path):
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((6, 3, 16, 20), dtype=np.float32), y=np.arange(6) % 3)
    src = load_data(_spec().train, tmp_path, path, (3, 16, 20))
    assert src.train.x.shape == (6, 3, 16, 20) and "mine.npz" in src.origin
    with pytest.raises(CnncError, match="no such file or folder"):
        load_data(_spec().train, tmp_path, tmp_path / "nothing", (3, 16, 20))

"""Image folders (and their tar archives), CIFAR-10 (binary and the JPEG copy), npz files."""
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnc.data import load_cifar10, load_folder, load_npz, load_source
from cnnc.data.cifar import CIFAR10_CLASSES, RECORD
from cnnc.errors import DataError, Span, SpecError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CIFAR_JPEG = SHARED / "cifar10-jpeg"
COLOURS = {"dog": (200, 30, 40), "ant": (10, 250, 90), "cat": (60, 60, 220)}


def make_tree(root: Path, per_class=3, size=(6, 5), fmt="png") -> Path:
    """root/<class>/<k>.png: solid images of each class's colour."""
    for cls, rgb in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (size[1], size[0]), rgb).save(root / cls / f"{k}.{fmt}")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_classes_in_sorted_order(tmp_path):
    src = load_folder(make_tree(tmp_path / "imgs"))
    assert src.classes == ("ant", "cat", "dog")
    assert src.train.x.shape == (9, 3, 6, 5) and src.train.x.dtype == np.float32
    assert src.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and src.test is None
    for k, cls in enumerate(src.classes):
        expected = np.array(COLOURS[cls], np.float32)[:, None, None] / np.float32(255)
        assert np.array_equal(src.train.x[3 * k], np.broadcast_to(expected, (3, 6, 5)))


def test_folder_resize_and_grayscale(tmp_path):
    root = make_tree(tmp_path / "imgs")
    Image.new("RGB", (9, 11), (1, 2, 3)).save(root / "cat" / "big.png")
    with pytest.raises(DataError, match=r"different sizes: .*big\.png.*size="):
        load_folder(root)
    src = load_folder(root, size=(4, 7), color="grayscale")
    assert src.train.x.shape == (10, 1, 4, 7)
    grey = Image.new("RGB", (1, 1), COLOURS["ant"]).convert("L").getpixel((0, 0))
    assert np.allclose(src.train.x[0], grey / 255)
    assert load_folder(root, size=8).input_shape == (3, 8, 8)


def test_folder_train_test_layout_and_archive(tmp_path):
    make_tree(tmp_path / "set" / "train", per_class=2)
    make_tree(tmp_path / "set" / "test", per_class=1)
    src = load_folder(tmp_path / "set")
    assert len(src.train) == 6 and src.test.y.tolist() == [0, 1, 2]
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "set", arcname="wrapped")
    from_tar = load_folder(archive)
    assert from_tar.classes == src.classes
    assert np.array_equal(from_tar.train.x, src.train.x)
    assert np.array_equal(from_tar.test.y, src.test.y)
    assert np.array_equal(load_folder(archive, limit=1).train.y, [0, 1, 2])


def test_folder_errors_name_the_file(tmp_path):
    root = make_tree(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    with pytest.raises(DataError, match=r"broken\.png: cannot decode"):
        load_folder(root)
    with pytest.raises(DataError, match="does not exist.*one sub-folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_folder(tmp_path / "empty")
    with tarfile.open(tmp_path / "full.tar.gz", "w:gz") as tar:
        tar.add(make_tree(tmp_path / "other", per_class=30), arcname="x")
    full = (tmp_path / "full.tar.gz").read_bytes()
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(full[:len(full) * 2 // 3])
    with pytest.raises(DataError, match=r"cut\.tar\.gz.*corrupt or truncated"):
        load_folder(truncated)


def write_cifar_bins(folder: Path, n=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = {}
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (n, RECORD), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 10, n)
        (folder / name).write_bytes(rec.tobytes())
        records[name] = rec
    return records


def test_cifar_binary(tmp_path):
    records = write_cifar_bins(tmp_path / "cifar-10-batches-bin")
    src = load_cifar10(tmp_path)
    assert src.train.x.shape == (100, 3, 32, 32) and src.test.x.shape == (20, 3, 32, 32)
    rec = records["data_batch_2.bin"]
    assert np.array_equal(src.train.y[20:40], rec[:, 0])
    # one record: red plane, green plane, blue plane, each row-major
    assert np.array_equal(src.train.x[25, 1, 3, 4] * 255, np.float32(rec[5, 1 + 1024 + 3 * 32 + 4]))
    limited = load_cifar10(tmp_path, limit=1)
    assert sorted(limited.test.y.tolist()) == sorted(set(records["test_batch.bin"][:, 0]))


def test_cifar_binary_errors(tmp_path):
    write_cifar_bins(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"data_batch_3\.bin.*not a whole number"):
        load_cifar10(tmp_path)
    pickled = tmp_path / "py"
    pickled.mkdir()
    (pickled / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(DataError, match="never unpickles"):
        load_cifar10(pickled)
    with pytest.raises(DataError, match="never unpickles|pickled"):
        load_cifar10(pickled / "data_batch_1")
    (tmp_path / "data_batch_5.bin").unlink()
    with pytest.raises(DataError, match=r"missing the CIFAR-10 binary batches data_batch_5"):
        load_cifar10(tmp_path)


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="../shared/data/cifar10-jpeg is absent")
def test_cifar_jpeg_subset():
    src = load_cifar10(CIFAR_JPEG / "cifar10-test-jpg.tar.gz", limit=5)
    assert src.classes == CIFAR10_CLASSES and src.test is None
    assert src.train.x.shape == (50, 3, 32, 32)
    assert src.train.y.tolist() == [k for k in range(10) for _ in range(5)]
    # ships sit on blue water, deer on green/brown ground: blue minus red differs by class
    blue_minus_red = (src.train.x[:, 2] - src.train.x[:, 0]).mean(axis=(1, 2))
    assert blue_minus_red[40:45].mean() > blue_minus_red[20:25].mean()


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason="../shared/data/cifar10-jpeg is absent")
def test_cifar_jpeg_folder_has_both_splits(tmp_path):
    # a small copy of the real layout: two archives of train/... and test/... members
    # (the real train archive takes seconds to scan)
    with tarfile.open(CIFAR_JPEG / "cifar10-test-jpg.tar.gz") as real:
        members = [m for m in real if m.isfile() and m.name.endswith("/0000.jpg")]
        data = {m.name.split("/")[1]: real.extractfile(m).read() for m in members}
    for split in ("train", "test"):
        with tarfile.open(tmp_path / f"cifar10-{split}-jpg.tar.gz", "w:gz") as tar:
            for cls, jpg in data.items():
                info = tarfile.TarInfo(f"{split}/{cls}/0000.jpg")
                info.size = len(jpg)
                tar.addfile(info, io.BytesIO(jpg))
    src = load_source("cifar10", [tmp_path.name], {}, base_dir=tmp_path.parent)
    assert src.train.y.tolist() == list(range(10)) == src.test.y.tolist()
    assert np.array_equal(src.train.x, src.test.x)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 2, 4, 5), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0, 2])
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_test=x[:2, :, :, :], y_test=y[:2],
             classes=np.array(["a", "b", "c"]))
    src = load_npz(path)
    assert np.array_equal(src.train.x * 255, x.astype(np.float32))
    assert src.classes == ("a", "b", "c")
    assert np.array_equal(src.test.y, y[:2])
    np.savez(path, x=x.transpose(0, 2, 3, 1).astype(np.float32), y=y)
    assert np.array_equal(load_npz(path, layout="nhwc").train.x, x.astype(np.float32))
    masks = rng.integers(0, 3, (6, 4, 5))
    np.savez(path, x=x[:, 0], y=masks)
    seg = load_npz(path)
    assert seg.task == "segment" and seg.input_shape == (1, 4, 5) and seg.num_classes == 3


def test_npz_refuses_object_arrays_and_bad_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 1, 2, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="object.*never loads"):
        load_npz(path)
    np.savez(path, x=np.zeros((2, 1, 2, 2)), y=np.array([0, 3]), classes=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"0\.\.1"):
        load_npz(path)
    np.savez(path, x=np.zeros((3, 1, 2, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_npz(path)
    np.savez(path, images=np.zeros((3, 1, 2, 2)))
    with pytest.raises(DataError, match="no array 'x'"):
        load_npz(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_npz(path)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match="not a .npz file"):
        load_npz(tmp_path / "one.npy")


def test_registry_resolves_relative_paths_and_reports_spans(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 3, 3), np.float32), y=np.array([0, 1]))
    assert len(load_source("npz", ["d.npz"], {}, base_dir=tmp_path).train) == 2
    span = Span("spec.cnn", 4, 12, '    data = npz("nope.npz")')
    with pytest.raises(DataError) as err:
        load_source("npz", ["nope.npz"], {}, base_dir=tmp_path, span=span)
    assert err.value.span == span and "spec.cnn:4:12" in str(err.value)
    with pytest.raises(SpecError, match="did you mean"):
        load_source("mnsit", ["x"], {}, span=span)
    with pytest.raises(SpecError, match="classes="):
        load_source("shapes", [], {"clases": 2})
    with pytest.raises(SpecError, match="path"):
        load_source("folder", [], {"size": 3})


def test_registry_data_path_override(tmp_path, monkeypatch):
    np.savez(tmp_path / "real.npz", x=np.zeros((3, 1, 2, 2), np.float32), y=np.array([0, 1, 0]))
    monkeypatch.chdir(tmp_path)
    src = load_source("npz", [], {"path": "spec-relative.npz"}, base_dir="/elsewhere",
                      data_path="real.npz")
    assert len(src.train) == 3 and src.origin == str(tmp_path / "real.npz")
    with pytest.raises(DataError, match="reads no files"):
        load_source("shapes", [], {}, data_path="real.npz")

"""IDX files: round trips on small generated files, corruption, and the MNIST folder."""
import gzip
from pathlib import Path

import numpy as np
import pytest

from cnnc.data import load_idx_folder, load_idx_pair, load_source, read_idx
from cnnc.errors import DataError

TYPE_BYTES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def idx_bytes(arr: np.ndarray) -> bytes:
    dtype = arr.dtype if arr.dtype.itemsize == 1 else arr.dtype.newbyteorder(">")
    head = bytes([0, 0, TYPE_BYTES[dtype], arr.ndim])
    head += b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(dtype).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mnist_folder(folder: Path, n_train=7, n_test=3, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for stem, n in [("train", n_train), ("t10k", n_test)]:
        x = rng.integers(0, 256, (n, 5, 4), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(folder / f"{stem}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{ext}", y)
        arrays[stem] = (x, y)
    return arrays


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_round_trip(tmp_path, suffix, dtype):
    arr = (np.random.default_rng(1).normal(0, 100, (3, 4, 5))).astype(dtype)
    got = read_idx(write_idx(tmp_path / f"a.idx{suffix}", arr))
    assert got.dtype == np.dtype(dtype) and np.array_equal(got, arr)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_style_folder(tmp_path, gz):
    arrays = write_mnist_folder(tmp_path, gz=gz)
    src = load_idx_folder(tmp_path)
    assert src.train.x.shape == (7, 1, 5, 4) and src.train.x.dtype == np.float32
    assert np.array_equal(src.train.x[:, 0] * 255, arrays["train"][0].astype(np.float32))
    assert np.array_equal(src.test.y, arrays["t10k"][1]) and src.test.y.dtype == np.int64
    assert src.classes == tuple("0123456789") and src.input_shape == (1, 5, 4)


def test_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(b"\x00\x01\x08\x03" + bytes(12))
    with pytest.raises(DataError, match=r"x-idx3-ubyte: not an IDX file.*00 01 08 03"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + bytes(8))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("cut", [2, 7, 20, -1])
def test_truncated_file(tmp_path, cut):
    data = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = tmp_path / "t-idx3-ubyte"
    path.write_bytes(data[:cut])
    with pytest.raises(DataError, match="t-idx3-ubyte"):
        read_idx(path)


def test_longer_than_header_says(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros((2, 2), np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "t-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8)))[:-12])
    with pytest.raises(DataError, match=r"t-idx1-ubyte.gz.*corrupt or truncated"):
        read_idx(path)


def test_label_count_mismatch(tmp_path):
    images = write_idx(tmp_path / "i", np.zeros((6, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "l", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="6 images but 5 labels"):
        load_idx_pair(images, labels)


def test_label_out_of_range(tmp_path):
    images = write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "l", np.array([1, 12, 3], np.uint8))
    with pytest.raises(DataError, match=r"0\.\.9.*\[12\]"):
        load_idx_pair(images, labels, n_classes=10)


def test_wrong_rank(tmp_path):
    images = write_idx(tmp_path / "i", np.zeros((3, 4), np.uint8))
    labels = write_idx(tmp_path / "l", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="3 dimensions"):
        load_idx_pair(images, labels)


def test_missing_files_are_listed(tmp_path):
    write_mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_idx_folder(tmp_path)
    text = str(err.value)
    assert "missing t10k-labels-idx1-ubyte" in text and "train-images-idx3-ubyte" in text
    with pytest.raises(DataError, match="does not exist.*four MNIST-style files"):
        load_idx_folder(tmp_path / "nowhere")


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/data/mnist is absent")
def test_real_mnist():
    src = load_source("mnist", ["mnist"], {}, base_dir=SHARED)
    assert src.train.x.shape == (60000, 1, 28, 28) and src.test.x.shape == (10000, 1, 28, 28)
    assert src.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(src.train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                                 6265, 5851, 5949]
    assert np.bincount(src.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                974, 1009]
    assert src.train.x.min() == 0.0 and src.train.x.max() == 1.0

"""IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

An IDX file is a 4-byte magic (two zero bytes, a dtype byte, the number of dimensions),
one big-endian uint32 per dimension, then the values, big-endian, row-major. MNIST's
images are magic 2051 (uint8, 3 dims) and its labels 2049 (uint8, 1 dim).
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from cnnc.data.source import DataSource, Split, check_labels
from cnnc.errors import DataError

# dtype byte -> big-endian numpy dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one IDX file (``.gz`` is decompressed), in native byte order."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file.") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'}"
                        f" ({err}); the file is corrupt or truncated, fetch it again.") from None
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file: the first 4 bytes are {raw[:4].hex(' ')}, "
                        "but an IDX file starts with 00 00, a type byte (08 for uint8) and the "
                        "number of dimensions (e.g. 00 00 08 03 for MNIST images).")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, "
                        f"the file has {len(raw)}.")
    dims = [int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: IDX file {what}: dimensions {dims} of {dtype.name} need "
                        f"{expected} bytes, the file has {len(raw)}.")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _images(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 3:
        raise DataError(f"{path}: IDX images must have 3 dimensions [N, H, W]; this file has "
                        f"{arr.ndim}: {list(arr.shape)}.")
    x = arr[:, None, :, :].astype(np.float32)
    return x / 255.0 if arr.dtype == np.uint8 else x


def load_idx_pair(images: str | Path, labels: str | Path, n_classes: int | None = None) -> Split:
    """One split from an IDX images file [N, H, W] and an IDX labels file [N].

    uint8 pixels are scaled to [0, 1]. ``n_classes`` bounds the labels (default: the
    largest label + 1).
    """
    images, labels = Path(images), Path(labels)
    x = _images(read_idx(images), images)
    y = read_idx(labels)
    if y.ndim != 1:
        raise DataError(f"{labels}: IDX labels must have 1 dimension [N]; this file has "
                        f"{y.ndim}: {list(y.shape)}.")
    k = n_classes if n_classes is not None else int(y.max(initial=0)) + 1
    return Split(x, check_labels(y, len(x), k, f"{images.name} / {labels.name}"))


def load_idx_folder(path: str | Path, classes: tuple[str, ...] | None = None) -> DataSource:
    """A folder with the four MNIST-style files (raw or .gz): train and test splits.

    ``classes`` names the classes (default ``"0"`` .. ``"9"`` when all labels are < 10).
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{folder} {what}; " + _expected_files_text(folder))
    found = {split: [_find(folder, stem) for stem in stems] for split, stems in MNIST_FILES.items()}
    missing = [stem for split, stems in MNIST_FILES.items()
               for stem, f in zip(stems, found[split]) if f is None]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (raw or .gz); "
                        + _expected_files_text(folder))
    n_classes = len(classes) if classes is not None else None
    train = load_idx_pair(*found["train"], n_classes=n_classes)
    test = load_idx_pair(*found["test"], n_classes=n_classes)
    if classes is None:
        top = int(max(train.y.max(initial=0), test.y.max(initial=0))) + 1
        classes = MNIST_CLASSES if top <= 10 else tuple(str(d) for d in range(top))
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(f"{folder}: train images are {list(train.x.shape[2:])} but test images "
                        f"are {list(test.x.shape[2:])}.")
    return DataSource(train, test, tuple(classes), "classify", str(folder))


def _expected_files_text(folder: Path) -> str:
    names = ", ".join(stem for stems in MNIST_FILES.values() for stem in stems)
    return (f"an IDX data folder must hold the four MNIST-style files {names} (each raw or "
            ".gz), as published at http://yann.lecun.com/exdb/mnist/ or "
            "https://github.com/zalandoresearch/fashion-mnist; download them into "
            f"{folder} (cnnc never downloads at run time).")

"""CIFAR-10: the official binary version, or a JPEG copy as train/test tar archives.

Binary version (cifar-10-binary.tar.gz, extracted): ``data_batch_1.bin`` ..
``data_batch_5.bin`` and ``test_batch.bin``, each record one label byte and 3072 pixel
bytes (the red, green and blue 32x32 planes, row-major), so the pixels are already CHW.
The "python version" of CIFAR-10 is a set of pickles; cnnc never unpickles data files.

JPEG copy: ``cifar10-train-jpg.tar.gz`` and ``cifar10-test-jpg.tar.gz`` holding
``train/<class>/<k>.jpg`` and ``test/<class>/<k>.jpg``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnc.data.folder import read_tree, stack_classes
from cnnc.data.source import DataSource, Split, check_labels
from cnnc.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
TEST_BATCH = "test_batch.bin"
JPEG_ARCHIVES = ("cifar10-train-jpg.tar.gz", "cifar10-test-jpg.tar.gz")
RECORD = 1 + 3 * 32 * 32
PICKLE_NAMES = ("data_batch_1", "test_batch", "batches.meta")

HOW_TO_GET = ("Get the binary version (cifar-10-binary.tar.gz from "
              "https://www.cs.toronto.edu/~kriz/cifar.html) and extract it there; cnnc never "
              "downloads at run time.")


def load_cifar10(path: str | Path, limit: int | None = None) -> DataSource:
    """CIFAR-10 from a folder holding the binary batches or the two JPEG archives.

    ``path`` may also be the ``cifar-10-batches-bin`` folder's parent, or one JPEG
    archive (loaded as the training split, with no test split). ``limit`` keeps at most
    that many images per class and split.
    """
    path = Path(path)
    if path.is_file() and path.name.endswith(".tar.gz"):
        return _from_jpeg(path, None, limit)
    if path.is_file():
        raise DataError(f"{path} is a file; cifar10(...) takes the folder holding the binary "
                        f"batches {', '.join(TRAIN_BATCHES)}, {TEST_BATCH} (or the JPEG archives "
                        f"{', '.join(JPEG_ARCHIVES)}), never the pickled python batches. "
                        + HOW_TO_GET)
    if not path.is_dir():
        raise DataError(f"{path} does not exist; a CIFAR-10 folder must hold the binary batches "
                        f"{', '.join(TRAIN_BATCHES)}, {TEST_BATCH}. " + HOW_TO_GET)
    if (path / "cifar-10-batches-bin").is_dir():
        path = path / "cifar-10-batches-bin"
    if all((path / name).is_file() for name in JPEG_ARCHIVES):
        return _from_jpeg(path / JPEG_ARCHIVES[0], path / JPEG_ARCHIVES[1], limit)
    pickles = path / "cifar-10-batches-py"
    if pickles.is_dir() or any((path / name).is_file() for name in PICKLE_NAMES):
        raise DataError(f"{path} holds the python (pickle) version of CIFAR-10; cnnc never "
                        "unpickles data files, because unpickling can run arbitrary code. "
                        + HOW_TO_GET)
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if not (path / n).is_file()]
    if missing:
        raise DataError(f"{path}: missing the CIFAR-10 binary batches {', '.join(missing)}. "
                        + HOW_TO_GET)
    train = _concat([_read_batch(path / n) for n in TRAIN_BATCHES])
    test = _read_batch(path / TEST_BATCH)
    if limit is not None:
        train, test = _limit(train, limit), _limit(test, limit)
    return DataSource(train, test, _class_names(path), "classify", str(path))


def _read_batch(path: Path) -> Split:
    raw = path.read_bytes()
    if len(raw) == 0 or len(raw) % RECORD:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of CIFAR-10 records "
                        f"({RECORD} bytes each: 1 label byte, 3x32x32 pixels); the file is "
                        "truncated or not a CIFAR-10 binary batch.")
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)
    x = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0)
    return Split(x, check_labels(records[:, 0], len(x), len(CIFAR10_CLASSES), str(path)))


def _concat(splits: list[Split]) -> Split:
    return Split(np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits]))


def _limit(split: Split, limit: int) -> Split:
    keep = np.concatenate([np.flatnonzero(split.y == k)[:limit]
                           for k in range(len(CIFAR10_CLASSES))])
    return split.take(np.sort(keep))


def _class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta.txt"
    if meta.is_file():
        names = tuple(line.strip() for line in meta.read_text().splitlines() if line.strip())
        if len(names) == len(CIFAR10_CLASSES):
            return names
    return CIFAR10_CLASSES


def _from_jpeg(train: Path, test: Path | None, limit: int | None) -> DataSource:
    # one archive alone (train or test) is loaded as the training split
    splits = [_jpeg_split(train, "train" if test else None, limit)]
    if test is not None:
        splits.append(_jpeg_split(test, "test", limit))
    return DataSource(splits[0], splits[-1] if test else None, CIFAR10_CLASSES, "classify",
                      str(train.parent if test else train))


def _jpeg_split(archive: Path, split: str | None, limit: int | None) -> Split:
    tree = read_tree(archive, None, "rgb", limit)
    split = split or next(iter(tree))
    if set(tree) != {split} or set(tree[split]) != set(CIFAR10_CLASSES):
        found = {s: sorted(c) for s, c in tree.items()}
        raise DataError(f"{archive}: expected {split}/<class>/<k>.jpg for the CIFAR-10 classes "
                        f"{', '.join(CIFAR10_CLASSES)}; found {found}.")
    return stack_classes(tree[split], CIFAR10_CLASSES, archive)

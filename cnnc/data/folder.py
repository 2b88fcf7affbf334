"""Image folders with one sub-folder per class (Keras' flow_from_directory layout).

    root/<class>/<image>             one split: train only
    root/train/<class>/<image>       train and test splits (also root/test/...)

The root may also be a .tar, .tar.gz or .tgz archive of such a tree (a single top-level
folder around it is looked through). Class index = position of the class folder in
sorted order. Images are decoded with Pillow, converted to RGB or grayscale, resized when
``size`` is given, and scaled to [0, 1].
"""
from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import PIL.Image

from cnnc.data.source import DataSource, Split
from cnnc.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                  ".webp"}
COLOR_MODES = {"rgb": "RGB", "grayscale": "L"}
SPLIT_NAMES = ("train", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def load_folder(path: str | Path, size: int | tuple[int, int] | None = None,
                color: str = "rgb", limit: int | None = None,
                classes: tuple[str, ...] | None = None) -> DataSource:
    """Load an image folder (or a tar archive of one) as a DataSource.

    size: target (height, width), or one int for square images; None keeps the files'
        size, which must then be the same for all of them.
    color: "rgb" (3 channels) or "grayscale" (1 channel).
    limit: read at most this many images per class and split (the first in name order
        for a folder, in stored order for an archive).
    classes: the expected class names in label order; the folder names must match them.
        Default: the sorted folder names.
    """
    path = Path(path)
    if color not in COLOR_MODES:
        raise DataError(f"color must be one of {', '.join(COLOR_MODES)}; got {color!r}")
    target = _target_size(size)
    if not path.exists():
        raise DataError(f"{path} does not exist; an image folder needs one sub-folder of images "
                        "per class (root/<class>/<image>, or root/train/<class>/... and "
                        "root/test/<class>/...), or a .tar.gz archive of such a tree.")
    splits = read_tree(path, target, color, limit)
    if "train" not in splits:
        raise DataError(f"{path}: found a test/ folder but no train/ folder.")
    train_classes = sorted(splits["train"])
    if classes is None:
        classes = tuple(train_classes)
    elif sorted(classes) != train_classes:
        raise DataError(f"{path}: expected the class folders {', '.join(classes)}; found "
                        f"{', '.join(train_classes)}.")
    train = stack_classes(splits["train"], classes, path)
    test = stack_classes(splits["test"], classes, path) if "test" in splits else None
    if test is not None and test.x.shape[1:] != train.x.shape[1:]:
        raise DataError(f"{path}: test images are {list(test.x.shape[1:])} but train images are "
                        f"{list(train.x.shape[1:])}; pass size= to resize them all.")
    return DataSource(train, test, tuple(classes), "classify", str(path))


class Image(NamedTuple):
    """A decoded image and the file (or archive member) it came from."""

    where: str
    pixels: np.ndarray  # [C, H, W] uint8


def _target_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(d, int) and d > 0 for d in hw):
        raise DataError(f"size must be a positive int or (height, width); got {size!r}")
    return hw


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not Path(name).name.startswith(".")


def read_tree(path: Path, target: tuple[int, int] | None, color: str,
              limit: int | None) -> dict[str, dict[str, list[Image]]]:
    """{split: {class: [Image, ...]}} of an image folder or archive.

    The split is "train" unless the tree has train/ and test/ folders at its top.
    """
    return _by_split(_decode_all(path, COLOR_MODES[color], target, limit), path)


def _decode_all(path: Path, mode: str, target, limit) -> list[tuple[tuple[str, ...], Image]]:
    """(folder parts relative to the root, an Image) for each image, sorted by file name."""
    files = _archive_members(path) if path.is_file() else _folder_files(path)
    seen: Counter = Counter()
    out = []
    for parts, where, read in files:
        # parts[:-1] are the folders; the limit counts per innermost folder (= split/class)
        if limit is not None:
            seen[parts[:-1]] += 1
            if seen[parts[:-1]] > limit:
                continue
        try:
            data = read()
        except OSError as err:
            raise DataError(f"{where}: cannot be read ({err}).") from None
        out.append((parts, Image(where, _decode(data, where, mode, target))))
    out.sort(key=lambda item: item[0])
    return [(parts[:-1], img) for parts, img in out]


def _folder_files(root: Path) -> Iterator:
    files = sorted(p for p in root.rglob("*") if p.is_file() and _is_image(p.name))
    for p in files:
        yield p.relative_to(root).parts, str(p), p.read_bytes


def _archive_members(path: Path) -> Iterator:
    """Members in archive order: a compressed archive is read once, front to back."""
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{path} is a file, but an image folder must be a folder or a .tar, "
                        ".tar.gz or .tgz archive of one.")
    gz = path.name.lower().endswith((".gz", ".tgz"))
    try:
        with (gzip.open(path) if gz else open(path, "rb")) as raw, \
                tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                if m.isfile() and _is_image(m.name):
                    yield (tuple(m.name.removeprefix("./").split("/")), f"{path}:{m.name}",
                           lambda m=m: _read_member(tar, m, path))
            # tarfile stops quietly at a cut on a block boundary; gzip checks its trailer
            while raw.read(1 << 20):
                pass
    except ARCHIVE_ERRORS as err:
        raise _corrupt_archive(path, err) from None


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes:
    try:
        return tar.extractfile(member).read()
    except ARCHIVE_ERRORS as err:
        raise _corrupt_archive(path, err) from None


def _corrupt_archive(path: Path, err: Exception) -> DataError:
    return DataError(f"{path}: the archive is corrupt or truncated ({err}); fetch it again.")


def _decode(data: bytes, where: str, mode: str, target) -> np.ndarray:
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            img = img.convert(mode)
            if target is not None and img.size != (target[1], target[0]):
                img = img.resize((target[1], target[0]), PIL.Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise DataError(f"{where}: cannot decode the image ({err}); the file is corrupt, "
                        "truncated or not an image.") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _by_split(entries, path: Path) -> dict:
    """{split: {class: [Image]}} from the folder parts of each image."""
    if not entries:
        raise DataError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}"
                        " files in one sub-folder per class).")
    dirs = [d for d, _ in entries]
    # look through one top-level folder that wraps everything (e.g. an archive's root)
    while all(len(d) >= 2 for d in dirs) and len({d[0] for d in dirs}) == 1 \
            and dirs[0][0] not in SPLIT_NAMES:
        dirs = [d[1:] for d in dirs]
    has_splits = {d[0] for d in dirs if d} <= set(SPLIT_NAMES) and all(len(d) >= 2 for d in dirs)
    splits: dict = {}
    for d, (_, img) in zip(dirs, entries):
        if not d:
            continue  # a loose file in the root belongs to no class
        split, cls = (d[0], d[1]) if has_splits else ("train", d[0])
        splits.setdefault(split, {}).setdefault(cls, []).append(img)
    if not splits:
        raise DataError(f"{path}: found images but no class sub-folders; put each class's "
                        "images in a folder named after the class.")
    return splits


def stack_classes(by_class: dict[str, list[Image]], classes: tuple[str, ...],
                  path: Path) -> Split:
    """One Split from {class: images}; labels are positions in ``classes``."""
    unknown = sorted(set(by_class) - set(classes))
    if unknown:
        raise DataError(f"{path}: class folders {', '.join(unknown)} are not among the training "
                        f"classes {', '.join(classes)}.")
    images, labels = [], []
    for k, cls in enumerate(classes):
        images += by_class.get(cls, [])
        labels += [k] * len(by_class.get(cls, []))
    odd = next((img for img in images if img.pixels.shape != images[0].pixels.shape), None)
    if odd is not None:
        raise DataError(f"{path}: the images have different sizes: {odd.where} is [C, H, W] = "
                        f"{list(odd.pixels.shape)} but {images[0].where} is "
                        f"{list(images[0].pixels.shape)}; pass size= to resize them to one.")
    x = np.stack([img.pixels for img in images]).astype(np.float32) / np.float32(255.0)
    return Split(x, np.asarray(labels, dtype=np.int64))

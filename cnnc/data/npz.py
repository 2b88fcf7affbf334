"""Arrays in a .npz file: ``x``/``y`` (train), optionally ``x_test``/``y_test`` and ``classes``.

``x`` is [N, C, H, W] (the project's layout) or [N, H, W] (one channel); uint8 pixels are
scaled to [0, 1], float pixels kept as they are. ``y`` holds class indices [N] or
per-pixel class maps [N, H, W] (segmentation). Loaded with ``allow_pickle=False``: object
arrays are refused, never unpickled.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cnnc.data.source import DataSource, Split, check_labels
from cnnc.errors import DataError


def load_npz(path: str | Path, layout: str = "nchw") -> DataSource:
    """Load a .npz data set; ``layout="nhwc"`` accepts x as [N, H, W, C] instead."""
    path = Path(path)
    if layout not in ("nchw", "nhwc"):
        raise DataError(f"layout must be \"nchw\" or \"nhwc\"; got {layout!r}")
    if not path.is_file():
        raise DataError(f"{path} does not exist; npz(...) needs a .npz file with arrays x "
                        "(images) and y (labels), e.g. written by numpy.savez(path, x=x, y=y).")
    with open(path, "rb") as fh:
        if fh.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise DataError(f"{path}: not a .npz file (a zip archive of .npy arrays, as "
                            "numpy.savez writes); it is another format, corrupt or empty.")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except ValueError as err:  # numpy refuses object arrays without allow_pickle
        raise DataError(f"{path}: holds an object (pickled) array, which cnnc never loads "
                        f"because unpickling can run code ({err}). Store plain numeric arrays "
                        "and a string array for class names.") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err}); it is corrupt or "
                        "truncated.") from None
    for need in ("x", "y"):
        if need not in arrays:
            have = ", ".join(arrays) or "nothing"
            raise DataError(f"{path}: has no array {need!r} (it has {have}); npz(...) needs "
                            "x (images) and y (labels).")
    classes = _classes(arrays, path)
    train = _split(arrays["x"], arrays["y"], len(classes), layout, f"{path} (x, y)")
    test = None
    if "x_test" in arrays or "y_test" in arrays:
        if not ("x_test" in arrays and "y_test" in arrays):
            raise DataError(f"{path}: has only one of x_test and y_test; give both or neither.")
        test = _split(arrays["x_test"], arrays["y_test"], len(classes), layout,
                      f"{path} (x_test, y_test)")
        if test.x.shape[1:] != train.x.shape[1:]:
            raise DataError(f"{path}: x_test images are {list(test.x.shape[1:])} but x images "
                            f"are {list(train.x.shape[1:])}.")
    task = "segment" if train.y.ndim == 3 else "classify"
    return DataSource(train, test, classes, task, str(path))


def _classes(arrays: dict, path: Path) -> tuple[str, ...]:
    if "classes" in arrays:
        names = arrays["classes"]
        if names.dtype.kind not in "US" or names.ndim != 1:
            raise DataError(f"{path}: 'classes' must be a 1-D array of strings; "
                            f"got {names.dtype} {list(names.shape)}.")
        return tuple(str(n) for n in names)
    # without names, the classes are 0 .. the largest label; check_labels reports bad labels
    ys = [arrays[k] for k in ("y", "y_test") if k in arrays and arrays[k].dtype.kind in "iubf"]
    top = max((np.max(y[np.isfinite(y)], initial=0) for y in ys), default=0)
    return tuple(str(k) for k in range(int(top) + 1))


def _split(x: np.ndarray, y: np.ndarray, n_classes: int, layout: str, where: str) -> Split:
    if x.dtype.kind not in "uif":
        raise DataError(f"{where}: images must be numbers, not {x.dtype}.")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DataError(f"{where}: images must be [N, C, H, W] or [N, H, W]; got "
                        f"{list(x.shape)}.")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DataError(f"{where}: the images contain NaN or infinite values.")
    scaled = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x
    x = np.ascontiguousarray(scaled, dtype=np.float32)
    if y.ndim not in (1, 3) or (y.ndim == 3 and y.shape[1:] != x.shape[2:]):
        raise DataError(f"{where}: labels must be class indices [N] or per-pixel class maps "
                        f"[N, H, W] = [N, {x.shape[2]}, {x.shape[3]}]; got {list(y.shape)}.")
    return Split(x, check_labels(y, len(x), n_classes, where))

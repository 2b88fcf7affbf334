"""What every loader returns: a :class:`DataSource` of :class:`Split` s, and checks on it.

Images are float32 NCHW ([N, C, H, W]), pixel values in [0, 1] unless a loader says
otherwise. Targets ``y`` depend on the task:

* ``classify``: int64 class indices [N];
* ``segment``: int64 per-pixel class maps [N, H, W] (0 is the background);
* ``detect``: float32 boxes [N, M, 5] as (class, x0, y0, x1, y1) in pixels, x1/y1 exclusive.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cnnc.errors import DataError, Span

TASKS = ("classify", "segment", "detect")


@dataclass(frozen=True)
class Split:
    """One part of a data set (train, validation or test): images and their targets."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Split:
        """The images (and targets) at ``index``, in that order."""
        return Split(self.x[index], self.y[index])


@dataclass(frozen=True)
class DataSource:
    """A loaded data set: its splits, class names and where it came from.

    ``origin`` names the file or call the data came from; error messages quote it.
    """

    train: Split
    test: Split | None
    classes: tuple[str, ...]
    task: str = "classify"
    origin: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check_labels(y: np.ndarray, n_images: int, n_classes: int, where: str) -> np.ndarray:
    """Class labels (or masks) as int64, after checking their count and range.

    ``where`` names the file(s) for the error message.
    """
    if len(y) != n_images:
        raise DataError(f"{where}: there are {n_images} images but {len(y)} labels; "
                        "each image needs exactly one label.")
    if y.dtype.kind == "f":
        bad = y[~(np.isfinite(y) & (y == np.round(y)))]
        if bad.size:
            raise DataError(f"{where}: labels must be whole class numbers; "
                            f"found {bad.size} others, e.g. {bad[:3].tolist()}.")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: labels must be integer class numbers, not {y.dtype}.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)]
        raise DataError(f"{where}: labels must lie in 0..{n_classes - 1} ({n_classes} classes); "
                        f"found {bad.size} outside, e.g. {bad[:3].tolist()}.")
    return y


def check_fits(source: DataSource, input_shape: tuple[int, ...],
               span: Span | None = None) -> None:
    """Raise DataError when the source's images are not the network's input shape (C, H, W)."""
    have, want = source.input_shape, tuple(int(d) for d in input_shape)
    if have == want:
        return
    hint = None
    if have[1:] == want[1:]:
        hint = ("The channel counts differ: for an image folder pass color=\"grayscale\" or "
                "color=\"rgb\"; for shapes(...) pass channels=.")
    elif have[0] == want[0]:
        hint = ("The image sizes differ: for an image folder pass size=; for shapes(...) pass "
                "size=; or change the network's input line.")
    raise DataError(f"the data from {source.origin or 'the data source'} has images of shape "
                    f"[C, H, W] = {list(have)}, but the network's input is {list(want)}.",
                    span=span, hint=hint)


def standardize(source: DataSource, mean: float | tuple | None = None,
                std: float | tuple | None = None) -> DataSource:
    """Subtract ``mean`` and divide by ``std`` (per channel when tuples), in every split.

    ``mean="train"``/``std="train"`` use the training split's per-channel statistics.
    """
    c = source.input_shape[0]

    def per_channel(v, stat) -> np.ndarray:
        if isinstance(v, str):
            if v != "train":
                raise DataError(f"standardize: {v!r} is not a number or \"train\"")
            return stat(source.train.x, axis=(0, 2, 3)).astype(np.float32)
        arr = np.asarray(v, dtype=np.float32).reshape(-1)
        if arr.size not in (1, c):
            raise DataError(f"standardize: got {arr.size} values for {c} channels")
        return np.broadcast_to(arr, (c,))

    m = per_channel(0.0 if mean is None else mean, np.mean)
    s = per_channel(1.0 if std is None else std, np.std)
    if np.any(s <= 0):
        raise DataError(f"standardize: std must be positive; got {s.tolist()}")
    m, s = m.reshape(1, c, 1, 1), s.reshape(1, c, 1, 1)

    def apply(split: Split | None) -> Split | None:
        return None if split is None else Split(((split.x - m) / s).astype(np.float32), split.y)

    return replace(source, train=apply(source.train), test=apply(source.test))


def validation_split(split: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """Split off a random ``fraction`` of ``split`` for validation: (train, validation)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the validation fraction must lie strictly between 0 and 1; "
                        f"got {fraction}")
    n_val = int(round(len(split) * fraction))
    if n_val == 0 or n_val == len(split):
        raise DataError(f"a validation fraction of {fraction} of {len(split)} images leaves "
                        "one side empty")
    order = np.random.default_rng(seed).permutation(len(split))
    return split.take(np.sort(order[n_val:])), split.take(np.sort(order[:n_val]))


def shuffled(split: Split, seed: int) -> Split:
    """The same images in a random order fixed by ``seed``."""
    return split.take(np.random.default_rng(seed).permutation(len(split)))

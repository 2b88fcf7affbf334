"""A spec's ``train { }`` section turned into what :func:`cnnc.train.fit` takes: the data
source (with a ``--data`` override), the augmentation, the callbacks' settings, and whether
the network ends in logits."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnc.data import Augmentation, DataSource, load_source
from cnnc.data.registry import SOURCES
from cnnc.dsl import TrainConfig
from cnnc.errors import CnncError, DataError
from cnnc.ir import Graph

PROBABILITY_OPS = ("softmax", "sigmoid")


def outputs_logits(graph: Graph) -> bool:
    """True when the network's output is not a softmax or sigmoid (scores are logits)."""
    producer = graph.outputs[0].producer
    return producer is None or producer.op not in PROBABILITY_OPS


def check_classes(source: DataSource, graph: Graph) -> None:
    """DataError unless the network's output can express every class of the data (a
    one-unit output counts as two classes: 0 and 1)."""
    if source.task == "detect":
        raise DataError(f"the data from {source.origin} is for detection (boxes); cnnc trains "
                        "classifiers and segmenters")
    shape = graph.outputs[0].type.shape
    units = int(shape[1]) if len(shape) > 1 else 1
    can = 2 if units == 1 else units
    if source.num_classes > can:
        names = ", ".join(source.classes[:5]) + (", ..." if source.num_classes > 5 else "")
        raise DataError(f"the data from {source.origin} has {source.num_classes} classes "
                        f"({names}), but the network's output '{graph.outputs[0].name}' has "
                        f"{units} unit{'s' if units > 1 else ''}, enough for {can}.",
                        hint="make the last layer as wide as the number of classes")


def load_data(config: TrainConfig, spec_dir: Path, data: str | Path | None,
              input_shape: tuple[int, ...]) -> DataSource:
    """The data source the spec names (paths relative to the spec's folder); ``data``
    replaces its path (relative to the working directory). For a spec whose source reads
    no files (shapes), ``data`` picks a loader from what the path holds: a .npz file, a
    folder of MNIST-style IDX files, CIFAR-10, or an image folder."""
    kind, args = config.data.name, {k: v for k, v in config.data.args.items() if v is not None}
    span = config.spans.get("data")
    if data is not None:
        path = Path(data).resolve()
        if SOURCES.get(kind, (None, False))[1]:
            args[next(iter(config.data.args))] = str(path)
        else:
            kind, args = _guess_source(path, input_shape)
            span = None
    return load_source(kind, [], args, base_dir=spec_dir, span=span)


def _guess_source(path: Path, input_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    if not path.exists():
        raise CnncError(f"--data {path}: no such file or folder",
                        hint="give a folder of MNIST-style IDX files, CIFAR-10, a .npz file "
                             "with arrays x and y, or a folder with one sub-folder per class")
    if path.suffix == ".npz":
        return "npz", {"path": str(path)}
    if path.is_dir() and any(path.glob("train-images-idx3-ubyte*")):
        return "mnist", {"path": str(path)}
    if "cifar" in path.name.lower():
        return "cifar10", {"path": str(path)}
    c, h, w = input_shape
    return "folder", {"path": str(path), "size": (h, w),
                      "color": "grayscale" if c == 1 else "rgb"}


def augmentation(config: TrainConfig, height: int, width: int) -> Augmentation | None:
    """The spec's ``augment { }`` settings as an Augmentation (None when there are none).

    flip, rotation (degrees), shift (fraction), zoom, shear (degrees) keep Keras'
    meanings; ``crop = c`` (pad by c and crop back, as for CIFAR) becomes a random shift of
    up to c pixels with zeros filled in; brightness, contrast and noise change colours
    (see :class:`cnnc.data.Augmentation`).
    """
    a = config.augment
    if not a:
        return None
    shift = float(a.get("shift", 0.0))
    crop = int(a.get("crop", 0))
    flip = a.get("flip", "none")
    return Augmentation(
        rotation_range=float(a.get("rotation", 0.0)),
        width_shift_range=max(shift, crop / width),
        height_shift_range=max(shift, crop / height),
        shear_range=float(a.get("shear", 0.0)),
        zoom_range=float(a.get("zoom", 0.0)),
        horizontal_flip=flip in ("horizontal", "both"),
        vertical_flip=flip in ("vertical", "both"),
        fill_mode="constant" if crop else "nearest",
        brightness_range=float(a.get("brightness", 0.0)),
        contrast_range=float(a.get("contrast", 0.0)),
        noise_std=float(a.get("noise", 0.0)))

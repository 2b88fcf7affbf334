"""Data: loaders (IDX, CIFAR-10, image folders, npz), the synthetic shapes set, augmentation
and background-thread batching. Images are float32 NCHW; see :mod:`cnnc.data.source`."""
from cnnc.data.augment import Augmentation
from cnnc.data.batches import Batches
from cnnc.data.cifar import load_cifar10
from cnnc.data.folder import load_folder
from cnnc.data.idx import load_idx_folder, load_idx_pair, read_idx
from cnnc.data.npz import load_npz
from cnnc.data.registry import SOURCES, load_source
from cnnc.data.shapes import SHAPE_KINDS, shapes
from cnnc.data.source import (DataSource, Split, check_fits, check_labels, shuffled,
                              standardize, validation_split)

__all__ = [
    "Augmentation", "Batches", "DataSource", "SHAPE_KINDS", "SOURCES", "Split", "check_fits",
    "check_labels", "load_cifar10", "load_folder", "load_idx_folder", "load_idx_pair",
    "load_npz", "load_source", "read_idx", "shapes", "shuffled", "standardize",
    "validation_split",
]

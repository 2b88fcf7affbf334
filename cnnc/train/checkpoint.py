"""Checkpoint and weights files: ``.npz`` archives, written atomically, read without pickle.

Layout of a file: each weight under its own name (``conv_1.weight``), so a checkpoint is
also a plain weights file; the network's name under ``__cnnc_network__`` (a string);
optimizer buffers under ``optimizer/<name>``; arrays a callback keeps (early stopping's
best weights) under ``callback/<callback>/<name>``; and everything else (epoch, step,
seed, history, schedule and callback state) as UTF-8 JSON in a uint8 array under
``__cnnc__``.

Writing goes to a temporary file in the same folder, which is flushed, fsync'ed and then
renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a crash or a
full disk leaves the previous file as it was.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cnnc.errors import CheckpointError

META_KEY = "__cnnc__"
NETWORK_KEY = "__cnnc_network__"   # the network's name, as Model.save_weights writes it
FORMAT = "cnnc-checkpoint"
VERSION = 1
OPTIMIZER = "optimizer/"
CALLBACK = "callback/"

_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass
class Checkpoint:
    """The contents of a checkpoint (or of a plain weights file: then only ``weights``)."""

    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    callbacks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is removed when anything fails; the old ``path`` is never touched
    until the new content is complete and on disk.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def ensure_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) and check that files can be made in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cnnc-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CheckpointError(f"cannot write into the output folder {folder}: "
                              f"{err.strerror or err}.",
                              hint="choose another folder with --out") from None
    return folder


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically; CheckpointError if the disk refuses."""
    arrays = {name: np.asarray(a) for name, a in checkpoint.weights.items()}
    arrays.update({OPTIMIZER + k: np.asarray(a) for k, a in checkpoint.optimizer.items()})
    for owner, held in checkpoint.callbacks.items():
        arrays.update({f"{CALLBACK}{owner}/{k}": np.asarray(a) for k, a in held.items()})
    meta = {"format": FORMAT, "version": VERSION, **checkpoint.meta}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    if "network" in meta:
        arrays[NETWORK_KEY] = np.array(str(meta["network"]))
    try:
        write_atomic(path, lambda f: np.savez(f, **arrays))
    except OSError as err:
        raise CheckpointError(f"could not write {path}: {err.strerror or err}; the previous "
                              "file there (if any) is unchanged.") from None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint or a plain weights ``.npz`` (never unpickling anything)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file",
                              hint="a run writes last.npz and best.npz into its --out folder")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path}: not an .npz weights file (it does not start with "
                              "the zip signature 'PK')")
    name = None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for name in archive.files:
                arrays[name] = archive[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        which = f"tensor '{name}'" if name else "it"
        raise CheckpointError(f"{path}: not a readable weights file ({which}: "
                              f"{_reason(err)}). It may be truncated or damaged.") from None
    meta: dict[str, Any] = {}
    if META_KEY in arrays:
        try:
            meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: its training state is damaged ({err})") from None
        if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
            raise CheckpointError(f"{path}: written by a newer or different program "
                                  f"(format {meta.get('format')!r}, version "
                                  f"{meta.get('version')!r})")
    if NETWORK_KEY in arrays:
        meta.setdefault("network", str(arrays.pop(NETWORK_KEY)))
    ckpt = Checkpoint({}, meta=meta)
    for name, a in arrays.items():
        if name.startswith(OPTIMIZER):
            ckpt.optimizer[name[len(OPTIMIZER):]] = a
        elif name.startswith(CALLBACK):
            owner, _, key = name[len(CALLBACK):].partition("/")
            ckpt.callbacks.setdefault(owner, {})[key] = a
        else:
            ckpt.weights[name] = a
    return ckpt


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if "pickle" in text:
        return "it holds pickled objects, which cnnc never loads"
    return text


def assign_arrays(target: Mapping[str, np.ndarray], source: Mapping[str, np.ndarray],
                  path: str | os.PathLike, what: str = "weights",
                  network: str = "this network") -> None:
    """Copy ``source`` into the writable views ``target`` after checking that the names,
    shapes and kinds match exactly; on any mismatch nothing is written."""
    missing = [k for k in target if k not in source]
    extra = [k for k in source if k not in target]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the file lacks {_few(missing)}")
        if extra:
            parts.append(f"it holds {_few(extra)}, which {network} does not have")
        raise CheckpointError(f"{path}: these {what} do not fit {network}: "
                              f"{'; '.join(parts)}.",
                              hint="the file was probably saved from a different network "
                                   "(or with other --set values)")
    for name, view in target.items():
        a = source[name]
        if a.shape != view.shape:
            raise CheckpointError(f"{path}: {what} '{name}' has shape {list(a.shape)} in the "
                                  f"file but {list(view.shape)} in {network}.",
                                  hint="the file was probably saved from a different network "
                                       "(or with other --set values)")
        if a.dtype.kind not in "fiub" or not np.can_cast(a.dtype, view.dtype, "same_kind"):
            raise CheckpointError(f"{path}: {what} '{name}' is {a.dtype} in the file, which "
                                  f"cannot become {view.dtype}.")
    for name, view in target.items():
        view[...] = source[name]


def _few(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")

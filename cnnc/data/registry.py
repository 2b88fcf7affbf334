"""The data sources a spec can name, and how a spec's call becomes a loaded DataSource.

In a spec, ``data = mnist("../data/mnist")`` is parsed (by the language) into
``kind="mnist"``, ``args=["../data/mnist"]``, ``kwargs={}``; :func:`load_source` then runs
the matching loader. Calls and what they load:

=================================================  ==========================================
``shapes(classes=2, size=64, count=4000, ...)``    the built-in synthetic set (no files)
``mnist(path)`` / ``idx(path)``                    a folder of the four MNIST-style IDX files
``fashion_mnist(path)``                            the same, with Fashion-MNIST class names
``cifar10(path, limit=None)``                      CIFAR-10 binary batches or JPEG archives
``folder(path, size=None, color="rgb")``           one sub-folder per class (or a .tar.gz)
``npz(path, layout="nchw")``                       arrays x, y (x_test, y_test, classes)
=================================================  ==========================================

A relative path is taken from the spec file's folder (``base_dir``). A CLI ``--data PATH``
is passed as ``data_path``: it replaces the spec's path (and is taken as given, relative to
the working directory).
"""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Callable

from cnnc.data.cifar import load_cifar10
from cnnc.data.folder import load_folder
from cnnc.data.idx import FASHION_CLASSES, load_idx_folder
from cnnc.data.npz import load_npz
from cnnc.data.shapes import shapes
from cnnc.data.source import DataSource
from cnnc.errors import DataError, Span, SpecError


def _fashion_mnist(path: str) -> DataSource:
    return load_idx_folder(path, classes=FASHION_CLASSES)


def _idx(path: str) -> DataSource:
    return load_idx_folder(path)


# kind -> (loader, does its first argument name a path?)
SOURCES: dict[str, tuple[Callable[..., DataSource], bool]] = {
    "shapes": (shapes, False),
    "mnist": (_idx, True),
    "idx": (_idx, True),
    "fashion_mnist": (_fashion_mnist, True),
    "cifar10": (load_cifar10, True),
    "folder": (load_folder, True),
    "npz": (load_npz, True),
}


def load_source(kind: str, args: list, kwargs: dict, base_dir: str | Path = ".",
                span: Span | None = None, data_path: str | Path | None = None) -> DataSource:
    """Load the data source a spec names: ``kind(*args, **kwargs)``.

    ``data_path`` (the CLI's ``--data``) overrides the path argument. Raises SpecError for
    an unknown source or arguments it does not take (with ``span``), DataError when the
    data is missing or bad (with ``span`` where the error has none).
    """
    if kind not in SOURCES:
        near = difflib.get_close_matches(kind, SOURCES, n=1)
        hint = f"did you mean {near[0]}(...)?" if near else None
        raise SpecError(f"unknown data source {kind!r}; known: {', '.join(SOURCES)}",
                        span=span, hint=hint)
    loader, takes_path = SOURCES[kind]
    if data_path is not None and not takes_path:
        raise DataError(f"--data {data_path} was given, but {kind}(...) reads no files; "
                        "drop --data or name a file-based source in the spec.", span=span)
    args = list(args)
    params = inspect.signature(loader).parameters
    if data_path is not None:  # as if the spec had named this path (absolute: base ignored)
        first = next(iter(params))
        kwargs = {k: v for k, v in kwargs.items() if k != first}
        args = [str(Path(data_path).resolve())] + args[1:]
    try:
        bound = inspect.signature(loader).bind(*args, **kwargs)
    except TypeError as err:
        takes = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                          for p in params.values())
        near = [m for k in kwargs if k not in params
                for m in difflib.get_close_matches(k, params, n=1)]
        raise SpecError(f"{kind}(...): {err}; it takes ({takes})", span=span,
                        hint=f"did you mean {near[0]}=?" if near else None) from None
    if takes_path:
        first = next(iter(params))
        if first not in bound.arguments:
            raise SpecError(f"{kind}(...) needs the data's path as its first argument",
                            span=span)
        if not isinstance(bound.arguments[first], (str, Path)):
            raise SpecError(f"{kind}(...): the path must be a string; got "
                            f"{bound.arguments[first]!r}", span=span)
        path = Path(bound.arguments[first])
        bound.arguments[first] = path if path.is_absolute() else Path(base_dir) / path
    try:
        return loader(*bound.args, **bound.kwargs)
    except DataError as err:
        if err.span is None and span is not None:
            err.span = span
        raise

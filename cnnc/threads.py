"""Thread-count policy for the kernels.

Every kernel takes an explicit ``n_threads``; callers ask :func:`get_num_threads`.
The default is all usable cores, overridden by ``CNNC_NUM_THREADS`` or, failing that,
``OMP_NUM_THREADS`` (read once per process); :func:`set_num_threads` overrides both.
"""
from __future__ import annotations

import functools
import os

from cnnc._kernels import threads as _threads

_chosen: int | None = None
_OPENMP = _threads.openmp_enabled()


@functools.cache
def _usable_cores() -> int:
    """Cores this process may run on (read once: kernels ask on every call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.cache
def _from_env() -> int | None:
    """The count the environment asks for, read once (as OpenMP reads OMP_NUM_THREADS)."""
    for name in ("CNNC_NUM_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").split(",")[0].strip()
        if raw:
            try:
                return max(1, int(raw))
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a whole number of threads") from None
    return None


def effective_n_threads(n: int | None = None) -> int:
    """Resolve a requested thread count: None = default, negative = all cores but |n|-1."""
    if not _OPENMP:
        return 1
    cores = _usable_cores()
    if n is None:
        n = _chosen if _chosen is not None else (_from_env() or cores)
    if n == 0:
        raise ValueError("the number of threads must not be 0")
    if n < 0:
        n = max(1, cores + 1 + n)
    return n


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in every kernel from now on (negative: all cores but |n|-1)."""
    global _chosen
    _chosen = effective_n_threads(n)


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return effective_n_threads(None)

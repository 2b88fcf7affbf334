"""Static memory planning: liveness intervals over the schedule -> offsets in one arena.

Each intermediate tensor of a step is a :class:`UsageRecord`, live over schedule steps
``[first, last]`` inclusive. :func:`plan_memory` gives every record an aligned offset so that
records live at the same step never share bytes, and reports the arena beside the naive sum
and the lower bound (the largest total of bytes live at one step). Placement is the
offset calculation of Pisarchyk & Lee 2020 ("Efficient Memory Management for Deep Neural Net
Inference", also TensorFlow Lite's): visit records in some order, put each into the smallest
gap between time-overlapping placed records that holds it, else above all of them. The
methods differ in the visiting order; ``"best"`` tries them all, then a few promoted orders
(see :func:`_search`), and keeps the smallest arena.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class UsageRecord:
    """A buffer of ``size`` bytes live over schedule steps ``first..last`` inclusive.

    Steps and size are non-negative ints (ValueError otherwise); a zero-size record is
    allowed and takes no space.
    """

    first: int
    last: int
    size: int
    name: str = ""

    def __post_init__(self) -> None:
        label = f"usage record {self.name!r}" if self.name else "usage record"
        for field in ("first", "last", "size"):
            value = getattr(self, field)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"{label}: {field} must be an int, got {value!r}")
        if self.first < 0:
            raise ValueError(f"{label}: first step {self.first} is negative")
        if self.last < self.first:
            raise ValueError(f"{label}: last step {self.last} is before first step {self.first}")
        if self.size < 0:
            raise ValueError(f"{label}: size {self.size} is negative")


@dataclass(frozen=True)
class MemoryPlan:
    """Offsets (aligned with the records) into one arena of ``arena_bytes``."""

    offsets: list[int]
    arena_bytes: int
    naive_bytes: int
    lower_bound_bytes: int
    alignment: int
    method: str

    def report(self) -> dict:
        """The plan's figures as a plain dict (bytes, and which method won)."""
        ratio = self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0
        return {
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "arena_over_lower_bound": ratio,
            "buffers": len(self.offsets),
            "alignment": self.alignment,
            "method": self.method,
        }


def _arrays(records: Sequence[UsageRecord], alignment: int):
    for r in records:
        if not isinstance(r, UsageRecord):
            raise ValueError(f"expected UsageRecord, got {type(r).__name__}: {r!r}")
    first = np.array([r.first for r in records], dtype=np.int64)
    last = np.array([r.last for r in records], dtype=np.int64)
    size = np.array([r.size for r in records], dtype=np.int64)
    return first, last, -(-size // alignment) * alignment


def _breadth(first, last, size):
    """Total size live at each distinct first step (steps, totals).

    Every step's live set is a subset of the live set at the latest first step not after it,
    so these steps are the only ones that matter for the peak and for greedy by breadth.
    """
    steps = np.unique(first)
    by_first, by_last = np.argsort(first), np.argsort(last)
    started = np.concatenate(([0], np.cumsum(size[by_first])))
    ended = np.concatenate(([0], np.cumsum(size[by_last])))
    n_started = np.searchsorted(first[by_first], steps, side="right")
    n_ended = np.searchsorted(last[by_last], steps, side="left")
    return steps, started[n_started] - ended[n_ended]


def _peak(first, last, size) -> int:
    return int(_breadth(first, last, size)[1].max()) if len(size) else 0


def _order_by_size(first, last, size):
    # Largest first; among equals, the longer-lived, then the earlier.
    return np.lexsort((first, first - last, -size))


def _order_by_duration(first, last, size):
    # Longest-lived first: nested activation lifetimes of a training step stack cleanly.
    return np.lexsort((first, -size, first - last))


def _order_by_breadth(first, last, size):
    # Steps by decreasing total live size; each record goes with the widest step it spans,
    # and within one step the largest record goes first.
    steps, totals = _breadth(first, last, size)
    rank = np.empty(len(steps), dtype=np.int64)
    rank[np.argsort(-totals, kind="stable")] = np.arange(len(steps))
    lo = np.searchsorted(steps, first, side="left")
    hi = np.searchsorted(steps, last, side="right")
    widest = np.array([rank[a:b].min() for a, b in zip(lo, hi)], dtype=np.int64)
    return np.lexsort((first, -size, widest))


_ORDERS = {"size": _order_by_size, "duration": _order_by_duration, "breadth": _order_by_breadth}
METHODS = (*_ORDERS, "best")
_SEARCH_ROUNDS = 8
_SEARCH_BUDGET = 24_000


def _place(first, last, size, order) -> np.ndarray:
    """Best-fit offsets, visiting records in ``order`` (zero-size records stay at 0)."""
    offsets = np.zeros(len(size), dtype=np.int64)
    # The placed records' lifetimes and byte ranges, kept contiguous for fast masking.
    p_first, p_last, p_start, p_end = (np.empty(len(size), dtype=np.int64) for _ in range(4))
    n = 0
    for i in order:
        if size[i] == 0:
            continue
        live = (p_first[:n] <= last[i]) & (p_last[:n] >= first[i])
        starts = p_start[:n][live]
        offset = 0
        if starts.size:
            by_start = starts.argsort(kind="stable")
            starts = starts[by_start]
            reach = np.maximum.accumulate(p_end[:n][live][by_start])
            below = np.concatenate(([0], reach[:-1]))  # top of all live bytes under each start
            gaps = starts - below
            fits = np.flatnonzero(gaps >= size[i])
            offset = below[fits[np.argmin(gaps[fits])]] if fits.size else reach[-1]
        offsets[i] = offset
        p_first[n], p_last[n], p_start[n], p_end[n] = first[i], last[i], offset, offset + size[i]
        n += 1
    return offsets


def _search(first, last, size, bound: int) -> tuple[np.ndarray, str]:
    """Plan with every order, each followed by a few rounds of promoting the buffer on top.

    Moving the buffer that reaches the arena's top to the front of the visiting order and
    re-placing everything often lowers the top (greedy placement is myopic); a round or two
    usually reaches the lower bound on training schedules. Rounds are capped so that the
    search re-places about ``_SEARCH_BUDGET`` records in all.
    """
    rounds = min(_SEARCH_ROUNDS, _SEARCH_BUDGET // (len(_ORDERS) * len(size)))
    best = None
    for name, order_of in _ORDERS.items():
        order = order_of(first, last, size).tolist()
        for round_ in range(rounds + 1):
            offsets = _place(first, last, size, order)
            tops = offsets + size
            if best is None or tops.max() < best[0]:
                best = tops.max(), offsets, name + ("+search" if round_ else "")
            if best[0] == bound:
                return best[1], best[2]
            top = order.index(int(tops.argmax()))
            if top == 0:
                break
            order.insert(0, order.pop(top))
    return best[1], best[2]


def plan_memory(
    records: Sequence[UsageRecord], alignment: int = 64, method: str = "best"
) -> MemoryPlan:
    """Assign every record an offset in one arena.

    Parameters
    ----------
    records : sequence of UsageRecord
        The buffers and their lifetimes over the schedule.
    alignment : int
        Offsets are multiples of it; sizes are rounded up to it for placement.
    method : {"best", "size", "duration", "breadth"}
        Visiting order: greedy by size (Pisarchyk & Lee), by lifetime, or by breadth.
        "best" tries all three, each followed by a few rounds of promotion (see
        ``_search``), and keeps the smallest arena (ties: the earliest tried).

    Returns
    -------
    MemoryPlan
        ``offsets[i]`` belongs to ``records[i]``; ``method`` names the order that won
        (with "+search" when a promoted order beat it).
    """
    if not isinstance(alignment, numbers.Integral) or isinstance(alignment, bool):
        raise ValueError(f"alignment must be an int, got {alignment!r}")
    if alignment < 1:
        raise ValueError(f"alignment must be positive, got {alignment}")
    if method not in METHODS:
        raise ValueError(f"unknown memory planning method {method!r}; use one of {METHODS}")
    first, last, size = _arrays(records, int(alignment))
    bound = _peak(first, last, size)
    if not size.any():
        offsets = np.zeros(len(size), dtype=np.int64)
    elif method == "best":
        offsets, method = _search(first, last, size, bound)
    else:
        offsets = _place(first, last, size, _ORDERS[method](first, last, size))
    return MemoryPlan(
        offsets=[int(o) for o in offsets],
        arena_bytes=int((offsets + size).max(initial=0)),
        naive_bytes=int(size.sum()),
        lower_bound_bytes=bound,
        alignment=int(alignment),
        method=method,
    )


def lower_bound(records: Sequence[UsageRecord], alignment: int = 64) -> int:
    """The largest total of aligned sizes live at one step: no arena can be smaller."""
    return _peak(*_arrays(records, alignment))


def verify_plan(records: Sequence[UsageRecord], plan: MemoryPlan) -> None:
    """Raise AssertionError naming the first broken invariant of ``plan``.

    Checked: one offset per record; the reported naive size and lower bound are right and
    the arena is no smaller than that bound; offsets are aligned and non-negative; every
    buffer lies inside the arena; no two buffers live at a common step share a byte.
    """
    def fail(message: str) -> None:
        raise AssertionError(f"invalid memory plan: {message}")

    def name(i: int) -> str:
        return f"record {i} ({records[i].name!r})"

    first, last, size = _arrays(records, plan.alignment)
    offsets = np.array(plan.offsets, dtype=np.int64)
    if len(offsets) != len(size):
        fail(f"{len(offsets)} offsets for {len(size)} records")
    if plan.naive_bytes != int(size.sum()):
        fail(f"naive_bytes {plan.naive_bytes} != {int(size.sum())}")
    bound = _peak(first, last, size)
    if plan.lower_bound_bytes != bound:
        fail(f"lower_bound_bytes {plan.lower_bound_bytes} != {bound}")
    if plan.arena_bytes < bound:
        fail(f"arena {plan.arena_bytes} is below the lower bound {bound}")
    bad = np.flatnonzero((offsets < 0) | (offsets % plan.alignment != 0))
    if bad.size:
        fail(f"{name(bad[0])} at offset {offsets[bad[0]]}: "
             f"negative or not a multiple of {plan.alignment}")
    ends = offsets + size
    bad = np.flatnonzero(ends > plan.arena_bytes)
    if bad.size:
        fail(f"{name(bad[0])} ends at {ends[bad[0]]}, past the arena of {plan.arena_bytes}")
    for i in np.flatnonzero(size):
        clash = (first <= last[i]) & (last >= first[i]) & (offsets < ends[i]) & (ends > offsets[i])
        clash[i] = False
        clash &= size > 0  # an empty buffer shares no byte with anything
        if clash.any():
            fail(f"{name(i)} and {name(np.flatnonzero(clash)[0])} are live together "
                 "and overlap in memory")

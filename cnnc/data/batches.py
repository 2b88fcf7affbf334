"""Mini-batches made by a background thread, so loading overlaps the training step.

The producer thread gathers (and augments) batch k+1 while the consumer trains on batch k;
the augmentation kernel releases the GIL, so the two really run at once. A bounded queue
keeps at most ``prefetch`` batches in memory. An exception in the producer is re-raised in
the consumer; leaving the loop early (break, an error, garbage collection) stops and joins
the thread.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np

from cnnc.data.augment import Augmentation
from cnnc.data.source import Split
from cnnc.errors import DataError

_DONE = object()
_POLL_S = 0.05  # how often a blocked producer checks whether the consumer has left


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Batches:
    """Iterate over ``split`` in mini-batches: ``for x, y in Batches(...)``: one epoch.

    rng: shuffles the order (and draws the augmentation) when given; None keeps the order
        and needs ``augment`` to be None or non-random. The producer thread uses ``rng``
        while an epoch runs, so the caller must not use it at the same time. Batches are
        the same for the same Generator state, however the threads are scheduled.
    augment: an Augmentation applied to each batch (segmentation masks warped along).
    drop_last: leave out a last batch smaller than batch_size.
    prefetch: batches made ahead (queue bound), >= 1.
    n_threads: threads of the augmentation kernel; default 1, because the training step
        uses the cores meanwhile.
    """

    def __init__(self, split: Split, batch_size: int, rng: np.random.Generator | None = None,
                 augment: Augmentation | None = None, drop_last: bool = False,
                 prefetch: int = 2, n_threads: int = 1):
        if batch_size < 1 or prefetch < 1:
            raise DataError(f"batch size and prefetch must be >= 1; got batch_size={batch_size}, "
                            f"prefetch={prefetch}")
        if augment is not None and augment.is_geometric:
            if rng is None:
                raise DataError("random augmentation needs a random Generator (rng=...)")
            if split.y.ndim != 1 and not _are_masks(split.y):
                raise DataError("geometric augmentation can move class labels and segmentation "
                                "masks, not detection boxes; leave it out for this data set")
        self.split, self.batch_size, self.rng = split, batch_size, rng
        self.augment, self.drop_last = augment, drop_last
        self.prefetch, self.n_threads = prefetch, n_threads

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self.split)
        order = self.rng.permutation(n) if self.rng is not None else np.arange(n)
        order = order[:len(self) * self.batch_size]
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(order, q, stop), daemon=True,
                                  name="cnnc-batches")
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            worker.join()

    def _batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.split.x[index], self.split.y[index]
        if self.augment is not None:
            masks = y if _are_masks(y) else None
            x, masks = self.augment.apply(self.rng, x, masks, self.n_threads)
            y = y if masks is None else masks
        return x, y

    def _produce(self, order: np.ndarray, q: queue.Queue, stop: threading.Event) -> None:
        try:
            for lo in range(0, len(order), self.batch_size):
                if not _put(q, self._batch(order[lo:lo + self.batch_size]), stop):
                    return
            _put(q, _DONE, stop)
        except BaseException as err:  # handed to the consumer, which re-raises it
            _put(q, _Failure(err), stop)


def _are_masks(y: np.ndarray) -> bool:
    """Segmentation maps [N, H, W] (integer), as opposed to boxes [N, M, 5] (float)."""
    return y.ndim == 3 and y.dtype.kind in "iu"


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False

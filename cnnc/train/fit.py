"""The fit loop and evaluation, written against :class:`~cnnc.train.protocol.TrainableModel`.

Reproducibility: every random choice derives from (seed, epoch, step). The validation split
comes from ``seed``; epoch e's order and augmentation from ``default_rng([seed, e])`` in a
:class:`~cnnc.data.Batches`; dropout from the model's ``seed`` and the step counter in its
optimizer state. A checkpoint stores the weights, the optimizer state, (epoch, step) and
the schedule, metric and callback state, so resuming replays the epoch's batch stream up
to the step reached and continues with exactly the same updates as an uninterrupted run.

Ctrl-C during ``fit`` finishes the step in flight, lets the callbacks save (the
Checkpoints callback writes ``last.npz``) and raises :class:`TrainingInterrupted`; a second
Ctrl-C aborts at once, leaving the files as they were after the last save.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cnnc.data import Augmentation, Batches, Split, validation_split as split_off
from cnnc.errors import CheckpointError, CnncError
from cnnc.train.callbacks import (DONE, FAILED, INTERRUPTED, Callback, JsonLines,
                                  ProgressBar)
from cnnc.train.checkpoint import (Checkpoint, assign_arrays, read_checkpoint,
                                   save_checkpoint)
from cnnc.train.metrics import Mean, Metric, make_metrics
from cnnc.train.protocol import ReportsOutputs, Seeded, TrainableModel
from cnnc.train.schedules import Constant, Schedule

PROGRESS_MODES = ("bar", "quiet", "json")


class TrainingDiverged(CnncError):
    """The loss or the weights became NaN or infinite; training stopped."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a step; ``message`` says what was saved where."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class History:
    """What ``fit`` returns: per-epoch lists, Keras-like (``history.history["val_loss"]``).

    history: "loss", the training metrics, "val_loss" and "val_<metric>" with validation
        data, "lr" (the rate of the epoch's last step) and "seconds".
    epoch: the 1-based numbers of the epochs in the lists.
    stop_reason: why training ended before ``epochs`` (early stopping), else None.
    """

    history: dict[str, list[float]]
    epoch: list[int]
    stop_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(self.history.get("seconds", [])))


class TrainState:
    """The loop's state that callbacks read and checkpoints hold."""

    def __init__(self, model: TrainableModel, *, epochs: int, batch_size: int, seed: int,
                 steps_per_epoch: int, n_train: int, has_validation: bool, schedule: Schedule,
                 metrics: list[Metric], callbacks: list[Callback], meta: Mapping[str, Any]):
        self.model, self.epochs, self.batch_size, self.seed = model, epochs, batch_size, seed
        self.steps_per_epoch, self.n_train = steps_per_epoch, n_train
        self.has_validation, self.schedule = has_validation, schedule
        self.loss, self.metrics, self.callbacks = Mean("loss"), metrics, callbacks
        self.meta = dict(meta)
        self.epoch = 0            # epochs done = index of the current epoch
        self.step = 0             # steps done in the current epoch
        self.global_step = 0
        self.epoch_seconds = 0.0  # time spent in the current epoch before a resume
        self.last_batch_size = 0
        self.history: dict[str, list[float]] = {}
        self.stop_reason: str | None = None
        self.notes: list[str] = []
        self.last_checkpoint: str | None = None  # "PATH (after epoch E[, step S])"

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current epoch."""
        self.stop_reason = reason

    def note(self, text: str) -> None:
        """A line for the user at the end of training."""
        self.notes.append(text)

    def running_logs(self) -> dict[str, float]:
        return {"loss": self.loss.result(), **{m.name: m.result() for m in self.metrics}}

    def where(self) -> str:
        """"epoch 3, step 17 of 125" for messages (1-based epoch)."""
        return f"epoch {self.epoch + 1}, step {self.step} of {self.steps_per_epoch}"

    def done(self) -> str:
        """How far training has got: "epoch 2" (whole epochs) or "epoch 3, step 17"."""
        return f"epoch {self.epoch}" if self.step == 0 else \
            f"epoch {self.epoch + 1}, step {self.step}"

    # -- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the whole state to ``path`` (atomically); refuse non-finite weights."""
        params = self.model.parameters
        bad = [k for k, v in params.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise TrainingDiverged(
                f"the weights hold NaN or infinite values after {self.done()} ('{bad[0]}'); "
                f"{path} was not written. {self._last_good()}",
                hint="lower the learning rate (--lr), or look for bad values in the data")
        meta = {
            "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
            "seed": self.seed, "batch_size": self.batch_size, "n_train": self.n_train,
            "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
            "learning_rate": float(self.model.learning_rate),
            "epoch_seconds": self.epoch_seconds, "history": self.history,
            "stop_reason": self.stop_reason, "schedule": self.schedule.state(),
            "metrics": {"loss": self.loss.state(),
                        **{m.name: m.state() for m in self.metrics}},
            "callbacks": {cb.name: cb.state() for cb in self.callbacks},
            **self.meta,
        }
        arrays = {cb.name: cb.arrays() for cb in self.callbacks if cb.arrays()}
        save_checkpoint(path, Checkpoint(params, self.model.optimizer_state(), arrays, meta))
        self.last_checkpoint = f"{path} (after {self.done()})"

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "No checkpoint was written before."
        return f"The last good checkpoint, {self.last_checkpoint}, is unchanged."

    def restore(self, path: str | Path) -> None:
        """Continue from the checkpoint at ``path`` (written by a run with the same data,
        batch size and seed)."""
        ckpt = read_checkpoint(path)
        m = ckpt.meta
        if "epoch" not in m:
            raise CheckpointError(f"{path}: holds weights only, no training state to resume")
        for key, mine in (("seed", self.seed), ("batch_size", self.batch_size),
                          ("n_train", self.n_train)):
            if m.get(key) != mine:
                raise CheckpointError(
                    f"{path}: was written by a run with {key} {m.get(key)}, but this run has "
                    f"{key} {mine}; resuming would not continue the same run.",
                    hint="resume with the same data, --batch and --seed, or start afresh "
                         "without --resume")
        assign_arrays(self.model.parameters, ckpt.weights, path)
        assign_arrays(self.model.optimizer_state(), ckpt.optimizer, path, "optimizer buffers")
        self.epoch, self.step, self.global_step = m["epoch"], m["step"], m["global_step"]
        self.epoch_seconds = m["epoch_seconds"]
        self.history = {k: list(v) for k, v in m["history"].items()}
        self.stop_reason = m["stop_reason"]
        self.model.learning_rate = m["learning_rate"]
        self.schedule.load_state(m["schedule"])
        self.loss.load_state(m["metrics"]["loss"])
        for metric in self.metrics:
            if metric.name in m["metrics"]:
                metric.load_state(m["metrics"][metric.name])
        for cb in self.callbacks:
            if cb.name in m["callbacks"]:
                cb.load_state(m["callbacks"][cb.name], ckpt.callbacks.get(cb.name, {}))
        self.last_checkpoint = f"{path} (after {self.done()})"


def as_split(data: Split | tuple[np.ndarray, np.ndarray], what: str = "data") -> Split:
    """A Split from a Split or an (x, y) pair, with matching lengths."""
    if isinstance(data, Split):
        return data
    try:
        x, y = data
    except (TypeError, ValueError):
        raise CnncError(f"{what} must be a Split or an (x, y) pair of arrays") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise CnncError(f"{what}: {len(x)} images but {len(y)} targets")
    return Split(x, y)


def fit(model: TrainableModel, train: Split | tuple[np.ndarray, np.ndarray], *, epochs: int,
        batch_size: int = 32, validation_data: Split | tuple | None = None,
        validation_split: float = 0.0, metrics: Sequence[str] = ("accuracy",),
        from_logits: bool = False, schedule: Schedule | None = None,
        callbacks: Sequence[Callback] = (), seed: int = 0, shuffle: bool = True,
        augment: Augmentation | None = None, progress: str = "bar",
        resume: str | Path | None = None, meta: Mapping[str, Any] | None = None,
        stream: TextIO | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs and return its History.

    train, validation_data: Splits or (x, y) pairs; or ``validation_split``, a fraction of
        ``train`` held out (drawn with ``seed``).
    metrics: names (accuracy, top5_accuracy, precision, recall, mean_iou); training
        metrics other than the loss need a model that ReportsOutputs.
    from_logits: the network outputs logits (binary accuracy then thresholds at 0).
    schedule: the learning-rate schedule (default: the model's rate, constant).
    callbacks: e.g. EarlyStopping, Checkpoints, HistoryFiles, CurvesPlot.
    seed: fixes the validation split, the order and augmentation of every epoch, and
        dropout; shuffle: False keeps the data's order (and needs augment=None).
    progress: "bar" (tqdm bar and epoch summaries on ``stream``), "quiet" or "json" (one
        JSON object per epoch on ``stream``).
    resume: a checkpoint written by the Checkpoints callback of an earlier run with the
        same data, batch size and seed: training continues where it stopped.
    meta: extra JSON-able facts stored in every checkpoint (class names, network name).
    """
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}; got {progress!r}")
    if not shuffle and augment is not None and augment.is_geometric:
        raise CnncError("augmentation draws from the shuffling random stream: it needs "
                        "shuffle = true")
    train = as_split(train, "train")
    if validation_data is not None and validation_split:
        raise CnncError("give validation_data or validation_split, not both")
    val = as_split(validation_data, "validation_data") if validation_data is not None else None
    if validation_split:
        train, val = split_off(train, validation_split, seed)
    if len(train) == 0:
        raise CnncError("there are no training images")
    train_metrics = make_metrics(metrics, from_logits) if isinstance(model, ReportsOutputs) \
        else []
    reporters = {"bar": [ProgressBar(stream)], "json": [JsonLines(stream)], "quiet": []}
    cbs = sorted([*callbacks, *reporters[progress]], key=lambda cb: cb.priority)
    state = TrainState(model, epochs=epochs, batch_size=batch_size, seed=seed,
                       steps_per_epoch=-(-len(train) // batch_size), n_train=len(train),
                       has_validation=val is not None,
                       schedule=schedule or Constant(model.learning_rate),
                       metrics=train_metrics, callbacks=cbs, meta=meta or {})
    if isinstance(model, Seeded) and model.seed != seed:
        model.seed = seed
    if resume is not None:
        state.restore(resume)
    status = FAILED
    try:
        with _deferred_interrupt() as interrupted:
            for cb in cbs:
                cb.on_train_begin(state)
            while state.epoch < epochs and state.stop_reason is None:
                _epoch(state, train, val, augment, shuffle, metrics, from_logits, interrupted)
        status = DONE
    except _Interrupted:
        status = INTERRUPTED
    finally:
        _end(state, status)
    if status == INTERRUPTED:
        raise TrainingInterrupted(_interrupt_message(state))
    return History(state.history, list(range(1, len(state.history.get("loss", [])) + 1)),
                   state.stop_reason, state.notes)


class _Interrupted(Exception):
    """Ctrl-C was pressed; the loop stops after the step in flight."""


def _end(state: TrainState, status: str) -> None:
    """Run every callback's on_train_end; while an error propagates, ignore their own."""
    for cb in state.callbacks:
        if status != FAILED:
            cb.on_train_end(state, status)
            continue
        try:
            cb.on_train_end(state, status)
        except Exception:
            pass


def _epoch(state: TrainState, train: Split, val: Split | None,
           augment: Augmentation | None, shuffle: bool, metric_names: Sequence[str],
           from_logits: bool, interrupted: threading.Event) -> None:
    model, schedule = state.model, state.schedule
    if state.step == 0:
        state.loss.reset()
        for m in state.metrics:
            m.reset()
        state.epoch_seconds = 0.0
    rng = np.random.default_rng([state.seed, state.epoch]) if shuffle else None
    batches = Batches(train, state.batch_size, rng=rng, augment=augment)
    for cb in state.callbacks:
        cb.on_epoch_begin(state)
    start, resume_at, lr = time.perf_counter(), state.step, model.learning_rate
    for i, (x, y) in enumerate(batches):
        if i < resume_at:  # replaying the epoch's random stream up to where it stopped
            continue
        lr = schedule.lr_at(state.epoch, i)
        model.learning_rate = lr
        loss = float(model.train_step(x, y))
        state.step, state.last_batch_size = i + 1, len(x)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {loss} at {state.where()} (global step "
                f"{state.global_step + 1}); training stopped. {state._last_good()}",
                hint="lower the learning rate (--lr), or look for bad values in the data")
        state.global_step += 1
        state.loss.add(loss, len(x))
        if state.metrics:
            outputs = model.last_output
            for m in state.metrics:
                m.update(outputs, y)
        for cb in state.callbacks:
            cb.on_batch_end(state, state.running_logs())
        if interrupted.is_set():
            state.epoch_seconds += time.perf_counter() - start
            raise _Interrupted
    logs = state.running_logs()
    if val is not None:
        scores = evaluate(model, val, state.batch_size, metric_names, from_logits)
        logs.update({f"val_{k}": v for k, v in scores.items()})
    logs["lr"] = float(lr)
    logs["seconds"] = state.epoch_seconds + time.perf_counter() - start
    schedule.on_epoch_end(logs)
    for k, v in logs.items():
        state.history.setdefault(k, []).append(float(v))
    state.epoch, state.step = state.epoch + 1, 0
    for cb in state.callbacks:
        cb.on_epoch_end(state, logs)
    if interrupted.is_set():
        raise _Interrupted


def _interrupt_message(state: TrainState) -> str:
    where = f"after epoch {state.epoch} of {state.epochs}" if state.step == 0 else \
        f"at {state.where()}"
    if not any(cb.name == "checkpoints" for cb in state.callbacks):
        return f"interrupted {where}; nothing was saved (no checkpoint folder)."
    return f"interrupted {where}; saved {state.last_checkpoint}: continue with --resume."


@contextmanager
def _deferred_interrupt() -> Iterator[threading.Event]:
    """Turn the first Ctrl-C into a flag the loop checks after each step; a second one
    raises KeyboardInterrupt at once. Outside the main thread, Ctrl-C acts as usual."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        print("\nstopping after this step (Ctrl-C again to abort without saving)",
              file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def evaluate(model: TrainableModel, data: Split | tuple[np.ndarray, np.ndarray],
             batch_size: int = 32, metrics: Sequence[str] = ("accuracy",),
             from_logits: bool = False) -> dict[str, float]:
    """The mean loss and the metrics of ``model`` (inference mode) over ``data``."""
    data = as_split(data)
    loss, scores = Mean("loss"), make_metrics(metrics, from_logits)
    for lo in range(0, len(data), batch_size):
        x, y = data.x[lo:lo + batch_size], data.y[lo:lo + batch_size]
        outputs = model.predict(x, batch_size=batch_size)
        loss.add(model.loss(x, y), len(x))
        for m in scores:
            m.update(outputs, y)
    return {"loss": loss.result(), **{m.name: m.result() for m in scores}}

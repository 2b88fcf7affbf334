"""Callbacks of the fit loop: early stopping, checkpoints, history files, curves, progress.

The loop calls each hook on every callback in order of ``priority`` (lower first): those
that change the training state (early stopping) run before those that save it
(checkpoints), which run before those that report it. A callback that must survive a
resume returns its memory from ``state()`` (JSON) and ``arrays()`` and takes it back in
``load_state``; ``name`` keys it in the checkpoint.

``state`` in every hook is the loop's :class:`cnnc.train.fit.TrainState`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cnnc.train.checkpoint import ensure_folder, write_atomic
from cnnc.train.schedules import better, monitor_mode, monitored

DONE, INTERRUPTED, FAILED = "done", "interrupted", "failed"


class Callback:
    """Base: every hook does nothing."""

    name = "callback"
    priority = 0

    def on_train_begin(self, state) -> None:
        """Before the first epoch (after a resume has restored the state)."""

    def on_epoch_begin(self, state) -> None:
        """Before the epoch's first step (``state.step`` > 0 when resuming mid-epoch)."""

    def on_batch_end(self, state, logs: Mapping[str, float]) -> None:
        """After each step; ``logs``: the epoch's running loss and metrics."""

    def on_epoch_end(self, state, logs: Mapping[str, float]) -> None:
        """After validation; ``state.epoch`` is the number of epochs done."""

    def on_train_end(self, state, status: str) -> None:
        """At the end: status DONE, INTERRUPTED (Ctrl-C, after the step in flight) or
        FAILED (an error is propagating)."""

    def state(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what ``state()`` and ``arrays()`` gave."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best``, end with the weights of the best epoch."""

    name = "early_stopping"
    priority = 0

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True):
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.restore_best, self.mode = restore_best, monitor_mode(monitor)
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.best_weights: dict[str, np.ndarray] = {}

    def on_epoch_end(self, state, logs: Mapping[str, float]) -> None:
        value = monitored(self.monitor, logs, "early stopping")
        if better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best:
                self.best_weights = {k: v.copy() for k, v in state.model.parameters.items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            state.stop(f"early stopping: {self.monitor} has not improved for {self.wait} "
                       f"epochs (best {self.best:.6g} after epoch {self.best_epoch})")

    def on_train_end(self, state, status: str) -> None:
        if status == DONE and self.restore_best and self.best_weights \
                and self.best_epoch != state.epoch:
            for k, v in state.model.parameters.items():
                v[...] = self.best_weights[k]
            state.note(f"restored the weights of epoch {self.best_epoch} "
                       f"({self.monitor} {self.best:.6g})")

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def arrays(self) -> dict[str, np.ndarray]:
        return self.best_weights

    def load_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = {k: np.array(v) for k, v in arrays.items()}


class Checkpoints(Callback):
    """``DIR/last.npz`` after every epoch (and on Ctrl-C, mid-epoch), ``DIR/best.npz`` when
    ``monitor`` improves (default: val_loss with validation data, else loss)."""

    name = "checkpoints"
    priority = 10

    def __init__(self, directory: str | Path, monitor: str | None = None):
        self.directory = Path(directory)
        self.monitor = monitor
        self.best: float | None = None

    @property
    def last(self) -> Path:
        return self.directory / "last.npz"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.npz"

    def on_train_begin(self, state) -> None:
        ensure_folder(self.directory)
        if self.monitor is None:
            self.monitor = "val_loss" if state.has_validation else "loss"

    def on_epoch_end(self, state, logs: Mapping[str, float]) -> None:
        value = monitored(self.monitor, logs, "the best checkpoint")
        if math.isfinite(value) and better(monitor_mode(self.monitor), value, self.best, 0.0):
            self.best = value
            state.save_checkpoint(self.best_path)
        state.save_checkpoint(self.last)

    def on_train_end(self, state, status: str) -> None:
        if status == INTERRUPTED:
            state.save_checkpoint(self.last)

    def state(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best": self.best}

    def load_state(self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.monitor, self.best = state["monitor"], state["best"]


def history_rows(history: Mapping[str, list[float]]) -> tuple[list[str], list[list[Any]]]:
    """A header (epoch first) and one row per epoch."""
    keys = list(history)
    n = max((len(v) for v in history.values()), default=0)
    rows = [[e + 1] + [history[k][e] if e < len(history[k]) else "" for k in keys]
            for e in range(n)]
    return ["epoch"] + keys, rows


class HistoryFiles(Callback):
    """``DIR/history.json`` ({"epoch": [...], "loss": [...], ...}) and ``DIR/history.csv``,
    rewritten (atomically) after every epoch."""

    name = "history_files"
    priority = 20

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def on_train_begin(self, state) -> None:
        ensure_folder(self.directory)

    def on_epoch_end(self, state, logs: Mapping[str, float]) -> None:
        header, rows = history_rows(state.history)
        as_json = {"epoch": [r[0] for r in rows], **state.history}
        text = json.dumps(as_json, indent=1) + "\n"
        write_atomic(self.directory / "history.json", lambda f: f.write(text.encode()))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        write_atomic(self.directory / "history.csv", lambda f: f.write(buf.getvalue().encode()))


class CurvesPlot(Callback):
    """A PNG of the loss curves and the metric curves, drawn at the end (matplotlib, an
    optional dependency: without it, one notice and no file)."""

    name = "curves"
    priority = 20

    def __init__(self, path: str | Path, notify: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.notify = notify or (lambda text: print(text, file=sys.stderr))

    def on_train_end(self, state, status: str) -> None:
        if status == FAILED or not state.history.get("loss"):
            return
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            self.notify(f"note: matplotlib is not installed, so no {self.path.name} was drawn "
                        "(pip install matplotlib)")
            return
        history = state.history
        losses = [k for k in history if k.endswith("loss")]
        scores = [k for k in history if k not in losses and k not in ("lr", "seconds")]
        fig = Figure(figsize=(10 if scores else 5, 4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2 if scores else 1, squeeze=False)[0]
        for ax, keys, title in zip(axes, (losses, scores), ("loss", "metrics")):
            for k in keys:
                ax.plot(range(1, len(history[k]) + 1), history[k], marker="o", label=k)
            ax.set_xlabel("epoch")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        ensure_folder(self.path.parent)
        write_atomic(self.path, lambda f: f.write(buf.getvalue()))


def format_logs(logs: Mapping[str, float]) -> str:
    """``loss 0.4123  accuracy 0.8125  val_loss ...`` (lr and seconds left out)."""
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("lr", "seconds"))


class ProgressBar(Callback):
    """A tqdm bar per epoch (steps, loss and metrics so far, images/s, ETA) on stderr and a
    one-line summary per epoch on ``stream``."""

    name = "progress"
    priority = 30
    REFRESH_S = 0.2

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.bar = None
        self.images = 0
        self.start = self.shown = 0.0

    def on_epoch_begin(self, state) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=state.steps_per_epoch, initial=state.step, unit="step",
                        desc=f"epoch {state.epoch + 1}/{state.epochs}", leave=False,
                        dynamic_ncols=True, file=sys.stderr)
        self.images, self.start = 0, time.perf_counter()
        self.shown = self.start

    def on_batch_end(self, state, logs: Mapping[str, float]) -> None:
        self.images += state.last_batch_size
        now = time.perf_counter()
        if now - self.shown >= self.REFRESH_S:  # formatting every step would cost more
            rate = self.images / max(now - self.start, 1e-9)
            self.bar.set_postfix_str(f"{format_logs(logs)}  {rate:.0f} img/s", refresh=False)
            self.shown = now
        self.bar.update(1)

    def on_epoch_end(self, state, logs: Mapping[str, float]) -> None:
        self._close()
        from tqdm import tqdm
        tqdm.write(f"epoch {state.epoch}/{state.epochs}  {format_logs(logs)}  "
                   f"lr {logs['lr']:.3g}  {logs['seconds']:.1f} s", file=self.stream)

    def on_train_end(self, state, status: str) -> None:
        self._close()
        for line in state.notes:
            print(line, file=self.stream or sys.stdout)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonLines(Callback):
    """One JSON object per epoch on ``stream`` (default stdout): epoch and its logs."""

    name = "json_lines"
    priority = 30

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def on_epoch_end(self, state, logs: Mapping[str, float]) -> None:
        out = self.stream or sys.stdout
        out.write(json.dumps({"epoch": state.epoch, **logs}) + "\n")
        out.flush()

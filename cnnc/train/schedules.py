"""Learning-rate schedules: small objects the fit loop asks for the rate before each step.

``lr_at(epoch, step)`` takes the 0-based epoch and the 0-based step within it. Epoch-based
schedules (step, multistep, exponential) change the rate between epochs; cosine and warmup
change it every step. ``on_epoch_end(metrics)`` lets reduce-on-plateau watch a metric;
``state()``/``load_state()`` carry what a schedule has learnt into a checkpoint (JSON).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cnnc.errors import CnncError


class Schedule:
    """Base: a schedule without memory; subclasses define ``lr_at``."""

    def lr_at(self, epoch: int, step: int) -> float:
        raise NotImplementedError

    def on_epoch_end(self, metrics: Mapping[str, float]) -> None:
        """Called after each epoch with its logs (loss, val_loss, ...)."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""


class Constant(Schedule):
    def __init__(self, lr: float):
        self.lr = float(lr)

    def lr_at(self, epoch: int, step: int) -> float:
        return self.lr


class StepDecay(Schedule):
    """``lr * gamma ** (epoch // every)``."""

    def __init__(self, lr: float, every: int, gamma: float = 0.1):
        if every < 1:
            raise ValueError(f"step schedule: every must be >= 1; got {every}")
        self.lr, self.every, self.gamma = float(lr), int(every), float(gamma)

    def lr_at(self, epoch: int, step: int) -> float:
        return self.lr * self.gamma ** (epoch // self.every)


class MultiStep(Schedule):
    """``lr * gamma ** (number of milestones <= epoch)``."""

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float = 0.1):
        self.lr, self.milestones, self.gamma = float(lr), sorted(milestones), float(gamma)

    def lr_at(self, epoch: int, step: int) -> float:
        return self.lr * self.gamma ** sum(1 for m in self.milestones if m <= epoch)


class Exponential(Schedule):
    """``lr * gamma ** epoch``."""

    def __init__(self, lr: float, gamma: float):
        self.lr, self.gamma = float(lr), float(gamma)

    def lr_at(self, epoch: int, step: int) -> float:
        return self.lr * self.gamma ** epoch


class Cosine(Schedule):
    """Cosine annealing from ``lr`` to ``min_lr`` over ``epochs`` epochs, per step:
    ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2`` with t the fraction of steps done."""

    def __init__(self, lr: float, epochs: int, steps_per_epoch: int, min_lr: float = 0.0):
        self.lr, self.min_lr = float(lr), float(min_lr)
        self.total = max(1, int(epochs) * int(steps_per_epoch))
        self.steps_per_epoch = int(steps_per_epoch)

    def lr_at(self, epoch: int, step: int) -> float:
        t = min(1.0, (epoch * self.steps_per_epoch + step) / self.total)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


class Warmup(Schedule):
    """Linear warmup over the first ``epochs`` epochs, then ``inner`` (shifted in time, so
    the inner schedule starts at its epoch 0 when warmup ends).

    During warmup, global step g of W = epochs * steps_per_epoch gets
    ``inner.lr_at(0, 0) * (g + 1) / W``.
    """

    def __init__(self, inner: Schedule, epochs: int, steps_per_epoch: int):
        self.inner, self.epochs = inner, int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)

    def lr_at(self, epoch: int, step: int) -> float:
        if epoch >= self.epochs:
            return self.inner.lr_at(epoch - self.epochs, step)
        total = self.epochs * self.steps_per_epoch
        return self.inner.lr_at(0, 0) * (epoch * self.steps_per_epoch + step + 1) / total

    def on_epoch_end(self, metrics: Mapping[str, float]) -> None:
        self.inner.on_epoch_end(metrics)

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state(state)


def better(mode: str, value: float, best: float | None, min_delta: float) -> bool:
    """Whether ``value`` improves on ``best`` by more than ``min_delta`` ("min" or "max")."""
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def monitor_mode(monitor: str) -> str:
    """"min" for losses and errors, "max" for accuracies and other scores."""
    return "min" if "loss" in monitor or "error" in monitor else "max"


def monitored(monitor: str, metrics: Mapping[str, float], who: str) -> float:
    """``metrics[monitor]``, or a CnncError naming what is available."""
    if monitor not in metrics:
        hint = ("val_* metrics need validation data (validation_split or a validation set)"
                if monitor.startswith("val_") else None)
        raise CnncError(f"{who} monitors '{monitor}', but the epoch logs hold only "
                        f"{', '.join(sorted(metrics))}", hint=hint)
    return float(metrics[monitor])


class ReduceOnPlateau(Schedule):
    """Multiply the rate by ``factor`` when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs; then wait ``cooldown`` epochs; never below
    ``min_lr`` (Keras' ReduceLROnPlateau)."""

    def __init__(self, lr: float, monitor: str = "val_loss", factor: float = 0.1,
                 patience: int = 10, min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"reduce_on_plateau: factor must lie in (0, 1); got {factor}")
        self.monitor, self.mode = monitor, monitor_mode(monitor)
        self.factor, self.patience, self.min_delta = float(factor), int(patience), min_delta
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)
        self.lr = float(lr)
        self.best: float | None = None
        self.wait = 0
        self.cooldown_left = 0

    def lr_at(self, epoch: int, step: int) -> float:
        return self.lr

    def on_epoch_end(self, metrics: Mapping[str, float]) -> None:
        value = monitored(self.monitor, metrics, "reduce_on_plateau")
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if better(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
        elif self.cooldown_left == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self.lr = max(self.min_lr, self.lr * self.factor)
                self.wait, self.cooldown_left = 0, self.cooldown

    def state(self) -> dict[str, Any]:
        return {"lr": self.lr, "best": self.best, "wait": self.wait,
                "cooldown_left": self.cooldown_left}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.lr, self.best = float(state["lr"]), state["best"]
        self.wait, self.cooldown_left = int(state["wait"]), int(state["cooldown_left"])


def make_schedule(name: str, args: Mapping[str, Any], lr: float, epochs: int,
                  steps_per_epoch: int) -> Schedule:
    """The schedule a spec names (``schedule = cosine(min_lr=1e-5, warmup=2)``) for a base
    rate ``lr``. Every schedule takes ``warmup`` (epochs of linear warmup before it; at
    most ``epochs - 1``)."""
    args = dict(args)
    # A run shortened with --epochs keeps at least one epoch for the schedule itself.
    warmup = min(int(args.pop("warmup", 0) or 0), max(epochs - 1, 0))
    if name == "constant":
        inner: Schedule = Constant(lr)
    elif name == "step":
        inner = StepDecay(lr, **args)
    elif name == "multistep":
        inner = MultiStep(lr, **args)
    elif name == "exponential":
        inner = Exponential(lr, **args)
    elif name == "cosine":
        inner = Cosine(lr, epochs - warmup, steps_per_epoch, **args)
    elif name in ("reduce_on_plateau", "plateau"):
        inner = ReduceOnPlateau(lr, **args)
    else:
        raise CnncError(f"unknown learning-rate schedule '{name}'",
                        hint="schedules: constant, step, multistep, exponential, cosine, "
                             "reduce_on_plateau")
    return Warmup(inner, warmup, steps_per_epoch) if warmup else inner

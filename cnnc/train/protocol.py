"""What the training loop needs from a model: :class:`TrainableModel`.

``cnnc.compile(...)`` returns a Model that satisfies it; the tests use a small numpy model.
Two optional abilities are used where a model has them: :class:`Seeded` (random layers such
as dropout draw from the run's seed) and :class:`ReportsOutputs` (training metrics other
than the loss, computed from the outputs of each training step).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TrainableModel(Protocol):
    """A network the fit loop can train, evaluate and checkpoint.

    input_shape: one input's shape without the batch axis, e.g. (3, 64, 64).
    learning_rate: settable; the next ``train_step`` uses the value set last.
    train_step(x, y): one optimizer step on the batch (training mode); returns the batch's
        mean loss before the update.
    predict(x, batch_size=None): the network's outputs in inference mode, [N, ...].
    loss(x, y): the mean loss of the batch in inference mode (no update).
    parameters: name -> writable array view of every array the trained network consists
        of: trainable weights and non-trainable state such as batchnorm running statistics.
        Writing into a view changes the model.
    optimizer_state(): name -> writable array view of every optimizer buffer (moments,
        velocities) and every counter that influences the next ``train_step`` (the step
        count, the counter dropout seeds derive from). Restoring ``parameters`` and this
        state makes the next ``train_step`` bitwise identical to an uninterrupted run.
    """

    input_shape: tuple[int, ...]
    learning_rate: float

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float: ...

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray: ...

    def loss(self, x: np.ndarray, y: np.ndarray) -> float: ...

    @property
    def parameters(self) -> dict[str, np.ndarray]: ...

    def optimizer_state(self) -> dict[str, np.ndarray]: ...


@runtime_checkable
class Seeded(Protocol):
    """A model with random layers: ``seed`` (settable int) fixes their randomness, together
    with the step counter in ``optimizer_state()``. The fit loop sets it to the run's seed."""

    seed: int


@runtime_checkable
class ReportsOutputs(Protocol):
    """A model that keeps the network outputs of its last ``train_step`` (training mode,
    before the update), so training metrics need no second forward pass."""

    @property
    def last_output(self) -> np.ndarray | None: ...

"""The Python API: ``cnnc.compile(spec) -> Model``.

    model = cnnc.compile("specs/lenet5.cnn", dtype="float32")
    probs = model.predict(x_test, batch_size=256)
    loss = model.train_step(x_batch, y_batch)

A Model owns the network's parameters (one flat buffer; ``Model.parameters`` are writable
views into it) and the optimizer state (another flat buffer), and compiles, on first use,
one graph per kind of step and one :class:`cnnc.runtime.Plan` per (kind of step, batch
size), cached: an epoch's last, smaller batch gets a plan of its own.

Kinds of step: "infer" (forward at inference: batchnorm folded, dropout removed),
"forward_train" (forward in training form), "loss"
(forward + loss, in inference or training form), "grad" (forward + loss + backward, the
gradients kept in one contiguous output buffer), "train" (the same plus one optimizer update
per trained parameter, run as soon as its gradient is final; gradients live in the arena).

Labels: integer class indices [N] (or [N, H, W] per pixel) for the categorical losses, or
targets shaped like the output (one-hot, probabilities) for categorical_crossentropy;
[N] or [N, 1] of 0/1 for binary cross-entropy; the output's shape for mse.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnc import passes
from cnnc.autodiff import (LOSSES, LossSpec, build_training_graph, copy_forward,
                           default_loss, grad_name, trained_params)
from cnnc.dsl import Spec, load
from cnnc.dsl.train import OPTIMIZERS, Option, TrainConfig
from cnnc.errors import CheckpointError, SpecError
from cnnc.ir.graph import Graph
from cnnc.ir.summary import format_summary, summarize
from cnnc.ir.types import DTYPES, Value
from cnnc.ops.init import initialise
from cnnc.ops.optim import update_op
from cnnc.ops.registry import get_op
from cnnc.runtime import ALIGNMENT, Plan, aligned_empty, view
from cnnc.train.checkpoint import (Checkpoint, assign_arrays, read_checkpoint,
                                   save_checkpoint)
from cnnc.threads import get_num_threads

DEFAULT_BATCH = 32


def compile(spec: str | os.PathLike, *, batch: int | None = None, dtype: str = "float32",
            set: Mapping[str, Any] | None = None, seed: int | None = None,
            optimizer: Option | None = None, loss: str | LossSpec | None = None,
            plan_memory: bool = True) -> Model:
    """Compile a .cnn spec (a path, or the source text itself) into a :class:`Model`.

    batch : the default batch size (predict, memory reports); default the spec's
        ``train.batch`` or 32. Any batch size runs: each gets a plan of its own.
    dtype : "float32" or "float64" (gradient checks).
    set : values for the spec's params and search spaces (as ``--set``).
    seed : parameter initialisation and dropout seed (default the spec's, else 0).
    optimizer, loss : override the spec's train section.
    plan_memory : False gives every tensor its own buffer (for checks of the planner).
    """
    return Model(load(spec, overrides=set), batch=batch, dtype=dtype, seed=seed,
                 optimizer=optimizer, loss=loss, plan_memory=plan_memory)


class Model:
    """A compiled network: parameters, optimizer state and cached execution plans."""

    def __init__(self, spec: Spec, *, batch: int | None = None, dtype: str = "float32",
                 seed: int | None = None, optimizer: Option | None = None,
                 loss: str | LossSpec | None = None, plan_memory: bool = True):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if len(spec.graph.inputs) != 1 or len(spec.graph.outputs) != 1:
            raise SpecError(f"network '{spec.graph.name}' must have one input and one "
                            "output to be compiled into a Model")
        train: TrainConfig | None = spec.train
        self.dtype = dtype
        self.train_config = train
        self.batch = _positive(batch if batch is not None else
                               (train.batch if train else DEFAULT_BATCH), "batch")
        self._seed = seed if seed is not None else (train.seed if train and train.seed
                                                    is not None else 0)
        self.plan_memory = plan_memory
        self.graph: Graph = copy_forward(spec.graph, training=False, dtype=dtype)
        self._input: Value = self.graph.inputs[0]
        self._output: Value = self.graph.outputs[0]
        if loss is None:
            loss = (LossSpec(train.loss, train.label_smoothing) if train else
                    default_loss(self.graph))
        self._loss = self._loss_spec(loss)
        self._optimizer = optimizer or (train.optimizer if train else
                                        Option("adam", {"lr": 0.001}))
        self._counter = np.zeros(1, dtype=np.int64)
        self._lr = np.array([update_op(self._optimizer.name, self._optimizer.args)[1].lr])
        self._last_output: np.ndarray | None = None
        self._graphs: dict[tuple, Graph] = {}
        self._plans: dict[tuple, Plan] = {}
        self._last_plan: Plan | None = None
        self._param_buffer, self._params = self._allocate(
            list(self.graph.params.values()), self._initial_values())
        # Inference plans recompute batchnorm folded into a conv only when the parameters
        # may have changed: after a step that updates them, a load, or ever after the
        # views were handed out (writes through them cannot be seen). See _run.
        self._param_edits = 0
        self._params_exposed = False
        self._opt_buffer: np.ndarray | None = None
        self._opt_state: dict[str, np.ndarray] = {}

    # -- construction --------------------------------------------------------------------

    def _loss_spec(self, loss: str | LossSpec) -> LossSpec:
        return loss if isinstance(loss, LossSpec) else LossSpec(loss)

    def _initial_values(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        values = {}
        for node in self.graph.nodes:
            specs = get_op(node.op).param_rule([v.type for v in node.data_inputs],
                                               node.attrs)
            for key, param in node.params.items():
                values[param.name] = initialise(specs[key], rng, self.dtype)
        return values

    def _allocate(self, values: list[Value], init: Mapping[str, np.ndarray] | None
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One flat, aligned buffer holding ``values`` (zeros, or ``init``), and views."""
        offsets, total = [], 0
        for v in values:
            offsets.append(total)
            total += -(-_nbytes(v) // ALIGNMENT) * ALIGNMENT
        buffer = aligned_empty(max(total, 1), zeros=True)
        views = {}
        for v, off in zip(values, offsets):
            arr = view(buffer, off, tuple(int(d) for d in v.type.shape), v.type.dtype)
            if init is not None:
                arr[...] = init[v.name]
            views[v.name] = arr
        return buffer, views

    # -- properties ----------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input's shape without the batch axis, e.g. (3, 64, 64)."""
        return tuple(int(d) for d in self._input.type.shape[1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The output's shape without the batch axis, e.g. (10,)."""
        return tuple(int(d) for d in self._output.type.shape[1:])

    @property
    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter and layer state (batchnorm running statistics), by name
        (``conv_1.weight``): writable views into the model's parameter buffer. Writes
        through them take effect at the next step; from the first use of this property
        on, inference recomputes the weights of batchnorm folded into a conv at every
        step (otherwise only after the parameters changed)."""
        self._params_exposed = True
        return dict(self._params)

    def _param_arrays(self) -> dict[str, np.ndarray]:
        """The parameter views for cnnc's own code, which calls :meth:`_params_changed`
        after writing into them."""
        return dict(self._params)

    def _params_changed(self) -> None:
        """Mark the parameters changed (inference refolds batchnorm at its next step)."""
        self._param_edits += 1

    @property
    def loss_name(self) -> str:
        """The loss the model trains with (a spec loss name)."""
        return self._loss.name

    @property
    def plan(self) -> Plan:
        """The plan of the last step run (or the inference plan at the default batch)."""
        if self._last_plan is None:
            return self._plan("infer", self.batch)
        return self._last_plan

    @property
    def learning_rate(self) -> float:
        """The optimizer's learning rate; setting it changes the next steps (schedules)."""
        return float(self._lr[0])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"learning rate must be a number >= 0, got {value!r}")
        self._lr[0] = float(value)

    @property
    def seed(self) -> int:
        """The seed of the random layers (dropout masks also depend on the step count).
        Initialisation used it at compile time; setting it changes later masks."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = int(value)
        self._forget(lambda key: key[0] != "infer")

    @property
    def last_output(self) -> np.ndarray | None:
        """The network's output in the last train_step (training mode, before the update),
        as a view valid until the next step; None before the first step."""
        return self._last_output

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Writable views of every optimizer buffer (``<param>/<slot>``) and of the step
        counter (``step``, which Adam and the dropout masks read). Restoring these and
        ``parameters`` makes the next train_step as if training had not stopped."""
        self._optimizer_state(self._graph(("train", self._default_targets())))
        return {**self._opt_state, "step": self._counter}

    # -- configuration -------------------------------------------------------------------

    def set_optimizer(self, name: str, **kwargs: Any) -> None:
        """Train with optimizer ``name`` (sgd, adam, adamw, rmsprop) and its arguments
        from now on; its state starts from zero."""
        if name not in OPTIMIZERS:
            raise SpecError(f"unknown optimizer '{name}'",
                            hint="optimizers: " + ", ".join(OPTIMIZERS))
        update_op(name, kwargs)
        self._optimizer = Option(name, dict(kwargs))
        self._lr[0] = update_op(name, kwargs)[1].lr
        self._forget(lambda key: key[0] == "train")
        self._opt_buffer, self._opt_state = None, {}

    def set_loss(self, name: str, label_smoothing: float = 0.0) -> None:
        """Use loss ``name`` (a spec loss name) from now on."""
        self._loss = self._loss_spec(LossSpec(name, label_smoothing))
        self._forget(lambda key: key[0] != "infer")

    def _forget(self, which) -> None:
        for cache in (self._graphs, self._plans):
            for key in [k for k in cache if which(k)]:
                del cache[key]
        self._last_plan = None

    # -- graphs and plans ----------------------------------------------------------------

    def _graph(self, key: tuple) -> Graph:
        """The compiled graph of a kind of step (cached)."""
        g = self._graphs.get(key)
        if g is not None:
            return g
        kind = key[0]
        if kind == "infer":
            g = passes.optimize(self.graph, "infer")
        elif kind == "forward_train":
            g = copy_forward(self.graph, training=True, seed=self.seed)
            g = passes.optimize_training(passes.fuse(g))
        else:
            targets = key[1]
            loss = LossSpec(self._loss.name, self._loss.label_smoothing, targets)
            if kind == "loss":
                g = build_training_graph(self.graph, loss, training=key[2], gradients=False,
                                         seed=self.seed)
            elif kind == "grad":
                g = build_training_graph(self.graph, loss, input_grad=key[2], seed=self.seed)
            else:
                g = build_training_graph(self.graph, loss, self._optimizer, seed=self.seed,
                                         keep_outputs=True)
            g = passes.optimize_training(passes.fuse(g))
        self._graphs[key] = g
        return g

    def _plan(self, *key: Any) -> Plan:
        """The plan of a kind of step for a batch size (the last element of key), for the
        current thread count (workspaces and kernel bindings depend on it)."""
        plan = self._plans.get(key + (get_num_threads(),))
        if plan is None:
            graph = self._graph(key[:-1])
            storage: dict[str, np.ndarray] = dict(self._params)
            if key[0] == "train":
                storage.update(self._optimizer_state(graph))
            plan = Plan(graph, key[-1], storage, self._counter, self._lr,
                        mode="infer" if key[0] == "infer" else "train",
                        planned=self.plan_memory)
            self._plans[key + (get_num_threads(),)] = plan
        self._last_plan = plan
        return plan

    def _optimizer_state(self, graph: Graph) -> dict[str, np.ndarray]:
        if self._opt_buffer is None:
            self._opt_buffer, self._opt_state = self._allocate(list(graph.states), None)
        return self._opt_state

    def _default_targets(self) -> str:
        return "sparse" if LOSSES[self._loss.name] == "softmax_xent" else "dense"

    # -- feeding -------------------------------------------------------------------------

    def _check_x(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        want = self.input_shape
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ValueError(f"input '{self._input.name}' must have shape [N, "
                             f"{', '.join(map(str, want))}]; got {list(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError("input is empty: need at least one example")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"input must be numbers; got dtype {x.dtype}")
        return x

    def _targets(self, y: Any, n: int) -> tuple[str, np.ndarray]:
        """("sparse" | "dense", labels in the plan's form) for the current loss."""
        y = np.asarray(y)
        out = (n,) + self.output_shape
        if y.shape[:1] != (n,):
            raise ValueError(f"labels must have one entry per example ({n}); got shape "
                             f"{list(y.shape)}")
        if LOSSES[self._loss.name] == "softmax_xent":
            pixel = (n,) + self.output_shape[1:]
            if np.issubdtype(y.dtype, np.integer) and y.shape == pixel:
                k = self.output_shape[0]
                if y.size and (y.min() < 0 or y.max() >= k):
                    raise ValueError(f"class labels must lie in [0, {k}); got values in "
                                     f"[{y.min()}, {y.max()}]")
                return "sparse", y
            if y.shape == out and np.issubdtype(y.dtype, np.floating):
                return "dense", y
            raise ValueError(f"labels for {self._loss.name} must be integer class indices "
                             f"of shape {list(pixel)} or float targets of shape "
                             f"{list(out)}; got {y.dtype} {list(y.shape)}")
        if self._loss.name == "binary_crossentropy" and y.shape == (n,):
            y = y.reshape(out) if out == (n, 1) else y
        if y.shape != out:
            raise ValueError(f"targets for {self._loss.name} must have shape {list(out)}; "
                             f"got {list(y.shape)}")
        return "dense", y

    def _run(self, plan: Plan) -> None:
        """Run a step's plan: inference refolds batchnorm only when the parameters may
        have changed since its last step; any other step may change them (an update,
        batchnorm's running statistics)."""
        if plan.mode == "infer":
            plan.run(None if self._params_exposed else self._param_edits)
        else:
            self._params_changed()
            plan.run()

    def _feed(self, plan: Plan, x: np.ndarray, y: np.ndarray | None = None) -> None:
        np.copyto(plan.inputs[self._input.name], x, casting="unsafe")
        if y is not None:
            labels = next(v for v in plan.graph.inputs if v.name != self._input.name)
            np.copyto(plan.inputs[labels.name], y, casting="unsafe")

    # -- steps ---------------------------------------------------------------------------

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        """The network's output for the batch ``x`` [N, *input_shape], in inference mode
        (running batchnorm statistics, no dropout), or with ``training`` in training mode
        (batch statistics, which also update the running ones; the current step's
        dropout mask). Returns a new array."""
        x = self._check_x(x)
        plan = self._plan("forward_train" if training else "infer", x.shape[0])
        self._feed(plan, x)
        self._run(plan)
        return plan.array(plan.graph.outputs[0]).copy()

    def predict(self, x: Any, batch_size: int | None = None) -> np.ndarray:
        """:meth:`forward` over ``x`` in batches of ``batch_size`` (default the model's
        batch); the last batch may be smaller."""
        x = self._check_x(x)
        size = _positive(batch_size if batch_size is not None else self.batch, "batch_size")
        return np.concatenate([self.forward(x[i:i + size])
                               for i in range(0, x.shape[0], size)])

    def loss(self, x: Any, y: Any, training: bool = False) -> float:
        """The mean loss on (x, y); ``training`` uses the training form (batch statistics,
        the current step's dropout mask; running statistics are updated)."""
        x = self._check_x(x)
        targets, y = self._targets(y, x.shape[0])
        plan = self._plan("loss", targets, bool(training), x.shape[0])
        self._feed(plan, x, y)
        self._run(plan)
        return float(plan.array(plan.graph.outputs[0])[0])

    def gradients(self, x: Any, y: Any, input_grad: bool = False
                  ) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, {parameter name: gradient}) of one training-mode step, without updating
        the parameters. Frozen parameters are left out; parameters the loss does not
        depend on get zeros. With ``input_grad`` the dict also holds the gradient of the
        input, under the input's name."""
        x = self._check_x(x)
        targets, y = self._targets(y, x.shape[0])
        plan = self._plan("grad", targets, bool(input_grad), x.shape[0])
        self._feed(plan, x, y)
        self._run(plan)
        found = {v.name: plan.array(v) for v in plan.graph.outputs[1:]}
        grads = {}
        for p in trained_params(self.graph):
            g = found.get(grad_name(p.name))
            grads[p.name] = g.copy() if g is not None else np.zeros_like(self._params[p.name])
        if input_grad:
            g = found.get(grad_name(self._input.name))
            grads[self._input.name] = g.copy() if g is not None else \
                np.zeros(x.shape, self.dtype)
        return float(plan.array(plan.graph.outputs[0])[0]), grads

    def train_step(self, x: Any, y: Any) -> float:
        """One optimizer step on the batch (x, y); returns the batch's mean loss (before
        the update). Allocates no arrays once the batch size's plan exists."""
        x = self._check_x(x)
        targets, y = self._targets(y, x.shape[0])
        plan = self._plan("train", targets, x.shape[0])
        self._feed(plan, x, y)
        self._counter[0] += 1
        self._run(plan)
        self._last_output = plan.array(plan.graph.outputs[-1])
        return float(plan.array(plan.graph.outputs[0])[0])

    def fit(self, x: Any, y: Any, *, epochs: int = 1, batch_size: int | None = None,
            validation_data: tuple[Any, Any] | None = None, validation_split: float = 0.0,
            callbacks: Sequence[Any] = (), metrics: Sequence[str] | None = None,
            seed: int | None = None, shuffle: bool = True, progress: str = "bar") -> Any:
        """Train on (x, y) for ``epochs`` epochs, Keras style; returns the History
        (``history.history`` holds per-epoch lists: loss, accuracy, val_loss, ...).

        batch_size, metrics, seed default to the spec's train section (else 32,
        ["accuracy"], 0). callbacks: cnnc.train callbacks (EarlyStopping, Checkpoints,
        HistoryFiles, CurvesPlot). progress: "bar", "quiet" or "json".
        """
        from cnnc.train.fit import fit
        from cnnc.train.from_spec import outputs_logits
        train = self.train_config
        return fit(self, (x, y), epochs=epochs,
                   batch_size=batch_size or (train.batch if train else DEFAULT_BATCH),
                   validation_data=validation_data, validation_split=validation_split,
                   metrics=self._metrics(metrics), from_logits=outputs_logits(self.graph),
                   callbacks=callbacks, shuffle=shuffle, progress=progress,
                   seed=seed if seed is not None else self.seed)

    def evaluate(self, x: Any, y: Any, *, batch_size: int | None = None,
                 metrics: Sequence[str] | None = None) -> dict[str, float]:
        """The mean loss and metrics (inference mode) over (x, y), e.g.
        {"loss": 0.31, "accuracy": 0.91}."""
        from cnnc.train.fit import evaluate
        from cnnc.train.from_spec import outputs_logits
        return evaluate(self, (x, y), batch_size=batch_size or self.batch,
                        metrics=self._metrics(metrics), from_logits=outputs_logits(self.graph))

    def _metrics(self, metrics: Sequence[str] | None) -> Sequence[str]:
        if metrics is not None:
            return metrics
        train = self.train_config
        return train.metrics if train and train.metrics else ("accuracy",)

    @property
    def steps_done(self) -> int:
        """Optimizer steps taken (the counter dropout masks and Adam read)."""
        return int(self._counter[0])

    # -- weights -------------------------------------------------------------------------

    def save_weights(self, path: str | os.PathLike) -> None:
        """Save every parameter and layer state to an .npz file (no pickle), atomically: a
        failed write leaves any previous file at ``path`` as it was."""
        save_checkpoint(path, Checkpoint(self._params, meta={"network": self.graph.name}))

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load parameters saved by :meth:`save_weights`, or the weights of a training
        checkpoint (``cnnc run``'s last.npz / best.npz); never unpickles. Raises
        CheckpointError naming the first missing or mis-shaped tensor, or the network the
        file was saved from when it is another one; the model is unchanged then."""
        checkpoint = read_checkpoint(path)
        saved = checkpoint.meta.get("network", self.graph.name)
        if saved != self.graph.name:
            raise CheckpointError(f"{path} holds weights of network '{saved}', not "
                                  f"'{self.graph.name}'")
        assign_arrays(self._params, checkpoint.weights, path,
                      network=f"network '{self.graph.name}'")
        self._params_changed()

    # -- reports -------------------------------------------------------------------------

    def memory_report(self, mode: str = "train", batch: int | None = None) -> dict[str, Any]:
        """The memory plan of a training step ("train") or of inference ("infer") at
        ``batch`` (default the model's): arena_bytes, naive_bytes, lower_bound_bytes (of the
        activations), workspace_bytes (the kernels' scratch), param_bytes,
        optimizer_bytes, and more (see Plan.report)."""
        n = _positive(batch if batch is not None else self.batch, "batch")
        if mode == "infer":
            plan = self._plan("infer", n)
        elif mode == "train":
            plan = self._plan("train", self._default_targets(), n)
        else:
            raise ValueError(f"mode must be 'train' or 'infer', got {mode!r}")
        report = plan.report()
        report["param_bytes"] = self._param_buffer.nbytes
        return report

    def summary(self) -> str:
        """A Keras-like table of the layers, then the memory plans at the model's batch."""
        lines = [format_summary(summarize(self.graph))]
        for mode in ("infer", "train"):
            r = self.memory_report(mode)
            lines.append(f"{mode} step, batch {r['batch']}: arena {_mib(r['arena_bytes'])} "
                         f"(lower bound {_mib(r['lower_bound_bytes'])}, naive "
                         f"{_mib(r['naive_bytes'])}), kernel scratch "
                         f"{_mib(r['workspace_bytes'])}, parameters {_mib(r['param_bytes'])}"
                         f", optimizer state {_mib(r['optimizer_bytes'])}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Model({self.graph.name!r}, input {list(self.input_shape)}, output "
                f"{list(self.output_shape)}, {self.dtype})")


def _nbytes(v: Value) -> int:
    return v.type.numel() * np.dtype(v.type.dtype).itemsize


def _positive(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a positive int, got {n!r}")
    return int(n)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


__all__ = ["Model", "compile"]

"""Optimizer updates as internal ops: one node per trained parameter, inputs (param, grad,
*state), no outputs; the kernel (``cnnc._kernels.optim``) writes the parameter and its
state in place. The formulas are PyTorch's (see the kernels); the spec's ``optimizer = ...``
option maps onto them by :func:`update_op`.

The step count t (Adam's bias correction, SGD's first momentum step) is the plan's step
counter ``ctx.counter``; the learning rate is read at each step from ``ctx.lr`` (a
1-element array the model sets: schedules change it between steps), ``lr`` in the attrs
being its initial value.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnc._kernels import optim as _optim
from cnnc.errors import SpecError
from cnnc.ir.types import TensorType
from cnnc.ops.attrs import BOOL, BadValue, attr, float_kind
from cnnc.ops.registry import OpDef, RuleError, register_op


@dataclass(frozen=True, kw_only=True)
class UpdateOptions:
    """What every optimizer takes besides its own arguments."""

    clipnorm: float = attr("clip the global L2 norm of all gradients to this before the "
                           "update (0: no clipping)", float_kind(0.0), 0.0)


@dataclass(frozen=True)
class SgdAttrs(UpdateOptions):
    """Attributes of ``sgd_update``."""

    lr: float = attr("learning rate", float_kind(0.0), 0.01)
    momentum: float = attr("momentum factor", float_kind(0.0, 1.0), 0.0)
    nesterov: bool = attr("Nesterov momentum", BOOL, False)
    weight_decay: float = attr("L2 penalty added to the gradient", float_kind(0.0), 0.0)


@dataclass(frozen=True)
class AdamAttrs(UpdateOptions):
    """Attributes of ``adam_update`` and ``adamw_update`` (decoupled weight decay)."""

    lr: float = attr("learning rate", float_kind(0.0), 0.001)
    beta1: float = attr("decay of the first moment", float_kind(0.0, 1.0), 0.9)
    beta2: float = attr("decay of the second moment", float_kind(0.0, 1.0), 0.999)
    eps: float = attr("added to the denominator", float_kind(0.0), 1e-7)
    weight_decay: float = attr("weight decay", float_kind(0.0), 0.0)


@dataclass(frozen=True)
class RmspropAttrs(UpdateOptions):
    """Attributes of ``rmsprop_update``."""

    lr: float = attr("learning rate", float_kind(0.0), 0.001)
    rho: float = attr("decay of the squared-gradient average", float_kind(0.0, 1.0), 0.9)
    momentum: float = attr("momentum factor", float_kind(0.0, 1.0), 0.0)
    eps: float = attr("added to the denominator", float_kind(0.0), 1e-7)
    weight_decay: float = attr("L2 penalty added to the gradient", float_kind(0.0), 0.0)


OPTIMIZER_ATTRS = {"sgd": SgdAttrs, "adam": AdamAttrs, "adamw": AdamAttrs, "rmsprop": RmspropAttrs}


def update_op(name: str, args: Mapping[str, Any]) -> tuple[str, Any]:
    """(op, attrs) of the update for the optimizer ``name`` with ``args`` (the spec's
    option, or Model.set_optimizer's keywords). Unknown names/arguments: SpecError."""
    cls = OPTIMIZER_ATTRS.get(name)
    if cls is None:
        raise SpecError(f"unknown optimizer '{name}'", hint="optimizers: " + ", ".join(OPTIMIZER_ATTRS))
    fields = cls.__dataclass_fields__
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise SpecError(f"optimizer {name} has no argument '{unknown[0]}'",
                        hint=f"{name} takes " + ", ".join(fields))
    values = {}
    for key, value in args.items():
        kind = fields[key].metadata["kind"]
        try:
            values[key] = kind.coerce(value)
        except BadValue:
            raise SpecError(f"optimizer {name}: argument '{key}' expects {kind.describe}; "
                            f"got {value!r}") from None
    if name == "adamw" and "weight_decay" not in args:
        values["weight_decay"] = 0.01
    if name == "sgd" and values.get("nesterov") and not values.get("momentum"):
        raise SpecError("sgd: nesterov needs momentum > 0")
    return f"{name}_update", cls(**values)


def state_names(op: str, attrs: Any) -> list[str]:
    """The state buffers an update keeps per parameter (zero at the start)."""
    if op == "sgd_update":
        return ["momentum"] if attrs.momentum > 0 else []
    if op == "rmsprop_update":
        return ["square_avg"] + (["momentum"] if attrs.momentum > 0 else [])
    return ["exp_avg", "exp_avg_sq"]


def update_shape(ins: Sequence[TensorType], a: Any) -> tuple[TensorType, ...]:
    """(param, grad, *state), all of the param's type -> no outputs."""
    for i, t in enumerate(ins[1:], start=1):
        if t.shape != ins[0].shape or t.dtype != ins[0].dtype:
            raise RuleError(f"needs gradient and state shaped like the parameter {ins[0]}",
                            inputs=(0, i))
    return ()


def written(node) -> list:
    """The parameter and the state, updated in place."""
    return [node.inputs[0]] + list(node.inputs[2:])


def update_kernel(node, ctx) -> Callable[[], None]:
    """One optimizer step on the flat views of the parameter, gradient and state."""
    p, g, *state = (ctx.array(v).reshape(-1) for v in node.inputs)
    a, counter, lr, n = node.attrs, ctx.counter, ctx.lr, ctx.n_threads
    if node.op == "sgd_update":
        return _optim.sgd_bind(p, g, state[0] if state else None, lr, counter,
                               momentum=a.momentum, weight_decay=a.weight_decay,
                               nesterov=a.nesterov, n_threads=n)
    if node.op == "rmsprop_update":
        buf = state[1] if len(state) > 1 else None

        def run() -> None:
            _optim.rmsprop_step(p, g, state[0], buf, lr=float(lr[0]), alpha=a.rho,
                                eps=a.eps, weight_decay=a.weight_decay,
                                momentum=a.momentum, n_threads=n)
    else:
        step = _optim.adam_step if node.op == "adam_update" else _optim.adamw_step

        def run() -> None:
            step(p, g, state[0], state[1], step=int(counter[0]), lr=float(lr[0]),
                 beta1=a.beta1, beta2=a.beta2, eps=a.eps, weight_decay=a.weight_decay,
                 n_threads=n)
    return run


for _name, _cls in OPTIMIZER_ATTRS.items():
    register_op(OpDef(
        name=f"{_name}_update", attrs=_cls, positional=(), arity=None,
        shape_rule=update_shape,
        doc=f"{_name} step in place (inputs: param, grad, *state)", internal=True,
        kernel=update_kernel, writes=written,
    ))


@dataclass(frozen=True)
class ClipAttrs:
    """Attributes of ``clip_grad_norm``."""

    max_norm: float = attr("the largest global L2 norm the gradients may have",
                           float_kind(0.0), 1.0)


def clip_shape(ins: Sequence[TensorType], a: ClipAttrs) -> tuple[TensorType, ...]:
    """The gradients in, the clipped gradients out (same types)."""
    return tuple(ins)


def clip_kernel(node, ctx) -> Callable[[], None]:
    """Copy every gradient, then scale them all by max_norm / (global norm + 1e-6) when
    the global norm exceeds max_norm (PyTorch's clip_grad_norm_)."""
    src = [ctx.array(v).reshape(-1) for v in node.inputs]
    dst = [ctx.array(v).reshape(-1) for v in node.outputs]
    max_norm, n = node.attrs.max_norm, ctx.n_threads

    def run() -> None:
        for s, d in zip(src, dst):
            np.copyto(d, s)
        _optim.clip_by_global_norm(dst, max_norm, n)
    return run


register_op(OpDef(
    name="clip_grad_norm", attrs=ClipAttrs, positional=(), arity=None, min_inputs=1,
    shape_rule=clip_shape, doc="clip all gradients to one global L2 norm", internal=True,
    kernel=clip_kernel,
))

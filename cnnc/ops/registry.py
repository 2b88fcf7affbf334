"""The op registry: every op is one frozen :class:`OpDef`, registered once at the end of
the module that defines its family (``cnnc/ops/conv.py`` registers ``conv`` and
``conv_transpose``...).

An op bundles its rules; each rule is a pure function of the op's data-input types and its
frozen attrs:

* ``shape_rule(in_types, attrs) -> TensorType``: the output type, or a :class:`RuleError`
  saying which input was wrong and what the op expected;
* ``param_rule(in_types, attrs) -> {name: ParamSpec}``: the layer's parameters, in order;
* ``mac_rule(in_types, out_type, attrs) -> int``: forward multiply-accumulates per image.

and, for execution and training (see docs/architecture.md, "Ops at run time"):

* ``kernel(node, ctx) -> Callable[[], None]``: binds the op's kernel to the plan's arrays;
* ``workspace(node, batch, worker_stride) -> int``: bytes of scratch the kernel needs
  (default none), when its worker threads' scratch sits ``worker_stride`` bytes apart
  (see ``worker_scratch``); its contents last one call (every op's workspace starts at the
  start of one shared buffer);
* ``worker_scratch(node, batch) -> int``: bytes of scratch each worker thread needs on
  the kernel paths that put it at a caller's fixed stride (default none): the plan passes
  the largest to every kernel as ``ctx.worker_stride``;
* ``vjp(gb, node, douts) -> list[Value | None]``: emits the backward nodes;
* ``training(node, seed) -> (op, attrs)``: the op's training-mode variant, if it has one;
* ``writes(node) -> list[Value]``: the inputs the kernel updates in place.

Internal ops (``internal=True``: gradients, losses, optimizer updates) are built by the
compiler only; the language does not offer them as layers. A shape rule may return a tuple
of types for an op with several outputs (or none).

This module imports nothing from :mod:`cnnc.ir` at run time, so the graph can import the
registry while the op families import the graph's types.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnc.errors import ShapeError, SpecError

if TYPE_CHECKING:
    from cnnc.ir.types import TensorType


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a layer: its shape, its initialiser's name, whether it is trained.

    ``trainable=False`` marks state updated outside the gradient step (batchnorm running
    statistics); such parameters become Values of kind "state".
    """

    shape: tuple[int, ...]
    init: str
    trainable: bool = True


class RuleError(ShapeError):
    """Raised by a shape rule; the graph turns it into a located, readable ShapeError.

    ``problem`` is a verb phrase completing "<op> at line L ...", e.g. "expects a flat input
    [N, F]"; ``inputs`` are the indices of the data inputs at fault (the message then
    quotes their types and producers); ``hint`` says how to fix it ("add flatten").
    """

    def __init__(self, problem: str, inputs: Sequence[int] = (), hint: str | None = None):
        super().__init__(problem, hint=hint)
        self.problem = problem
        self.inputs = tuple(inputs)


ShapeRule = Callable[[Sequence["TensorType"], Any], "TensorType | tuple[TensorType, ...]"]
ParamRule = Callable[[Sequence["TensorType"], Any], dict[str, ParamSpec]]
MacRule = Callable[[Sequence["TensorType"], "TensorType", Any], int]


def no_params(in_types: Sequence[TensorType], attrs: Any) -> dict[str, ParamSpec]:
    """Param rule of ops without parameters."""
    return {}


def no_macs(in_types: Sequence[TensorType], out_type: TensorType, attrs: Any) -> int:
    """MAC rule of ops that the MAC total leaves out (elementwise, pooling, reshaping)."""
    return 0


@dataclass(frozen=True)
class OpDef:
    """Everything cnnc knows about one op.

    ``arity`` is the number of data inputs, or ``None`` for a variadic op taking
    ``min_inputs`` (default two) or more. ``positional`` names the attrs that may be given positionally, in order.
    ``aliases`` maps other spellings of an argument (a Keras or PyTorch name) to the
    canonical field name. ``inplace_ok``: the output may share its first input's buffer.
    The run-time rules (``kernel`` ... ``writes``) are described in the module docstring.
    """

    name: str
    attrs: type
    positional: tuple[str, ...]
    arity: int | None
    shape_rule: ShapeRule
    param_rule: ParamRule = no_params
    mac_rule: MacRule = no_macs
    doc: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    internal: bool = False
    kernel: Callable[[Any, Any], Callable[[], None]] | None = None
    workspace: Callable[[Any, int, int], int] | None = None
    worker_scratch: Callable[[Any, int], int] | None = None
    vjp: Callable[[Any, Any, list], list] | None = None
    training: Callable[[Any, int], tuple[str, Any]] | None = None
    writes: Callable[[Any], list] | None = None
    inplace_ok: bool = False
    min_inputs: int = 2

    def arity_text(self) -> str:
        """The number of data inputs in words: "1 input", "2 or more inputs"."""
        if self.arity is None:
            return f"{self.min_inputs} or more inputs"
        return f"{self.arity} input" + ("" if self.arity == 1 else "s")

    def arity_ok(self, n: int) -> bool:
        """Whether ``n`` data inputs suit this op."""
        return n >= self.min_inputs if self.arity is None else n == self.arity


_REGISTRY: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    """Add ``op`` to the registry; a second op under the same name is a programming error."""
    if op.name in _REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    fields = {f.name for f in dataclasses.fields(op.attrs)}
    if not set(op.positional) <= fields or not set(op.aliases.values()) <= fields:
        raise ValueError(f"op {op.name!r}: positional names and aliases must be attrs fields")
    _REGISTRY[op.name] = op
    return op


def op_names() -> list[str]:
    """The names of the ops the language offers as layers (internal ones left out), sorted."""
    return sorted(name for name, op in _REGISTRY.items() if not op.internal)


def suggest(name: str, known: Sequence[str]) -> str:
    """" (did you mean 'x'?)" for the nearest known name, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def get_op(name: str) -> OpDef:
    """The registered op ``name``; SpecError suggesting the nearest name when unknown."""
    op = _REGISTRY.get(name)
    if op is None:
        raise SpecError(
            f"unknown layer '{name}'{suggest(name, op_names())}",
            hint="known layers: " + ", ".join(op_names()),
        )
    return op

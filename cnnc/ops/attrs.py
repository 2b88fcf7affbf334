"""Typed attribute schemas: how a layer's (args, kwargs) become its frozen attrs dataclass.

Each op's attrs class is a frozen dataclass whose fields are made with :func:`attr`: a
one-line description, a :class:`Kind` that checks and coerces the value the spec gave,
and a default where one makes sense (a field without a default is required).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnnc.errors import SpecError
from cnnc.ops.registry import OpDef, suggest


class BadValue(Exception):
    """A Kind's coercion failed; ``detail`` optionally says more than the kind's description."""

    def __init__(self, detail: str = ""):
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Kind:
    """A value type of an attribute: its description ("an int >= 1") and its coercion."""

    describe: str
    coerce: Callable[[Any], Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def int_kind(minimum: int | None = None) -> Kind:
    """An int, at least ``minimum`` when given."""
    def coerce(v: Any) -> int:
        if not _is_int(v) or (minimum is not None and v < minimum):
            raise BadValue()
        return int(v)
    return Kind("an int" + (f" >= {minimum}" if minimum is not None else ""), coerce)


def float_kind(low: float | None = None, high: float | None = None,
               high_open: bool = False) -> Kind:
    """A number (ints are accepted and converted) in [low, high] or [low, high)."""
    def coerce(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BadValue()
        v = float(v)
        if (low is not None and v < low) or (high is not None and (
                v > high or (high_open and v == high))):
            raise BadValue()
        return v
    text = "a number"
    if low is not None and high is not None:
        text += f" in [{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        text += f" >= {low}"
    return Kind(text, coerce)


def _coerce_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise BadValue()
    return v


BOOL = Kind("true or false", _coerce_bool)


def choice_kind(*options: str) -> Kind:
    """One of the given strings."""
    def coerce(v: Any) -> str:
        if not isinstance(v, str):
            raise BadValue()
        if v not in options:
            raise BadValue(suggest(v, options).strip())
        return v
    return Kind("one of " + ", ".join(f"'{o}'" for o in options), coerce)


def _ints(v: Any, lengths: Sequence[int], minimum: int) -> tuple[int, ...]:
    """An int, or a tuple/list of ints of one of ``lengths``, as a tuple; int -> (v, v)."""
    if _is_int(v):
        values: tuple[Any, ...] = (v, v)
    elif isinstance(v, (tuple, list)) and len(v) in lengths:
        values = tuple(v)
    else:
        raise BadValue()
    if not all(_is_int(x) and x >= minimum for x in values):
        raise BadValue()
    return tuple(int(x) for x in values)


def pair_kind(minimum: int = 1) -> Kind:
    """An int or a pair of ints (height, width), stored as a pair."""
    return Kind(f"an int >= {minimum} or a pair of them",
                lambda v: _ints(v, (2,), minimum))


def _coerce_padding(v: Any) -> str | tuple[int, int, int, int]:
    if isinstance(v, str):
        if v not in ("valid", "same"):
            raise BadValue(suggest(v, ("valid", "same")).strip())
        return v
    if _is_int(v):
        v = (v, v)
    values = _ints(v, (2, 4), 0)
    if len(values) == 2:
        return (values[0], values[0], values[1], values[1])
    return values  # type: ignore[return-value]


PADDING = Kind("'valid', 'same', an int >= 0, a pair (height, width) "
               "or a quad (top, bottom, left, right)", _coerce_padding)


def optional(kind: Kind) -> Kind:
    """``kind`` or None (None meaning "derive it", e.g. a pool's stride from its size)."""
    return Kind(kind.describe + " (or none)",
                lambda v: None if v is None else kind.coerce(v))


def attr(doc: str, kind: Kind, default: Any = dataclasses.MISSING) -> Any:
    """A field of an attrs dataclass: description, kind, and default (none: required)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "kind": kind})


@dataclass(frozen=True)
class NoAttrs:
    """Attrs of ops that take no arguments."""


# The activations a conv, conv_transpose or dense layer can apply in its own kernel.
ACTIVATION = choice_kind("none", "relu", "leaky_relu", "sigmoid", "tanh")


@dataclass(frozen=True, kw_only=True)
class WeightedLayerOptions:
    """Options shared by the layers with weights (conv, conv_transpose, dense); their attrs
    classes inherit them, keyword-only, after their own arguments."""

    activation: str = attr("activation applied to the output, fused into the layer's kernel",
                           ACTIVATION, "none")
    activation_alpha: float = attr("slope of leaky_relu for negative inputs", float_kind(0.0),
                                   0.3)
    weight_decay: float | None = attr("weight decay of this layer's parameters, replacing the "
                                      "optimizer's (added to the gradient as "
                                      "weight_decay * w; decoupled for adamw)",
                                      optional(float_kind(0.0)), None)


def attr_fields(attrs: type) -> list[dataclasses.Field]:
    """An attrs class's fields: its own in order, then inherited keyword-only options."""
    return sorted(dataclasses.fields(attrs), key=lambda f: f.kw_only)


def describe_attrs(op: OpDef) -> list[tuple[str, str, Any, str]]:
    """(name, kind description, default or MISSING, description) for each of op's fields."""
    return [(f.name, f.metadata["kind"].describe, f.default, f.metadata["doc"])
            for f in attr_fields(op.attrs)]


def parse_attrs(op: OpDef, args: Sequence[Any] = (),
                kwargs: Mapping[str, Any] | None = None) -> Any:
    """Check and coerce a layer's arguments into ``op``'s frozen attrs dataclass.

    Positional arguments fill ``op.positional`` in order; keyword names may be the
    canonical field names or one of ``op.aliases``. Raises SpecError (without a span: the
    caller attaches the layer's) naming the argument and what it expects.
    """
    fields = {f.name: f for f in attr_fields(op.attrs)}
    takes = ", ".join(fields) if fields else "no arguments"
    if len(args) > len(op.positional):
        if not op.positional:
            raise SpecError(f"takes no positional arguments; got {len(args)}",
                            hint=f"{op.name} takes {takes}")
        raise SpecError(
            f"takes at most {len(op.positional)} positional argument"
            f"{'s' if len(op.positional) > 1 else ''} ({', '.join(op.positional)}); "
            f"got {len(args)}")
    given: dict[str, Any] = dict(zip(op.positional, args))
    by_position = set(given)
    label = {name: name for name in given}  # how the spec spelled each argument
    for key, value in (kwargs or {}).items():
        name = op.aliases.get(key, key)
        if name not in fields:
            known = list(fields) + list(op.aliases)
            raise SpecError(f"unknown argument '{key}'{suggest(key, known)}",
                            hint=f"{op.name} takes {takes}")
        if name in given:
            first = "positionally" if name in by_position else f"as '{label[name]}'"
            raise SpecError(f"argument '{name}' is given twice ({first} and as '{key}')")
        given[name] = value
        label[name] = key
    values: dict[str, Any] = {}
    for name, f in fields.items():
        kind: Kind = f.metadata["kind"]
        if name not in given:
            if f.default is dataclasses.MISSING:
                raise SpecError(f"missing required argument '{name}' ({f.metadata['doc']})",
                                hint=f"{op.name} takes {takes}")
            continue
        try:
            values[name] = kind.coerce(given[name])
        except BadValue as err:
            detail = f" {err.detail}" if err.detail else ""
            raise SpecError(f"argument '{label[name]}' expects {kind.describe}; "
                            f"got {_show(given[name])}{detail}") from None
    return op.attrs(**values)


def _show(v: Any) -> str:
    """A value as a spec writer would read it (true/false, quoted strings, tuples)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    return repr(v)

"""Hyper-parameter search spaces and the value ``check``/``summary`` give each one.

A space is kept in the AST (:class:`cnnc.dsl.ast.Space`) so that a later search can
sample it. Without ``--set``, it takes its first value:

* ``choice(a, b, ...)``          -> a
* ``range(low, high, step=1)``   -> low   (integers low, low+step, ... up to high inclusive)
* ``uniform(low, high)``         -> low
* ``loguniform(low, high)``      -> low   (0 < low < high)

``--set name=value`` replaces it; the value must lie in the space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cnnc.dsl import ast
from cnnc.errors import SpecError

_RULES = {
    "choice": "choice(a, b, ...)",
    "range": "range(low, high, step=1) on integers",
    "uniform": "uniform(low, high)",
    "loguniform": "loguniform(low, high) with 0 < low < high",
}


@dataclass(frozen=True)
class SpaceValue:
    """What a space resolved to, and why (for the notes check/summary print)."""

    name: str
    value: Any
    text: str          # the space as written, e.g. "choice(16, 32)"
    overridden: bool

    def short(self) -> str:
        """The note in a few words, for one-line output: "width=32 (first of choice(...))"."""
        if self.overridden:
            return f"{self.name}={_show(self.value)} (--set)"
        return f"{self.name}={_show(self.value)} (first of {self.text})"

    def note(self) -> str:
        if self.text.split("(")[0] not in _RULES:  # a plain param given by --set
            return f"{self.name} = {_show(self.value)} (set by --set; the spec says {self.text})"
        how = "set by --set" if self.overridden else "its first value"
        return f"{self.name} = {_show(self.value)} from {self.text} ({how})"


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve(space: ast.Space, args: list[Any], kwargs: dict[str, Any], name: str,
            override: Any = None, has_override: bool = False) -> SpaceValue:
    """The value of ``space`` (its arguments already evaluated), checked for sense."""
    kind = space.kind
    allowed = {"range": {"step"}}.get(kind, set())
    for key in kwargs:
        if key not in allowed:
            raise SpecError(f"{kind} takes no argument '{key}'", space.span,
                            hint=f"write it as {_RULES[kind]}")
    if kind == "choice":
        if not args:
            raise SpecError("choice needs at least one option", space.span)
        members = args
        default = args[0]
        text = "choice(" + ", ".join(_show(a) for a in args) + ")"
    else:
        if len(args) != 2 or not all(_number(a) for a in args):
            raise SpecError(f"{kind} needs two numbers, low and high", space.span,
                            hint=f"write it as {_RULES[kind]}")
        low, high = args
        if not low < high:
            raise SpecError(f"{kind} needs low < high; got {low} and {high}", space.span)
        if kind == "loguniform" and low <= 0:
            raise SpecError(f"loguniform needs 0 < low; got {low}", space.span)
        step = kwargs.get("step", 1)
        if kind == "range" and not all(isinstance(x, int) and not isinstance(x, bool)
                                       for x in (low, high, step)):
            raise SpecError("range takes integers", space.span, hint=f"use {_RULES['range']}")
        if kind == "range" and step < 1:
            raise SpecError(f"range needs step >= 1; got {step}", space.span)
        members, default = None, low
        text = f"{kind}({_show(low)}, {_show(high)}" + (
            f", step={step})" if kind == "range" and step != 1 else ")")
    if not has_override:
        return SpaceValue(name, default, text, False)
    if members is not None:
        if not any(override == m and isinstance(override, bool) == isinstance(m, bool)
                   for m in members):
            raise SpecError(f"--set {name}={_show(override)} is not one of {text}", space.span)
    else:
        ok = _number(override) and args[0] <= override <= args[1]
        if kind == "range":
            ok = ok and isinstance(override, int) and (override - args[0]) % step == 0
        if not ok or (isinstance(override, float) and not math.isfinite(override)):
            raise SpecError(f"--set {name}={_show(override)} lies outside {text}", space.span)
    return SpaceValue(name, override, text, True)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"name=value"`` from the command line -> (name, value); value is read as an int,
    a float, true/false, or else kept as a string."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name or not raw:
        raise SpecError(f"--set expects name=value; got '{text}'")
    for convert in (int, float):
        try:
            return name, convert(raw)
        except ValueError:
            pass
    if raw in ("true", "false"):
        return name, raw == "true"
    return name, raw.strip('"')

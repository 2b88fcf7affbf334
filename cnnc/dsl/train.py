"""The ``train { ... }`` section: its schema, its validation, and :class:`TrainConfig`, the
plain structure a trainer reads. Nothing here trains; it only says what the spec asks for.

Every key, option and argument is checked against the schema below: unknown names get the
nearest known one suggested, wrong types name the setting and what it expects. Search
spaces in the section are named by their path (``batch``, ``optimizer.lr``,
``augment.rotation``) for ``--set``.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnnc.dsl import ast
from cnnc.dsl.spaces import SpaceValue, resolve
from cnnc.errors import Span, SpecError
from cnnc.ops.attrs import BOOL, BadValue, Kind, choice_kind, float_kind, int_kind
from cnnc.ops.optim import OPTIMIZER_ATTRS

_REQUIRED = object()


def _str_kind(what: str) -> Kind:
    def coerce(v: Any) -> str:
        if not isinstance(v, str):
            raise BadValue()
        return v
    return Kind(what, coerce)


def _int_list(v: Any) -> tuple[int, ...]:
    if not isinstance(v, tuple) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
        raise BadValue()
    return v


PATH = _str_kind('a path in double quotes, e.g. "data/mnist"')
INT_LIST = Kind("a list of ints >= 1, e.g. [30, 60]", _int_list)


@dataclass(frozen=True)
class Option:
    """A chosen function with its arguments, defaults filled in: ``adam(lr=0.001, ...)``."""

    name: str
    args: dict[str, Any]


# name -> [(argument, kind, default)]; positional arguments fill them in order.
Family = dict[str, list[tuple[str, Kind, Any]]]

def _size(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return v
    if isinstance(v, tuple) and len(v) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v):
        return v
    raise BadValue()


SIZE = Kind("an int >= 1 or a pair [height, width]", _size)
# The arguments of cnnc.data's loaders (cnnc/data/registry.py), checked here so a spec's
# mistakes are found by `cnnc check`, before any data is read.
DATA: Family = {
    "shapes": [("classes", int_kind(1), 2), ("size", int_kind(8), 64),
               ("count", int_kind(1), 4000), ("channels", int_kind(1), 3),
               ("seed", int_kind(0), 0), ("test_count", int_kind(0), None),
               ("task", choice_kind("classify", "segment", "detect"), "classify"),
               ("objects", int_kind(1), 1), ("noise", float_kind(0.0, 1.0), 0.05),
               ("antialias", BOOL, True)],
    "mnist": [("path", PATH, _REQUIRED)],
    "fashion_mnist": [("path", PATH, _REQUIRED)],
    "idx": [("path", PATH, _REQUIRED)],
    "cifar10": [("path", PATH, _REQUIRED), ("limit", int_kind(1), None)],
    "folder": [("path", PATH, _REQUIRED), ("size", SIZE, None),
               ("color", choice_kind("rgb", "grayscale"), "rgb"),
               ("limit", int_kind(1), None)],
    "npz": [("path", PATH, _REQUIRED), ("layout", choice_kind("nchw", "nhwc"), "nchw")],
}
def _optimizer_family(name: str, attrs: type) -> list:
    """A spec's arguments of optimizer ``name``: the fields of its update op's attrs."""
    defaults = {"weight_decay": 0.01} if name == "adamw" else {}  # AdamW's usual default
    return [(f.name, f.metadata["kind"], defaults.get(f.name, f.default))
            for f in dataclasses.fields(attrs)]


# The optimizers are the update ops of cnnc/ops/optim.py; their arguments are defined there.
OPTIMIZERS: Family = {name: _optimizer_family(name, attrs)
                      for name, attrs in OPTIMIZER_ATTRS.items()}
_WARMUP = ("warmup", int_kind(0), 0)  # epochs of linear warmup, for every schedule
_MONITOR = choice_kind("val_loss", "val_accuracy", "loss", "accuracy")
SCHEDULES: Family = {
    "constant": [_WARMUP],
    "step": [("every", int_kind(1), _REQUIRED), ("gamma", float_kind(0.0), 0.1), _WARMUP],
    "multistep": [("milestones", INT_LIST, _REQUIRED), ("gamma", float_kind(0.0), 0.1),
                  _WARMUP],
    "exponential": [("gamma", float_kind(0.0), _REQUIRED), _WARMUP],
    "cosine": [("min_lr", float_kind(0.0), 0.0), _WARMUP],
    "reduce_on_plateau": [("monitor", _MONITOR, "val_loss"),
                          ("factor", float_kind(0.0, 1.0, True), 0.1),
                          ("patience", int_kind(0), 10), ("min_delta", float_kind(0.0), 1e-4),
                          ("cooldown", int_kind(0), 0), ("min_lr", float_kind(0.0), 0.0),
                          _WARMUP],
}
LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy",
          "binary_crossentropy", "mse")
METRICS = ("accuracy", "top5_accuracy", "precision", "recall", "mean_iou")

# section -> key -> kind (a Kind, a Family, or a nested section dict)
AUGMENT = {
    "flip": choice_kind("horizontal", "vertical", "both", "none"),
    "rotation": float_kind(0.0, 180.0),
    "shift": float_kind(0.0, 1.0, True),
    "zoom": float_kind(0.0, 1.0, True),
    "shear": float_kind(0.0, 90.0, True),
    "crop": int_kind(0),
    "brightness": float_kind(0.0, 1.0, True),
    "contrast": float_kind(0.0, 1.0, True),
    "noise": float_kind(0.0),
}
EARLY_STOPPING = {
    "monitor": _MONITOR,
    "patience": int_kind(0),
    "min_delta": float_kind(0.0),
    "restore_best": BOOL,
}
TRAIN: dict[str, Any] = {
    "data": DATA,
    "loss": choice_kind(*LOSSES),
    "label_smoothing": float_kind(0.0, 1.0, True),
    "optimizer": OPTIMIZERS,
    "metrics": "metrics",
    "batch": int_kind(1),
    "epochs": int_kind(1),
    "validation_split": float_kind(0.0, 1.0, True),
    "schedule": SCHEDULES,
    "seed": int_kind(0),
    "shuffle": BOOL,
    "augment": AUGMENT,
    "early_stopping": EARLY_STOPPING,
}
SECTION_DEFAULTS = {"early_stopping": {"monitor": "val_loss", "patience": 5, "min_delta": 0.0,
                                      "restore_best": True}}
_FAMILY_WORD = {"data": "data source", "optimizer": "optimizer", "schedule": "schedule"}


@dataclass
class TrainConfig:
    """What a ``train`` section asks for; every field is validated and defaults filled."""

    data: Option
    loss: str
    label_smoothing: float = 0.0   # categorical losses: targets (1 - e) one-hot + e / K
    optimizer: Option = field(default_factory=lambda: Option("adam", _defaults(
        OPTIMIZERS["adam"])))
    metrics: tuple[str, ...] = ()
    batch: int = 32
    epochs: int = 10
    validation_split: float = 0.0
    schedule: Option = field(default_factory=lambda: Option("constant", {"warmup": 0}))
    seed: int | None = None
    shuffle: bool = True
    augment: dict[str, Any] = field(default_factory=dict)
    early_stopping: dict[str, Any] | None = None
    spans: dict[str, Span] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (Options as {"name": ..., "args": {...}})."""
        out: dict[str, Any] = {}
        for key in TRAIN:
            v = getattr(self, key)
            out[key] = {"name": v.name, "args": dict(v.args)} if isinstance(v, Option) else v
        return out


def _defaults(signature: list[tuple[str, Kind, Any]]) -> dict[str, Any]:
    return {name: default for name, _, default in signature if default is not _REQUIRED}


def _nearest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Reader:
    """Evaluates setting values: bare names are symbols unless a param has the name."""

    def __init__(self, evaluate: Callable[[ast.Node], Any], lookup: Callable[[str], Any],
                 overrides: dict[str, Any]):
        self.evaluate = evaluate
        self.lookup = lookup
        self.overrides = overrides
        self.used: set[str] = set()
        self.spaces: dict[str, SpaceValue] = {}

    def value(self, node: ast.Node, path: str) -> Any:
        if isinstance(node, ast.Name):
            found, value = self.lookup(node.id)
            return value if found else node.id
        if isinstance(node, ast.ListExpr):
            return tuple(self.value(x, f"{path}.{i}") for i, x in enumerate(node.items))
        if isinstance(node, ast.Space):
            args = [self.evaluate(a.value) for a in node.args if a.name is None]
            kwargs = {a.name: self.evaluate(a.value) for a in node.args if a.name}
            has = path in self.overrides
            if has:
                self.used.add(path)
            resolved = resolve(node, args, kwargs, path, self.overrides.get(path), has)
            self.spaces[path] = resolved
            return resolved.value
        return self.evaluate(node)


def build_train_config(train: ast.Train, evaluate: Callable[[ast.Node], Any],
                       lookup: Callable[[str], tuple[bool, Any]],
                       overrides: dict[str, Any]) -> tuple[TrainConfig, _Reader]:
    """Validate a train section against the schema and build its TrainConfig."""
    reader = _Reader(evaluate, lookup, overrides)
    values, spans = _section(train.section, TRAIN, "", reader, "train setting")
    for key in ("data", "loss"):
        if key not in values:
            raise SpecError(f"the train section needs `{key} = ...`", train.span,
                            hint="e.g. data = mnist(\"data/mnist\") and "
                            "loss = sparse_categorical_crossentropy")
    if values.get("label_smoothing") and "categorical" not in values["loss"]:
        raise SpecError(f"label_smoothing applies to the categorical cross-entropy losses, "
                        f"not to {values['loss']}", spans["label_smoothing"])
    return TrainConfig(**values, spans=spans), reader


def _section(section: ast.Section, schema: dict[str, Any], prefix: str, reader: _Reader,
             what: str) -> tuple[dict[str, Any], dict[str, Span]]:
    values: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    for setting in section.settings:
        key, path = setting.key, prefix + setting.key
        if key not in schema:
            raise SpecError(f"unknown {what} '{key}'{_nearest(key, schema)}", setting.span,
                            hint="known: " + ", ".join(schema))
        if key in values:
            raise SpecError(f"'{key}' is set twice (first at line {spans[path].line})",
                            setting.span)
        spans[path] = setting.span
        kind = schema[key]
        is_section = isinstance(setting.value, ast.Section)
        if isinstance(kind, dict) and kind and isinstance(next(iter(kind.values())), Kind):
            if not is_section:
                raise SpecError(f"'{key}' is a section: write {key} {{ name = value ... }}",
                                setting.span)
            sub, sub_spans = _section(setting.value, kind, path + ".", reader,
                                      f"{key} setting")
            values[key] = {**SECTION_DEFAULTS.get(key, {}), **sub}
            spans.update(sub_spans)
            continue
        if is_section:
            raise SpecError(f"'{key}' is a single setting: write {key} = ...", setting.span)
        if kind == "metrics":
            values[key] = _metrics(setting.value, reader, path)
        elif isinstance(kind, dict):
            values[key] = _option(setting.value, kind, _FAMILY_WORD[key], reader, path)
        else:
            values[key] = _coerce(kind, reader.value(setting.value, path), key,
                                  setting.value.span)
    return values, spans


def _coerce(kind: Kind, value: Any, name: str, span: Span) -> Any:
    try:
        return kind.coerce(value)
    except BadValue as err:
        detail = f" {err.detail}" if err.detail else ""
        raise SpecError(f"'{name}' expects {kind.describe}; got {_show(value)}{detail}",
                        span) from None


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"'{v}'"
    if isinstance(v, tuple):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return repr(v)


def _metrics(node: ast.Node, reader: _Reader, path: str) -> tuple[str, ...]:
    items = node.items if isinstance(node, ast.ListExpr) else (node,)
    out = []
    for item in items:
        name = reader.value(item, path)
        if not isinstance(name, str) or name not in METRICS:
            near = _nearest(name, METRICS) if isinstance(name, str) else ""
            raise SpecError(f"unknown metric {_show(name)}{near}", item.span,
                            hint="metrics: " + ", ".join(METRICS))
        out.append(name)
    return tuple(out)


def _option(node: ast.Node, family: Family, word: str, reader: _Reader, path: str) -> Option:
    if isinstance(node, ast.Name):
        node = ast.Call(node.id, (), span=node.span)
    if not isinstance(node, ast.Call):
        raise SpecError(f"expected a {word} such as {next(iter(family))}(...)", node.span,
                        hint=f"{word}s: " + ", ".join(family))
    if node.name not in family:
        raise SpecError(f"unknown {word} '{node.name}'{_nearest(node.name, family)}",
                        node.span, hint=f"{word}s: " + ", ".join(family))
    signature = family[node.name]
    names = [n for n, _, _ in signature]
    given: dict[str, tuple[Any, Span]] = {}
    positional = [a for a in node.args if a.name is None]
    if len(positional) > len(signature):
        raise SpecError(f"{node.name} takes at most {len(signature)} argument"
                        f"{'' if len(signature) == 1 else 's'} ({', '.join(names)}); got "
                        f"{len(positional)}", node.span)
    for i, arg in enumerate(node.args):
        if arg.name is None:
            if i >= len(positional):
                raise SpecError("a positional argument cannot follow a keyword argument",
                                arg.span)
            key = names[i]
        else:
            key = arg.name
            if key not in names:
                raise SpecError(f"{node.name} has no argument '{key}'{_nearest(key, names)}",
                                arg.span, hint=f"{node.name} takes "
                                + (", ".join(names) or "no arguments"))
            if key in given:
                raise SpecError(f"argument '{key}' is given twice", arg.span)
        given[key] = (reader.value(arg.value, f"{path}.{key}"), arg.value.span)
    args: dict[str, Any] = {}
    for key, kind, default in signature:
        if key in given:
            value, span = given[key]
            args[key] = _coerce(kind, value, key, span)
        elif default is _REQUIRED:
            raise SpecError(f"{node.name} needs argument '{key}' ({kind.describe})",
                            node.span)
        else:
            args[key] = default
    return Option(node.name, args)

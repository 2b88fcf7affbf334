"""The .cnn syntax tree: plain frozen dataclasses, each carrying the span it came from.

Every node also records its nesting ``depth`` (computed while parsing, bottom-up), so the
later tree walks, which are recursive, can trust that no tree is deeper than
``parser.MAX_DEPTH``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cnnc.errors import Span


@dataclass(frozen=True, kw_only=True)
class Node:
    span: Span
    depth: int = field(default=1, compare=False, repr=False)


# ---- expressions

@dataclass(frozen=True)
class Literal(Node):
    """A number, string or boolean written in the spec."""

    value: int | float | str | bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class ListExpr(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class BinOp(Node):
    """Arithmetic (+ - * / // %), comparisons and ``and``/``or``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str  # "-" or "not"
    operand: Node


@dataclass(frozen=True)
class Arg(Node):
    """One argument of a call; ``name`` is None for a positional one."""

    name: str | None
    value: Node


@dataclass(frozen=True)
class Call(Node):
    """``name(args)``: a layer or block in a chain, a function in an expression."""

    name: str
    args: tuple[Arg, ...]


SPACE_KINDS = ("choice", "range", "uniform", "loguniform")


@dataclass(frozen=True)
class Space(Node):
    """A hyper-parameter search space (``choice``, ``range``, ``uniform``, ``loguniform``).

    ``name`` is what ``--set`` uses: the ``param`` or train key it is bound to, or its
    position ``line:col`` when it is written inline.
    """

    kind: str
    args: tuple[Arg, ...]
    name: str


# ---- network bodies

@dataclass(frozen=True)
class Body(Node):
    stmts: tuple[Node, ...]


@dataclass(frozen=True)
class Chain(Node):
    """Elements applied in sequence: Call, Name (tensor, layer or block), Repeat, If, Group."""

    elements: tuple[Node, ...]


@dataclass(frozen=True)
class Bind(Node):
    name: str
    chain: Chain


@dataclass(frozen=True)
class Repeat(Node):
    count: Node
    body: Body


@dataclass(frozen=True)
class If(Node):
    cond: Node
    then: Body
    orelse: Body | If | None


@dataclass(frozen=True)
class Group(Node):
    body: Body


# ---- top level

@dataclass(frozen=True)
class Network(Node):
    name: str


@dataclass(frozen=True)
class Include(Node):
    path: str


@dataclass(frozen=True)
class InputDecl(Node):
    name: str
    shape: ListExpr


@dataclass(frozen=True)
class ParamDecl(Node):
    name: str
    value: Node


@dataclass(frozen=True)
class Formal(Node):
    name: str
    default: Node | None


@dataclass(frozen=True)
class BlockDef(Node):
    name: str
    formals: tuple[Formal, ...]
    body: Body


@dataclass(frozen=True)
class Layers(Node):
    body: Body


@dataclass(frozen=True)
class Setting(Node):
    """``key = value`` in a train section, or ``key { ... }`` (value is then a Section)."""

    key: str
    value: Node


@dataclass(frozen=True)
class Section(Node):
    settings: tuple[Setting, ...]


@dataclass(frozen=True)
class Train(Node):
    section: Section


@dataclass(frozen=True)
class Module(Node):
    """One parsed .cnn file, before includes are resolved."""

    file: str
    items: tuple[Node, ...]

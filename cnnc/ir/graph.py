"""The Graph: layers in topological order, built through add_input / add_layer /
set_outputs, with shape inference run as each layer is added (and again, for the whole
graph, by :meth:`Graph.infer_shapes`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cnnc.errors import ShapeError, Span, SpecError
from cnnc.ir.types import BATCH, DTYPES, Node, TensorType, Value
from cnnc.ops.attrs import parse_attrs
from cnnc.ops.registry import OpDef, ParamSpec, RuleError, get_op, op_names


def _where(span: Span | None) -> str:
    return f" at line {span.line}" if span else ""


def describe_value(value: Value) -> str:
    """Where a value comes from, for messages: "maxpool at line 12", "input 'image'"."""
    node = value.producer
    if node is None:
        return f"{value.kind} '{value.name}'{_where(value.span)}"
    if node.span is None:
        return f"{node.op} '{node.name}'"
    return f"{node.op} at line {node.span.line}"


def describe_layer(op: str, name: str, span: Span | None) -> str:
    """A layer as messages name it: "dense at line 14", or "dense 'dense_2'" without span."""
    return f"{op}{_where(span)}" if span else f"{op} '{name}'"


def shape_error(op: str, name: str, span: Span | None, inputs: Sequence[Value],
                err: RuleError) -> ShapeError:
    """Turn a shape rule's RuleError into the ShapeError a person reads, e.g.
    "dense at line 14 expects a flat input [N, F]; got [N, 64, 5, 5] from maxpool at
    line 12 — add flatten"."""
    text = f"{describe_layer(op, name, span)} {err.problem}"
    quoted = [inputs[i] for i in err.inputs if i < len(inputs)]
    if quoted:
        text += "; got " + " and ".join(f"{v.type} from {describe_value(v)}" for v in quoted)
    if err.hint:
        text += f" — {err.hint}"
    return ShapeError(text, span=span)


class Graph:
    """A network: inputs, layers (``nodes``, in topological order), parameters, outputs.

    Values share one namespace: inputs and layers by their names, parameters as
    ``<layer>.<param>``. Compiled graphs (training, inference) also hold internal nodes
    made by :meth:`add_node` (names may contain "/", outputs of a multi-output node are
    ``<node>:<i>``) and free-standing ``states`` (optimizer moments) made by
    :meth:`add_value`.
    """

    def __init__(self, name: str):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.params: dict[str, Value] = {}
        self.states: list[Value] = []
        self._values: dict[str, Value] = {}
        self._nodes: dict[str, Node] = {}
        self._spans: dict[str, Span | None] = {}

    # -- building ------------------------------------------------------------------------

    def add_input(self, name: str, shape: Sequence[int], span: Span | None = None,
                  dtype: str = "float32") -> Value:
        """Declare an input of per-example ``shape`` (e.g. (C, H, W)); its Value has type
        [N, *shape]."""
        self._claim(name, span)
        dims = tuple(shape)
        if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                               for d in dims):
            raise SpecError(f"input '{name}' needs a shape of positive ints; got "
                            f"{list(dims)}", span=span)
        if dtype not in DTYPES:
            raise SpecError(f"input '{name}' has dtype '{dtype}'; cnnc supports "
                            + ", ".join(DTYPES), span=span)
        value = Value(name, TensorType((BATCH,) + dims, dtype), "input", span=span)
        self.inputs.append(value)
        self._values[name] = value
        return value

    def add_layer(self, op: str, inputs: Sequence[Value], args: Sequence[Any] = (),
                  kwargs: Mapping[str, Any] | None = None, name: str | None = None,
                  span: Span | None = None, trainable: bool = True) -> Value:
        """Append a layer applying ``op`` to ``inputs``; return its output Value.

        Looks up the op, parses its arguments, runs its shape rule and creates its
        parameters (``<layer>.<param>``, appended to the node's inputs). Every error is a
        CnncError carrying ``span``.
        """
        opdef = self._lookup(op, span)
        if name is None:
            name = self._auto_name(op)
        self._check_inputs(opdef, name, inputs, span)
        try:
            attrs = parse_attrs(opdef, args, kwargs)
        except SpecError as err:
            raise SpecError(f"{describe_layer(op, name, span)}: {err.message}",
                            span=span, hint=err.hint) from None
        in_types = [v.type for v in inputs]
        out_type, specs = self._apply_rules(opdef, name, span, inputs, attrs)
        self._claim(name, span)
        node = Node(op, list(inputs), attrs, [], name, span, trainable)
        for pname, spec in specs.items():
            param = Value(f"{name}.{pname}", TensorType(spec.shape, in_types[0].dtype),
                          "param" if spec.trainable else "state")
            node.params[pname] = param
            node.inputs.append(param)
            self.params[param.name] = param
            self._values[param.name] = param
        out = Value(name, out_type, "activation", node)
        node.outputs.append(out)
        self.nodes.append(node)
        self._nodes[name] = node
        self._values[name] = out
        return out

    def add_node(self, op: str, inputs: Sequence[Value], attrs: Any,
                 name: str | None = None, span: Span | None = None, *,
                 params: Mapping[str, Value] | None = None,
                 trainable: bool = True) -> Node:
        """Append a node of ``op`` (public or internal) with ready-made ``attrs``.

        No argument parsing: ``attrs`` is already the op's attrs dataclass. ``params`` are
        fresh Values (kind "param"/"state") the node owns, appended to its inputs (used
        when a layer is copied into a compiled graph, so it keeps its parameter names).
        Runs the shape rule; a tuple result makes one output per type, named
        ``<name>:<i>``, a single type one output named ``name``. Raises a located
        ShapeError when the inputs do not fit.
        """
        opdef = get_op(op)
        name = self._unique(name or self._auto_name(op))
        own = dict(params or {})
        for v in inputs:
            if self._values.get(v.name) is not v:
                raise SpecError(f"{describe_layer(op, name, span)}: input '{v.name}' is not "
                                f"a value of graph '{self.name}'", span=span)
        try:
            result = opdef.shape_rule([v.type for v in inputs], attrs)
        except RuleError as err:
            raise shape_error(op, name, span, inputs, err) from None
        self._claim(name, span)
        node = Node(op, list(inputs), attrs, [], name, span, trainable)
        for pname, param in own.items():
            if param.name in self._values:
                raise SpecError(f"name '{param.name}' is already used", span=span)
            node.params[pname] = param
            node.inputs.append(param)
            self.params[param.name] = param
            self._values[param.name] = param
        types = result if isinstance(result, tuple) else (result,)
        for i, out_type in enumerate(types):
            out_name = name if not isinstance(result, tuple) else f"{name}:{i}"
            if out_name != name:
                self._claim(out_name, span)
            out = Value(out_name, out_type, "activation", node)
            node.outputs.append(out)
            self._values[out_name] = out
        self.nodes.append(node)
        self._nodes[name] = node
        return node

    def add_value(self, name: str, type: TensorType, kind: str) -> Value:
        """A free-standing value: kind "input" (data fed per step, e.g. labels; joins
        ``inputs``) or "state" (e.g. an optimizer moment; joins ``states``)."""
        if kind not in ("input", "state"):
            raise ValueError(f"add_value makes inputs or states, not {kind!r}")
        self._claim(name, None)
        value = Value(name, type, kind)
        (self.inputs if kind == "input" else self.states).append(value)
        self._values[name] = value
        return value

    def rename_value(self, value: Value, name: str) -> None:
        """Give an internal node's output ``value`` a new, unused ``name`` (e.g. the final
        gradient of a parameter, so a compiled graph's users find it by name)."""
        if self._values.get(value.name) is not value or value.producer is None:
            raise ValueError(f"'{value.name}' is not a node output of graph '{self.name}'")
        self._claim(name, None)
        del self._values[value.name]
        self._spans.pop(value.name, None)
        value.name = name
        self._values[name] = value

    def has_value(self, name: str) -> bool:
        """Whether a value called ``name`` exists in this graph."""
        return name in self._values

    def set_outputs(self, values: Sequence[Value]) -> None:
        """Mark the graph's outputs (values of this graph)."""
        for v in values:
            if self._values.get(v.name) is not v:
                raise SpecError(f"output '{v.name}' is not a value of graph '{self.name}'")
        self.outputs = list(values)

    # -- queries -------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        """The layer called ``name`` (KeyError if none)."""
        return self._nodes[name]

    def value(self, name: str) -> Value:
        """The input, activation or parameter called ``name`` (KeyError if none)."""
        return self._values[name]

    def consumers(self, value: Value) -> list[Node]:
        """The nodes that take ``value`` as an input, in topological order."""
        return [n for n in self.nodes if any(v is value for v in n.inputs)]

    def infer_shapes(self) -> None:
        """Re-run every shape rule in topological order, updating output and parameter
        types (e.g. after an input's type changed). Raises a located ShapeError."""
        for node in self.nodes:
            opdef = get_op(node.op)
            out_type, specs = self._apply_rules(opdef, node.name, node.span,
                                                node.data_inputs, node.attrs)
            types = out_type if isinstance(out_type, tuple) else (out_type,)
            for out, t in zip(node.outputs, types):
                out.type = t
            if list(specs) != list(node.params):
                raise ShapeError(f"{describe_layer(node.op, node.name, node.span)} now "
                                 f"needs parameters {list(specs)}, not {list(node.params)}",
                                 span=node.span)
            dtype = node.data_inputs[0].type.dtype if node.data_inputs else "float32"
            for pname, spec in specs.items():
                node.params[pname].type = TensorType(spec.shape, dtype)

    # -- helpers -------------------------------------------------------------------------

    def _lookup(self, op: str, span: Span | None) -> OpDef:
        try:
            opdef = get_op(op)
        except SpecError as err:
            raise SpecError(err.message, span=span, hint=err.hint) from None
        if opdef.internal:  # compiler-made ops are not layers
            raise SpecError(f"unknown layer '{op}'", span=span,
                            hint="known layers: " + ", ".join(op_names()))
        return opdef

    def _unique(self, name: str) -> str:
        """``name``, or ``name#k`` with the smallest k making it unused."""
        k = 1
        unique = name
        while unique in self._values or unique in self._nodes:
            k += 1
            unique = f"{name}#{k}"
        return unique

    def _auto_name(self, op: str) -> str:
        """Keras-style ``<op>_<k>``, k counting per op from 1, skipping names in use."""
        k = 1 + sum(1 for n in self.nodes if n.op == op)
        while f"{op}_{k}" in self._values:
            k += 1
        return f"{op}_{k}"

    def _claim(self, name: str, span: Span | None) -> None:
        if not name or "." in name:
            raise SpecError(f"bad name '{name}': names are non-empty and contain no '.'",
                            span=span)
        if name in self._values:
            first = self._spans.get(name)
            raise SpecError(f"name '{name}' is already used{_where(first)}", span=span)
        self._spans[name] = span

    def _check_inputs(self, opdef: OpDef, name: str, inputs: Sequence[Value],
                      span: Span | None) -> None:
        where = describe_layer(opdef.name, name, span)
        if not opdef.arity_ok(len(inputs)):
            raise SpecError(f"{where} takes {opdef.arity_text()}; got {len(inputs)}",
                            span=span)
        for v in inputs:
            if not isinstance(v, Value) or self._values.get(v.name) is not v:
                raise SpecError(f"{where}: input {v!r} is not a value of graph "
                                f"'{self.name}'", span=span)
            if v.kind not in ("input", "activation"):
                raise SpecError(f"{where}: {v.kind} '{v.name}' cannot be a layer input",
                                span=span)

    def _apply_rules(self, opdef: OpDef, name: str, span: Span | None,
                     inputs: Sequence[Value], attrs: Any
                     ) -> tuple[TensorType, dict[str, ParamSpec]]:
        in_types = [v.type for v in inputs]
        try:
            return opdef.shape_rule(in_types, attrs), opdef.param_rule(in_types, attrs)
        except RuleError as err:
            raise shape_error(opdef.name, name, span, inputs, err) from None

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} layers, {len(self.params)} params)"

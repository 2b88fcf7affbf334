"""AST -> Graph: evaluates expressions, instantiates blocks, unrolls repeats and conditionals,
and adds every layer through :meth:`cnnc.ir.Graph.add_layer`.

Semantics (the README shows them by example):

* A body is a list of statements; each continues from the previous statement's result
  (the network's input, or a block's input ``in``, at first). ``name = chain`` also binds
  the result to ``name``; a chain that starts with a tensor name continues from that tensor.
* A layer call whose positional arguments include tensors takes those tensors as its
  inputs (``add(a, b)``); otherwise it takes the current tensor.
* Braces open a scope: names bound inside ``{ }`` are not visible after it.
* Nothing here recurses without a bound: bodies and blocks nest at most MAX_NEST deep,
  a block cannot instantiate itself, and repeats and layers are counted.
"""
from __future__ import annotations

import difflib
import operator
from dataclasses import dataclass
from typing import Any

import cnnc.ops  # noqa: F401  (registers the ops)
from cnnc.dsl import ast
from cnnc.dsl.program import Program
from cnnc.dsl.spaces import SpaceValue, resolve
from cnnc.errors import CnncError, Span, SpecError
from cnnc.ir import Graph
from cnnc.ir.types import Value
from cnnc.ops.registry import op_names

MAX_LAYERS = 10_000      # several times the deepest real network; stops runaway repeats
MAX_STEPS = 200_000      # chain elements and repeat rounds evaluated, layers or not
MAX_NEST = 60            # bodies and block instances inside each other
MAX_INT = 2 ** 40        # integers beyond this are not sizes of any network
INPUT_NAME = "in"        # a block's input tensor
_META_ARGS = ("name", "trainable")

_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "//": operator.floordiv, "%": operator.mod}
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}
_TENSOR_FUNCS = {"channels": 1, "height": 2, "width": 3}


class Scope:
    """Names visible in a body: parameters and tensors, with a parent scope."""

    def __init__(self, parent: Scope | None = None):
        self.parent = parent
        self.names: dict[str, Any] = {}

    def lookup(self, name: str) -> tuple[bool, Any]:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.names:
                return True, scope.names[name]
            scope = scope.parent
        return False, None

    def visible(self) -> list[str]:
        names: list[str] = []
        scope: Scope | None = self
        while scope is not None:
            names.extend(scope.names)
            scope = scope.parent
        return names


@dataclass
class _Frame:
    """The block instance being elaborated (or the top level)."""

    prefix: str = ""          # "basic_3/" for names given inside the 3rd basic instance
    trainable: bool = True


@dataclass
class Elaboration:
    """The result: the graph, the resolved search spaces, the ``--set`` names used, and
    the global scope with its evaluator (the train section's values are read in it)."""

    graph: Graph
    spaces: dict[str, SpaceValue]
    used_overrides: set[str]
    globals: Scope
    evaluator: Elaborator


def _describe(v: Any) -> str:
    if isinstance(v, Value):
        return f"the tensor '{v.name}' {v.type}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, tuple):
        return "[" + ", ".join(_describe(x) for x in v) + "]"
    return repr(v)


def _nearest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Elaborator:
    """Turns a :class:`Program` into a Graph; one instance per elaboration."""

    def __init__(self, program: Program, overrides: dict[str, Any] | None = None):
        self.program = program
        self.overrides = dict(overrides or {})
        self.used_overrides: set[str] = set()
        self.spaces: dict[str, SpaceValue] = {}
        self.graph = Graph(program.name or "network")
        self.globals = Scope()
        self.stack: list[str] = []          # block names being instantiated
        self.instances: dict[str, int] = {}
        self.steps = 0
        self.nest = 0
        self.frame = _Frame()
        self.op_counts: dict[str, int] = {}
        self.taken: set[str] = {decl.name for decl in program.inputs}

    # ---- top level

    def run(self) -> Elaboration:
        self._params()
        top = Scope(self.globals)
        current = self._inputs(top)
        layers = self.program.layers
        assert layers is not None
        out = self.body(layers.body, top, current)
        if out is None or out.kind == "input":
            raise SpecError("`layers` adds no layer", layers.span)
        self.graph.set_outputs([out])
        return Elaboration(self.graph, self.spaces, self.used_overrides, self.globals, self)

    def _params(self) -> None:
        """Evaluate the ``param``s in order; ``--set`` may replace any of them."""
        for decl in self.program.params.values():
            value = self.evaluate(decl.value, self.globals)
            if decl.name in self.overrides and not isinstance(decl.value, ast.Space):
                self.used_overrides.add(decl.name)
                self.spaces[decl.name] = SpaceValue(decl.name, self.overrides[decl.name],
                                                    _describe(value), True)
                value = self.overrides[decl.name]
            self.globals.names[decl.name] = value

    def _inputs(self, top: Scope) -> Value | None:
        """Add the inputs; the first chain starts from the input when there is one."""
        for decl in self.program.inputs:
            shape = self.evaluate(decl.shape, top)
            if not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20
                       for d in shape):
                raise SpecError(f"input '{decl.name}' needs a shape of positive integers, "
                                f"[C, H, W]; got {_describe(shape)}", decl.shape.span)
            top.names[decl.name] = self.graph.add_input(decl.name, shape, decl.span)
        if len(self.program.inputs) == 1:
            return top.names[self.program.inputs[0].name]
        return None  # with several inputs, each chain says which one it starts from

    # ---- bodies and chains

    def body(self, body: ast.Body, parent: Scope, current: Value | None) -> Value | None:
        self._enter(body.span)
        try:
            scope = Scope(parent)
            for stmt in body.stmts:
                if isinstance(stmt, ast.Bind):
                    if stmt.name == INPUT_NAME:
                        raise SpecError(f"'{INPUT_NAME}' is the block's input; bind "
                                        "another name", stmt.span)
                    current = self.chain(stmt.chain, scope, current)
                    scope.names[stmt.name] = current
                else:
                    current = self.chain(stmt, scope, current)
            return current
        finally:
            self.nest -= 1

    def _enter(self, span: Span) -> None:
        self.nest += 1
        if self.nest > MAX_NEST:
            raise SpecError(f"blocks and braces nest more than {MAX_NEST} deep", span)

    def chain(self, chain: ast.Chain, scope: Scope, current: Value | None) -> Value | None:
        for i, el in enumerate(chain.elements):
            self._step(el.span)
            if isinstance(el, ast.Name):
                found, value = scope.lookup(el.id)
                if found and isinstance(value, Value):
                    if i > 0:
                        raise SpecError(f"the tensor name '{el.id}' can only start a chain",
                                        el.span, hint="start a new line with it, or pass it "
                                        f"as an argument: add({el.id}, ...)")
                    current = value
                    continue
                if not found and el.id == INPUT_NAME:
                    raise SpecError(f"'{INPUT_NAME}' (a block's input) is only defined "
                                    "inside a block", el.span)
                if found and el.id not in self.program.blocks and not _is_op(el.id):
                    raise SpecError(f"'{el.id}' is {_describe(value)}, not a layer", el.span)
                current = self.apply(ast.Call(el.id, (), span=el.span), scope, current)
            elif isinstance(el, ast.Call):
                current = self.apply(el, scope, current)
            elif isinstance(el, ast.Repeat):
                current = self.repeat(el, scope, current)
            elif isinstance(el, ast.If):
                current = self.branch(el, scope, current)
            else:
                assert isinstance(el, ast.Group)
                current = self.body(el.body, scope, current)
        return current

    def _step(self, span: Span) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SpecError(f"the network takes more than {MAX_STEPS} steps to build; "
                            "is a repeat count far too large?", span)

    def repeat(self, node: ast.Repeat, scope: Scope, current: Value | None) -> Value | None:
        n = self.evaluate(node.count, scope)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise SpecError(f"repeat needs a count >= 0; got {_describe(n)}", node.count.span)
        if n > MAX_LAYERS:
            raise SpecError(f"repeat {n} is more than the {MAX_LAYERS} layers a network "
                            "may have", node.count.span)
        for _ in range(n):
            self._step(node.span)
            current = self.body(node.body, scope, current)
        return current

    def branch(self, node: ast.If, scope: Scope, current: Value | None) -> Value | None:
        while True:
            cond = self.evaluate(node.cond, scope)
            if not isinstance(cond, bool):
                raise SpecError(f"`if` needs true or false; got {_describe(cond)}",
                                node.cond.span, hint="compare it: if x != 1 { ... }")
            if cond:
                return self.body(node.then, scope, current)
            if node.orelse is None:
                return current
            if isinstance(node.orelse, ast.Body):
                return self.body(node.orelse, scope, current)
            node = node.orelse

    # ---- layers and blocks

    def apply(self, call: ast.Call, scope: Scope, current: Value | None) -> Value:
        """A layer or block call in a chain."""
        block = self.program.blocks.get(call.name)
        if block is None and not _is_op(call.name):
            known = op_names() + list(self.program.blocks)
            raise SpecError(f"unknown layer or block '{call.name}'"
                            f"{_nearest(call.name, known)}", call.span,
                            hint="layers: " + ", ".join(op_names()) + (
                                "; blocks: " + ", ".join(self.program.blocks)
                                if self.program.blocks else ""))
        tensors, args, kwargs, meta, symbols = self._arguments(call, scope, block is None)
        trainable = self.frame.trainable and meta.get("trainable", True)
        if block is not None:
            return self.instantiate(block, call, args, kwargs, current, meta, trainable)
        inputs = tensors or ([current] if current is not None else [])
        if not inputs:
            raise SpecError(f"{call.name} has no input: this chain does not start from a "
                            "tensor", call.span, hint=self._inputs_hint())
        if len(self.graph.nodes) >= MAX_LAYERS:
            raise SpecError(f"the network has more than {MAX_LAYERS} layers", call.span)
        name = meta.get("name")
        name = self.frame.prefix + name if name is not None else self._auto_name(call.name)
        try:
            out = self.graph.add_layer(call.name, inputs, args, kwargs, name=name,
                                       span=call.span, trainable=trainable)
            self.taken.add(name)
            return out
        except CnncError as err:
            err.span = _argument_span(err, call) or err.span or call.span
            if symbols and err.hint is None:
                err.hint = self._symbol_hint(symbols, err.message, scope)
            raise

    def _arguments(self, call: ast.Call, scope: Scope, layer: bool) -> tuple[
            list[Value], list[Any], dict[str, Any], dict[str, Any], list[str]]:
        """A call's arguments, evaluated and sorted: tensor inputs (of a layer), positional
        values, keyword values, the DSL's own ``name``/``trainable``, and the symbols used."""
        tensors: list[Value] = []
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        symbols: list[str] = []
        for arg in call.args:
            if arg.name is None:  # positional: tensors and numbers; no symbols
                if kwargs or meta:
                    raise SpecError("a positional argument cannot follow a keyword "
                                    "argument", arg.span)
                value = self.evaluate(arg.value, scope)
                (tensors if isinstance(value, Value) and layer else args).append(value)
                continue
            value = self.argument(arg.value, scope, symbols)
            if arg.name in _META_ARGS:
                meta[arg.name] = self._meta(arg, value)
            elif arg.name in kwargs:
                raise SpecError(f"argument '{arg.name}' is given twice", arg.span)
            elif isinstance(value, Value) and layer:
                raise SpecError(f"argument '{arg.name}' of {call.name} cannot be a tensor",
                                arg.span)
            else:
                kwargs[arg.name] = value
        return tensors, args, kwargs, meta, symbols

    def _auto_name(self, op: str) -> str:
        """Keras-style ``<op>_<k>``, counted here per op (in constant time)."""
        k = self.op_counts.get(op, 0)
        while True:
            k += 1
            name = f"{op}_{k}"
            if name not in self.taken:
                break
        self.op_counts[op] = k
        return name

    def _inputs_hint(self) -> str:
        names = ", ".join(i.name for i in self.program.inputs)
        return f"start the line with a tensor name, e.g. one of the inputs: {names}"

    def _symbol_hint(self, symbols: list[str], message: str, scope: Scope) -> str | None:
        for s in symbols:
            if f"'{s}'" in message:
                return f"'{s}' is not a defined name here{_nearest(s, scope.visible())}"
        return None

    def _meta(self, arg: ast.Arg, value: Any) -> Any:
        if arg.name == "trainable" and not isinstance(value, bool):
            raise SpecError(f"trainable expects true or false; got {_describe(value)}",
                            arg.value.span)
        if arg.name == "name" and not (isinstance(value, str) and value.isidentifier()):
            raise SpecError(f"name expects a string like \"conv1\"; got {_describe(value)}",
                            arg.value.span)
        return value

    def instantiate(self, block: ast.BlockDef, call: ast.Call, args: list[Any],
                    kwargs: dict[str, Any], current: Value | None, meta: dict[str, Any],
                    trainable: bool) -> Value | None:
        if block.name in self.stack:
            path = " -> ".join(self.stack[self.stack.index(block.name):] + [block.name])
            raise SpecError(f"block '{block.name}' instantiates itself ({path})", call.span)
        formals = [f.name for f in block.formals]
        if len(args) > len(formals):
            raise SpecError(f"block {block.name} takes {len(formals)} argument"
                            f"{'' if len(formals) == 1 else 's'} ({', '.join(formals)}); "
                            f"got {len(args)}", call.span)
        scope = Scope(self.globals)
        given = dict(zip(formals, args))
        for key, value in kwargs.items():
            if key not in formals:
                raise SpecError(f"block {block.name} has no argument '{key}'"
                                f"{_nearest(key, formals)}", call.span,
                                hint=f"{block.name} takes {', '.join(formals) or 'nothing'}")
            if key in given:
                raise SpecError(f"argument '{key}' of block {block.name} is given twice",
                                call.span)
            given[key] = value
        if current is not None:
            scope.names[INPUT_NAME] = current
        for f in block.formals:
            if f.name in given:
                scope.names[f.name] = given[f.name]
            elif f.default is not None:
                scope.names[f.name] = self.evaluate(f.default, scope)
            else:
                raise SpecError(f"block {block.name} needs argument '{f.name}'", call.span,
                                hint=f"{block.name} takes {', '.join(formals)}")
        k = self.instances[block.name] = self.instances.get(block.name, 0) + 1
        label = meta.get("name", f"{block.name}_{k}")
        outer = self.frame
        self.frame = _Frame(f"{outer.prefix}{label}/", trainable)
        self.stack.append(block.name)
        self._enter(call.span)
        try:
            return self.body(block.body, scope, current)
        finally:
            self.nest -= 1
            self.stack.pop()
            self.frame = outer

    # ---- expressions

    def argument(self, node: ast.Node, scope: Scope, symbols: list[str]) -> Any:
        """A keyword argument: an expression, where a bare unknown name is a symbol
        (``padding=same``), passed on as a string."""
        if isinstance(node, ast.Name):
            found, value = scope.lookup(node.id)
            if not found:
                symbols.append(node.id)
                return node.id
            return value
        return self.evaluate(node, scope)

    def evaluate(self, node: ast.Node, scope: Scope) -> Any:
        """The value of an expression (recursion bounded by the parser's MAX_DEPTH)."""
        if isinstance(node, ast.Literal):
            return node.value
        if isinstance(node, ast.Name):
            found, value = scope.lookup(node.id)
            if not found:
                raise SpecError(f"unknown name '{node.id}'"
                                f"{_nearest(node.id, scope.visible())}", node.span)
            return value
        if isinstance(node, ast.ListExpr):
            return tuple(self.evaluate(x, scope) for x in node.items)
        if isinstance(node, ast.UnaryOp):
            v = self.evaluate(node.operand, scope)
            if node.op == "not":
                return not self._bool(v, node)
            if not _is_number(v):
                raise SpecError(f"cannot negate {_describe(v)}", node.span)
            return -v
        if isinstance(node, ast.BinOp):
            return self.binop(node, scope)
        if isinstance(node, ast.Space):
            return self.space(node, scope)
        if isinstance(node, ast.Call):
            return self.function(node, scope)
        raise SpecError("a chain of layers cannot be used as a value here", node.span)

    def _bool(self, v: Any, node: ast.Node) -> bool:
        if not isinstance(v, bool):
            raise SpecError(f"`{node.op}` needs true or false; got {_describe(v)}", node.span)
        return v

    def binop(self, node: ast.BinOp, scope: Scope) -> Any:
        left = self.evaluate(node.left, scope)
        if node.op in ("and", "or"):  # short-circuit, as a reader expects
            if self._bool(left, node) == (node.op == "or"):
                return left
            return self._bool(self.evaluate(node.right, scope), node)
        right = self.evaluate(node.right, scope)
        if node.op in ("==", "!="):
            return _COMPARE[node.op](left, right)
        if not (_is_number(left) and _is_number(right)):
            raise SpecError(f"`{node.op}` needs two numbers; got {_describe(left)} and "
                            f"{_describe(right)}", node.span)
        if node.op in _COMPARE:
            return _COMPARE[node.op](left, right)
        if node.op in ("/", "//", "%") and right == 0:
            raise SpecError("division by zero", node.span)
        result = _ARITH[node.op](left, right)
        if isinstance(result, int) and abs(result) > MAX_INT:
            raise SpecError(f"{result} is too large a number for a network", node.span)
        return result

    def space(self, node: ast.Space, scope: Scope) -> Any:
        args = [self.evaluate(a.value, scope) for a in node.args if a.name is None]
        kwargs = {a.name: self.evaluate(a.value, scope) for a in node.args if a.name}
        has = node.name in self.overrides
        if has:
            self.used_overrides.add(node.name)
        resolved = resolve(node, args, kwargs, node.name, self.overrides.get(node.name), has)
        self.spaces.setdefault(node.name, resolved)
        return resolved.value

    def function(self, node: ast.Call, scope: Scope) -> Any:
        if node.name in _TENSOR_FUNCS:
            if len(node.args) != 1 or node.args[0].name is not None:
                raise SpecError(f"{node.name} takes one tensor: {node.name}(x)", node.span)
            t = self.evaluate(node.args[0].value, scope)
            if not isinstance(t, Value):
                raise SpecError(f"{node.name} needs a tensor; got {_describe(t)}",
                                node.args[0].span)
            axis = _TENSOR_FUNCS[node.name]
            if len(t.type.shape) <= axis:
                raise SpecError(f"{node.name} needs a tensor [N, C, H, W]; got {t.type}",
                                node.span)
            return int(t.type.shape[axis])
        if node.name in ("min", "max") and node.args and all(a.name is None for a in node.args):
            values = [self.evaluate(a.value, scope) for a in node.args]
            if not all(_is_number(v) for v in values):
                raise SpecError(f"{node.name} needs numbers", node.span)
            return (min if node.name == "min" else max)(values)
        if _is_op(node.name) or node.name in self.program.blocks:
            raise SpecError(f"the layer '{node.name}' cannot be used as a value", node.span,
                            hint="bind its chain to a name first: x = "
                            f"{node.name}(...), then use x")
        known = list(_TENSOR_FUNCS) + ["min", "max", "choice", "range", "uniform",
                                       "loguniform"]
        raise SpecError(f"unknown function '{node.name}'{_nearest(node.name, known)}",
                        node.span, hint="functions: " + ", ".join(known))


def _argument_span(err: CnncError, call: ast.Call) -> Span | None:
    """The span of the argument an error from the graph names ("argument 'kernl' ..."),
    so the caret points at it rather than at the layer."""
    for arg in call.args:
        if arg.name and (f"argument '{arg.name}'" in err.message):
            return arg.span
    return None


def _is_op(name: str) -> bool:
    return name in _OPS


_OPS = frozenset(op_names())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def spaces_in(program: Program) -> list[ast.Space]:
    """Every search space written in the network part of the program, found iteratively."""
    found: list[ast.Space] = []
    todo: list[Any] = list(program.params.values()) + list(program.blocks.values())
    todo += [program.layers] if program.layers else []
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Space):
            found.append(node)
        if isinstance(node, ast.Node):
            todo.extend(getattr(node, f) for f in node.__dataclass_fields__
                        if f not in ("span", "depth"))
        elif isinstance(node, tuple):
            todo.extend(node)
    return found


def elaborate(program: Program, overrides: dict[str, Any] | None = None) -> Elaboration:
    """Build the Graph that ``program`` describes; ``overrides`` are ``--set`` values."""
    return Elaborator(program, overrides).run()

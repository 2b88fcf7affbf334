"""The IR verifier: checks that a graph is well formed, independently of how it was built
or rewritten (run it after every pass in tests)."""
from __future__ import annotations

from cnnc.errors import CnncError
from cnnc.ir.graph import Graph
from cnnc.ir.types import DTYPES, INDEX_DTYPES, VALUE_KINDS, Node, Value
from cnnc.ops.registry import get_op


class VerifyError(CnncError):
    """The graph breaks an IR invariant (a bug in whatever built or rewrote it)."""


def _fail(node: Node | None, message: str) -> VerifyError:
    where = f"layer '{node.name}' ({node.op}): " if node is not None else ""
    return VerifyError(f"invalid graph: {where}{message}",
                       span=node.span if node is not None else None)


def verify(graph: Graph) -> None:
    """Raise VerifyError unless: names are unique; every value has a known kind and dtype;
    every node's op is registered, gets the right number of data inputs of one dtype, and
    reads only graph inputs, its own parameters, or values produced earlier; its stored
    output and parameter types equal what its rules recompute; the outputs are set and
    belong to the graph. Internal ops (gradients, losses, updates) may read values of any
    kind and dtype and have any number of outputs, as their shape rule says; free-standing
    states (``graph.states``) count as available from the start."""
    available: set[int] = set()
    names: set[str] = set()

    def claim(value: Value, node: Node | None) -> None:
        if value.name in names:
            raise _fail(node, f"value name '{value.name}' is used twice")
        if value.kind not in VALUE_KINDS or value.type.dtype not in DTYPES + INDEX_DTYPES:
            raise _fail(node, f"value '{value.name}' has kind {value.kind!r} and dtype "
                              f"{value.type.dtype!r}")
        names.add(value.name)
        available.add(id(value))

    for value in graph.inputs:
        if value.kind != "input" or value.producer is not None:
            raise _fail(None, f"graph input '{value.name}' is a {value.kind} value")
        claim(value, None)
    for value in graph.states:
        if value.kind != "state" or value.producer is not None:
            raise _fail(None, f"free-standing state '{value.name}' is a {value.kind} value")
        claim(value, None)
    node_names: set[str] = set()
    for node in graph.nodes:
        _verify_node(node, available, node_names)
        for param in node.params.values():
            claim(param, node)
        for out in node.outputs:
            claim(out, node)
    if not graph.outputs:
        raise _fail(None, "no outputs are set")
    for value in graph.outputs:
        if id(value) not in available:
            raise _fail(None, f"output '{value.name}' is not produced in the graph")
    own = {id(p) for n in graph.nodes for p in n.params.values()}
    if ({id(v) for v in graph.params.values()} != own or len(graph.params) != len(own)
            or any(key != v.name for key, v in graph.params.items())):
        raise _fail(None, "graph.params does not match the layers' parameters")


def _verify_node(node: Node, available: set[int],
                 node_names: set[str]) -> None:
    """Check one node against the values available before it."""
    if node.name in node_names:
        raise _fail(node, "layer name is used twice")
    node_names.add(node.name)
    try:
        opdef = get_op(node.op)
    except CnncError as err:
        raise _fail(node, err.message) from None
    data = node.data_inputs
    if not opdef.arity_ok(len(data)):
        raise _fail(node, f"takes {opdef.arity_text()}; has {len(data)}")
    if node.inputs[len(data):] != list(node.params.values()):
        raise _fail(node, "parameters must follow the data inputs, in order")
    for value in data:
        if value.kind not in ("input", "activation") and not opdef.internal:
            raise _fail(node, f"data input '{value.name}' is a {value.kind}")
        if id(value) not in available:
            raise _fail(node, f"input '{value.name}' is not produced before this layer "
                              "(graph not in topological order?)")
    dtypes = {v.type.dtype for v in node.inputs}
    if len(dtypes) != 1 and not opdef.internal:
        raise _fail(node, f"mixes dtypes {sorted(dtypes)}")
    in_types = [v.type for v in data]
    try:
        expected = opdef.shape_rule(in_types, node.attrs)
    except CnncError as err:
        raise _fail(node, f"its inputs no longer fit: {err.message}") from None
    types = expected if isinstance(expected, tuple) else (expected,)
    if len(node.outputs) != len(types) or any(v.producer is not node for v in node.outputs):
        raise _fail(node, f"must have {len(types)} output(s) whose producer is the node")
    for out, t in zip(node.outputs, types):
        if out.type != t:
            raise _fail(node, f"stored output type {out.type} of '{out.name}' differs "
                              f"from the inferred {t}")
    specs = opdef.param_rule(in_types, node.attrs)
    if list(specs) != list(node.params):
        raise _fail(node, f"has parameters {list(node.params)}; its op defines {list(specs)}")
    for pname, spec in specs.items():
        param = node.params[pname]
        kind = "param" if spec.trainable else "state"
        if (param.name != f"{node.name}.{pname}" or param.kind != kind
                or param.type.shape != spec.shape or param.producer is not None):
            raise _fail(node, f"parameter '{param.name}' ({param.kind}, {param.type}) "
                              f"should be '{node.name}.{pname}' ({kind}, {list(spec.shape)})")

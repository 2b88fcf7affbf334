"""The op registry and the op families; importing this package registers every op."""
from cnnc.ops.registry import (OpDef, ParamSpec, RuleError, get_op, op_names,
                               register_op)
from cnnc.ops.attrs import describe_attrs, parse_attrs
from cnnc.ops import (activation, conv, dense, dropout, loss, merge, norm,  # noqa: F401
                      optim, pool, reshape, upsample)

__all__ = ["OpDef", "ParamSpec", "RuleError", "describe_attrs", "get_op", "op_names",
           "parse_attrs", "register_op"]

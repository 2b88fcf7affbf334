"""The typed pieces of a graph: tensor types, values and nodes.

Activations are NCHW (dense: NC) and their first axis is the batch, symbolic ("N") until a
plan is made for a concrete batch size; parameters have concrete shapes (conv weights
OIHW, dense weights [in, out]).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnc.errors import Span

BATCH = "N"
DTYPES = ("float32", "float64")
# Integer tensors exist only inside compiled graphs: class labels, max-pool indices.
INDEX_DTYPES = ("int32", "int64")
VALUE_KINDS = ("input", "param", "state", "activation")

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    """A tensor's shape and dtype; ``shape[0]`` is "N" (the batch) for activations."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        for i, d in enumerate(self.shape):
            ok = d == BATCH if isinstance(d, str) else isinstance(d, int) and d >= 0
            if not ok or (isinstance(d, str) and i != 0):
                raise ValueError(f"bad dimension {d!r} at axis {i} of {self.shape}")
        if self.dtype not in DTYPES + INDEX_DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; expected one of "
                             f"{DTYPES + INDEX_DTYPES}")

    def __str__(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"

    @property
    def rank(self) -> int:
        """The number of axes, batch included."""
        return len(self.shape)

    @property
    def batched(self) -> bool:
        """Whether the first axis is the symbolic batch."""
        return bool(self.shape) and self.shape[0] == BATCH

    def with_batch(self, n: int) -> TensorType:
        """This type with the symbolic batch replaced by ``n`` (unchanged if not batched)."""
        if not self.batched:
            return self
        return TensorType((n,) + self.shape[1:], self.dtype)

    def numel(self, batch: int = 1) -> int:
        """Number of elements, counting the symbolic batch as ``batch``."""
        n = 1
        for d in self.shape:
            n *= batch if d == BATCH else int(d)
        return n


@dataclass(eq=False)
class Value:
    """A tensor in the graph. ``kind`` is "input", "param" (trained), "state" (updated
    outside the gradient step, e.g. running statistics) or "activation"; ``producer`` is
    the node computing it (None for inputs, params and state); ``span`` locates an
    input's declaration. ``alias_of`` (set by the in-place pass) names the value whose
    buffer this one shares."""

    name: str
    type: TensorType
    kind: str
    producer: Node | None = None
    span: Span | None = None
    alias_of: Value | None = None

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type}, {self.kind})"


@dataclass(eq=False)
class Node:
    """One layer: ``op`` applied to ``inputs`` (data inputs first, then its parameters as
    Values of kind "param"/"state") with frozen ``attrs``, producing ``outputs``.

    ``span`` points back into the .cnn text; ``trainable=False`` freezes the layer's
    parameters (they stay kind "param" but are not trained and count as non-trainable).
    """

    op: str
    inputs: list[Value]
    attrs: Any
    outputs: list[Value]
    name: str
    span: Span | None = None
    trainable: bool = True
    params: dict[str, Value] = field(default_factory=dict)

    @property
    def data_inputs(self) -> list[Value]:
        """The inputs that are not this layer's own parameters or state."""
        own = set(map(id, self.params.values()))
        return [v for v in self.inputs if id(v) not in own]

    @property
    def output(self) -> Value:
        """The single output of a one-output node."""
        if len(self.outputs) != 1:
            raise ValueError(f"node {self.name!r} has {len(self.outputs)} outputs")
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op})"

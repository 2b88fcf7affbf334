"""The executor: a compiled :class:`Plan` is a flat list of kernel calls bound to views of
one arena, built once per (graph, batch size) and run as many times as wanted.

Building a plan: schedule the graph (``cnnc.passes.schedule``), turn every intermediate
tensor into a usage record over the schedule (an activation lives from its producer's step
to its last reader's; a value aliasing another, marked by the in-place pass, shares its
source's record), place them in one aligned arena with :func:`cnnc.memory.plan_memory`,
make a numpy view per value, and ask each op to bind its kernel to those views
(``OpDef.kernel``). Kernel workspaces live only during their op's call and the ops run one
at a time, so all of them are views of the start of one scratch buffer, the size of the
largest; in it each worker thread's part sits at one fixed stride (``worker_stride``, the
most any op's worker needs), so that a thread finds its scratch where it left it in the op
before, in its own core's caches. (Placed by the planner among the activations, each
workspace came from memory, last written by either thread: ResNet-20's 16x16 forward
convs ran 0.71 ms in a two-thread step against 0.58 called again at once.) Running a
plan calls the bound kernels in order: no lookups, no allocation of arrays. The conv, pool
and GEMM kernels check their arguments once, when bound (``bind=True`` returns the
validated call), so their calls in a step skip the checks (5-20 us each).

Buffers outside the arena: parameters, layer state and optimizer state come from the caller
(``storage``: the Model keeps them in flat buffers that outlive plans); the plan's inputs
(network input, labels) get a buffer each, filled by the caller before a run; the graph's
outputs (the loss, persisted gradients, predictions) live together in one contiguous
output buffer, so they stay readable after the step.

``planned=False`` gives every record and every workspace its own bytes (no reuse): the
reference for the planner-on/off bitwise test.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from cnnc.errors import CnncError
from cnnc.ir.graph import Graph
from cnnc.ir.types import Node, Value
from cnnc.memory import MemoryPlan, UsageRecord, lower_bound, plan_memory
from cnnc.ops.registry import get_op
from cnnc.passes.fold import fold_into
from cnnc.passes.schedule import schedule
from cnnc.threads import get_num_threads

ALIGNMENT = 64


def aligned_empty(nbytes: int, alignment: int = ALIGNMENT, zeros: bool = False
                  ) -> np.ndarray:
    """A uint8 buffer of ``nbytes`` whose data starts on ``alignment``: uninitialised, or
    zero-filled (by the allocator: pages are committed only when written)."""
    raw = (np.zeros if zeros else np.empty)(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + nbytes]


def view(buffer: np.ndarray, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The array of ``shape`` and ``dtype`` at byte ``offset`` of ``buffer``."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def alias_root(value: Value) -> Value:
    """The value owning ``value``'s buffer (itself unless it aliases another)."""
    while value.alias_of is not None:
        value = value.alias_of
    return value


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


@dataclass(frozen=True)
class Step:
    """One entry of a plan, for inspection: the node, and where its outputs live
    (``(value name, "arena" | "output" | "alias", byte offset, bytes)``)."""

    index: int
    node: str
    op: str
    outputs: tuple[tuple[str, str, int, int], ...]
    workspace_bytes: int


class BindContext:
    """What an op's ``kernel(node, ctx)`` binds to: arrays of values, workspaces, and the
    shared run-time scalars (thread count, step counter, learning rate, mode)."""

    def __init__(self, plan: Plan, counter: np.ndarray, lr: np.ndarray, mode: str):
        self._plan = plan
        self.n_threads = get_num_threads()
        self.worker_stride = plan.worker_stride
        self.counter = counter
        self.lr = lr
        self.mode = mode

    def array(self, value: Value) -> np.ndarray:
        """The numpy view holding ``value`` for this plan's batch size."""
        return self._plan.array(value)

    def workspace(self, node: Node) -> np.ndarray | None:
        """The node's scratch (1-D, of its first input's dtype), or None; its worker
        threads' parts ``worker_stride`` bytes apart where its kernel takes that."""
        return self._plan.workspaces.get(node.name)

    def on_params_changed(self, call: Callable[[], None]) -> None:
        """Run ``call`` before the first step after the parameters may have changed (with
        the folds, see :meth:`Plan.run`): for what a kernel derives from them and keeps."""
        self._plan.folds.append(call)


class Plan:
    """A graph compiled for one batch size: schedule, memory plan, bound kernel calls.

    Parameters
    ----------
    graph : the (compiled) graph to run.
    batch : the concrete batch size.
    storage : arrays of every "param" and "state" value, by name (kept by the caller).
    counter : 1-element int64 array, the step count the kernels read (dropout, Adam).
    lr : 1-element float64 array, the optimizer's current learning rate.
    mode : "train" or "infer" (informative; the graph already says what runs).
    planned : place records with the memory planner (False: each its own bytes).
    """

    def __init__(self, graph: Graph, batch: int, storage: Mapping[str, np.ndarray],
                 counter: np.ndarray, lr: np.ndarray, mode: str = "train",
                 planned: bool = True):
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch size must be a positive int, got {batch!r}")
        self.graph = graph
        self.batch = batch
        self.mode = mode
        self.planned = planned
        self.order: list[Node] = schedule(graph, batch=batch)
        self._storage = storage
        self._arrays: dict[int, np.ndarray] = {}
        self.inputs = {v.name: np.zeros(self.shape(v), v.type.dtype) for v in graph.inputs}
        self._bind_outputs()
        self._place(planned)
        ctx = BindContext(self, counter, lr, mode)
        self.folds = self._bind_folds()
        self._folded: object = None  # the version the folded weights were last made at
        self.calls: list[Callable[[], None]] = []
        for node in self.order:
            kernel = get_op(node.op).kernel
            if kernel is None:
                raise CnncError(f"op '{node.op}' of '{node.name}' has no kernel",
                                span=node.span)
            call = kernel(node, ctx)
            if call is not None:
                self.calls.append(call)

    # -- building ------------------------------------------------------------------------

    def shape(self, value: Value) -> tuple[int, ...]:
        """``value``'s concrete shape at this plan's batch size."""
        return tuple(int(d) for d in value.type.with_batch(self.batch).shape)

    def nbytes(self, value: Value) -> int:
        """Bytes of ``value`` at this plan's batch size."""
        return int(np.prod(self.shape(value), dtype=np.int64)) * \
            np.dtype(value.type.dtype).itemsize

    def _bind_outputs(self) -> None:
        """One contiguous buffer for every graph output (aligned slots, in order)."""
        outs = list({id(v): v for v in self.graph.outputs}.values())
        offsets, total = [], 0
        for v in outs:
            offsets.append(total)
            total += _aligned(self.nbytes(v))
        self.output_buffer = aligned_empty(total)
        self.output_bytes = total
        self.output_offsets = {v.name: off for v, off in zip(outs, offsets)}
        for v, off in zip(outs, offsets):
            self._arrays[id(v)] = view(self.output_buffer, off, self.shape(v), v.type.dtype)

    def _bind_folds(self) -> list[Callable[[], None]]:
        """Buffers for the parameters the fold pass computes from others (batchnorm
        folded into a conv), and the calls recomputing them from the live sources (see
        cnnc.passes.fold and :meth:`run`)."""
        folds: dict[Any, dict[str, Value]] = {}
        for node in self.order:
            for v in node.params.values():
                if getattr(v, "fold", None) is not None:
                    folds.setdefault(v.fold, {})[v.role] = v
        calls = []
        for fold, roles in folds.items():
            w, b = roles["weight"], roles["bias"]
            arrays = [np.empty(self.shape(v), v.type.dtype) for v in (w, b, b)]
            self._arrays[id(w)], self._arrays[id(b)] = arrays[0], arrays[1]
            calls.append(partial(fold_into, fold, self._storage, *arrays))
        return calls

    def _records(self) -> tuple[list[UsageRecord], list[Value]]:
        """Usage records of the arena's tenants, the activation roots."""
        pos = {id(n): i for i, n in enumerate(self.order)}
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        roots: dict[int, Value] = {}
        for node in self.order:
            step = pos[id(node)]
            for v in node.inputs:
                root = alias_root(v)
                if id(root) in first:
                    last[id(root)] = max(last[id(root)], step)
            for v in node.outputs:
                root = alias_root(v)
                if id(root) in self._arrays or root.producer is None:
                    continue  # graph outputs have their own buffer
                roots[id(root)] = root
                first.setdefault(id(root), pos[id(root.producer)])
                last[id(root)] = max(last.get(id(root), step), step)
        records = [UsageRecord(first[key], last[key], self.nbytes(root), root.name)
                   for key, root in roots.items()]
        return records, list(roots.values())

    def _place(self, planned: bool) -> None:
        records, tenants = self._records()
        if planned:
            self.memory = plan_memory(records, alignment=ALIGNMENT)
        else:
            self.memory = _unplanned(records)
        self.records = records
        self.arena = aligned_empty(max(self.memory.arena_bytes, 1))
        self.offsets: dict[str, int] = {}
        for record, tenant, offset in zip(records, tenants, self.memory.offsets):
            self.offsets[record.name] = offset
            self._arrays[id(tenant)] = view(self.arena, offset, self.shape(tenant),
                                            tenant.type.dtype)
        self._place_workspaces(planned)

    def _place_workspaces(self, planned: bool) -> None:
        """Each node's workspace: a view of the start of one shared scratch buffer (or,
        unplanned, a buffer of its own), its workers' parts worker_stride bytes apart."""
        self.worker_stride = _aligned(max(
            (get_op(n.op).worker_scratch(n, self.batch) for n in self.order
             if get_op(n.op).worker_scratch), default=0))
        sizes = {}
        for node in self.order:
            rule = get_op(node.op).workspace
            size = int(rule(node, self.batch, self.worker_stride)) if rule else 0
            if size:
                sizes[node.name] = (node, size)
        top = max((size for _, size in sizes.values()), default=0)
        shared = aligned_empty(top) if planned and top else None
        self.workspace_bytes = top if planned else sum(size for _, size in sizes.values())
        self.workspaces: dict[str, np.ndarray] = {}
        for name, (node, size) in sizes.items():
            buffer = shared if shared is not None else aligned_empty(size)
            dtype = node.inputs[0].type.dtype if node.inputs else "float32"
            self.workspaces[name] = view(buffer, 0, (size // np.dtype(dtype).itemsize,),
                                         dtype)

    # -- running -------------------------------------------------------------------------

    def array(self, value: Value) -> np.ndarray:
        """The array holding ``value`` (arena view, output slot, input buffer, storage)."""
        found = self._arrays.get(id(value))
        if found is not None:
            return found
        if value.kind in ("param", "state"):
            arr = self._storage.get(value.name)
            if arr is None or arr.shape != self.shape(value):
                raise CnncError(f"no storage of shape {list(self.shape(value))} for "
                                f"{value.kind} '{value.name}'")
        elif value.kind == "input":
            arr = self.inputs[value.name]
        else:
            root = alias_root(value)
            if root is value:
                raise CnncError(f"value '{value.name}' has no buffer in the plan")
            arr = self.array(root).reshape(self.shape(value))
        self._arrays[id(value)] = arr
        return arr

    def run(self, version: object = None) -> None:
        """Execute the step: every bound kernel call, in schedule order, after
        recomputing the folded weights (and telling the kernels that keep transformed
        weights), unless ``version`` (the caller's token for the state of the parameters)
        is that of the last step that did. None: always (the sources may have changed in
        any way)."""
        if version is None or version != self._folded:
            for fold in self.folds:
                fold()
            self._folded = version
        for call in self.calls:
            call()

    # -- inspection ----------------------------------------------------------------------

    def steps(self) -> list[Step]:
        """The plan's ops in execution order with where their outputs live."""
        out = []
        for i, node in enumerate(self.order):
            places = []
            for v in node.outputs:
                root = alias_root(v)
                if v.name in self.output_offsets:
                    places.append((v.name, "output", self.output_offsets[v.name],
                                   self.nbytes(v)))
                elif root is not v:
                    places.append((v.name, "alias", self.offsets.get(root.name, -1),
                                   self.nbytes(v)))
                else:
                    places.append((v.name, "arena", self.offsets[v.name], self.nbytes(v)))
            ws = self.workspaces.get(node.name)
            out.append(Step(i, node.name, node.op, tuple(places),
                            0 if ws is None else ws.nbytes))
        return out

    def report(self) -> dict[str, Any]:
        """Bytes of this plan: the arena beside its naive size and lower bound, the
        kernels' scratch, the input and output buffers, the parameters and optimizer
        state it reads."""
        params = sum(self.nbytes(v) for v in self.graph.params.values())
        optimizer = sum(self.nbytes(v) for v in self.graph.states)
        return {
            **self.memory.report(),
            "batch": self.batch,
            "mode": self.mode,
            "planned": self.planned,
            "ops": len(self.order),
            "kernel_calls": len(self.calls),
            "param_bytes": params,
            "optimizer_bytes": optimizer,
            "input_bytes": sum(a.nbytes for a in self.inputs.values()),
            "output_bytes": self.output_bytes,
            "workspace_bytes": self.workspace_bytes,
            "worker_stride_bytes": self.worker_stride,
        }

    def __repr__(self) -> str:
        return (f"Plan({self.graph.name!r}, batch={self.batch}, {len(self.order)} ops, "
                f"arena {self.memory.arena_bytes} bytes)")


def _unplanned(records: list[UsageRecord]) -> MemoryPlan:
    """Every record in bytes of its own (the planner switched off)."""
    offsets, top = [], 0
    for r in records:
        offsets.append(top)
        top += _aligned(r.size)
    return MemoryPlan(offsets=offsets, arena_bytes=top, naive_bytes=top,
                      lower_bound_bytes=lower_bound(records, ALIGNMENT),
                      alignment=ALIGNMENT, method="off")

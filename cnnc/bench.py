"""``cnnc bench``: how fast a spec trains or infers, and where the time of a step goes.

    cnnc bench specs/resnet20.cnn --batch 64 --mode train --threads 1 --steps 20

Throughput is the batch size over the median time of whole steps through the public API
(``Model.train_step`` / ``Model.forward``: feeding the inputs included). The profile comes
from separate runs of the same plan, alternating with the timed steps, in which every
bound kernel call (``Plan.calls``) is timed on its own (``time.perf_counter``, or with
``--clock cpu`` the process's CPU time, which other processes' load does not inflate when
one thread runs). Per call the median over the runs is kept; the Python overhead is the
median step time minus the sum of those medians (the executor's loop, the kernels'
argument checks before they release the GIL, feeding the batch).

FLOPs are 2 x the multiply-accumulates each kernel call performs, from its shapes: a conv,
conv_transpose or dense node counts its forward MACs (the op's MAC rule), each of their
backward ops (data and weight gradient) as many again, so a trained layer's backward is
about twice its forward. Other ops count no FLOPs; their bandwidth is given instead, as
the bytes of their inputs and outputs over their time.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnc._kernels.threads import core_round_trip_ns, core_speeds
from cnnc.autodiff import LOSSES
from cnnc.cli_args import add_set, count
from cnnc.ir.types import Node
from cnnc.model import Model
from cnnc.model import compile as compile_model
from cnnc.ops.registry import get_op
from cnnc.runtime import BindContext, Plan
from cnnc.threads import get_num_threads, set_num_threads

MODES = ("train", "infer")
SPLIT_NS = 250.0  # a core round trip this long: the threads' cores share no L3
UNEVEN = 1.15  # computing at once, one core this much slower than the other ...
SHARED = 1.4  # ... or both this much slower than one alone: one core's two hyperthreads


# ---- work per call ---------------------------------------------------------------------

def _numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def node_macs(node: Node, batch: int) -> int:
    """Multiply-accumulates of one call of ``node`` at ``batch`` (0 for ops without)."""
    op, a = node.op, node.attrs
    if op in ("conv", "conv_maxpool", "conv_transpose", "dense"):
        per_image = get_op(op).mac_rule([v.type for v in node.data_inputs],
                                        node.output.type, node.attrs)
        return batch * per_image
    if op in ("conv_backward_data", "conv_backward_weight"):
        dy = node.inputs[0] if op == "conv_backward_data" else node.inputs[1]
        return batch * _numel(dy.type.shape[2:]) * _numel(a.w_shape)
    if op.startswith("conv_transpose_backward"):
        return batch * _numel(a.x_chw[1:]) * _numel(a.w_shape)
    if op.startswith("dense_backward"):
        return batch * a.features * a.units
    return 0


def node_bytes(plan: Plan, node: Node) -> int:
    """Bytes of every input and output of ``node`` at the plan's batch: what the call
    must read and write at least."""
    return sum(plan.nbytes(v) for v in list(node.inputs) + list(node.outputs))


# ---- mapping the plan's calls to its nodes ---------------------------------------------

def call_nodes(plan: Plan) -> list[Node]:
    """The node of each entry of ``plan.calls``. Ops binding no call (a flatten sharing
    its input's buffer) have no entry; they are found by binding each node again, to a
    context of the same plan, and seeing which return nothing. (The calls refolding
    batchnorm into a conv, ``plan.folds``, run only when the parameters changed: after a
    training step, not between inference steps, so they are not in the profile.)"""
    ctx = BindContext(plan, np.zeros(1, np.int64), np.zeros(1), plan.mode)
    folds = list(plan.folds)  # the calls bound here are dropped: so are their callbacks
    bound = [n for n in plan.order if get_op(n.op).kernel(n, ctx) is not None]
    plan.folds[:] = folds
    if len(bound) != len(plan.calls):
        raise RuntimeError(f"plan has {len(plan.calls)} calls but {len(bound)} bound nodes")
    return bound


# ---- inputs ----------------------------------------------------------------------------

def random_batch(model: Model, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A batch of inputs in [0, 1) and labels fitting the model's loss (class indices for
    the cross-entropies, 0/1 for binary, values for regression)."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch,) + model.input_shape, dtype=np.float32)
    out = model.output_shape
    kind = LOSSES[model.loss_name]
    if kind == "softmax_xent":
        y = rng.integers(0, out[0], (batch,) + out[1:])
    elif kind == "binary":
        y = rng.integers(0, 2, (batch,) + out).astype(np.float32)
    else:
        y = rng.standard_normal((batch,) + out).astype(np.float32)
    return x, y


def step_function(model: Model, mode: str, x: np.ndarray, y: np.ndarray
                  ) -> Callable[[], Any]:
    """One step of ``mode`` through the public API."""
    if mode == "train":
        return lambda: model.train_step(x, y)
    if mode == "infer":
        return lambda: model.forward(x)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter,
                                           "cpu": time.process_time}


def _timer_cost(clock: Callable[[], float], repeats: int = 2000) -> float:
    """The cost of reading ``clock`` twice, taken out of every call's time."""
    best = math.inf
    for _ in range(repeats):
        t = clock()
        best = min(best, clock() - t)
    return best


# ---- measuring -------------------------------------------------------------------------

def measure(model: Model, mode: str = "train", batch: int | None = None, steps: int = 20,
            warmup: int = 3, seed: int = 0, clock: str = "wall") -> dict[str, Any]:
    """Throughput and per-op profile of ``mode`` steps at ``batch`` (default the model's).

    ``clock``: "wall" (``time.perf_counter``) or "cpu" (``time.process_time``: the
    process's CPU time, which a busy machine's preemptions do not inflate; it measures
    throughput only with one thread, and adds ~0.2 us per timed call).

    Returns a JSON-ready dict: ``network``, ``mode``, ``batch``, ``threads``, ``steps``,
    ``step_ms`` (median), ``img_s``, ``kernel_ms`` (sum of the calls' medians),
    ``overhead_ms`` (step - kernels), ``overhead_per_call_us``, ``calls``, ``gflop``
    (per step), ``gflop_s`` (over the step), ``ops`` (per op kind: ``op``, ``calls``,
    ``ms``, ``share``, ``gflop``, ``gflop_s``, ``gb_s``; slowest first) and ``nodes``
    (per call, same fields plus ``node`` and ``shape``; slowest first); with more than
    one thread also ``core_round_trip_ns`` and ``core_balance``, before and after the
    runs (see :func:`core_round_trip`, :func:`core_balance`).
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0; got {steps}, {warmup}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    batch = batch if batch is not None else model.batch
    x, y = random_batch(model, batch, seed)
    step = step_function(model, mode, x, y)
    for _ in range(max(warmup, 1)):  # one step at least: it builds the plan
        step()
    plan = model.plan
    nodes = call_nodes(plan)
    cost = _timer_cost(now)
    probes = [_probe_cores()] if get_num_threads() > 1 else []
    step_times: list[float] = []
    call_times: list[list[float]] = [[] for _ in plan.calls]
    for _ in range(steps):
        t = now()
        step()
        step_times.append(now() - t)
        for times, call in zip(call_times, plan.calls):
            t = now()
            call()
            times.append(now() - t - cost)
    report = _report(model, plan, mode, nodes, step_times, call_times)
    report["clock"] = clock
    if probes:
        probes.append(_probe_cores())
        report["core_round_trip_ns"] = [trip for trip, _ in probes]
        report["core_balance"] = [balance for _, balance in probes]
    return report


def _probe_cores() -> tuple[float, str]:
    trip = core_round_trip()
    return trip, core_balance(*core_speeds())


def core_round_trip() -> float:
    """Nanoseconds of a cache line's round trip between this thread and another core, once
    the OpenMP team (spinning for a while after its last loop) has gone to sleep; inf when
    no other core was free. See :func:`placement`."""
    time.sleep(0.01)
    return core_round_trip_ns(10000, 0.05)


def placement(round_trip_ns: float) -> str:
    """Where a second thread runs, from a core_round_trip(): "one_l3" (a core sharing this
    one's L3), "split" (SPLIT_NS or more: cores that share no L3; a multi-threaded step
    then runs slower, and a VM's host may run its vCPUs so for minutes at a time, see
    benchmarks/RESULTS.md, session 10) or "busy" (no core was free for it)."""
    if round_trip_ns == float("inf"):
        return "busy"
    return "split" if round_trip_ns >= SPLIT_NS else "one_l3"


def core_balance(solo: float, mine: float, theirs: float) -> str:
    """How two threads fared computing at once, from core_speeds() (seconds alone, then
    for each at once): "even"; "uneven" (one UNEVEN or more times slower than the other:
    work split evenly waits for it); "shared" (both SHARED or more times slower than one
    alone: the threads share one core); "busy" (no second core was free)."""
    if theirs == float("inf"):
        return "busy"
    if min(mine, theirs) >= SHARED * solo:
        return "shared"
    return "uneven" if max(mine, theirs) >= UNEVEN * min(mine, theirs) else "even"


def cores_now() -> str:
    """Where a second thread runs now, and how fast: "one_l3" (a core sharing this one's L3,
    computing as fast), "uneven" or "shared" (one L3, but see core_balance), "split" or
    "busy" (see placement)."""
    where = placement(core_round_trip())
    if where != "one_l3":
        return where
    balance = core_balance(*core_speeds())
    return "one_l3" if balance == "even" else balance


def _row(ms: float, step_ms: float, macs: int, nbytes: int) -> dict[str, float]:
    s = ms / 1e3
    return {"ms": ms, "share": ms / step_ms if step_ms > 0 else 0.0,
            "gflop": 2 * macs / 1e9,
            "gflop_s": 2 * macs / s / 1e9 if s > 0 and macs else 0.0,
            "gb_s": nbytes / s / 1e9 if s > 0 else 0.0}


def _report(model: Model, plan: Plan, mode: str, nodes: list[Node],
            step_times: list[float], call_times: list[list[float]]) -> dict[str, Any]:
    step_ms = statistics.median(step_times) * 1e3
    per_call = []
    kinds: dict[str, dict[str, Any]] = {}
    for node, times in zip(nodes, call_times):
        ms = max(statistics.median(times), 0.0) * 1e3
        macs, nbytes, op = node_macs(node, plan.batch), node_bytes(plan, node), node.op
        per_call.append({"node": node.name, "op": op,
                         "shape": list(plan.shape(node.outputs[0])) if node.outputs else [],
                         **_row(ms, step_ms, macs, nbytes)})
        k = kinds.setdefault(op, {"op": op, "calls": 0, "ms": 0.0, "macs": 0, "bytes": 0})
        k["calls"] += 1
        k["ms"] += ms
        k["macs"] += macs
        k["bytes"] += nbytes
    ops = [{"op": k["op"], "calls": k["calls"], **_row(k["ms"], step_ms, k["macs"],
                                                       k["bytes"])} for k in kinds.values()]
    kernel_ms = sum(r["ms"] for r in per_call)
    macs = sum(k["macs"] for k in kinds.values())
    return {
        "network": model.graph.name, "mode": mode, "batch": plan.batch,
        "threads": get_num_threads(), "steps": len(step_times),
        "step_ms": step_ms, "img_s": plan.batch / (step_ms / 1e3),
        "kernel_ms": kernel_ms, "overhead_ms": step_ms - kernel_ms,
        "overhead_per_call_us": (step_ms - kernel_ms) * 1e3 / max(len(per_call), 1),
        "calls": len(per_call), "gflop": 2 * macs / 1e9,
        "gflop_s": 2 * macs / (step_ms / 1e3) / 1e9,
        "ops": sorted(ops, key=lambda r: -r["ms"]),
        "nodes": sorted(per_call, key=lambda r: -r["ms"]),
    }


# ---- text ------------------------------------------------------------------------------

def format_report(r: dict[str, Any], top: int = 10) -> str:
    """The report as text: throughput, the per-op-kind table, the ``top`` slowest calls."""
    lines = [
        f"{r['network']} {r['mode']}, batch {r['batch']}, {r['threads']} thread(s), "
        f"median of {r['steps']} steps ({r['clock']} clock)",
        f"  {r['img_s']:,.1f} images/s; step {r['step_ms']:.3f} ms = kernels "
        f"{r['kernel_ms']:.3f} ms + Python overhead {r['overhead_ms']:.3f} ms "
        f"({r['overhead_per_call_us']:.1f} us per call, {r['calls']} calls); "
        f"{r['gflop']:.3f} GFLOP, {r['gflop_s']:.1f} GFLOP/s over the step",
        *_placement(r),
        "",
        f"  {'op':<28} {'calls':>5} {'ms':>9} {'share':>6} {'GFLOP/s':>8} {'GB/s':>6}",
    ]
    for o in r["ops"]:
        lines.append(f"  {o['op']:<28} {o['calls']:>5} {o['ms']:>9.3f} {o['share']:>6.1%} "
                     f"{_gflops(o)} {o['gb_s']:>6.1f}")
    lines += ["", "  slowest calls", f"  {'node':<28} {'op':<22} {'output':<18} "
              f"{'ms':>8} {'share':>6} {'GFLOP/s':>8} {'GB/s':>6}"]
    for n in r["nodes"][:top]:
        shape = "x".join(map(str, n["shape"]))
        lines.append(f"  {n['node'][:28]:<28} {n['op']:<22} {shape:<18} {n['ms']:>8.3f} "
                     f"{n['share']:>6.1%} {_gflops(n)} {n['gb_s']:>6.1f}")
    return "\n".join(lines)


def _placement(r: dict[str, Any]) -> list[str]:
    """A line on where the threads ran, and how evenly (multi-threaded runs)."""
    if "core_round_trip_ns" not in r:
        return []
    notes = {"split": "cores that share no L3: expect slower steps",
             "busy": "no second core free",
             "uneven": "one core slower than the other: expect slower steps",
             "shared": "both threads on one core: expect slower steps"}
    trips, balances = r["core_round_trip_ns"], r.get("core_balance", ["even", "even"])
    found = ({placement(ns) for ns in trips} | set(balances)) - {"one_l3", "even"}
    note = f" ({'; '.join(notes[p] for p in sorted(found))})" if found else ""
    return [f"  cores: a cache line's round trip {trips[0]:.0f} ns before, {trips[1]:.0f} "
            f"ns after; computing at once {balances[0]} before, {balances[1]} after{note}"]


def _gflops(row: dict[str, Any]) -> str:
    return f"{row['gflop_s']:>8.1f}" if row["gflop"] else f"{'-':>8}"


# ---- command line ----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``cnnc bench``."""
    parser.add_argument("spec", metavar="SPEC", help="a .cnn file")
    parser.add_argument("--batch", type=count(1), metavar="N",
                        help="batch size (default the spec's train batch, else 32)")
    parser.add_argument("--mode", choices=MODES, default="train",
                        help="a training step (forward, backward, update) or inference")
    parser.add_argument("--threads", type=count(1), metavar="N",
                        help="kernel threads (default: cnnc's thread policy)")
    parser.add_argument("--steps", type=count(1), default=20, metavar="K",
                        help="timed steps, and as many profiled ones (default 20)")
    parser.add_argument("--warmup", type=count(0), default=3, metavar="K",
                        help="untimed steps first (default 3)")
    parser.add_argument("--top", type=count(1), default=10, metavar="K",
                        help="how many of the slowest calls to list (default 10)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: the process's CPU time, steadier "
                             "on a busy machine (one thread only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_set(parser)


def run(args: argparse.Namespace) -> int:
    """Throughput of a spec's training step or inference, and where the step's time goes.

    The step runs on random data of the input's shape (and random labels) through the
    public API; each kernel call is then timed in separate runs. Timings on a busy
    machine are noisy: compare runs made close together.
    """
    if args.threads:
        set_num_threads(args.threads)
    model = compile_model(args.spec, batch=args.batch, set=dict(args.overrides))
    report = measure(model, args.mode, args.batch, args.steps, args.warmup,
                     clock=args.clock)
    print(json.dumps(report) if args.json else format_report(report, args.top))
    return 0

"""Executor overhead and memory plans.

    python benchmarks/bench_executor.py [--json] [--threads N]

Overhead: a training step of a tiny network (the tutorial's seed CNN shrunk to 3x14x14,
batch 4) is timed as a whole (``Plan.run``) and call by call; the Python overhead per op is
(step time - sum of the kernel calls' times) / number of calls, with the cost of the timer
itself taken out of the per-call times. A second figure, the time of a whole step divided
by its calls, bounds the cost per op from above (at this size the kernels do almost no
work, so it is mostly argument checking in the kernels' ``def`` entry points).

Memory: arena, lower bound and naive bytes of the training and inference plans of every
spec in specs/ at batch 1 and 64 (no step runs; planning only).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import cnnc

ROOT = Path(__file__).resolve().parents[1]
TINY = """
network Tiny
input image: [3, 14, 14]
layers {
    conv(4, kernel=3) relu
    maxpool(2)
    conv(6, kernel=3) relu
    maxpool(2)
    flatten
    dense(8) relu
    dense(1) sigmoid
}
"""
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.cnn"))


def _best(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def overhead(repeats: int = 300) -> dict:
    """Per-op Python overhead of a training step of a tiny network."""
    model = cnnc.compile(TINY, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 14, 14)).astype(np.float32)
    y = rng.integers(0, 2, 4)
    for _ in range(20):
        model.train_step(x, y)
    plan = model.plan
    step = _best(plan.run, repeats)
    timer = _best(lambda: None, repeats)  # perf_counter pair + a Python call
    per_call = [max(_best(call, repeats) - timer, 0.0) for call in plan.calls]
    n = len(plan.calls)
    return {
        "calls": n,
        "step_us": step * 1e6,
        "kernels_us": sum(per_call) * 1e6,
        "overhead_per_op_us": (step - sum(per_call)) / n * 1e6,
        "step_per_op_us": step / n * 1e6,
        "median_call_us": statistics.median(per_call) * 1e6,
    }


def memory(batches=(1, 64)) -> list[dict]:
    """Plan figures of each spec, training and inference."""
    rows = []
    for name in SPECS:
        model = cnnc.compile(str(ROOT / "specs" / f"{name}.cnn"))
        for mode in ("infer", "train"):
            for batch in batches:
                r = model.memory_report(mode, batch=batch)
                rows.append({"spec": name, "mode": mode, "batch": batch,
                             **{k: r[k] for k in ("arena_bytes", "lower_bound_bytes",
                                                  "naive_bytes", "param_bytes",
                                                  "optimizer_bytes", "method")}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--threads", type=int, default=1, help="kernel threads (default 1)")
    args = parser.parse_args(argv)
    cnnc.set_num_threads(args.threads)
    result = {"threads": args.threads, "overhead": overhead(), "memory": memory()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    o = result["overhead"]
    print(f"tiny training step: {o['calls']} kernel calls, {o['step_us']:.1f} us per step, "
          f"{o['kernels_us']:.1f} us in kernel calls -> Python overhead "
          f"{o['overhead_per_op_us']:.2f} us per op (whole step / calls: "
          f"{o['step_per_op_us']:.2f} us)")
    print(f"{'spec':10} {'mode':6} {'batch':>5} {'arena':>12} {'lower bound':>12} "
          f"{'naive':>12} {'ratio':>6}")
    for r in result["memory"]:
        print(f"{r['spec']:10} {r['mode']:6} {r['batch']:5} {r['arena_bytes']:12,} "
              f"{r['lower_bound_bytes']:12,} {r['naive_bytes']:12,} "
              f"{r['arena_bytes'] / r['lower_bound_bytes']:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

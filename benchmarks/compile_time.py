"""Compile time of a training step, phase by phase (default: ResNet-50 at batch 32).

    python benchmarks/compile_time.py [--spec specs/resnet50.cnn] [--batch 32] [--json]

Calls the functions ``cnnc.compile`` and ``Model`` call, in their order, and times each:

* load: ``cnnc.dsl.load``: parse (lark; informative, timed alone: ``load_program``,
  includes followed), elaborate (AST -> Graph, every layer's shape rule run as it is
  added; informative, timed alone), and the train section's schema;
* forward copy: ``copy_forward`` (the Model's own float32 copy of the graph);
* autodiff: ``build_training_graph`` (loss, backward nodes, SGD updates);
* passes: ``fuse`` then ``optimize_training`` (dce, in-place);
* plan: ``runtime.Plan`` (schedule, usage records, memory plan, arena views, kernel
  binding); its scheduling and its memory planning (``plan_memory`` over the plan's
  usage records) are also timed on their own (informative).

``shape inference`` (informative) re-runs every shape rule of the forward graph
(``Graph.infer_shapes``), which elaboration already did once. The total is the sum of
the phases. Then, end to end: ``cnnc.compile`` + ``Model.memory_report("train", batch)``
(which builds the training plan), which also initialises the parameters (random draws,
not a compile phase). Each figure is the best of ``--repeats`` runs (wall clock).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import cnnc
from cnnc import passes
from cnnc.autodiff import LossSpec, build_training_graph, copy_forward, default_loss
from cnnc.dsl import load
from cnnc.dsl.elaborate import elaborate
from cnnc.dsl.parser import read_spec
from cnnc.dsl.program import load_program
from cnnc.dsl.train import Option
from cnnc.memory import plan_memory
from cnnc.runtime import ALIGNMENT, Plan

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5
SGD = Option("sgd", {"lr": 0.1, "momentum": 0.9})


def phases(path: Path, batch: int) -> dict[str, float]:
    """Seconds of each phase of compiling ``path``'s training step at ``batch``."""
    t = {}
    clock = time.perf_counter
    start = clock()
    spec = load(path)  # parse + elaborate + train section, as cnnc.compile does
    t["load"] = clock() - start
    start = clock()
    program = load_program(read_spec(path), str(path), path.resolve().parent)
    t["parse (in load)"] = clock() - start
    start = clock()
    graph = elaborate(program, {}).graph
    t["elaborate (in load)"] = clock() - start
    start = clock()
    graph.infer_shapes()
    t["shape inference (again)"] = clock() - start
    start = clock()
    forward = copy_forward(spec.graph, training=False, dtype="float32")
    t["forward copy"] = clock() - start
    loss = spec.train.loss if spec.train else default_loss(forward)
    start = clock()
    train = build_training_graph(forward, LossSpec(loss), spec.train.optimizer
                                 if spec.train else SGD, seed=0, keep_outputs=True)
    t["autodiff"] = clock() - start
    start = clock()
    train = passes.optimize_training(passes.fuse(train))
    t["passes"] = clock() - start
    start = clock()
    passes.schedule(train, batch=batch)
    t["schedule (in plan)"] = clock() - start
    storage = {v.name: np.zeros(tuple(int(d) for d in v.type.shape), v.type.dtype)
               for v in list(train.params.values()) + list(train.states)}
    start = clock()
    plan = Plan(train, batch, storage, np.zeros(1, np.int64), np.zeros(1), mode="train")
    t["plan"] = clock() - start
    start = clock()
    plan_memory(plan.records, alignment=ALIGNMENT)
    t["memory planning (in plan)"] = clock() - start
    t["ops"] = len(plan.order)
    return t


INFORMATIVE = ("parse (in load)", "elaborate (in load)", "shape inference (again)",
               "schedule (in plan)", "memory planning (in plan)", "ops")


def end_to_end(path: Path, batch: int) -> float:
    start = time.perf_counter()
    cnnc.compile(path, batch=batch).memory_report("train", batch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "resnet50.cnn"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    path = Path(args.spec)
    runs = [phases(path, args.batch) for _ in range(args.repeats)]
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    total = sum(v for k, v in best.items() if k not in INFORMATIVE)
    e2e = min(end_to_end(path, args.batch) for _ in range(args.repeats))
    if args.json:
        print(json.dumps({"spec": path.name, "batch": args.batch, "phases_s": best,
                          "total_s": total, "end_to_end_s": e2e, "target_s": TARGET_S}))
        return 0
    print(f"{path.name}, training step at batch {args.batch}: {best['ops']} ops "
          f"(best of {args.repeats})")
    for k, v in best.items():
        if k != "ops":
            note = "  (informative; not in the total)" if k in INFORMATIVE else ""
            print(f"  {k:<26} {v * 1e3:8.1f} ms{note}")
    print(f"  {'total':<26} {total * 1e3:8.1f} ms  (target < {TARGET_S * 1e3:.0f} ms: "
          f"{'met' if total < TARGET_S else 'missed'})")
    print(f"  {'cnnc.compile + plan':<26} {e2e * 1e3:8.1f} ms  (end to end, with parameter "
          "initialisation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Graph passes and the scheduler. Each pass is a pure function Graph -> Graph (it builds
a new graph; its input is never changed):

* :func:`fold_batchnorm`, :func:`strip_inference` (inference only): batchnorm folded into
  the linear layer before it, dropout and identity removed;
* :func:`fuse`: conv / conv_transpose / dense + activation -> one node;
* :func:`fuse_conv_pool` (inference only): conv -> 2x2 max-pool -> one node;
* :func:`dce`: nodes that reach no output and have no side effect removed;
* :func:`inplace`: legal in-place activations marked (``Value.alias_of``);
* :func:`resolve_batch`: the symbolic batch replaced by a concrete size.

:func:`schedule` fixes the execution order (Kahn's algorithm over RAW and WAR edges,
choosing an order with a low peak of live bytes).

Pipelines: inference is ``optimize(forward, "infer")``, ready to schedule and plan.
Training is ``optimize(forward, "train")`` (fusion only: the forward graph before
autodiff), then autodiff, then ``optimize_training(training_graph)``.
"""
from __future__ import annotations

from cnnc.ir.graph import Graph
from cnnc.passes.batch import resolve_batch
from cnnc.passes.dce import dce
from cnnc.passes.fold import FoldedParam, fold_batchnorm, fold_into, strip_inference
from cnnc.passes.fuse import fuse, fuse_conv_pool
from cnnc.passes.inplace import inplace
from cnnc.passes.schedule import ScheduleError, peak_bytes, plain_order, schedule

__all__ = ["FoldedParam", "ScheduleError", "dce", "fold_batchnorm", "fold_into", "fuse",
           "fuse_conv_pool", "inplace", "optimize", "optimize_training", "peak_bytes",
           "plain_order", "resolve_batch", "schedule", "strip_inference"]

PIPELINES = {
    "infer": (fold_batchnorm, strip_inference, fuse, fuse_conv_pool, dce, inplace),
    "train": (fuse,),
}


def optimize(graph: Graph, mode: str) -> Graph:
    """Run the passes of ``mode`` on a forward graph: "infer" (fold batchnorm, strip
    dropout/identity, fuse, fuse conv -> max-pool, dce, in-place) or "train" (fuse;
    autodiff follows, then :func:`optimize_training`)."""
    if mode not in PIPELINES:
        raise ValueError(f"mode must be one of {sorted(PIPELINES)}, got {mode!r}")
    for run in PIPELINES[mode]:
        graph = run(graph)
    return graph


def optimize_training(graph: Graph) -> Graph:
    """Run the passes for a training graph (after autodiff): dce, then in-place."""
    return inplace(dce(graph))

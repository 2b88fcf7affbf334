"""Conv -> relu -> 2x2 max-pool: conv2d_forward then maxpool2d_forward against
conv2d_maxpool_forward (one pass, inference's fused op), both bound once, in one run.

    python benchmarks/bench_conv_pool.py [--reps 300] [--threads 1] [--json]

Layers: the seed CNN's two convs and VGG-11's first two, at batch 1 and at their training
batch. Both sides keep their transformed weights (as inference does); times are the best
of --reps calls, process CPU time at one thread and wall time at more, alternating the two
sides: this machine is shared, so only ratios from one run compare. "pays" is
conv2d_maxpool_pays, the rule inference's fusion pass follows.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cnnc._kernels import conv, pool

# name, (batch, in channels, size, out channels, padding)
LAYERS = [
    ("seed.conv1", (1, 3, 64, 32, 0)),
    ("seed.conv2", (1, 32, 31, 64, 0)),
    ("vgg11.conv1", (1, 3, 32, 64, 1)),
    ("vgg11.conv2", (1, 64, 16, 128, 1)),
    ("seed.conv1.b32", (32, 3, 64, 32, 0)),
    ("seed.conv2.b32", (32, 32, 31, 64, 0)),
    ("vgg11.conv1.b64", (64, 3, 32, 64, 1)),
    ("vgg11.conv2.b64", (64, 64, 16, 128, 1)),
]


def bind(layer, threads: int):
    """(conv call, pool call, fused call) on fresh arrays, and the two pooled outputs."""
    n, c, h, m, p = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = (rng.standard_normal((m, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    oh = h + 2 * p - 2
    y = np.empty((n, m, oh, oh), np.float32)
    pooled, fused = (np.empty((n, m, oh // 2, oh // 2), np.float32) for _ in range(2))
    ws = np.empty(conv.conv2d_workspace_size(x.shape, w.shape, 1, p, n_threads=threads),
                  np.float32)
    wsf = np.empty(conv.conv2d_maxpool_workspace_size(x.shape, w.shape, p, threads),
                   np.float32)
    calls = (conv.conv2d_forward(x, w, b, y, 1, p, act="relu", workspace=ws,
                                 n_threads=threads, bind=True, keep_weights=True),
             pool.maxpool2d_forward(y, pooled, None, 2, n_threads=threads, bind=True),
             conv.conv2d_maxpool_forward(x, w, b, fused, p, "relu", workspace=wsf,
                                         n_threads=threads, bind=True, keep_weights=True))
    return calls, pooled, fused


def time_layer(layer, reps: int, threads: int) -> dict:
    calls, pooled, fused = bind(layer, threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    best = [float("inf")] * 3
    for _ in range(reps):
        for k, call in enumerate(calls):
            t0 = clock()
            call()
            best[k] = min(best[k], clock() - t0)
    n, c, h, m, p = layer
    two = best[0] + best[1]
    return {"conv_ms": best[0] * 1e3, "pool_ms": best[1] * 1e3, "fused_ms": best[2] * 1e3,
            "ratio": two / best[2], "max_diff": float(np.abs(pooled - fused).max()),
            "pays": conv.conv2d_maxpool_pays((n, c, h, h), (m, c, 3, 3), p)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per layer")
    args = parser.parse_args(argv)
    print(f"{'layer':<16} {'(n, c, size, m, pad)':<22} {'conv ms':>8} {'pool ms':>8} "
          f"{'fused ms':>9} {'ratio':>6}  pays")
    for name, layer in LAYERS:
        reps = args.reps if layer[0] == 1 else max(3, args.reps // 30)
        row = time_layer(layer, reps, args.threads)
        if args.json:
            print(json.dumps({"layer": name, "shape": layer, "threads": args.threads, **row}))
        print(f"{name:<16} {str(layer):<22} {row['conv_ms']:8.3f} {row['pool_ms']:8.3f} "
              f"{row['fused_ms']:9.3f} {row['ratio']:6.2f}  {row['pays']}")
    print("ratio: (conv + pool) / fused")


if __name__ == "__main__":
    main()

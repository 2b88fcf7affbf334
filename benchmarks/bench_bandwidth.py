"""Memory bandwidth at one and two threads: what a second core adds to the passes that
stream memory (batchnorm, elementwise), against what it adds to the convolutions.

    python benchmarks/bench_bandwidth.py [--reps 10] [--json]

Rows: cnnc's elementwise add of two arrays into a third, with arrays of 8 MB (the three
fit in L3) and 64 MB (they stream from DRAM); batchnorm's backward with relu on ResNet-20's
stage-1 tensor at batch 64 (64x16x32x32: x, dy and dx are 12 MB) with the caches warm
and after a 64 MB sweep that evicts them. Best of --reps, wall clock; GB/s counts each
array once per pass that reads or writes it (add: 3 arrays; batchnorm: x and dy twice, dx
once; relu's zeros come from x).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cnnc._kernels import batchnorm, elementwise


def best_of(call, reps: int, before=None) -> float:
    best = float("inf")
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def rows(reps: int):
    rng = np.random.default_rng(0)
    sweep = np.ones(64 << 18, np.float32)  # 64 MB

    def evict():
        sweep.__iadd__(1)

    for mb in (8, 64):
        a = rng.standard_normal(mb << 18, dtype=np.float32)
        b, c = rng.standard_normal(a.size, dtype=np.float32), np.empty_like(a)
        for nt in (1, 2):
            t = best_of(lambda: elementwise.add_forward([a, b], c, n_threads=nt), reps)
            yield {"pass": f"add, {mb} MB arrays", "threads": nt, "ms": t * 1e3,
                   "gb_s": 3 * a.nbytes / t / 1e9}
    shape = (64, 16, 32, 32)
    x, dy = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
    dx = np.empty_like(x)
    ones, zeros = np.ones(16, np.float32), np.zeros(16, np.float32)
    mean, invstd = np.zeros(16), np.ones(16)  # saved statistics: float64
    dg, db = np.empty(16, np.float32), np.empty(16, np.float32)
    for cold in (False, True):
        for nt in (1, 2):
            call = batchnorm.batchnorm_backward(x, dy, ones, mean, invstd, dx, dg, db,
                                                n_threads=nt, activation="relu", beta=zeros,
                                                bind=True)
            t = best_of(call, reps, evict if cold else None)
            yield {"pass": f"batchnorm backward + relu, {'cold' if cold else 'warm'}",
                   "threads": nt, "ms": t * 1e3, "gb_s": 5 * x.nbytes / t / 1e9}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    last = None
    for row in rows(args.reps):
        if args.json:
            print(json.dumps(row))
        ratio = f"  x{last / row['ms']:.2f}" if row["threads"] == 2 and last else ""
        print(f"{row['pass']:<36} {row['threads']} thread(s) {row['ms']:8.3f} ms "
              f"{row['gb_s']:6.1f} GB/s{ratio}")
        last = row["ms"]


if __name__ == "__main__":
    main()

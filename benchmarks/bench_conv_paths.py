"""One conv path against the path each layer takes without it, pass by pass, in one run.

    python benchmarks/bench_conv_paths.py [--path batch] [--reps 10] [--json]

For each layer (ResNet-20's 3x3 stages, the seed CNN's conv2, VGG-11's 64 -> 128 layer,
32 -> 64 channels on 8x8), the forward, backward-data and weight gradient are bound once
with the path allowed and once without it, then timed alternately (one thread, process CPU
time, best of --reps): this machine is shared, so only ratios from one run compare. A
ratio of 1.00 with the same bytes out means the path does not apply to that pass.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cnnc._kernels import conv

# name, (batch, in channels, size, out channels): 3x3, stride 1, padding 1
LAYERS = [
    ("resnet20.stage1", (64, 16, 32, 16)),
    ("resnet20.stage2", (64, 32, 16, 32)),
    ("resnet20.stage3", (64, 64, 8, 64)),
    ("seed.conv2", (32, 32, 31, 64)),
    ("vgg11.conv2", (64, 64, 16, 128)),
    ("c32m64.8x8", (64, 32, 8, 64)),
]

# the switches that allow (True) or forbid (False) each path
PATHS = {"batch": conv._set_wino_batch, "vec": conv._set_wino_vec, "wino4": conv._set_wino4,
         "direct": conv._set_direct, "strided": conv._set_strided}


def bind(layer, allowed: bool, switch):
    """The three passes of `layer` bound on fresh arrays (same draws every time)."""
    n, c, h, m = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = (rng.standard_normal((m, c, 3, 3), dtype=np.float32) / np.sqrt(9 * c)).astype(np.float32)
    dy = rng.standard_normal((n, m, h, h), dtype=np.float32)
    switch(allowed)
    ws = np.empty(conv.conv2d_workspace_size(x.shape, w.shape, 1, 1), np.float32)
    y, dx, dw = np.empty_like(dy), np.empty_like(x), np.empty_like(w)
    calls = (conv.conv2d_forward(x, w, None, y, 1, 1, workspace=ws, bind=True),
             conv.conv2d_backward_data(dy, w, dx, 1, 1, workspace=ws, bind=True),
             conv.conv2d_backward_weight(x, dy, dw, None, 1, 1, workspace=ws, bind=True))
    switch(True)
    return calls, (y, dx, dw)


def time_layer(layer, switch, reps: int) -> dict:
    runs = {allowed: bind(layer, allowed, switch) for allowed in (True, False)}
    best = {(a, k): float("inf") for a in runs for k in range(3)}
    for _ in range(reps):
        for allowed, (calls, _) in runs.items():
            switch(allowed)  # a bound call re-derives its flipped geometry when it runs
            for k, call in enumerate(calls):
                call()
                t0 = time.process_time()
                call()
                best[allowed, k] = min(best[allowed, k], time.process_time() - t0)
        switch(True)
    n, c, h, m = layer
    flops = 2 * n * m * c * 9 * h * h
    row = {}
    for k, name in enumerate(("fwd", "dx", "wg")):
        same = runs[True][1][k].tobytes() == runs[False][1][k].tobytes()
        row[name] = {"ms": best[True, k] * 1e3, "ms_without": best[False, k] * 1e3,
                     "ratio": best[False, k] / best[True, k], "taken": not same,
                     "gflop_s": flops / best[True, k] / 1e9}
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="batch", choices=sorted(PATHS))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="one JSON object per layer")
    args = parser.parse_args(argv)
    print(f"{'layer':<17} {'(n, c, size, m)':<18} " + " ".join(
        f"{p + ' ms (without)':>24}" for p in ("fwd", "dx", "wg")))
    for name, layer in LAYERS:
        row = time_layer(layer, PATHS[args.path], args.reps)
        if args.json:
            print(json.dumps({"layer": name, "shape": layer, "path": args.path, **row}))
        cells = [f"{r['ms']:6.2f} ({r['ms_without']:5.2f}) x{r['ratio']:.2f}"
                 + ("" if r["taken"] else "-") for r in row.values()]
        print(f"{name:<17} {str(layer):<18} " + " ".join(f"{c:>24}" for c in cells))
    print("x: time without the path / with it; '-': the pass does not take the path")


if __name__ == "__main__":
    main()

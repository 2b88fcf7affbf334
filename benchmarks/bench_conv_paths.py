"""One conv path against the path each layer takes without it, pass by pass, in one run.

    python benchmarks/bench_conv_paths.py [--path batch] [--reps 10] [--json]

For each layer of the path's list (3x3 stride-1 layers: ResNet-20's stages, the seed CNN's
conv2, VGG-11's 64 -> 128 layer, 32 -> 64 channels on 8x8; for the lane-per-image direct
path, LeNet-5's convs, the seed CNN's and ResNet-20's first, ResNet-20's stride-2 entries
and 5x5 layers on 16x16; for the sampled 1x1 path, ResNet-20's and ResNet-50's
projection shortcuts), the forward, backward-data and weight gradient are bound once
with the path allowed and once without it, then timed alternately (one thread, process CPU
time, best of --reps): this machine is shared, so only ratios from one run compare. A
pass marked '-' does not take the path (by its bytes out, or for the lane-per-image path,
whose forward sums in the direct path's order, by asking it).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cnnc._kernels import conv

# name, (batch, in channels, size, out channels, kernel, stride, padding)
WINO_LAYERS = [
    ("resnet20.stage1", (64, 16, 32, 16, 3, 1, 1)),
    ("resnet20.stage2", (64, 32, 16, 32, 3, 1, 1)),
    ("resnet20.stage3", (64, 64, 8, 64, 3, 1, 1)),
    ("seed.conv2", (32, 32, 31, 64, 3, 1, 1)),
    ("vgg11.conv2", (64, 64, 16, 128, 3, 1, 1)),
    ("c32m64.8x8", (64, 32, 8, 64, 3, 1, 1)),
]
LANES_LAYERS = [
    ("lenet5.conv1", (64, 1, 28, 6, 5, 1, 2)),
    ("lenet5.conv2", (64, 6, 14, 16, 5, 1, 0)),
    ("seed.conv1", (32, 3, 64, 32, 3, 1, 0)),
    ("resnet20.conv1", (64, 3, 32, 16, 3, 1, 1)),
    ("resnet20.entry2", (64, 16, 32, 32, 3, 2, 1)),
    ("resnet20.entry3", (64, 32, 16, 64, 3, 2, 1)),
    ("c16m32.5x5", (64, 16, 16, 32, 5, 1, 2)),
    ("c32m32.5x5.12", (64, 32, 12, 32, 5, 1, 2)),
]
POINTWISE_LAYERS = [
    ("resnet20.short2", (64, 16, 32, 32, 1, 2, 0)),
    ("resnet20.short3", (64, 32, 16, 64, 1, 2, 0)),
    ("resnet50.short3", (8, 256, 56, 512, 1, 2, 0)),
    ("resnet50.short4", (8, 512, 28, 1024, 1, 2, 0)),
]

# the switches that allow (True) or forbid (False) each path, and the layers to compare on
PATHS = {"batch": (conv._set_wino_batch, WINO_LAYERS), "vec": (conv._set_wino_vec, WINO_LAYERS),
         "wino4": (conv._set_wino4, WINO_LAYERS), "direct": (conv._set_direct, WINO_LAYERS),
         "strided": (conv._set_strided, LANES_LAYERS), "lanes": (conv._set_lanes, LANES_LAYERS),
         "pointwise": (conv._set_pointwise, POINTWISE_LAYERS)}


def bind(layer, allowed: bool, switch):
    """The three passes of `layer` bound on fresh arrays (same draws every time)."""
    n, c, h, m, k, s, p = layer
    oh = (h + 2 * p - k) // s + 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = (rng.standard_normal((m, c, k, k), dtype=np.float32) / np.sqrt(k * k * c)).astype(
        np.float32)
    dy = rng.standard_normal((n, m, oh, oh), dtype=np.float32)
    switch(allowed)
    ws = np.empty(conv.conv2d_workspace_size(x.shape, w.shape, s, p), np.float32)
    y, dx, dw = np.empty_like(dy), np.empty_like(x), np.empty_like(w)
    calls = (conv.conv2d_forward(x, w, None, y, s, p, workspace=ws, bind=True),
             conv.conv2d_backward_data(dy, w, dx, s, p, workspace=ws, bind=True),
             conv.conv2d_backward_weight(x, dy, dw, None, s, p, workspace=ws, bind=True))
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
    n, c, h, m, k, s, p = layer
    flops = 2 * n * m * c * k * k * ((h + 2 * p - k) // s + 1) ** 2
    row = {}
    taken = [runs[True][1][k].tobytes() != runs[False][1][k].tobytes() for k in range(3)]
    if switch is conv._set_lanes:  # same bytes forward: ask the path
        taken = conv._lanes_passes((n, c, h, h), (m, c, k, k), s, p)
    if switch is conv._set_pointwise:  # the same sums as im2col's: taken by every 1x1 here
        taken = [True] * 3
    for k, name in enumerate(("fwd", "dx", "wg")):
        row[name] = {"ms": best[True, k] * 1e3, "ms_without": best[False, k] * 1e3,
                     "ratio": best[False, k] / best[True, k], "taken": bool(taken[k]),
                     "gflop_s": flops / best[True, k] / 1e9}
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="batch", choices=sorted(PATHS))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="one JSON object per layer")
    args = parser.parse_args(argv)
    print(f"{'layer':<17} {'(n, c, size, m, k, s, p)':<27} " + " ".join(
        f"{p + ' ms (without)':>24}" for p in ("fwd", "dx", "wg")))
    switch, layers = PATHS[args.path]
    for name, layer in layers:
        row = time_layer(layer, switch, args.reps)
        if args.json:
            print(json.dumps({"layer": name, "shape": layer, "path": args.path, **row}))
        cells = [f"{r['ms']:6.2f} ({r['ms_without']:5.2f}) x{r['ratio']:.2f}"
                 + ("" if r["taken"] else "-") for r in row.values()]
        print(f"{name:<17} {str(layer):<27} " + " ".join(f"{c:>24}" for c in cells))
    print("x: time without the path / with it; '-': the pass does not take the path")


if __name__ == "__main__":
    main()

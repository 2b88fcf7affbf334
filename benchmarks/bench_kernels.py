"""Kernel benchmarks: cnnc's GEMM (and conv) beside numpy/OpenBLAS in the same run.

    python benchmarks/bench_kernels.py [--json] [--quick] [--threads 1,2]

Every row compares cnnc with a reference timed in this run:
  numpy-env     numpy.matmul with the environment as it is (this machine may set
                OPENBLAS_CORETYPE=Haswell, which forces OpenBLAS's AVX2 kernel);
  numpy-avx512  numpy.matmul in a subprocess whose environment lacks OPENBLAS_CORETYPE and
                OPENBLAS_L2_SIZE, so OpenBLAS picks its AVX-512 kernel.
The references run in subprocesses with OPENBLAS_NUM_THREADS set to the thread count; this
process's own environment is never changed. Figures are the best of several repetitions
(the machine is shared, so slower repetitions are mostly interference).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# Conv layers as GEMMs. cnnc's conv forward computes, per image (or with the batch folded
# into the columns), C[Cout, OH*OW] = W[Cout, Cin*KH*KW] @ cols[Cin*KH*KW, OH*OW]:
#   M = output channels, K = input channels x kernel area, N = output pixels (x batch).
#
# name                     layer (input CxHxW -> output)                   M     N      K
CONV_GEMMS = [
    ("lenet5.conv1", "1x32x32 -> 6x28x28, 5x5", 6, 784, 25),
    ("lenet5.conv1.b64", "same, batch 64 folded into N", 6, 784 * 64, 25),
    ("lenet5.conv2", "6x14x14 -> 16x10x10, 5x5", 16, 100, 150),
    ("lenet5.conv2.b64", "same, batch 64 folded into N", 16, 100 * 64, 150),
    ("resnet20.conv1", "3x32x32 -> 16x32x32, 3x3", 16, 1024, 27),
    ("resnet20.stage1", "16x32x32 -> 16x32x32, 3x3", 16, 1024, 144),
    ("resnet20.stage1.b64", "same, batch 64 folded into N", 16, 1024 * 64, 144),
    ("resnet20.stage2", "32x16x16 -> 32x16x16, 3x3", 32, 256, 288),
    ("resnet20.stage2.b64", "same, batch 64 folded into N", 32, 256 * 64, 288),
    ("resnet20.stage3", "64x8x8 -> 64x8x8, 3x3", 64, 64, 576),
    ("resnet20.stage3.b64", "same, batch 64 folded into N", 64, 64 * 64, 576),
    ("vgg16.conv1_1", "3x224x224 -> 64x224x224, 3x3", 64, 50176, 27),
    ("vgg16.conv1_2", "64x224x224 -> 64x224x224, 3x3", 64, 50176, 576),
    ("vgg16.conv2_1", "64x112x112 -> 128x112x112, 3x3", 128, 12544, 576),
    ("vgg16.cifar.conv2", "64x32x32 -> 64x32x32, 3x3 (VGG on CIFAR)", 64, 1024, 576),
]
QUICK_CONV = {"lenet5.conv1.b64", "resnet20.stage1", "resnet20.stage1.b64",
              "resnet20.stage3.b64", "vgg16.cifar.conv2"}
SQUARE = [64, 128, 256, 512, 1024, 2048]
QUICK_SQUARE = [64, 256, 1024]


def gemm_shapes(quick: bool) -> list[tuple[str, int, int, int]]:
    """(name, m, n, k) of the GEMMs to time."""
    shapes = [(f"square{n}", n, n, n) for n in (QUICK_SQUARE if quick else SQUARE)]
    shapes += [(name, m, n, k) for name, _, m, n, k in CONV_GEMMS
               if not quick or name in QUICK_CONV]
    return shapes


def best_seconds(fn, budget: float, min_reps: int = 3) -> float:
    """Fastest of repeated calls of fn, after one warm-up, spending about `budget` seconds."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return min(times)


def operands(m: int, n: int, k: int):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    return a, b, np.empty((m, n), np.float32)


def time_numpy(shapes, budget: float) -> dict[str, float]:
    """GFLOP/s of numpy.matmul for each shape, in this process's environment."""
    out = {}
    for name, m, n, k in shapes:
        a, b, c = operands(m, n, k)
        out[name] = 2.0 * m * n * k / best_seconds(lambda: np.matmul(a, b, out=c), budget) / 1e9
    return out


def numpy_reference(shapes, threads: int, avx512: bool, budget: float) -> dict[str, float]:
    """Run time_numpy in a subprocess with OpenBLAS's environment set for this reference."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    if avx512:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    spec = json.dumps({"shapes": shapes, "budget": budget})
    done = subprocess.run([sys.executable, __file__, "--numpy-worker", spec], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def bench_gemm(args) -> list[dict]:
    from cnnc._kernels import gemm

    shapes = gemm_shapes(args.quick)
    budget = 0.05 if args.quick else 0.3
    rows = []
    for threads in args.threads:
        refs = {"numpy-env": numpy_reference(shapes, threads, False, budget),
                "numpy-avx512": numpy_reference(shapes, threads, True, budget)}
        for name, m, n, k in shapes:
            a, b, c = operands(m, n, k)
            secs = best_seconds(lambda: gemm.gemm(a, b, c, n_threads=threads), budget)
            ours = 2.0 * m * n * k / secs / 1e9
            for ref, table in refs.items():
                rows.append({"kind": "gemm", "name": name, "threads": threads, "m": m, "n": n,
                             "k": k, "dtype": "float32", "kernel": gemm.kernel_name(),
                             "cnnc_gflops": round(ours, 1), "ref": ref,
                             "ref_gflops": round(table[name], 1),
                             "ratio": round(ours / table[name], 2)})
    return rows


def bench_conv(args) -> list[dict]:
    """Per-layer conv timings as rows of kind "conv"; the conv kernels' author fills this in."""
    return []


def print_table(rows: list[dict]) -> None:
    print(f"{'kind':5} {'name':22} {'thr':>3} {'m':>5} {'n':>6} {'k':>5} "
          f"{'cnnc GF/s':>10} {'ref':>13} {'ref GF/s':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['kind']:5} {r['name']:22} {r['threads']:3d} {r.get('m', ''):>5} "
              f"{r.get('n', ''):>6} {r.get('k', ''):>5} {r['cnnc_gflops']:10.1f} "
              f"{r['ref']:>13} {r['ref_gflops']:9.1f} "
              f"{r['cnnc_gflops'] / r['ref_gflops']:6.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="few shapes, short timings")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--numpy-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.numpy_worker:
        spec = json.loads(args.numpy_worker)
        print(json.dumps(time_numpy(spec["shapes"], spec["budget"])))
        return
    args.threads = [int(t) for t in args.threads.split(",") if t]
    rows = bench_gemm(args) + bench_conv(args)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()

"""Kernel benchmarks: cnnc's GEMM (and conv) beside numpy/OpenBLAS in the same run.

    python benchmarks/bench_kernels.py [--json] [--quick] [--threads 1,2]

Every row compares cnnc with a reference timed in this run:
  numpy-env     numpy.matmul with the environment as it is (this machine may set
                OPENBLAS_CORETYPE=Haswell, which forces OpenBLAS's AVX2 kernel);
  numpy-avx512  numpy.matmul in a subprocess whose environment lacks OPENBLAS_CORETYPE and
                OPENBLAS_L2_SIZE, so OpenBLAS picks its AVX-512 kernel.
The references run in worker subprocesses with OPENBLAS_NUM_THREADS set to the thread
count, shape by shape between cnnc's timings; this process's own environment is never
changed. GEMM figures are the best of several repetitions (the machine is shared, so slower
repetitions are mostly interference), timed by thread CPU time at one thread and by wall
time at more (the "clock" field).
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
# Its backward runs dcols = W^T @ dY ("tn": A stored transposed) and dW = dY @ cols^T
# ("nt": B stored transposed).
#
# name                     layer (input CxHxW -> output)                  M      N      K  op
CONV_GEMMS = [
    ("lenet5.conv1", "1x32x32 -> 6x28x28, 5x5", 6, 784, 25, "nn"),
    ("lenet5.conv1.b64", "same, batch 64 folded into N", 6, 784 * 64, 25, "nn"),
    ("lenet5.conv2", "6x14x14 -> 16x10x10, 5x5", 16, 100, 150, "nn"),
    ("lenet5.conv2.b64", "same, batch 64 folded into N", 16, 100 * 64, 150, "nn"),
    ("lenet5.conv2.b64.dx", "its backward data, batch 64", 150, 100 * 64, 16, "tn"),
    ("lenet5.conv2.b64.dw", "its backward weight, batch 64", 16, 150, 100 * 64, "nt"),
    ("resnet20.conv1", "3x32x32 -> 16x32x32, 3x3", 16, 1024, 27, "nn"),
    ("resnet20.stage1", "16x32x32 -> 16x32x32, 3x3", 16, 1024, 144, "nn"),
    ("resnet20.stage1.b64", "same, batch 64 folded into N", 16, 1024 * 64, 144, "nn"),
    ("resnet20.stage1.b64.dx", "its backward data, batch 64", 144, 1024 * 64, 16, "tn"),
    ("resnet20.stage1.b64.dw", "its backward weight, batch 64", 16, 144, 1024 * 64, "nt"),
    ("resnet20.stage2", "32x16x16 -> 32x16x16, 3x3", 32, 256, 288, "nn"),
    ("resnet20.stage2.b64", "same, batch 64 folded into N", 32, 256 * 64, 288, "nn"),
    ("resnet20.stage3", "64x8x8 -> 64x8x8, 3x3", 64, 64, 576, "nn"),
    ("resnet20.stage3.b64", "same, batch 64 folded into N", 64, 64 * 64, 576, "nn"),
    ("resnet20.stage3.b64.dx", "its backward data, batch 64", 576, 64 * 64, 64, "tn"),
    ("resnet20.stage3.b64.dw", "its backward weight, batch 64", 64, 576, 64 * 64, "nt"),
    ("vgg16.conv1_1", "3x224x224 -> 64x224x224, 3x3", 64, 50176, 27, "nn"),
    ("vgg16.conv1_2", "64x224x224 -> 64x224x224, 3x3", 64, 50176, 576, "nn"),
    ("vgg16.conv2_1", "64x112x112 -> 128x112x112, 3x3", 128, 12544, 576, "nn"),
    ("vgg16.cifar.conv2", "64x32x32 -> 64x32x32, 3x3 (VGG on CIFAR)", 64, 1024, 576, "nn"),
]
QUICK_CONV = {"lenet5.conv1.b64", "resnet20.stage1", "resnet20.stage1.b64",
              "resnet20.stage1.b64.dw", "vgg16.cifar.conv2"}
# Dense layers at small batch: y[N, units] = x[N, F] @ W[F, units] ("nn", M = N), and the
# backward data dx = dy @ W^T ("nt"); memory-bound, each element of W used N times. The
# seed CNN's dense_1 (specs/seed.cnn): F = 64x14x14 = 12544, units = 128.
#
# name                  M      N      K  op
DENSE_GEMMS = [
    ("seed.dense_1.b1", 1, 128, 12544, "nn"),
    ("seed.dense_1.b4", 4, 128, 12544, "nn"),
    ("seed.dense_1.b1.dx", 1, 12544, 128, "nt"),
]
QUICK_DENSE = {"seed.dense_1.b1"}
SQUARE = [64, 128, 256, 512, 1024, 2048]
QUICK_SQUARE = [64, 256, 512]
CLOCKS = {"thread-cpu": time.thread_time, "wall": time.perf_counter}


def gemm_clock(threads: int) -> str:
    """One thread is timed by its CPU time (robust on a shared machine), more by the wall."""
    return "thread-cpu" if threads == 1 else "wall"


def gemm_shapes(quick: bool) -> list[tuple[str, int, int, int, str]]:
    """(name, m, n, k, op) of the GEMMs to time; op "tn" = A stored transposed, etc."""
    shapes = [(f"square{n}", n, n, n, "nn") for n in (QUICK_SQUARE if quick else SQUARE)]
    shapes += [(name, m, n, k, op) for name, _, m, n, k, op in CONV_GEMMS
               if not quick or name in QUICK_CONV]
    shapes += [shape for shape in DENSE_GEMMS if not quick or shape[0] in QUICK_DENSE]
    return shapes


def best_seconds(fn, budget: float, min_reps: int = 3, clock=time.perf_counter) -> float:
    """Fastest of repeated calls of fn, after one warm-up, spending about `budget` seconds.

    `clock` is wall time by default; time.thread_time (the calling thread's CPU time) leaves
    out the time a single-threaded call spends descheduled on a busy machine.
    """
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget:
        t = clock()
        fn()
        times.append(clock() - t)
        if len(times) >= 200:
            break
    return min(times)


def operands(m: int, n: int, k: int, op: str):
    """Seeded float32 A and B, stored as `op` says, and an output C."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if op[0] == "t" else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if op[1] == "t" else (k, n), dtype=np.float32)
    return a, b, np.empty((m, n), np.float32)


class NumpyReference:
    """numpy.matmul timed in a worker subprocess with OpenBLAS's environment set for one
    reference; shapes are sent one at a time, so its timings interleave with ours."""

    def __init__(self, threads: int, avx512: bool):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
        if avx512:
            env.pop("OPENBLAS_CORETYPE", None)
            env.pop("OPENBLAS_L2_SIZE", None)
        self.name = "numpy-avx512" if avx512 else "numpy-env"
        self.proc = subprocess.Popen([sys.executable, __file__, "--numpy-worker"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def gflops(self, m: int, n: int, k: int, op: str, budget: float, clock: str) -> float:
        self.proc.stdin.write(json.dumps([m, n, k, op, budget, clock]) + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def numpy_worker() -> None:
    """Answer each [m, n, k, op, budget, clock] line on stdin with numpy.matmul's GFLOP/s."""
    for line in sys.stdin:
        m, n, k, op, budget, clock = json.loads(line)
        a, b, c = operands(m, n, k, op)
        a, b = (a.T if op[0] == "t" else a), (b.T if op[1] == "t" else b)
        secs = best_seconds(lambda: np.matmul(a, b, out=c), budget, clock=CLOCKS[clock])
        print(2.0 * m * n * k / secs / 1e9, flush=True)


def bench_gemm(args) -> list[dict]:
    from cnnc._kernels import gemm

    budget = 0.05 if args.quick else 0.3
    rows = []
    for threads in args.threads:
        refs = [NumpyReference(threads, avx512=False), NumpyReference(threads, avx512=True)]
        clock = gemm_clock(threads)
        for name, m, n, k, op in gemm_shapes(args.quick):
            a, b, c = operands(m, n, k, op)
            secs = best_seconds(lambda: gemm.gemm(a, b, c, trans_a=op[0] == "t",
                                                  trans_b=op[1] == "t", n_threads=threads),
                                budget, clock=CLOCKS[clock])
            ours = 2.0 * m * n * k / secs / 1e9
            for ref in refs:
                theirs = ref.gflops(m, n, k, op, budget, clock)
                rows.append({"kind": "gemm", "name": name, "threads": threads, "m": m, "n": n,
                             "k": k, "op": op, "dtype": "float32", "kernel": gemm.kernel_name(),
                             "clock": clock, "cnnc_gflops": round(ours, 1), "ref": ref.name,
                             "ref_gflops": round(theirs, 1), "ratio": round(ours / theirs, 2)})
        for ref in refs:
            ref.close()
    return rows


def bench_conv(args) -> list[dict]:
    """Per-layer conv GFLOP/s beside PyTorch's (timed in a subprocess) in the same run.

    Rows: <layer>.fwd (forward with bias), <layer>.bwd (backward data + weight + bias) and
    <layer>.fwd+bwd (their summed time); GFLOP/s counts 2 flops per multiply-add, the
    backward as twice the forward. One-thread rows time CPU seconds, others wall seconds
    (see conv_seconds). Without torch the rows are skipped with a note.
    """
    from cnnc._kernels import conv

    layers = [layer for layer in CONV_LAYERS if not args.quick or layer[0] in QUICK_LAYERS]
    budget = 0.05 if args.quick else 0.3
    rows = []
    for threads in args.threads:
        refs = torch_reference(layers, threads, budget)
        if refs is None:
            print("bench_conv: torch is not installed; conv rows skipped", file=sys.stderr)
            return []
        for layer in layers:
            ours = time_cnnc_conv(conv, layer, threads, budget)
            for phase, secs in ours.items():
                flops = conv_flops(layer) * PHASE_FLOPS[phase]
                mine, ref = flops / secs / 1e9, flops / refs[layer[0]][phase] / 1e9
                rows.append({"kind": "conv", "name": f"{layer[0]}.{phase}", "threads": threads,
                             "batch": layer[1], "dtype": "float32",
                             "clock": "cpu" if threads == 1 else "wall",
                             "ms": round(secs * 1e3, 3), "cnnc_gflops": round(mine, 1),
                             "ref": "torch", "ref_gflops": round(ref, 1),
                             "ratio": round(mine / ref, 2)})
    return rows


# name, batch, input (C, H, W), output channels, kernel, stride, padding
CONV_LAYERS = [
    ("lenet5.conv1", 64, (1, 32, 32), 6, 5, 1, 0),
    ("lenet5.conv2", 64, (6, 14, 14), 16, 5, 1, 0),
    ("resnet20.conv1", 64, (3, 32, 32), 16, 3, 1, 1),
    ("resnet20.stage1", 64, (16, 32, 32), 16, 3, 1, 1),
    ("resnet20.stage2.down", 64, (16, 32, 32), 32, 3, 2, 1),
    ("resnet20.stage2", 64, (32, 16, 16), 32, 3, 1, 1),
    ("resnet20.stage3", 64, (64, 8, 8), 64, 3, 1, 1),
    ("vgg16.cifar.conv2", 16, (64, 32, 32), 64, 3, 1, 1),
    ("vgg16.conv1_2", 1, (64, 224, 224), 64, 3, 1, 1),
    ("vgg16.conv2_1", 1, (64, 112, 112), 128, 3, 1, 1),
]
QUICK_LAYERS = {"lenet5.conv2", "resnet20.stage1", "resnet20.stage3", "vgg16.cifar.conv2"}
PHASE_FLOPS = {"fwd": 1, "bwd": 2, "fwd+bwd": 3}  # in units of the forward's flops


def conv_flops(layer) -> float:
    """2 x multiply-adds of the layer's forward pass."""
    _, n, (c, h, w), m, k, s, p = layer
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return 2.0 * n * m * oh * ow * c * k * k


def conv_arrays(layer):
    """Seeded float32 x, weight, bias and output gradient of a layer."""
    _, n, (c, h, w), m, k, s, p = layer
    rng = np.random.default_rng(0)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return (rng.standard_normal((n, c, h, w), dtype=np.float32),
            rng.standard_normal((m, c, k, k), dtype=np.float32),
            rng.standard_normal(m, dtype=np.float32),
            rng.standard_normal((n, m, oh, ow), dtype=np.float32))


def time_cnnc_conv(conv, layer, threads: int, budget: float) -> dict[str, float]:
    """Best seconds of cnnc's forward and backward (data + weight + bias) for a layer."""
    x, w, b, dy = conv_arrays(layer)
    s, p = layer[5], layer[6]
    ws = np.empty(conv.conv2d_workspace_size(x.shape, w.shape, s, p, n_threads=threads),
                  np.float32)
    y, dx, dw, db = np.empty_like(dy), np.empty_like(x), np.empty_like(w), np.empty_like(b)

    def forward():
        conv.conv2d_forward(x, w, b, y, s, p, workspace=ws, n_threads=threads)

    def backward():
        conv.conv2d_backward_data(dy, w, dx, s, p, workspace=ws, n_threads=threads)
        conv.conv2d_backward_weight(x, dy, dw, db, s, p, workspace=ws, n_threads=threads)

    fwd, bwd = conv_seconds(forward, budget, threads), conv_seconds(backward, budget, threads)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def conv_seconds(fn, budget: float, threads: int) -> float:
    """Best time of fn: CPU time of this process with one thread (robust when the shared
    machine is oversubscribed: time sliced away is not counted), wall time with more."""
    if threads > 1:
        return best_seconds(fn, budget)
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget:
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
        if len(times) >= 200:
            break
    return min(times)


def time_torch_convs(spec: dict) -> dict:
    """The same timings for torch (run in a subprocess: its OpenMP runtime stays apart)."""
    import torch

    torch.set_num_threads(spec["threads"])
    out = {}
    for layer in spec["layers"]:
        x, w, b, dy = (torch.from_numpy(a) for a in conv_arrays(layer))
        s, p = layer[5], layer[6]

        def forward():
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, b, s, p)

        def backward():
            torch.ops.aten.convolution_backward(dy, x, w, [w.shape[0]], [s, s], [p, p],
                                                [1, 1], False, [0, 0], 1, [True, True, True])

        fwd = conv_seconds(forward, spec["budget"], spec["threads"])
        bwd = conv_seconds(backward, spec["budget"], spec["threads"])
        out[layer[0]] = {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}
    return out


def torch_reference(layers, threads: int, budget: float) -> dict | None:
    """time_torch_convs in a subprocess; None when torch is not installed."""
    code = ("import importlib.util, json, sys\n"
            "try:\n    import torch\nexcept ImportError:\n    print('null'); sys.exit()\n"
            "spec = importlib.util.spec_from_file_location('bench', sys.argv[1])\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "print(json.dumps(mod.time_torch_convs(json.loads(sys.argv[2]))))\n")
    spec = json.dumps({"layers": layers, "threads": threads, "budget": budget})
    done = subprocess.run([sys.executable, "-c", code, __file__, spec], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


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
    parser.add_argument("--numpy-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.numpy_worker:
        numpy_worker()
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

"""cnnc against PyTorch, end to end: the same networks, the same optimizer, one process.

    python benchmarks/compare_torch.py --json [--quick] [--threads N] [--models a,b]
    python benchmarks/compare_torch.py --scaling [--threads 2] [--quick]

For LeNet-5 (1x28x28, batch 64), the seed tutorial's CNN (3x64x64, batch 32), ResNet-20
(3x32x32, batch 64) and VGG-11 for CIFAR (3x32x32, batch 64) it builds the network in cnnc
(from specs/) and in PyTorch (defined below; the trainable parameter counts are asserted
equal), both trained with SGD (lr 0.01, momentum 0.9), and times three rows per network:
a training step (forward, backward, update) at the network's batch, inference at that
batch, and inference at batch 1. Within a row the contenders run alternately in bursts of
about 50 ms (after a warm-up; short steps get one untimed step first, to refill the caches
the other contender emptied) and each keeps the median of its steps.

PyTorch at its best: glibc's malloc thresholds are pinned for both sides (the script
re-executes itself with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set, before
anything is allocated; stock glibc returns PyTorch's large freed blocks to the kernel and
re-faults them every step), and PyTorch runs each row in NCHW and in channels_last: the
faster counts, and the row says which.

Clock: with one thread, each step is timed by the process's CPU time, which preemptions
on a shared machine do not inflate (both sides run on the calling thread only); with more
threads, by wall-clock time (the two OpenMP runtimes then share the cores; thread
scaling is measured by ``--scaling``, which runs each framework in processes of its own
and reports each one's training speed-up at ``--threads`` (default 2) over 1 thread, with
a check of the cores themselves before and after each multi-threaded run: this VM's second
core is sometimes not all there, for minutes at a time, and the checks say which rounds
ran so; and a probe before each burst of multi-threaded steps of where the host runs the
two vCPUs: on cores that share an L3, or not, and computing as fast as each other, or not
(see time_placed)).
Output: one JSON object per row (``--json``), then a table.
Without PyTorch installed the script says so and measures cnnc alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# 32 MiB is the largest mmap threshold glibc accepts; every tensor of these networks is
# below it, so freed blocks stay in the heap, and the trim threshold keeps the heap whole.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
CORE_OK = (1.8, 1.5)  # core checks (see core_check) reaching these: the cores were there
PLACES = ("one_l3", "uneven", "shared", "split", "busy")  # see time_placed
LR, MOMENTUM = 0.01, 0.9


@dataclass(frozen=True)
class Net:
    """A benchmark network: its spec, batch, and the issue's target ratios (cnnc / torch)
    for training, inference at the batch, inference at batch 1 (None: no target)."""

    name: str
    spec: str
    batch: int
    targets: tuple[float | None, float | None, float | None]


NETS = {
    "lenet5": Net("lenet5", "lenet5.cnn", 64, (2.0, 1.5, 3.0)),
    "seed": Net("seed", "seed.cnn", 32, (1.5, 1.5, 3.0)),
    "resnet20": Net("resnet20", "resnet20.cnn", 64, (1.5, 1.5, None)),
    "vgg11": Net("vgg11", "vgg11_cifar.cnn", 64, (1.5, 1.5, None)),
}


def pin_malloc() -> None:
    """Re-execute this script with the malloc thresholds in its environment (once)."""
    if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()):
        return
    env = {**os.environ, **MALLOC_ENV}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


# ---- the networks in PyTorch ----------------------------------------------------------
# Batchnorm takes Keras's defaults, as cnnc's batchnorm does (momentum 0.99 = PyTorch's
# 0.01, epsilon 1e-3); losses take logits (cnnc feeds its loss the softmax's or the
# sigmoid's input too).

def torch_net(name: str):
    """(module, loss function) of the network ``name`` in PyTorch."""
    import torch.nn as nn

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)

    if name == "lenet5":
        net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        return net, nn.CrossEntropyLoss()
    if name == "seed":
        net = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 14 * 14, 128), nn.ReLU(), nn.Linear(128, 1), nn.Flatten(0))
        return net, nn.BCEWithLogitsLoss()
    if name == "resnet20":
        class Basic(nn.Module):
            def __init__(self, cin, c, stride):
                super().__init__()
                self.main = nn.Sequential(
                    nn.Conv2d(cin, c, 3, stride, 1, bias=False), bn(c), nn.ReLU(),
                    nn.Conv2d(c, c, 3, 1, 1, bias=False), bn(c))
                self.skip = nn.Identity() if stride == 1 and cin == c else nn.Sequential(
                    nn.Conv2d(cin, c, 1, stride, bias=False), bn(c))
                self.relu = nn.ReLU()

            def forward(self, x):
                return self.relu(self.main(x) + self.skip(x))

        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), bn(16), nn.ReLU()]
        cin = 16
        for c, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(Basic(cin, c, stride if i == 0 else 1))
                cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        return nn.Sequential(*layers), nn.CrossEntropyLoss()
    if name == "vgg11":
        layers, cin = [], 3
        for c in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, c, 3, padding=1), bn(c), nn.ReLU()]
                cin = c
        layers += [nn.Flatten(), nn.Linear(512, 10)]
        return nn.Sequential(*layers), nn.CrossEntropyLoss()
    raise ValueError(f"no PyTorch definition of {name!r}")


# ---- contenders: one step function per (framework, layout) ----------------------------

def batch_for(net: Net, batch: int, seed: int = 0):
    """Random inputs in [0, 1) and labels for ``net`` (numpy)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = {"lenet5": (1, 28, 28), "seed": (3, 64, 64)}.get(net.name, (3, 32, 32))
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 2 if net.name == "seed" else 10, batch)
    return x, y


def cnnc_model(net: Net):
    import cnnc
    from cnnc.dsl import Option
    return cnnc.compile(ROOT / "specs" / net.spec, batch=net.batch, seed=0,
                        optimizer=Option("sgd", {"lr": LR, "momentum": MOMENTUM}))


def cnnc_step(model, mode: str, x, y) -> Callable[[], object]:
    if mode == "train":
        return lambda: model.train_step(x, y)
    return lambda: model.forward(x)


def torch_step(net: Net, mode: str, x, y, channels_last: bool) -> Callable[[], object]:
    import torch
    module, loss_fn = torch_net(net.name)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(memory_format=fmt)
    tx = torch.from_numpy(x).contiguous(memory_format=fmt)
    ty = torch.from_numpy(y).float() if net.name == "seed" else torch.from_numpy(y)
    if mode == "infer":
        module.eval()

        def infer():
            with torch.inference_mode():
                return module(tx)
        return infer
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)

    def train():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(module(tx), ty)
        loss.backward()
        opt.step()
        return loss
    return train


def check_params(net: Net, model, have_torch: bool) -> int:
    """The trainable parameter count, asserted equal on both sides."""
    from cnnc.ir.summary import summarize
    ours = summarize(model.graph)["trainable_params"]
    if not have_torch:
        return ours
    module, _ = torch_net(net.name)
    theirs = sum(p.numel() for p in module.parameters())
    assert ours == theirs, f"{net.name}: cnnc has {ours:,} parameters, PyTorch {theirs:,}"
    return ours


# ---- timing ---------------------------------------------------------------------------

def time_alternately(steps: dict[str, Callable[[], object]], clock: Callable[[], float],
                     warmup: int, min_steps: int, budget_s: float, burst_s: float = 0.05
                     ) -> dict[str, float]:
    """Median seconds per step of each contender. After ``warmup`` steps each, rounds in
    which each contender runs a burst of about ``burst_s`` (2 steps at least) in turn; for
    steps shorter than ``burst_s``, a first untimed step refills the caches the other
    contenders emptied. Rounds go on until each has ``min_steps`` kept steps and the row has used
    ``budget_s`` of the clock (or 20x min_steps steps)."""
    bursts, refill = {}, {}
    for key, step in steps.items():
        for _ in range(max(warmup, 1)):
            t = clock()
            step()
            took = clock() - t
        bursts[key] = max(2, min(50, round(burst_s / max(took, 1e-6))))
        refill[key] = took < burst_s
    times: dict[str, list[float]] = {k: [] for k in steps}
    start = clock()
    while True:
        for key, step in steps.items():
            if refill[key]:
                step()
            for _ in range(bursts[key]):
                t = clock()
                step()
                times[key].append(clock() - t)
        done = min(len(t) for t in times.values())
        if done >= min_steps and (clock() - start >= budget_s or done >= 20 * min_steps):
            break
    return {k: statistics.median(v) for k, v in times.items()}


def run_net(net: Net, threads: int, quick: bool, have_torch: bool) -> list[dict]:
    clock = time.process_time if threads == 1 else time.perf_counter
    warmup, min_steps, budget = (1, 4, 1.0) if quick else (3, 10, 6.0)
    model = cnnc_model(net)
    params = check_params(net, model, have_torch)
    rows = []
    for mode, batch, target in (("train", net.batch, net.targets[0]),
                                ("infer", net.batch, net.targets[1]),
                                ("infer", 1, net.targets[2])):
        x, y = batch_for(net, batch)
        steps = {"cnnc": cnnc_step(model, mode, x, y)}
        if have_torch:
            steps["torch_nchw"] = torch_step(net, mode, x, y, channels_last=False)
            steps["torch_cl"] = torch_step(net, mode, x, y, channels_last=True)
        med = time_alternately(steps, clock, warmup, min_steps, budget)
        ips = {k: batch / s for k, s in med.items()}
        row = {"model": net.name, "mode": mode, "batch": batch, "threads": threads,
               "params": params, "clock": "cpu" if threads == 1 else "wall",
               "load": os.getloadavg()[0],
               "cnnc_img_s": ips["cnnc"], "torch_img_s": None, "ratio": None,
               "target": target}
        if have_torch:
            layout = max(("torch_nchw", "torch_cl"), key=ips.get)
            row.update(torch_img_s=ips[layout], ratio=ips["cnnc"] / ips[layout],
                       torch_layout="channels_last" if layout == "torch_cl" else "nchw",
                       torch_nchw_img_s=ips["torch_nchw"], torch_cl_img_s=ips["torch_cl"])
            row["meets_target"] = None if target is None else row["ratio"] >= target
        rows.append(row)
    return rows


def scaling_worker(net: Net, framework: str, threads: int, quick: bool) -> dict:
    """Images/s of ``framework`` training ``net`` at ``threads`` threads (wall clock), in a
    process that runs no other thread count: PyTorch slows down many times when its thread
    count changes between steps, and cnnc alternating its one- and two-thread plans in one
    process measured 1.55-1.65x on VGG-11 where separate processes gave 1.84-1.95x in the
    same minutes (both plans' arenas then share the caches). ``img_s`` over all steps; with
    more than one thread also ``placed``: images/s and steps by where the cores were
    (see time_placed)."""
    import cnnc
    warmup, min_steps, budget = (1, 4, 2.0) if quick else (2, 10, 6.0)
    x, y = batch_for(net, net.batch)
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        step = torch_step(net, "train", x, y, channels_last=True)
    else:
        cnnc.set_num_threads(threads)
        step = cnnc_step(cnnc_model(net), "train", x, y)
    if threads == 1:
        med = time_alternately({1: step}, time.perf_counter, warmup, min_steps, budget)
        return {"img_s": net.batch / med[1]}
    placed = time_placed(step, warmup, min_steps, budget)
    every = [t for times in placed.values() for t in times]
    return {"img_s": net.batch / statistics.median(every),
            "placed": {k: {"img_s": net.batch / statistics.median(v), "steps": len(v)}
                       for k, v in placed.items() if v}}


def time_placed(step: Callable[[], object], warmup: int, min_steps: int, budget_s: float,
                burst_s: float = 0.25) -> dict[str, list[float]]:
    """Seconds per step in bursts of about ``burst_s``, each filed under where the cores
    were just before it (cnnc.bench.cores_now: "one_l3", "uneven", "shared", "split",
    "busy"), until ``budget_s`` (and ``min_steps`` steps) have passed. This VM's host moves
    the two vCPUs between cores that share an L3 and cores that do not, every few seconds
    at times; on the latter a cache line written by one thread and read by the other takes
    3x as long (a round trip of 320-650 ns, not 50-150), and a training step on two threads
    ran up to 1.8x slower. On one L3, one vCPU often computes 1.2-1.5x slower than the
    other for seconds at a time (uneven), or both run on one core (shared)."""
    from cnnc.bench import cores_now
    for _ in range(max(warmup, 1)):
        t = time.perf_counter()
        step()
        took = time.perf_counter() - t
    burst = max(2, round(burst_s / max(took, 1e-6)))
    placed: dict[str, list[float]] = {k: [] for k in PLACES}
    start, count = time.perf_counter(), 0
    while count < min_steps or time.perf_counter() - start < budget_s:
        times = placed[cores_now()]
        step()  # untimed: wakes the threads the probe let sleep
        for _ in range(burst):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        count += burst
    return placed


def core_check(threads: int) -> tuple[float, float]:
    """The machine's own speed-ups at ``threads`` against one thread (best of 7 each):
    cnnc's GEMM (1024 x 1024 x 1024 float32, compute-bound) and an add of two 4 MB arrays
    (L3-resident). This VM's vCPUs are sometimes given less than a core each for tens of
    seconds at a time (the GEMM then scales 1.0-1.1x, and so does a training step), or
    share the caches and memory with a busy neighbour (a quiet machine's add: 1.5-2.6x); a
    round run then says little about the code. The checks catch some of these spells, not
    all: they are sampled around a run, not during it."""
    import numpy as np

    from cnnc._kernels import elementwise, gemm
    rng = np.random.default_rng(0)
    a, b = (rng.random((1024, 1024), dtype=np.float32) for _ in "ab")
    c = np.empty_like(a)
    ratios = []
    for bind in (lambda n: gemm.gemm(a, b, c, n_threads=n, bind=True),
                 lambda n: lambda: elementwise.add_forward([a, b], c, n_threads=n)):
        best = {}
        for n in (1, threads):
            call = bind(n)
            call()
            best[n] = min(_seconds(call) for _ in range(7))
        ratios.append(best[1] / best[threads])
    return ratios[0], ratios[1]


def _seconds(call: Callable[[], object]) -> float:
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


def _worker(framework: str, net: Net, threads: int, quick: bool) -> dict:
    cmd = [sys.executable, __file__, "--scaling-worker", framework, "--models", net.name,
           "--threads", str(threads)] + (["--quick"] if quick else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _core_check(threads: int) -> tuple[float, float]:
    """core_check in a process of its own (no other OpenMP runtime loaded)."""
    cmd = [sys.executable, __file__, "--core-check", "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def run_scaling(net: Net, threads: int, quick: bool, have_torch: bool) -> dict:
    """Each framework's training speed-up at ``threads`` threads over its own one-thread
    figure, the median over rounds (2 with --quick, else 3). Each framework runs in
    processes of its own: two OpenMP runtimes in one process (PyTorch's and cnnc's) keep
    each other's idle threads spinning. A round is one process per framework and thread
    count (see scaling_worker). Each multi-threaded one is bracketed by core checks (see
    core_check): ``{fw}_speedup_checked`` is the speed-up over the rounds whose checks
    both reached CORE_OK (None if none did). Its steps are filed by where the cores were
    (see time_placed): ``{fw}_speedup_one_l3`` is the speed-up over the steps run on cores
    that share an L3 (the machine lscpu describes) and computed as fast as each other,
    ``{fw}_placed_steps`` the count of steps per placement."""
    row = {"model": net.name, "mode": "train", "batch": net.batch, "threads": threads,
           "scaling": True, "target": 1.8, "load_before": os.getloadavg()[0]}
    frameworks = ("cnnc", "torch") if have_torch else ("cnnc",)
    ones: dict[str, list[float]] = {fw: [] for fw in frameworks}
    manys: dict[str, list[dict]] = {fw: [] for fw in frameworks}
    checks: dict[str, list[tuple[float, float]]] = {fw: [] for fw in frameworks}
    for _ in range(2 if quick else 3):
        for fw in frameworks:
            ones[fw].append(_worker(fw, net, 1, quick)["img_s"])
            before = _core_check(threads)
            manys[fw].append(_worker(fw, net, threads, quick))
            after = _core_check(threads)
            checks[fw].append((min(before[0], after[0]), min(before[1], after[1])))
    for fw in frameworks:
        one = statistics.median(ones[fw])
        many = [r["img_s"] for r in manys[fw]]
        good = [v for v, (g, m) in zip(many, checks[fw]) if g >= CORE_OK[0] and m >= CORE_OK[1]]
        one_l3 = [r["placed"]["one_l3"]["img_s"] for r in manys[fw] if "one_l3" in r["placed"]]
        placed = {k: sum(r["placed"].get(k, {}).get("steps", 0) for r in manys[fw])
                  for k in PLACES}
        row.update({f"{fw}_img_s_1": one, f"{fw}_img_s_{threads}": statistics.median(many),
                    f"{fw}_speedup": statistics.median(many) / one,
                    f"{fw}_speedups": [b / a for a, b in zip(ones[fw], many)],
                    f"{fw}_core_checks": checks[fw],
                    f"{fw}_speedup_checked": statistics.median(good) / one if good else None,
                    f"{fw}_speedups_one_l3": [v / one for v in one_l3],
                    f"{fw}_speedup_one_l3": statistics.median(one_l3) / one if one_l3 else None,
                    f"{fw}_placed_steps": placed})
    row["load_after"] = os.getloadavg()[0]
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'model':<9} {'mode':<6} {'batch':>5} {'thr':>3} {'cnnc img/s':>11} "
            f"{'torch img/s':>12} {'layout':<13} {'ratio':>6} {'target':>6}")
    lines = [head, "-" * len(head)] if any(not r.get("scaling") for r in rows) else []
    for r in rows:
        if r.get("scaling"):
            torch_x = f", PyTorch {r['torch_speedup']:.2f}x" if "torch_speedup" in r else ""
            lines.append(f"{r['model']:<9} train {r['batch']:>6}: {r['threads']} threads vs 1: "
                         f"cnnc {r['cnnc_speedup']:.2f}x{torch_x} (target cnnc >= "
                         f"{r['target']}x; wall clock; load average "
                         f"{r['load_before']:.1f} -> {r['load_after']:.1f})")
            lines.append(" " * 10 + _checked(r))
            continue
        torch_s = f"{r['torch_img_s']:>12,.0f}" if r["torch_img_s"] else f"{'-':>12}"
        ratio = f"{r['ratio']:>6.2f}" if r["ratio"] else f"{'-':>6}"
        target = f"{r['target']:>5.1f}x" if r["target"] else f"{'-':>6}"
        lines.append(f"{r['model']:<9} {r['mode']:<6} {r['batch']:>5} {r['threads']:>3} "
                     f"{r['cnnc_img_s']:>11,.0f} {torch_s} {r.get('torch_layout', '-'):<13} "
                     f"{ratio} {target}")
    return "\n".join(lines)


def _checked(r: dict) -> str:
    """The speed-ups over the steps run on one L3 with even cores, and over the rounds whose
    cores held."""
    parts = []
    for fw, name in (("cnnc", "cnnc"), ("torch", "PyTorch")):
        if f"{fw}_core_checks" not in r:
            continue
        one_l3, steps = r[f"{fw}_speedup_one_l3"], r[f"{fw}_placed_steps"]
        checks = ", ".join(f"{g:.2f}/{m:.2f}" for g, m in r[f"{fw}_core_checks"])
        got = r[f"{fw}_speedup_checked"]
        counts = " / ".join(str(steps.get(k, 0)) for k in PLACES)
        parts.append(f"{name}: on one L3, even cores "
                     f"{'-' if one_l3 is None else f'{one_l3:.2f}x'} (steps on one L3 even / "
                     f"uneven / on one core / split / no core free: {counts}); rounds whose "
                     f"cores held {'-' if got is None else f'{got:.2f}x'} (core checks "
                     f"{checks})")
    return (f"(core checks: GEMM >= {CORE_OK[0]}x, L3 add >= {CORE_OK[1]}x)\n"
            + "\n".join(" " * 10 + p for p in parts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per row, then the table")
    p.add_argument("--quick", action="store_true", help="fewer, shorter runs (< 2 minutes)")
    p.add_argument("--threads", type=int, default=1, help="threads for both (default 1)")
    p.add_argument("--scaling", action="store_true",
                   help="instead: each framework's training speed-up at --threads "
                        "(default 2) over 1 thread; ResNet-20 and VGG-11 unless --models")
    p.add_argument("--scaling-worker", choices=("cnnc", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--core-check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--models", default=None,
                   help=f"comma-separated subset of {','.join(NETS)}")
    args = p.parse_args(argv)
    default = "resnet20,vgg11" if args.scaling else ",".join(NETS)
    names = [m for m in (args.models or default).split(",") if m]
    unknown = [m for m in names if m not in NETS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}; choose from {', '.join(NETS)}")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.scaling and not args.scaling_worker and args.threads == 1:
        args.threads = 2
    pin_malloc()
    if args.core_check:
        print(json.dumps(core_check(max(args.threads, 2))))
        return 0
    if args.scaling_worker:
        print(json.dumps(scaling_worker(NETS[names[0]], args.scaling_worker, args.threads,
                                        args.quick)))
        return 0
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed (pip install torch==2.13.0): measuring cnnc alone",
              file=sys.stderr)
    import cnnc
    cnnc.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    rows = []
    for name in names:
        if args.scaling:
            found = [run_scaling(NETS[name], args.threads, args.quick, torch is not None)]
        else:
            found = run_net(NETS[name], args.threads, args.quick, torch is not None)
        for row in found:
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

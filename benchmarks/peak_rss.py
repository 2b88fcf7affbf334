"""Peak resident memory of training, cnnc vs PyTorch, with cnnc's planned arena beside it.

    python benchmarks/peak_rss.py [--models resnet20,vgg11] [--steps 10] [--json]

Each (framework, network) runs in a fresh process that only builds the network (as in
compare_torch.py: same definitions, same SGD with momentum) and trains it on one random
batch for ``--steps`` steps at the network's batch, then reports ``ru_maxrss``, its
resident size after the imports (the runtime's own footprint: Python, numpy, libtorch),
and the growth from there (peak - baseline: what training the network costs). Both run
with the same pinned malloc thresholds as compare_torch.py; PyTorch runs in NCHW and in
channels_last (the ratio takes its smaller peak). cnnc's row also gives its
training plan's arena, its lower bound, and the parameter and optimizer-state bytes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_torch as ct  # noqa: E402  (the networks and the malloc settings)

FRAMEWORKS = ("cnnc", "torch_nchw", "torch_cl")  # PyTorch in both layouts


def rss_kib() -> int:
    """The current resident set size in KiB (from /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def worker(framework: str, name: str, steps: int, threads: int) -> dict:
    """Train ``name`` with ``framework`` for ``steps`` steps; memory figures in KiB."""
    net = ct.NETS[name]
    x, y = ct.batch_for(net, net.batch)
    if framework == "cnnc":
        import cnnc
        cnnc.set_num_threads(threads)
        base = rss_kib()
        model = ct.cnnc_model(net)
        step = ct.cnnc_step(model, "train", x, y)
    else:
        import torch
        torch.set_num_threads(threads)
        base = rss_kib()
        step = ct.torch_step(net, "train", x, y, channels_last=framework == "torch_cl")
    for _ in range(steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"framework": framework, "model": name, "batch": net.batch, "steps": steps,
           "threads": threads, "peak_rss_kib": peak, "baseline_rss_kib": base,
           "growth_kib": peak - base}
    if framework == "cnnc":
        r = model.memory_report("train", net.batch)
        out.update({k: r[k] for k in ("arena_bytes", "lower_bound_bytes", "naive_bytes",
                                      "workspace_bytes", "param_bytes", "optimizer_bytes")})
    return out


def measure(framework: str, name: str, steps: int, threads: int) -> dict:
    """Run :func:`worker` in a fresh process with the pinned malloc environment."""
    cmd = [sys.executable, __file__, "--worker", framework, "--models", name,
           "--steps", str(steps), "--threads", str(threads)]
    done = subprocess.run(cmd, env={**os.environ, **ct.MALLOC_ENV}, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet20", help="comma-separated, from "
                   + ",".join(ct.NETS))
    p.add_argument("--steps", type=int, default=10, help="training steps (default 10)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one JSON object per run, then a table")
    p.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    for m in names:
        if m not in ct.NETS:
            p.error(f"unknown model {m!r}; choose from {', '.join(ct.NETS)}")
    if args.worker:
        print(json.dumps(worker(args.worker, names[0], args.steps, args.threads)))
        return 0
    frameworks = FRAMEWORKS if importlib.util.find_spec("torch") is not None else ("cnnc",)
    if frameworks == ("cnnc",):
        print("PyTorch is not installed: measuring cnnc alone", file=sys.stderr)
    lines = [f"{'model':<9} {'framework':<10} {'peak MiB':>9} {'baseline':>9} {'growth':>8} "
             f"{'arena MiB':>9} {'params+opt':>10}"]
    for name in names:
        rows = {f: measure(f, name, args.steps, args.threads) for f in frameworks}
        for f, r in rows.items():
            if args.json:
                print(json.dumps(r), flush=True)
            arena = _mib((r["arena_bytes"] + r["workspace_bytes"]) / 1024) \
                if "arena_bytes" in r else "-"
            state = _mib((r["param_bytes"] + r["optimizer_bytes"]) / 1024) \
                if "param_bytes" in r else "-"
            lines.append(f"{name:<9} {f:<10} {_mib(r['peak_rss_kib']):>9} "
                         f"{_mib(r['baseline_rss_kib']):>9} {_mib(r['growth_kib']):>8} "
                         f"{arena:>9} {state:>10}")
        if len(rows) > 1:
            c = rows["cnnc"]
            t = min((rows[f] for f in FRAMEWORKS[1:]), key=lambda r: r["peak_rss_kib"])
            lines.append(f"  cnnc / torch: peak {c['peak_rss_kib'] / t['peak_rss_kib']:.2f}, "
                         f"growth {c['growth_kib'] / t['growth_kib']:.2f} (PyTorch's "
                         f"{t['framework']})")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A multi-threaded training step against where the host runs the vCPUs, second by second.

    python benchmarks/bench_placement.py [--spec specs/resnet20.cnn] [--batch 64]
                                         [--threads 2] [--seconds 60] [--json]

Each second: the round trip of a cache line between this thread and another
(``cnnc.bench.core_round_trip``), then the median of the training steps run in the rest of
that second. On this project's 2-vCPU VM the round trip is 50-150 ns while the host runs
both vCPUs on cores that share an L3, and 320-650 ns while it does not; the steps follow
it (see benchmarks/RESULTS.md, session 10). The summary files the seconds by
``cnnc.bench.placement``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cnnc
from cnnc.bench import core_round_trip, placement, random_batch, step_function

ROOT = Path(__file__).resolve().parents[1]


def run(spec: str, batch: int, threads: int, seconds: float) -> list[tuple[float, float]]:
    """(round trip ns, median step ms) per second of ``seconds``."""
    cnnc.set_num_threads(threads)
    model = cnnc.compile(spec, batch=batch)
    x, y = random_batch(model, batch)
    step = step_function(model, "train", x, y)
    for _ in range(3):
        step()
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        ns = core_round_trip()
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < 1.0:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        out.append((ns, statistics.median(times) * 1e3))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "resnet20.cnn"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--json", action="store_true", help="one JSON object per second")
    a = p.parse_args()
    seconds = run(a.spec, a.batch, a.threads, a.seconds)
    for ns, ms in seconds:
        print(json.dumps({"round_trip_ns": ns, "step_ms": ms}) if a.json
              else f"{ns:8.0f} ns  {ms:7.1f} ms")
    for where in ("one_l3", "split", "busy"):
        ms = [m for ns, m in seconds if placement(ns) == where]
        if ms:
            print(f"{where:>6}: {len(ms):3d} s, step median {statistics.median(ms):.1f} ms")


if __name__ == "__main__":
    main()

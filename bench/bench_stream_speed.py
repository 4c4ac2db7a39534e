"""Speed and size of the per-metric streaming layer, in process.

Run: ``python -m bench.bench_stream_speed [--samples 5000] [--hosts 2000]``.

- one sample of the 14 metrics through ``HostStream.update`` (scoring loop) and
  ``HostStream.score`` (predict): p50 / p99 over ``--samples`` samples after a day of warm-up,
  in wall time and in the thread's CPU time (wall time on a shared machine also counts the
  time the process was preempted by others);
- a pass over ``--hosts`` hosts, one sample each (the scoring loop's work per interval), as
  hosts per second on one core, and the hosts a 60 s interval could keep up with;
- the state of a host: bytes stored (``to_bytes``) and held in arrays.

Baseline in the same run: the time of 20 numpy element-wise operations on 14 floats (what
the machine's speed at small numpy calls is right now; the layer is made of such calls).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from services.trainer.anomaly.streaming import HostStream
from shared.catalogue import METRIC_NAMES


def baseline_us(repeats: int = 20_000) -> float:
    a, b = np.random.default_rng(0).random((2, 14))
    t0 = time.perf_counter()
    for _ in range(repeats):
        for _ in range(20):
            np.maximum(a, b)
    return (time.perf_counter() - t0) / repeats * 1e6


def rows(n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(10, 80, 14)
    values = base + rng.normal(0, 3, (n, 14))
    return [dict(zip(METRIC_NAMES, v.tolist(), strict=True)) for v in values]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--hosts", type=int, default=2000)
    args = ap.parse_args()
    print(f"baseline: 20 numpy ops on 14 floats {baseline_us():.1f} us")
    stream = HostStream(METRIC_NAMES)
    warm = rows(1440, 1)
    ts = 1.7e9
    for r in warm:
        ts += 60
        stream.update(ts, r)
    wall: dict[str, list[float]] = {"update": [], "score": []}
    cpu: dict[str, list[float]] = {"update": [], "score": []}
    for r in rows(args.samples, 2):
        ts += 60
        t0, c0 = time.perf_counter(), time.thread_time()
        stream.score(ts, r)
        t1, c1 = time.perf_counter(), time.thread_time()
        stream.update(ts, r)
        t2, c2 = time.perf_counter(), time.thread_time()
        wall["score"].append(t1 - t0)
        wall["update"].append(t2 - t1)
        cpu["score"].append(c1 - c0)
        cpu["update"].append(c2 - c1)
    for name, label in (("update", "update (scoring loop)"), ("score", "score (predict)")):
        w, c = np.asarray(wall[name]) * 1e6, np.asarray(cpu[name]) * 1e6
        print(
            f"{label}: wall p50 {np.percentile(w, 50):.0f} us, p99 {np.percentile(w, 99):.0f} us; "
            f"CPU p50 {np.percentile(c, 50):.0f} us, p99 {np.percentile(c, 99):.0f} us"
        )
    blob = stream.to_bytes()
    print(f"state: {len(blob):,} B stored, {stream.nbytes():,} B of arrays")
    hosts = [HostStream.from_bytes(blob) for _ in range(args.hosts)]
    sample = rows(args.hosts, 3)
    ts += 60
    t0 = time.perf_counter()
    for h, r in zip(hosts, sample, strict=True):
        h.update(ts, r)
    rate = args.hosts / (time.perf_counter() - t0)
    print(
        f"pass over {args.hosts} hosts: {rate:,.0f} hosts/s on one core; "
        f"a 60 s interval keeps up with {rate * 60:,.0f} hosts"
    )
    baseline = baseline_us()
    print(f"baseline again: {baseline:.1f} us")


if __name__ == "__main__":
    main()

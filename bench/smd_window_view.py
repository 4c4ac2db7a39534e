"""SMD train halves: false incidents per host-day with and without the window-novelty view.

Run: ``NAB_WINDOW="span=14400" python -m bench.smd_window_view [--machines ...] [--jobs 2]``.

The per-metric layer runs as in ``bench.bench_stream_smd`` (a new host, learning from its first
row, train half only); the window view of ``bench.nab_window_view`` (settings from
$NAB_WINDOW) runs beside it per metric. A metric's surprise is the max of its layer surprise
and its window surprise (a fifth view, combined as the layer combines its four); the host's
is the largest over its active metrics less log10 of their number, as the kernel does.
Incidents as the service raises them (``--consecutive`` rows in a row), after probation, per
host-day of the train half, at each threshold of bench_stream_smd's grid: without the view
(must reproduce bench_stream_smd's train lines) and with it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import time

import numpy as np

from bench.bench_smd import MACHINES, METRICS, load
from bench.bench_stream_smd import GRID
from bench.nab_window_view import WindowView, settings
from services.trainer.anomaly.evaluation import incident_rows, runs
from services.trainer.anomaly.streaming import HostStream, surprise_of


def train_half(machine: str) -> dict[str, object]:
    train, _, _ = load(machine)
    s = settings()
    stream = HostStream(tuple(METRICS))
    views = [WindowView(s) for _ in METRICS]
    times = train["timestamp"].astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
    values = train[METRICS].to_numpy(dtype=float)
    n = len(train)
    base, with_view = np.zeros(n), np.zeros(n)
    learning = np.zeros(n, dtype=bool)
    window_time = 0.0
    for i in range(n):
        r = stream.update(float(times[i]), dict(zip(METRICS, values[i].tolist(), strict=True)))
        base[i] = r.surprise
        learning[i] = all(m.learning for m in r.metrics)
        t0 = time.perf_counter()
        best, active = -1.0, 0
        for m in r.metrics:
            j = stream.index[m.metric]
            scale = max(stream.spread[j], 1e-6 * abs(stream.level[j]), 1e-9)
            sw = views[j].update(float(times[i]), m.value, float(scale))
            if not m.learning:
                active += 1
                best = max(best, m.surprise, sw)
        with_view[i] = max(0.0, best - math.log10(active)) if active else 0.0
        window_time += time.perf_counter() - t0
    days = (train["timestamp"].iloc[-1] - train["timestamp"].iloc[0]).total_seconds() / 86400
    return {
        "base": base,
        "view": with_view,
        "learning": learning,
        "days": days,
        "us_per_metric_sample": 1e6 * window_time / (n * len(METRICS)),
        "view_bytes": views[0].nbytes(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", nargs="*", default=list(MACHINES))
    ap.add_argument("--consecutive", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        results = dict(zip(args.machines, pool.map(train_half, args.machines), strict=True))
    print(f"window view {settings()}; incidents after {args.consecutive} in a row")
    for key in ("base", "view"):
        print(f"train halves, {key}: incidents per host-day after probation, by threshold")
        for thr in GRID:
            per_day = []
            for r in results.values():
                flags = (r[key] >= surprise_of(thr)) & ~r["learning"]
                per_day.append(len(runs(incident_rows(flags, args.consecutive))) / r["days"])
            print(
                f"  threshold {thr:<10} "
                + " ".join(f"{v:5.2f}" for v in per_day)
                + f" | mean {np.mean(per_day):.3f}"
            )
    cost = np.mean([r["us_per_metric_sample"] for r in results.values()])
    print(
        f"window view: {cost:.1f} us per metric-sample (numpy), {results[args.machines[0]]['view_bytes']} B per metric"
    )


if __name__ == "__main__":
    main()

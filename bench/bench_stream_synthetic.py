"""A synthetic month through the streaming detector exactly as the service runs it on a new host.

Run: ``python -m bench.bench_stream_synthetic [--seed 7] [--days 30] [--consecutive 3]``.

The host is new: the detector learns from the month's first sample, scores every sample
causally with its defaults, and detections are counted as the service's incidents. Prints
per-scenario event recall and the overall event precision by threshold (the scenarios are
labelled by the generator; docs/synthetic.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.bench_stream_smd import GRID
from services.trainer.anomaly.evaluation import evaluate_labels, incident_rows
from services.trainer.anomaly.streaming import HostStream, surprise_of
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES
from shared.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--consecutive", type=int, default=3)
    args = ap.parse_args()
    month = SyntheticDataGenerator(seed=args.seed).generate_full_training_set(args.days)
    metrics = [m for m in METRIC_NAMES if m in month.columns]
    times = month["timestamp"].astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
    values = month[metrics].to_numpy(dtype=float)
    stream = HostStream(tuple(metrics))
    surprise = np.zeros(len(month))
    lat = np.zeros(len(month))
    for i in range(len(month)):
        row = dict(zip(metrics, values[i].tolist(), strict=True))
        t0 = time.perf_counter()
        surprise[i] = stream.update(float(times[i]), row).surprise
        lat[i] = time.perf_counter() - t0
    labels = month["label"].astype(str).to_numpy()
    default = float(getattr(Settings(), "anomaly_threshold", 0.9999))
    print(f"synthetic month seed {args.seed}, {args.days} days, {len(month)} samples, new host")
    print(
        f"per sample (14 metrics, update): p50 {np.percentile(lat, 50) * 1e6:.0f} us, "
        f"p99 {np.percentile(lat, 99) * 1e6:.0f} us; state {stream.nbytes():,} B"
    )
    for thr in sorted({*GRID, default}):
        flags = incident_rows(surprise >= surprise_of(thr), args.consecutive)
        ev = evaluate_labels(labels, flags)
        rec = {k: v["event_recall"] for k, v in ev["scenarios"].items()}
        o = ev["overall"]
        mark = "  <- default" if thr == default else ""
        print(
            f"  threshold {thr:<10} event P {o['event_precision']:.3f} runs {o['flagged_runs']:4d} "
            f"| recall " + " ".join(f"{k} {v:.2f}" for k, v in rec.items()) + mark
        )


if __name__ == "__main__":
    main()

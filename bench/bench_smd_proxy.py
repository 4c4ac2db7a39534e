"""Label-free design check on SMD: false alarms on held-out train data, recall of injected shifts.

Run: ``python -m bench.bench_smd_proxy [--machines ...] [--events 25] [--seed 0]``.

Detector changes are judged here, never on the SMD test labels. For each machine the train
half (no labels) is split in time: the detector is fitted on its first 70 % and scores the
last 30 %, counted as the service's incidents (open after 3 in a row above the threshold,
resolved after 3 in a row below; contamination 0.01):

- *false alarms a day*: flagged runs on that held-out stretch as it is (the train half is
  mostly normal, so most runs there are false alarms);
- *injected recall*: the same stretch with ``--events`` shifts injected at random (seeded):
  2-4 random varying metrics raised by 0.1-0.3 (the data is min-max scaled to [0, 1]) for
  3-60 minutes, about one every 6 hours; share of them flagged at least once, and the
  point-wise F1 of the flagged rows against the injected rows on that stretch.

Each configuration is a set of ``AnomalyDetector`` arguments; the defaults are the first.
The configurations of options since removed from the detector (no jump view, median level,
no shift memory) are in bench/RESULTS.md with their figures.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_smd import MACHINES, METRICS, load
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    detection_counts,
    incident_rows,
    runs,
)

FIT_SHARE = 0.7
CONFIGS: dict[str, dict[str, Any]] = {
    "default (jump view, level mean 5, smoothing 20, 24 h memory)": {},
}
DURATIONS = (3, 4, 5, 7, 10, 15, 30, 60)


def inject(
    frame: pd.DataFrame, start: int, rng: np.random.Generator, n_events: int
) -> tuple[pd.DataFrame, list[Event]]:
    """Raise 2-4 random varying metrics for 3-60 minutes at ``n_events`` places after
    ``start``; returns the frame and the events (row indices relative to ``start``)."""
    out = frame.copy()
    values = out[METRICS].to_numpy(copy=True)
    varying = [j for j in range(len(METRICS)) if np.ptp(values[start:, j]) > 0]
    places = np.arange(start + 100, len(out) - 100, 200)
    events = []
    for s in np.sort(rng.choice(places, n_events, replace=False)):
        d = int(rng.choice(DURATIONS))
        cols = rng.choice(varying, int(rng.integers(2, 5)), replace=False)
        for j in cols:
            values[s : s + d, j] = np.clip(values[s : s + d, j] + rng.uniform(0.1, 0.3), 0, 1)
        events.append(Event(int(s) - start, int(s) + d - 1 - start, "injected"))
    out[METRICS] = values
    return out, events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--machines", nargs="*", default=list(MACHINES))
    ap.add_argument("--events", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contamination", type=float, default=0.01)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    totals = {name: [0, 0, 0, 0.0] for name in CONFIGS}
    points = {name: DetectionCounts() for name in CONFIGS}
    for machine in args.machines:
        train, _test, _raw = load(machine)  # the test half is not read further
        cut = int(len(train) * FIT_SHARE)
        injected, events = inject(train, cut, rng, args.events)
        days = (len(train) - cut) / 1440
        for name, kwargs in CONFIGS.items():
            det = AnomalyDetector(contamination=args.contamination, **kwargs)
            det.fit(train.iloc[:cut], METRICS)
            # The held-out stretch is scored after the fitted part, as a live host would be.
            clean = incident_rows(det.score_frame(train).is_anomaly[cut:], 3)
            hit = incident_rows(det.score_frame(injected).is_anomaly[cut:], 3)
            counts = detection_counts(events, hit)
            points[name] = points[name] + counts
            false_runs = len(runs(clean))
            t = totals[name]
            t[0] += false_runs
            t[1] += counts.events_detected
            t[2] += counts.events
            t[3] += days
            print(
                f"{machine:13s} {name:62s} false alarms {false_runs / days:5.2f}/day, "
                f"injected recall {counts.event_recall:.2f}, point F1 {counts.f1:.3f}",
                flush=True,
            )
    for name, (false_runs, found, n, days) in totals.items():
        print(
            f"{'POOLED':13s} {name:62s} false alarms {false_runs / days:5.2f}/day, "
            f"injected recall {found / n:.2f} ({found}/{n}), point F1 {points[name].f1:.3f}"
        )


if __name__ == "__main__":
    main()

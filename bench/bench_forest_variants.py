"""Forest variants compared without the SMD test labels: false incidents against injected recall
over a grid of thresholds (issue 9's recall, on the train halves only).

Run: ``python -m bench.bench_forest_variants [--variants default s5 s1 nolag30 ...]``.

As ``bench_smd_proxy``: each machine's train half is split in time, the forest fitted on its
first 70 % scores the last 30 % as it is (false incidents a day: the train half is mostly
normal) and with 25 seeded shifts injected (2-4 varying metrics raised by 0.1-0.3 for 3-60
minutes; injected event recall and point F1), counted as the service's incidents (3 in a
row). Every threshold of the grid (the ``1 - c`` quantile of the forest's own training
scores) is read off one scoring, so a variant is a curve, and variants are compared at equal
false incidents.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np

from bench.bench_smd import MACHINES, METRICS, load
from bench.bench_smd_proxy import FIT_SHARE, inject
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    detection_counts,
    incident_rows,
    runs,
)
from services.trainer.anomaly.features import FeatureConfig

GRID = (0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.02)
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "nocorr": {"correlation": 0.0},  # before the correlation view
    "corr95": {"correlation": 0.95},
    "corr999": {"correlation": 0.999},
    "s10": {"smoothing": 10},
    "s5": {"smoothing": 5},
    "s1": {"smoothing": 1},
    "nolag30": {"feature_config": replace(FeatureConfig(), lags=(5,))},
    "s5_nolag30": {"smoothing": 5, "feature_config": replace(FeatureConfig(), lags=(5,))},
    "base30": {"feature_config": replace(FeatureConfig(), baseline_window=30)},
    "notime": {"feature_config": replace(FeatureConfig(), time_features=False)},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--machines", nargs="*", default=list(MACHINES))
    ap.add_argument("--events", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fi = {v: np.zeros(len(GRID)) for v in args.variants}
    found = {v: np.zeros(len(GRID)) for v in args.variants}
    points = {v: [DetectionCounts() for _ in GRID] for v in args.variants}
    total_events, days = 0, 0.0
    rng = np.random.default_rng(args.seed)
    for machine in args.machines:
        train, _test, _raw = load(machine)  # the test half is not read further
        cut = int(len(train) * FIT_SHARE)
        injected, events = inject(train, cut, rng, args.events)
        total_events += len(events)
        days += (len(train) - cut) / 1440
        for v in args.variants:
            det = AnomalyDetector(contamination=0.001, **VARIANTS[v]).fit(train.iloc[:cut], METRICS)
            clean = det.score_frame(train).score
            hit = det.score_frame(injected).score[cut:]
            for j, c in enumerate(GRID):
                thr = float(np.quantile(clean[:cut], 1.0 - c))
                fi[v][j] += len(runs(incident_rows(clean[cut:] >= thr, 3)))
                counts = detection_counts(events, incident_rows(hit >= thr, 3))
                found[v][j] += counts.events_detected
                points[v][j] = points[v][j] + counts
        print(f"{machine} done", flush=True)
    print(
        f"pooled over {len(args.machines)} machines, {days:.1f} held-out days, "
        f"{total_events} injected events"
    )
    for v in args.variants:
        cells = [
            f"{c}: {fi[v][j] / days:.2f}/{found[v][j] / total_events:.2f}/{points[v][j].f1:.2f}"
            for j, c in enumerate(GRID)
        ]
        print(f"{v:12s} (c: FI a day / injected recall / point F1) " + "  ".join(cells))


if __name__ == "__main__":
    main()

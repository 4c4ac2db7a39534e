"""A host's forest after a gap in its samples (issue 9: no false alarm after an outage).

Run: ``python -m bench.bench_forest_gaps [--positions 150]``. The host ``synthetic``'s forest
as the service trains it (``train_detector`` on 30 days of seed 42), then at random positions
in normal stretches a gap of 2 to 120 minutes is cut out of the samples. Counted: positions
where the forest flags at least 3 of the 80 rows after the gap (what opens an incident),
and the same rows without the gap. Rows the forest abstains on (NaN) flag nothing.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import numpy as np

from services.trainer.anomaly import artifact
from services.trainer.anomaly.features import frame_times
from services.trainer.anomaly.training import train_detector
from services.trainer.synthetic.generator import SyntheticDataGenerator

AFTER = 80  # rows after the gap looked at (the forest's look-back and smoothing: 81)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--positions", type=int, default=150)
    ap.add_argument("--gaps", default="2,5,10,20,45,70,120")
    args = ap.parse_args()
    month = SyntheticDataGenerator(seed=42).generate_full_training_set(
        30, start=datetime(2026, 10, 1, tzinfo=UTC)
    )
    outcome = train_detector(month, contamination=0.05, n_estimators=100, synthetic_seed=42)
    det = artifact.load(outcome.artifact, outcome.sha256)
    times = frame_times(month)
    values = month.reindex(columns=list(det.metrics)).to_numpy(dtype=float)
    normal = month["label"].astype(str).to_numpy() == "normal"
    thr = det.fitted_threshold
    rng = np.random.default_rng(0)
    print(f"forest threshold {thr:.6f}; {args.positions} positions a gap; rows 0-{AFTER} after")
    for gap in (int(g) for g in args.gaps.split(",")):
        starts = [
            i
            for i in range(2000, len(times) - gap - AFTER - 1, 37)
            if normal[i - 200 : i + gap + AFTER].all()
        ]
        pos = rng.choice(starts, min(args.positions, len(starts)), replace=False)
        with_gap = without = abstained = 0
        for i in pos:
            lo, hi = i - 200, i + gap + AFTER
            t, v = times[lo:hi], values[lo:hi]
            plain = det.score_features(det.extractor.transform_arrays(t, v), threshold=thr)
            keep = np.ones(len(t), dtype=bool)
            keep[200 : 200 + gap] = False
            holed = det.score_features(
                det.extractor.transform_arrays(t[keep], v[keep]), threshold=thr
            )
            without += int(plain.is_anomaly[200 + gap :].sum() >= 3)
            with_gap += int(holed.is_anomaly[200:].sum() >= 3)
            abstained += int(np.isnan(holed.score[200:]).all())
        print(
            f"gap {gap:3d} min: flagged >= 3 rows after it at {with_gap}/{len(pos)} positions "
            f"(same rows, no gap: {without}/{len(pos)}); forest abstained on all of them at "
            f"{abstained}/{len(pos)}",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""SMD benchmark: train per machine on the train half, score the test half, report figures.

Run: ``python -m bench.bench_smd [--contamination 0.01] [--consecutive 3] [--data DIR]``.

The threshold is the contamination quantile of the train scores; the test labels are used
only to count. Detections are counted as the service raises incidents
(``evaluation.incident_rows``): a row is flagged while an incident is open, from the
``--consecutive``-th row in a row above the threshold (``ML_ANOMALY_CONSECUTIVE``, default
3) until as many rows in a row are back below; causal, no point-adjust; ``--consecutive 1``
gives the raw flags. The baseline is a plain Isolation Forest on the raw 38 columns with its
threshold at the 99th percentile of its train scores, run here too, on its raw flags (as
the issue defines it) and with the same incident rule. The Peaks-Over-Threshold runs
(``--threshold-method pot``, an option removed with the POT threshold) are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    attribution_hits,
    detection_counts,
    incident_rows,
)

MACHINES = ("machine-1-2", "machine-2-1", "machine-3-10", "machine-2-5")
METRICS = [f"m{i:02d}" for i in range(1, 39)]
ROOT = Path(__file__).resolve().parents[1]
DATA_DIRS = (ROOT / "tests" / "data" / "smd", ROOT.parent / "shared" / "data" / "smd")


def data_dir(machine: str) -> Path:
    for d in DATA_DIRS:
        if (d / f"{machine}_test.csv.gz").exists():
            return d
    raise FileNotFoundError(f"no SMD files for {machine} in {DATA_DIRS}")


def load(machine: str, directory: Path | None = None):
    d = directory or data_dir(machine)
    train = pd.read_csv(d / f"{machine}_train.csv.gz", parse_dates=["timestamp"])
    test = pd.read_csv(d / f"{machine}_test.csv.gz", parse_dates=["timestamp"])
    raw = json.loads((d / f"{machine}_interpretation.json").read_text())
    return train, test, raw


def attribution(det: AnomalyDetector, feats, flags, raw_events, k: int = 3):
    tops, truths = [], []
    for ev in raw_events:
        idx = np.flatnonzero(flags[ev["start"] : ev["end"] + 1])
        if len(idx):
            row = ev["start"] + int(idx[0])
            tops.append([c.metric for c in det.contributions(feats, row, top_k=k)])
            truths.append(ev["metrics"])
    return attribution_hits(tops, truths, n_metrics=len(METRICS), k=k)


def run_machine(
    machine: str,
    *,
    contamination: float,
    directory: Path | None = None,
    consecutive: int = 3,
):
    train, test, raw = load(machine, directory)
    events = [Event(e["start"], e["end"], "anomaly") for e in raw]
    t0 = time.perf_counter()
    det = AnomalyDetector(contamination=contamination).fit(train, METRICS)
    fit_s = time.perf_counter() - t0
    # The test half follows the train half; the service reads a host's last
    # ``history_samples`` (feature look-back and 24 h of shift memory) before scoring.
    history = det.history_samples
    frame = pd.concat([train.iloc[-history:], test], ignore_index=True)
    t0 = time.perf_counter()
    scores = det.score_frame(frame)
    score_s = time.perf_counter() - t0
    flags = incident_rows(scores.is_anomaly[history:], consecutive)
    feats = scores.features.take(slice(history, None))
    counts = detection_counts(events, flags)
    attr = attribution(det, feats, flags, raw)

    # Baseline: plain Isolation Forest on the raw columns, threshold at train p99.
    base = IsolationForest(n_estimators=100, random_state=0).fit(train[METRICS].to_numpy())
    thr = np.quantile(-base.score_samples(train[METRICS].to_numpy()), 0.99)
    bflags = -base.score_samples(test[METRICS].to_numpy()) > thr
    bcounts = detection_counts(events, bflags)
    bcounts_confirmed = detection_counts(events, incident_rows(bflags, consecutive))
    # Baseline attribution: largest |z| against train mean/std (guarded).
    mu = train[METRICS].mean().to_numpy()
    sd = train[METRICS].std().to_numpy()
    sd = np.where(sd > 0, sd, 1.0)
    z = np.abs((test[METRICS].to_numpy() - mu) / sd)
    btops, btruth = [], []
    for ev in raw:
        idx = np.flatnonzero(bflags[ev["start"] : ev["end"] + 1])
        if len(idx):
            r = ev["start"] + idx[0]
            btops.append([METRICS[j] for j in np.argsort(-z[r])[:3]])
            btruth.append(ev["metrics"])
    battr = attribution_hits(btops, btruth, n_metrics=len(METRICS), k=3)
    return dict(
        counts=counts,
        attr=attr,
        base=bcounts,
        base_confirmed=bcounts_confirmed,
        battr=battr,
        fit_s=fit_s,
        score_rate=len(frame) / score_s,
        threshold=det.fitted_threshold,
    )


def fmt_counts(c: DetectionCounts) -> str:
    return (
        f"P {c.precision:.3f} R {c.recall:.3f} F1 {c.f1:.3f} | "
        f"event P {c.event_precision:.3f} R {c.event_recall:.3f} F1 {c.event_f1:.3f} "
        f"({c.events_detected}/{c.events} events, {c.flagged_runs} flagged runs)"
    )


def fmt(c: DetectionCounts, attr) -> str:
    return (
        f"{fmt_counts(c)} | hit@3 {attr.hit_rate:.3f} (chance {attr.chance:.3f}, n={attr.events})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contamination", type=float, default=0.01)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--machines", nargs="*", default=list(MACHINES))
    ap.add_argument(
        "--consecutive",
        type=int,
        default=3,
        help="rows in a row above the threshold before a detection (ML_ANOMALY_CONSECUTIVE)",
    )
    args = ap.parse_args()
    tot, btot, bctot = DetectionCounts(), DetectionCounts(), DetectionCounts()
    hits = bhits = n = bn = 0
    chance = bchance = 0.0
    rule = f"contamination={args.contamination} quantile threshold"
    print(
        f"detector: AnomalyDetector defaults, {rule}, "
        f"counted as incidents: open after {args.consecutive} rows in a row above the threshold, "
        f"resolved after {args.consecutive} below"
    )
    for m in args.machines:
        r = run_machine(
            m,
            contamination=args.contamination,
            directory=args.data,
            consecutive=args.consecutive,
        )
        print(f"{m:13s} detector {fmt(r['counts'], r['attr'])}")
        print(f"{'':13s} baseline {fmt(r['base'], r['battr'])}")
        print(f"{'':13s} baseline, as incidents: {fmt_counts(r['base_confirmed'])}")
        print(
            f"{'':13s} threshold {r['threshold']:.5f}, fit {r['fit_s']:.2f}s, "
            f"batch scoring {r['score_rate']:,.0f} rows/s"
        )
        tot, btot = tot + r["counts"], btot + r["base"]
        bctot = bctot + r["base_confirmed"]
        hits += r["attr"].hits
        n += r["attr"].events
        chance += r["attr"].chance * r["attr"].events
        bhits += r["battr"].hits
        bn += r["battr"].events
        bchance += r["battr"].chance * r["battr"].events

    class _A:
        def __init__(self, h, k, c):
            self.hits, self.events, self.chance = h, k, c / k if k else 0.0
            self.hit_rate = h / k if k else 0.0

    print(f"{'POOLED':13s} detector {fmt(tot, _A(hits, n, chance))}")
    print(f"{'':13s} baseline {fmt(btot, _A(bhits, bn, bchance))}")
    print(f"{'':13s} baseline, as incidents: {fmt_counts(bctot)}")


if __name__ == "__main__":
    main()

"""Where SMD's recall goes between the forest alone and the host's two layers (issue 9).

Run: ``python -m bench.smd_recall_cache`` once (about 5 minutes), then
``python -m bench.bench_smd_recall [--cache DIR] [--threshold 0.999] [--rules ...] [--events]``.

Each rule turns a host's two scores into rows above its threshold; incidents are then counted
as the service counts them (``incident_rows``, ``--consecutive`` in a row). Rules:

- ``stream``: the per-metric layer alone (score >= threshold);
- ``forest:c=C``: the forest alone, its threshold the 1 - C quantile of its training scores;
- ``max:c=C``: what the service runs (``hostscore.combine``), the forest's threshold at C;
  ``max2:c=C``: before the two layers' joint p (the larger of the two scores);
- ``fisher:c=C``: the two p-values joined by Fisher's method (p = q (1 - ln q), q = p1 p2),
  the stream's p = 1 - score, the forest's p = 1 - its calibrated score rescaled so that its
  C threshold has p = 1 - threshold; flagged when the joint p <= 1 - threshold or as ``max`` would;
- ``:t=T`` after any rule: the per-metric layer's threshold T instead of ``--threshold``
  (``max:c=C:t=T`` flags a row when the stream's score >= T or the forest's >= its C
  threshold);
- ``either:c=C``: each layer confirmed on its own (``--consecutive`` in a row of that layer),
  incidents open while either layer has one (two trackers, one incident).

Figures, as ``bench_host_score``: the SMD train halves' false incidents per host-day (forest
fitted on the first half of each train half, counted on the second half, clean by
construction: the design figure), the synthetic month (seed 7 after 42: event precision and
per-scenario recall), and the SMD test halves pooled (reported, never chosen on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.bench_smd import MACHINES
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    detection_counts,
    evaluate_labels,
    incident_rows,
    runs,
)
from services.trainer.anomaly.hostscore import combine_all, forest_on_stream_scale


def mapped(f: np.ndarray, f_thr: float, thr: float) -> np.ndarray:
    return np.array([forest_on_stream_scale(float(x), f_thr, thr) for x in f])


def fisher_p(p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    q = np.maximum(p1 * p2, 1e-300)
    return q * (1.0 - np.log(q))


def flags_of(rule: str, s: np.ndarray, f: np.ndarray, f_thr: float, thr: float, k: int):
    name = rule.split(":")[0]
    thr = param(rule, "t", thr)  # the per-metric layer's threshold, if not the host's
    if name == "stream":
        return incident_rows(s >= thr, k)
    if name == "forest":
        return incident_rows(f >= f_thr, k)
    m = mapped(f, f_thr, thr)
    if name == "max":  # what the service runs
        return incident_rows(combine_all(s, f, f_thr, thr) >= thr, k)
    if name == "max2":  # before the two layers' joint p: the larger of the two
        return incident_rows(np.maximum(s, m) >= thr, k)
    if name == "either":
        return incident_rows(s >= thr, k) | incident_rows(f >= f_thr, k)
    if name == "fisher":
        p = fisher_p(1.0 - s, np.maximum(1.0 - m, 0.0))
        return incident_rows((p <= 1.0 - thr) | (np.maximum(s, m) >= thr), k)
    raise SystemExit(f"unknown rule {rule}")


def param(rule: str, key: str, default: float) -> float:
    for part in rule.split(":")[1:]:
        k, value = part.split("=")
        if k == key:
            return float(value)
    return default


def contamination(rule: str) -> float:
    return param(rule, "c", 0.001)


def load(cache: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(cache / f"{name}.npz", allow_pickle=True) as z:
        return {k: z[k] for k in z.files}


def train_halves(cache: Path, rule: str, thr: float, k: int) -> float:
    incidents, days = 0, 0.0
    c = contamination(rule)
    for machine in MACHINES:
        d = load(cache, machine)
        n, half = int(d["n_train"]), int(d["half"])
        f_thr = float(np.quantile(d["design_forest"][:half], 1.0 - c))
        s = d["stream"][:n][half:]
        f = d["design_forest"][half:]
        incidents += len(runs(flags_of(rule, s, f, f_thr, thr, k)))
        days += (n - half) / 1440.0
    return incidents / days


def synthetic(cache: Path, rule: str, thr: float, k: int) -> tuple[float, dict[str, float]]:
    d = load(cache, "synthetic")
    # The synthetic forest is trained with its labels (train_detector): its own threshold.
    r = evaluate_labels(
        d["labels"], flags_of(rule, d["stream"], d["forest"], float(d["threshold"]), thr, k)
    )
    recall = {name: v["event_recall"] for name, v in r["scenarios"].items()}
    return r["overall"]["event_precision"], recall


def test_halves(cache: Path, rule: str, thr: float, k: int) -> tuple[DetectionCounts, dict]:
    total = DetectionCounts()
    caught: dict[str, list[bool]] = {}
    c = contamination(rule)
    for machine in MACHINES:
        d = load(cache, machine)
        n = int(d["n_train"])
        f_thr = float(np.quantile(d["test_forest_train"], 1.0 - c))
        flags = flags_of(rule, d["stream"][n:], d["test_forest"], f_thr, thr, k)
        events = [
            Event(int(a), int(b), "anomaly")
            for a, b in zip(d["event_start"], d["event_end"], strict=True)
        ]
        total = total + detection_counts(events, flags)
        caught[machine] = [bool(flags[e.start : e.end + 1].any()) for e in events]
    return total, caught


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/smdq_cache"))
    ap.add_argument("--threshold", type=float, default=0.999)
    ap.add_argument("--consecutive", type=int, default=3)
    ap.add_argument("--rules", nargs="*", default=["stream", "forest:c=0.001", "max:c=0.001"])
    ap.add_argument("--skip-test", action="store_true")
    ap.add_argument("--events", action="store_true", help="which test events each rule catches")
    args = ap.parse_args()
    thr, k = args.threshold, args.consecutive
    print(f"threshold {thr}, {k} in a row")
    caught_by = {}
    for rule in args.rules:
        fi = train_halves(args.cache, rule, thr, k)
        p, recall = synthetic(args.cache, rule, thr, k)
        line = f"{rule:18s} train FI/host-day {fi:.3f} | synth P {p:.3f} R " + " ".join(
            f"{v:.2f}" for v in recall.values()
        )
        if not args.skip_test:
            c, caught = test_halves(args.cache, rule, thr, k)
            caught_by[rule] = caught
            line += (
                f" | test F1 {c.f1:.3f} P {c.event_precision:.3f} R {c.event_recall:.3f} "
                f"({c.events_detected}/{c.events}, {c.flagged_runs} runs)"
            )
        print(line, flush=True)
    if args.events and caught_by:
        print("test events caught (1) per rule:")
        for machine in MACHINES:
            d = load(args.cache, machine)
            for i, (a, b) in enumerate(zip(d["event_start"], d["event_end"], strict=True)):
                marks = " ".join(str(int(caught_by[r][machine][i])) for r in args.rules)
                print(f"  {machine} #{i:2d} rows {a}-{b} ({b - a + 1} min): {marks}")


if __name__ == "__main__":
    main()

"""A host's forest threshold chosen from its own false-incident rate (issue 9, SMD recall).

Run: ``python -m bench.smd_recall_cache`` (and a variant cache, e.g. ``--config
counts_cap=1``), then ``python -m bench.bench_smd_budget --cache DIR [--budget 1.0]``.

The rule is the service's (``budget.choose_contamination``, the scheduled training's).
Instead of one contamination for every host (``forests.AUTO_CONTAMINATION``), each host's
forest threshold is the lowest (the largest contamination on a grid) at which the host's two
layers joined (``max``) would have opened at most ``--budget`` incidents per day on the last
third of the host's own history, scored by a forest fitted on the first two thirds. The
forest fitted on the whole history then runs at that contamination. Chosen per host from its
unlabelled history only; nothing here reads a label.

Design: history = the first half of each train half, counted on the second half (false
incidents per host-day). Reported: history = the train half, the test half pooled.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_smd import MACHINES, METRICS
from bench.bench_smd import load as load_smd
from bench.bench_smd_recall import flags_of, load
from services.trainer.anomaly.budget import choose_contamination
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    attribution_hits,
    detection_counts,
    runs,
)


def choose(history: pd.DataFrame, stream: np.ndarray, thr: float, budget: float, k: int) -> float:
    """The service's rule (``budget.choose_contamination``) on a cached stream."""
    return choose_contamination(
        history, METRICS, stream, threshold=thr, consecutive=k, budget=budget
    ).contamination


def attribute(
    raw: list[dict[str, Any]],
    flags: np.ndarray,
    surprise: np.ndarray,
    tops: list[list[str]],
    truths: list[Any],
) -> None:
    """Attribution as the service stores it: for each event flagged, the per-metric layer's
    3 most surprising metrics at its first flagged row (``tops``), beside its labelled
    metrics (``truths``)."""
    for e in raw:
        idx = np.flatnonzero(flags[e["start"] : e["end"] + 1])
        if len(idx):
            row = surprise[e["start"] + int(idx[0])]
            tops.append([METRICS[j] for j in np.argsort(-row, kind="stable")[:3]])
            truths.append(e["metrics"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/smdq_cache"))
    ap.add_argument("--threshold", type=float, default=0.999)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--consecutive", type=int, default=3)
    ap.add_argument("--skip-test", action="store_true")
    args = ap.parse_args()
    thr, k = args.threshold, args.consecutive
    incidents, days = 0, 0.0
    total = DetectionCounts()
    tops: list[list[str]] = []
    truths: list[list[str]] = []
    for machine in MACHINES:
        d = load(args.cache, machine)
        train, _test, raw = load_smd(machine)
        n, half = int(d["n_train"]), int(d["half"])
        c = choose(train.iloc[:half], d["stream"][:half], thr, args.budget, k)
        f_thr = float(np.quantile(d["design_forest"][:half], 1.0 - c))
        flags = flags_of("max", d["stream"][half:n], d["design_forest"][half:], f_thr, thr, k)
        incidents += len(runs(flags))
        days += (n - half) / 1440.0
        line = f"{machine}: design contamination {c} ({len(runs(flags))} false incidents)"
        if not args.skip_test:
            ct = choose(train, d["stream"][:n], thr, args.budget, k)
            f_thr = float(np.quantile(d["test_forest_train"], 1.0 - ct))
            flags = flags_of("max", d["stream"][n:], d["test_forest"], f_thr, thr, k)
            events = [
                Event(int(a), int(b), "anomaly")
                for a, b in zip(d["event_start"], d["event_end"], strict=True)
            ]
            counts = detection_counts(events, flags)
            total = total + counts
            attribute(raw, flags, d["metric_surprise"][n:], tops, truths)
            line += f"; test contamination {ct} ({counts.events_detected}/{counts.events})"
        print(line, flush=True)
    print(f"train halves: {incidents / days:.3f} false incidents per host-day")
    if not args.skip_test:
        print(
            f"test halves: point F1 {total.f1:.3f} | event P {total.event_precision:.3f} "
            f"R {total.event_recall:.3f} ({total.events_detected}/{total.events}, "
            f"{total.flagged_runs} runs)"
        )
        attr = attribution_hits(tops, truths, n_metrics=len(METRICS), k=3)
        print(f"hit@3 {attr.hit_rate:.3f} (chance {attr.chance:.3f}, n={attr.events})")


if __name__ == "__main__":
    main()

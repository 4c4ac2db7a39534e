"""The correlation view with its own threshold, next to the host's two layers (measured, not
built): flagged when the per-metric layer, the forest (without the view) or the view alone
passes its own threshold (issue 9's recall).

Run: ``python -m bench.smd_recall_cache --out /tmp/smdrec_cache`` with the forest without the
view (``smd_forest_variant --correlation 0``), then
``python -m bench.bench_corr_either --cache DIR [--view-c 0.001 0.002 0.003]``.

The view (``correlation.CorrelationView``, 99 % of the variance) is fitted on the rows the
forest was fitted on (design: the first half of each train half; test: the train half; the
synthetic month: its normal rows) and its threshold is the ``1 - c_v`` quantile of its
training values. Figures as ``bench_smd_recall``: train-half false incidents per host-day
(design), the synthetic month, the SMD test halves (reported, never chosen on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from bench.bench_smd import MACHINES, METRICS
from bench.bench_smd import load as load_smd
from bench.bench_smd_recall import load
from services.trainer.anomaly.correlation import CorrelationView
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    detection_counts,
    evaluate_labels,
    incident_rows,
    runs,
)
from services.trainer.anomaly.features import FeatureExtractor
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES


def view_scores(fit: pd.DataFrame, frame: pd.DataFrame, metrics: list[str]) -> tuple:
    fx = FeatureExtractor().fit(fit, metrics)
    z_fit = fx.transform(fit).z
    view = CorrelationView.fit(z_fit)
    assert view is not None
    return view.raw(z_fit), view.raw(fx.transform(frame).z)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/smdrec_cache"))
    ap.add_argument("--threshold", type=float, default=0.999)
    ap.add_argument("--forest-c", type=float, nargs="*", default=[0.001, 0.002, 0.003])
    ap.add_argument("--view-c", type=float, nargs="*", default=[0.0, 0.001, 0.002, 0.003])
    args = ap.parse_args()
    thr, k = args.threshold, 3
    pairs = [(cf, cv) for cf in args.forest_c for cv in args.view_c]
    fi = dict.fromkeys(pairs, 0)
    days = 0.0
    tests = {p: DetectionCounts() for p in pairs}
    for machine in MACHINES:
        d = load(args.cache, machine)
        train, test, _raw = load_smd(machine)
        n, half = int(d["n_train"]), int(d["half"])
        v_fit, v_all = view_scores(train.iloc[:half], train, METRICS)
        both = pd.concat([train, test], ignore_index=True)
        t_fit, t_all = view_scores(train, both, METRICS)
        events = [
            Event(int(a), int(b), "anomaly")
            for a, b in zip(d["event_start"], d["event_end"], strict=True)
        ]
        days += (n - half) / 1440.0
        for cf, cv in pairs:
            f_thr = float(np.quantile(d["design_forest"][:half], 1.0 - cf))
            flags = (d["stream"][half:n] >= thr) | (d["design_forest"][half:] >= f_thr)
            if cv > 0:
                flags |= v_all[half:] >= float(np.quantile(v_fit, 1.0 - cv))
            fi[(cf, cv)] += len(runs(incident_rows(flags, k)))
            f_thr = float(np.quantile(d["test_forest_train"], 1.0 - cf))
            flags = (d["stream"][n:] >= thr) | (d["test_forest"] >= f_thr)
            if cv > 0:
                flags |= t_all[n:] >= float(np.quantile(t_fit, 1.0 - cv))
            tests[(cf, cv)] = tests[(cf, cv)] + detection_counts(events, incident_rows(flags, k))
        print(f"{machine} done", flush=True)
    s = load(args.cache, "synthetic")
    first = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
    start = pd.Timestamp(first["timestamp"].iloc[-1]).to_pydatetime() + pd.Timedelta(minutes=1)
    second = SyntheticDataGenerator(seed=7).generate_full_training_set(30, start=start)
    normal = first[first["label"].astype(str) == "normal"]
    metrics = [m for m in METRIC_NAMES if m in first.columns]
    s_fit, s_all = view_scores(normal, pd.concat([first, second], ignore_index=True), metrics)
    s_all = s_all[len(first) :]
    for cf, cv in pairs:
        flags = (s["stream"] >= thr) | (s["forest"] >= float(s["threshold"]))
        if cv > 0:
            flags |= s_all >= float(np.quantile(s_fit, 1.0 - cv))
        r = evaluate_labels(s["labels"], incident_rows(flags, k))
        recall = " ".join(f"{v['event_recall']:.2f}" for v in r["scenarios"].values())
        c = tests[(cf, cv)]
        print(
            f"forest {cf} view {cv or 'off'}: train FI/host-day {fi[(cf, cv)] / days:.3f} | "
            f"synth P {r['overall']['event_precision']:.3f} R {recall} | test F1 {c.f1:.3f} "
            f"P {c.event_precision:.3f} R {c.event_recall:.3f} ({c.events_detected}/{c.events}, "
            f"{c.flagged_runs} runs)",
            flush=True,
        )


if __name__ == "__main__":
    main()

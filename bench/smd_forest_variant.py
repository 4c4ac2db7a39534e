"""A variant of the host's forest on the cached SMD and synthetic runs: the per-metric layer's
scores are reused from a base cache, only the forests are fitted and scored again (issue 9).

Run: ``python -m bench.smd_recall_cache --out /tmp/smdq_cache`` once, then
``python -m bench.smd_forest_variant --base /tmp/smdq_cache --out /tmp/v_s5 --smoothing 5``
and ``python -m bench.bench_smd_recall --cache /tmp/v_s5 ...`` (or ``bench_smd_budget``).

Options change the detector's ``smoothing``, its ``correlation`` view, its forest's size
(``--n-estimators``, ``--max-samples``) or its ``FeatureConfig`` (``--lags``,
``--baseline-window``, ``--std-windows``, ``--mean-windows``). The synthetic forest is
fitted as ``training.train_detector`` fits it (labelled: on the clean normal rows, at the
contamination left once the labelled anomalies are removed).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_smd import MACHINES, METRICS, load
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.features import FeatureConfig
from services.trainer.anomaly.training import MIN_CONTAMINATION, _clean_normal
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES


def detector(kw: dict[str, Any], contamination: float) -> AnomalyDetector:
    return AnomalyDetector(contamination=contamination, **kw)


def smd(machine: str, base: Path, out: Path, kw: dict[str, Any]) -> None:
    with np.load(base / f"{machine}.npz") as z:
        kept = {k: z[k] for k in z.files}
    train, test, _raw = load(machine)
    half = len(train) // 2
    design = detector(kw, 0.001).fit(train.iloc[:half], METRICS)
    full = detector(kw, 0.001).fit(train, METRICS)
    history = full.history_samples
    f = full.score_frame(pd.concat([train.iloc[-history:], test], ignore_index=True))
    kept.update(
        design_forest=design.score_frame(train).score,
        design_threshold=design.fitted_threshold,
        test_forest_train=full.score_frame(train).score,
        test_forest=f.score[history:],
        test_threshold=full.fitted_threshold,
    )
    np.savez_compressed(out / f"{machine}.npz", **kept)


def synthetic(base: Path, out: Path, kw: dict[str, Any]) -> None:
    with np.load(base / "synthetic.npz", allow_pickle=True) as z:
        kept = {k: z[k] for k in z.files}
    first = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
    start = pd.Timestamp(first["timestamp"].iloc[-1]).to_pydatetime() + timedelta(minutes=1)
    second = SyntheticDataGenerator(seed=7).generate_full_training_set(30, start=start)
    cfg = kw.get("feature_config", FeatureConfig())
    normal = _clean_normal(first["label"].astype(str).to_numpy(), cfg.lookback)
    effective = max(0.05 - float(1.0 - normal.mean()), MIN_CONTAMINATION)
    metrics = [m for m in METRIC_NAMES if m in first.columns]
    det = detector(kw, effective).fit(first, metrics, normal=normal)
    history = det.history_samples
    f = det.score_frame(pd.concat([first.iloc[-history:], second], ignore_index=True))
    kept.update(forest=f.score[history:], threshold=det.fitted_threshold)
    np.savez_compressed(out / "synthetic.npz", **kept)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, default=Path("/tmp/smdq_cache"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*", default=[*MACHINES, "synthetic"])
    ap.add_argument("--smoothing", type=int, default=None)
    ap.add_argument("--correlation", type=float, default=None, help="0: no correlation view")
    ap.add_argument("--lags", type=ints, default=None)
    ap.add_argument("--baseline-window", type=int, default=None)
    ap.add_argument("--std-windows", type=ints, default=None)
    ap.add_argument("--mean-windows", type=ints, default=None)
    ap.add_argument("--n-estimators", type=int, default=None)
    ap.add_argument("--max-samples", type=int, default=None)
    args = ap.parse_args()
    kw: dict[str, Any] = {}
    for name in ("n_estimators", "max_samples"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.smoothing is not None:
        kw["smoothing"] = args.smoothing
    if args.correlation is not None:
        kw["correlation"] = args.correlation
    changes: dict[str, Any] = {}
    for name in ("lags", "baseline_window", "std_windows", "mean_windows"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if changes:
        kw["feature_config"] = replace(FeatureConfig(), **changes)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        t0 = time.perf_counter()
        if name == "synthetic":
            synthetic(args.base, args.out, kw)
        else:
            smd(name, args.base, args.out, kw)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()

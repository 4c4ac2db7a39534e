"""Forecaster benchmark: fit time, predict time, interval stability and holdout quality.

    python -m bench.bench_forecast            # everything, prints Markdown
    python -m bench.bench_forecast --quick    # skip the 1-minute fit and the process pool

Data: SyntheticDataGenerator(seed=42), 30 days from Monday 2025-01-06 00:00 UTC (a fixed
start so the held-out day, Tuesday 2025-02-04, is the same every run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from services.forecaster.model import (
    DEFAULT_CONFIG,
    ForecastConfig,
    MetricEvaluation,
    evaluate,
    evaluate_metric,
    fit_metric,
    fit_models,
    forecast,
    serialize_model,
)
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES

START = datetime(2025, 1, 6, tzinfo=UTC)
TARGETS = ("cpu_usage_percent", "memory_usage_percent", "response_time_p95")

_HISTORY: pd.DataFrame | None = None


def _init_worker(history: pd.DataFrame) -> None:
    global _HISTORY
    _HISTORY = history


def _fit_in_worker(metric: str) -> str:
    assert _HISTORY is not None
    return serialize_model(fit_metric(_HISTORY, metric)).payload


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def bench_fit(history: pd.DataFrame, *, quick: bool) -> None:
    print("## Fit: all 14 metrics, 30 days, 15-minute resolution\n")
    print("| how | seconds |\n|---|---:|")
    result = None
    for workers in (1, 2, 3):
        result, seconds = timed(fit_models, history, max_workers=workers)
        assert not result.failures, result.failures
        print(f"| thread pool, {workers} worker(s) | {seconds:.2f} |")
    if not quick:
        ctx_started = time.perf_counter()
        with ProcessPoolExecutor(2, initializer=_init_worker, initargs=(history,)) as pool:
            payloads = list(pool.map(_fit_in_worker, METRIC_NAMES))
        seconds = time.perf_counter() - ctx_started
        assert len(payloads) == 14
        print(f"| process pool, 2 workers (incl. worker start-up) | {seconds:.2f} |")
    assert result is not None
    print("\nPer metric (last thread-pool run; wall time inside a busy pool):\n")
    print("| metric | points | fit s |\n|---|---:|---:|")
    for name, model in result.models.items():
        print(f"| {name} | {model.n_points} | {model.fit_seconds:.2f} |")
    print()


def bench_resolution(history: pd.DataFrame, *, quick: bool) -> None:
    print("## Resolution: cpu_usage_percent, same run, scored on 15-minute held-out means\n")
    print("| resolution | fit s | MAE | coverage | naive day | naive week |")
    print("|---|---:|---:|---:|---:|---:|")
    resolutions = ["1h", "15min", "5min"] + ([] if quick else ["1min"])
    for resolution in resolutions:
        config = replace(DEFAULT_CONFIG, resolution=resolution)
        e = evaluate_metric(history, "cpu_usage_percent", config=config, score_resolution="15min")
        print(
            f"| {resolution} | {e.fit_seconds:.2f} | {e.mae:.3f} | {e.coverage:.2f} "
            f"| {e.naive_day_mae:.3f} | {e.naive_week_mae:.3f} |"
        )
    print()


def bench_predict(history: pd.DataFrame) -> None:
    print("## Predict: 24 h at 15 minutes (96 points), cpu_usage_percent\n")
    base = fit_metric(history, "cpu_usage_percent")
    reference_config = replace(DEFAULT_CONFIG, uncertainty_samples=5000)
    base.config = reference_config
    reference = forecast(base)
    ref_width = float((reference["yhat_upper"] - reference["yhat_lower"]).mean())
    print("| uncertainty_samples | predict ms (median of 5) | bound error vs 5,000 draws |")
    print("|---:|---:|---:|")
    for samples in (0, 100, 300, 1000):
        errors, times = [], []
        for seed in range(5):
            base.config = replace(DEFAULT_CONFIG, uncertainty_samples=samples, seed=seed)
            frame, seconds = timed(forecast, base)
            times.append(seconds * 1000)
            if samples:
                diff = np.abs(
                    frame[["yhat_lower", "yhat_upper"]].to_numpy()
                    - reference[["yhat_lower", "yhat_upper"]].to_numpy()
                )
                errors.append(float(diff.mean()) / ref_width)
        error = f"{statistics.mean(errors) * 100:.1f} % of width" if errors else "no bounds"
        print(f"| {samples} | {statistics.median(times):.1f} | {error} |")
    print()


def quality_table(results: dict[str, MetricEvaluation], names=METRIC_NAMES) -> None:
    print("| metric | MAE | naive day | naive week | beats | MAPE % | MASE | coverage |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for name in names:
        e = results.get(name)
        if e is None:
            print(f"| {name} | failed | | | | | | |")
            continue
        label = f"**{name}**" if name in TARGETS else name
        mape = f"{e.mape:.1f}" if e.mape is not None else "n/a"
        mase = f"{e.mase:.2f}" if e.mase is not None else "n/a"
        ok = "yes" if e.beats_naive else "no"
        if name in TARGETS:
            ok += " (target)" if e.beats_naive and 0.7 <= e.coverage <= 0.9 else " (MISSED)"
        print(
            f"| {label} | {e.mae:.4g} | {e.naive_day_mae:.4g} | {e.naive_week_mae:.4g} | {ok} "
            f"| {mape} | {mase} | {e.coverage:.2f} |"
        )
    print()


def bench_quality(history: pd.DataFrame, *, quick: bool) -> None:
    print("## Quality: last day held out, all 96 held-out 15-minute points scored\n")
    print(
        "Default config (labelled anomalies left out of the fit, weekday/weekend daily shapes):\n"
    )
    quality_table(evaluate(history))
    if quick:
        return
    variants: list[tuple[str, ForecastConfig]] = [
        (
            "Fit on all points, labelled anomalies included",
            replace(DEFAULT_CONFIG, exclude_labelled_anomalies=False),
        ),
        (
            "Prophet's own interval, not calibrated",
            replace(DEFAULT_CONFIG, calibrate_interval=False),
        ),
        (
            "Prophet's default changepoint prior 0.05 and weekly order 3",
            replace(DEFAULT_CONFIG, changepoint_prior_scale=0.05, weekly_fourier_order=3),
        ),
        (
            "One daily shape for every day (no weekday/weekend split)",
            replace(DEFAULT_CONFIG, weekend_daily_seasonality=False),
        ),
    ]
    for title, config in variants:
        print(f"{title} (target metrics):\n")
        quality_table(evaluate(history, TARGETS, config=config), TARGETS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the slow 1-minute fit")
    args = parser.parse_args()
    history, seconds = timed(
        SyntheticDataGenerator(seed=42).generate_full_training_set, 30, start=START
    )
    print(
        f"# Forecaster benchmark\n\n{len(history)} rows generated in {seconds:.2f} s; "
        f"{os.cpu_count()} CPUs; config {DEFAULT_CONFIG}\n"
    )
    bench_fit(history, quick=args.quick)
    bench_resolution(history, quick=args.quick)
    bench_predict(history)
    bench_quality(history, quick=args.quick)


if __name__ == "__main__":
    main()

"""Forecaster benchmark: fit time, predict time, interval stability and holdout quality.

    python -m bench.bench_forecast            # everything, prints Markdown
    python -m bench.bench_forecast --quick    # skip the 1-minute fit and the process pool
    python -m bench.bench_forecast --quality-only   # only the held-out day, default config
    python -m bench.bench_forecast --held-out-days 4   # each of the last 4 days held out

Data: SyntheticDataGenerator(seed=42), 30 days from Monday 2025-01-06 00:00 UTC (a fixed
start so the held-out day, Tuesday 2025-02-04, is the same every run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from services.forecaster.forecasting.config import for_metric
from services.forecaster.forecasting.errors import ForecastError
from services.forecaster.forecasting.evaluation import MetricEvaluation, evaluate
from services.forecaster.forecasting.history import MetricHistory, history_from_samples
from services.forecaster.forecasting.prediction import forecast_grid
from services.forecaster.forecasting.prophet_model import (
    DEFAULT_CONFIG,
    ForecastConfig,
    MetricModel,
    fit,
    predict,
    serialize_model,
)
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared import workers
from shared.catalogue import METRIC_NAMES

START = datetime(2025, 1, 6, tzinfo=UTC)
TARGETS = ("cpu_usage_percent", "memory_usage_percent", "response_time_p95")


def _fit_and_serialise(metric: str, history: MetricHistory) -> str:
    """What a worker process does for a fit (backtest included), without the trend and forecast."""
    return serialize_model(fit(history, metric, config=for_metric(DEFAULT_CONFIG, metric))).payload


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def fit_all(histories: dict[str, MetricHistory], workers_: int) -> dict[str, MetricModel]:
    with workers.thread_pool(workers_, name="fit") as pool:
        models = pool.map(
            lambda name: fit(histories[name], name, config=for_metric(DEFAULT_CONFIG, name)),
            METRIC_NAMES,
        )
        return dict(zip(METRIC_NAMES, models, strict=True))


def bench_fit(samples: pd.DataFrame, *, quick: bool) -> None:
    print("## Fit: all 14 metrics, 30 days, 15-minute resolution\n")
    print("| how | seconds |\n|---|---:|")
    models: dict[str, MetricModel] = {}
    for count in (1, 2, 3):
        started = time.perf_counter()
        histories = history_from_samples(samples, METRIC_NAMES, resolution="15min")
        models = fit_all(histories, count)
        print(f"| thread pool, {count} worker(s) | {time.perf_counter() - started:.2f} |")
    if not quick:
        started = time.perf_counter()
        histories = history_from_samples(samples, METRIC_NAMES, resolution="15min")
        with workers.process_pool(2) as pool:
            payloads = list(
                pool.map(_fit_and_serialise, METRIC_NAMES, [histories[m] for m in METRIC_NAMES])
            )
        seconds = time.perf_counter() - started
        assert len(payloads) == 14
        print(f"| process pool, 2 workers (incl. worker start-up) | {seconds:.2f} |")
    print("\nPer metric (last thread-pool run; wall time inside a busy pool):\n")
    print("| metric | points | fit s |\n|---|---:|---:|")
    for name, model in models.items():
        print(f"| {name} | {model.n_points} | {model.fit_seconds:.2f} |")
    print()


def bench_resolution(samples: pd.DataFrame, *, quick: bool) -> None:
    print("## Resolution: cpu_usage_percent, same run, scored on 15-minute held-out means\n")
    print("| resolution | fit s | MAE | coverage | naive day | naive week |")
    print("|---|---:|---:|---:|---:|---:|")
    name = "cpu_usage_percent"
    scored = history_from_samples(samples, [name], resolution="15min")[name].observed
    resolutions = ["1h", "15min"] + ([] if quick else ["5min"])
    for resolution in resolutions:
        config = replace(for_metric(DEFAULT_CONFIG, name), resolution=resolution)
        history = history_from_samples(samples, [name], resolution=resolution)[name]
        e = evaluate(history, name, config=config, scored=scored, score_resolution="15min")
        print(
            f"| {resolution} | {e.fit_seconds:.2f} | {e.mae:.3f} | {e.coverage:.2f} "
            f"| {e.naive_day_mae:.3f} | {e.naive_week_mae:.3f} |"
        )
    print()


def bench_predict(samples: pd.DataFrame) -> None:
    print("## Predict: the 24 h storage grid at 15 minutes (97 points), cpu_usage_percent\n")
    name = "cpu_usage_percent"
    config = for_metric(DEFAULT_CONFIG, name)
    base = fit(history_from_samples(samples, [name], resolution="15min")[name], name, config=config)
    grid = forecast_grid(base.trained_end, step=base.config.step, hours=24)
    times = [timed(predict, base, grid)[1] * 1000 for _ in range(5)]
    print(f"chosen {base.chosen}: predict {statistics.median(times):.1f} ms (median of 5)\n")


def evaluate_all(
    samples: pd.DataFrame, names=METRIC_NAMES, config: ForecastConfig = DEFAULT_CONFIG
) -> dict[str, MetricEvaluation]:
    """Holdout evaluation of each metric on 2 threads; a metric that fails is left out."""
    histories = history_from_samples(samples, names, resolution=config.resolution)

    def one(name: str) -> MetricEvaluation | None:
        raw = pd.DataFrame({"timestamp": samples["timestamp"], "value": samples[name]})
        try:
            return evaluate(histories[name], name, config=for_metric(config, name), samples=raw)
        except ForecastError:
            return None

    with workers.thread_pool(2, name="evaluate") as pool:
        results = dict(zip(names, pool.map(one, names), strict=True))
    return {name: e for name, e in results.items() if e is not None}


def quality_table(results: dict[str, MetricEvaluation], names=METRIC_NAMES) -> None:
    print(
        "| metric | chosen | MAE | naive day | naive week | beats | MAPE % | MASE "
        "| coverage (means) | coverage (samples) |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for name in names:
        e = results.get(name)
        if e is None:
            print(f"| {name} | failed | | | | | | | | |")
            continue
        label = f"**{name}**" if name in TARGETS else name
        mape = f"{e.mape:.1f}" if e.mape is not None else "n/a"
        mase = f"{e.mase:.2f}" if e.mase is not None else "n/a"
        ok = "yes" if e.beats_naive else "no"
        samples = "n/a" if e.sample_coverage is None else f"{e.sample_coverage:.2f}"
        print(
            f"| {label} | {e.chosen} | {e.mae:.4g} | {e.naive_day_mae:.4g} "
            f"| {e.naive_week_mae:.4g} | {ok} | {mape} | {mase} | {e.coverage:.2f} | {samples} |"
        )
    print()


def bench_quality(samples: pd.DataFrame, *, quick: bool) -> None:
    print("## Quality: last day held out, all 96 held-out 15-minute points scored\n")
    print("Default config (forecaster chosen by backtest, conformal bands, catalogue bounds):\n")
    results = evaluate_all(samples)
    quality_table(results)
    sample_cov = [e.sample_coverage for e in results.values() if e.sample_coverage is not None]
    print(
        f"beat both naives: {sum(e.beats_naive for e in results.values())} of {len(results)}; "
        f"coverage of samples {min(sample_cov):.2f}..{max(sample_cov):.2f}, "
        f"mean {statistics.mean(sample_cov):.3f}; of bucket means "
        f"{statistics.mean(e.coverage for e in results.values()):.3f}\n"
    )
    if quick:
        return
    variants: list[tuple[str, ForecastConfig]] = [
        (
            "Fit on all points, labelled anomalies included",
            replace(DEFAULT_CONFIG, exclude_labelled_anomalies=False),
        ),
        (
            "Prophet alone (no backtest choice)",
            replace(DEFAULT_CONFIG, candidates=("prophet",)),
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
        quality_table(evaluate_all(samples, TARGETS, config), TARGETS)


def bench_days(samples: pd.DataFrame, days: int) -> None:
    """Each of the last `days` days held out in turn (fitted on the days before it): the
    coverage of samples per metric and day, and its mean over the days. One day's coverage
    scatters around the band's 80 % (anomalies come in bursts); the mean shows the calibration."""
    print(f"## Coverage of samples, each of the last {days} days held out\n")
    stamps = pd.DatetimeIndex(pd.to_datetime(samples["timestamp"], utc=True))
    end = stamps.max()
    per_day: list[tuple[str, dict[str, MetricEvaluation]]] = []
    for back in range(days):
        cut = samples[np.asarray(stamps <= end - pd.Timedelta(days=back))]
        held = (end - pd.Timedelta(days=back)).strftime("%a %Y-%m-%d")
        per_day.append((held, evaluate_all(cut.reset_index(drop=True))))
    print("| metric | " + " | ".join(day for day, _ in per_day) + " | mean | inside 0.75-0.85 |")
    print("|---|" + "---:|" * (len(per_day) + 2))
    inside_days = [0] * len(per_day)
    for name in METRIC_NAMES:
        values = [
            results[name].sample_coverage if name in results else None for _, results in per_day
        ]
        known = [v for v in values if v is not None]
        for k, v in enumerate(values):
            inside_days[k] += v is not None and 0.75 <= v <= 0.85
        cells = " | ".join("n/a" if v is None else f"{v:.3f}" for v in values)
        mean = statistics.mean(known) if known else float("nan")
        print(
            f"| {name} | {cells} | {mean:.3f} | "
            f"{sum(0.75 <= v <= 0.85 for v in known)} of {len(known)} |"
        )
    print(
        "\nmetrics inside 0.75-0.85 per day: "
        + ", ".join(f"{day} {n}" for (day, _), n in zip(per_day, inside_days, strict=True))
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the slow 1-minute fit")
    parser.add_argument(
        "--quality-only", action="store_true", help="only the held-out day (default config)"
    )
    parser.add_argument(
        "--held-out-days",
        type=int,
        default=0,
        help="also hold out each of the last N days in turn: coverage per metric and day",
    )
    args = parser.parse_args()
    samples, seconds = timed(
        SyntheticDataGenerator(seed=42).generate_full_training_set, 30, start=START
    )
    print(
        f"# Forecaster benchmark\n\n{len(samples)} rows generated in {seconds:.2f} s; "
        f"{os.cpu_count()} CPUs; config {DEFAULT_CONFIG}\n"
    )
    if args.held_out_days:
        bench_days(samples, args.held_out_days)
        return
    if args.quality_only:
        bench_quality(samples, quick=True)
        return
    bench_fit(samples, quick=args.quick)
    bench_resolution(samples, quick=args.quick)
    bench_predict(samples)
    bench_quality(samples, quick=args.quick)


if __name__ == "__main__":
    main()

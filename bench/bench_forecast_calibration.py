"""Calibrations of the forecast band compared on the same fits: held-out days, seeds, real series.

    PYTHONPATH=$PWD .venv/bin/python -m bench.bench_forecast_calibration --seeds 42,7 --days 4
    PYTHONPATH=$PWD .venv/bin/python -m bench.bench_forecast_calibration --real   # 16 NAB series

Each metric (or real series) is fitted once with the service's defaults (`fit`, backtest and
all); the backtest's residuals of the chosen forecaster, the samples' spread and the forecast
times are recorded from inside `fit`, and every calibration below is then replayed on them and
scored on the held-out day exactly as `bench.bench_forecast` (share of held-out one-minute
samples inside the band of their bucket) and `forecast_eval.py` (share of held-out points inside
the band, interpolated at the bins' middles) score it. Fits are cached under --cache.

Calibrations: `pooled` (one set of quantiles per horizon bucket, what main serves),
`recent_N` (pooled on the newest N origins only) and `day_type_N` (the service's `calibrate`
with weekday and weekend quantiles per bucket, from the residuals whose forecast time falls on
that day type; a day type with fewer than N origins in a bucket is served the pooled ones).
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import statistics
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.forecaster.forecasting import conformal
from services.forecaster.forecasting import prophet_model as pm
from services.forecaster.forecasting.config import DEFAULT_CONFIG, for_metric
from services.forecaster.forecasting.history import MetricHistory, history_from_samples
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared import workers
from shared.catalogue import METRIC_NAMES

START = datetime(2025, 1, 6, tzinfo=UTC)
STEP = pd.Timedelta(DEFAULT_CONFIG.resolution)

_captured: dict[int, dict[str, Any]] = {}
_real_backtest = pm.backtest
_real_with_spread = pm.with_spread


def _backtest(*args: Any, **kwargs: Any) -> Any:
    result = _real_backtest(*args, **kwargs)
    _captured.setdefault(threading.get_ident(), {})["result"] = result
    return result


def _with_spread(residuals: Any, spread: Any, *args: Any) -> Any:
    _captured.setdefault(threading.get_ident(), {})["spread"] = spread
    return _real_with_spread(residuals, spread, *args)


pm.backtest = _backtest  # type: ignore[assignment]
pm.with_spread = _with_spread  # type: ignore[assignment]


@dataclass
class Case:
    """What one fit leaves to replay: the chosen forecaster's backtest residuals and the test."""

    name: str
    residuals: np.ndarray  # origins x horizon (bucket means, NaN where none)
    spread: np.ndarray | None  # same shape: samples' standard deviation per bucket
    times: np.ndarray  # same shape: forecast time (naive UTC, datetime64) of each residual
    point: np.ndarray  # held-out: the served (clipped) yhat at each scored point's band time
    steps: np.ndarray  # its steps ahead (>= 1)
    when: np.ndarray  # its band's time (datetime64)
    actual: np.ndarray  # the held-out value (sample or point)
    lower_bound: float | None
    upper_bound: float | None
    # Real series: the band is interpolated between bucket middles (`grid_*`, `at`).
    grid_point: np.ndarray | None = None
    grid_steps: np.ndarray | None = None
    grid_when: np.ndarray | None = None
    at: np.ndarray | None = None  # seconds after grid[0] of each held-out point
    chosen: str = ""


def _fit_case(history: MetricHistory, name: str, config: Any) -> tuple[Any, dict[str, Any]]:
    _captured.pop(threading.get_ident(), None)
    model = pm.fit(history, name, config=config)
    got = _captured.pop(threading.get_ident(), {})
    return model, got


def _backtest_arrays(model: Any, history: MetricHistory, got: dict[str, Any]) -> dict[str, Any]:
    result = got["result"]
    frame = history.fit
    origin = min(frame["ds"].iloc[0], history.observed["ds"].iloc[0])
    index = np.asarray(result.origins)[:, None] + np.arange(result.horizon)[None, :]
    times = pd.Timestamp(origin).to_datetime64() + index * STEP.to_timedelta64()
    return {
        "residuals": np.asarray(result.residuals[result.chosen], dtype=float),
        "spread": got.get("spread"),
        "times": times,
        "chosen": model.chosen,
    }


def synthetic_cases(seed: int, back: int) -> list[Case]:
    samples = SyntheticDataGenerator(seed=seed).generate_full_training_set(30, start=START)
    stamps = pd.DatetimeIndex(pd.to_datetime(samples["timestamp"], utc=True))
    end = stamps.max() - pd.Timedelta(days=back)
    samples = samples[np.asarray(stamps <= end)].reset_index(drop=True)
    histories = history_from_samples(samples, METRIC_NAMES, resolution=STEP)
    ts = pd.DatetimeIndex(pd.to_datetime(samples["timestamp"], utc=True)).tz_localize(None)

    def one(name: str) -> Case:
        history = histories[name]
        scored = history.observed
        last = scored["ds"].iloc[-1] + STEP / 2
        cutoff = last - pd.Timedelta(hours=24)
        training = MetricHistory(
            fit=history.fit[history.fit["ds"] < cutoff],
            observed=history.observed[history.observed["ds"] < cutoff],
            spread=None
            if history.spread is None
            else history.spread[history.spread["ds"] < cutoff],
        )
        config = for_metric(DEFAULT_CONFIG, name)
        model, got = _fit_case(training, name, config)
        keep = np.asarray(ts >= cutoff) & np.isfinite(samples[name].to_numpy(dtype=float))
        middles = ts[keep].floor(STEP) + STEP / 2
        band = pm.predict_frame(model, pd.DatetimeIndex(middles.unique())).set_index("ds")
        point = band["yhat"].reindex(middles).to_numpy(dtype=float)
        ahead = np.asarray((middles - pm.naive_utc(model.trained_end)) / STEP, dtype=float)
        return Case(
            name=name,
            **_backtest_arrays(model, training, got),
            point=point,
            steps=np.ceil(ahead - 1e-9).astype(np.int64),
            when=middles.to_numpy(),
            actual=samples[name].to_numpy(dtype=float)[keep],
            lower_bound=config.lower_bound,
            upper_bound=config.upper_bound,
        )

    with workers.thread_pool(2, name="calibration") as pool:
        return list(pool.map(one, METRIC_NAMES))


def real_cases() -> list[Case]:
    here = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "forecast"
    sys.path.insert(0, str(here))
    import forecast_eval as fe  # noqa: PLC0415

    nab = fe.default_nab_dir()
    windows = fe.load_windows(nab)

    def one(key: str) -> Case:
        case = fe.build_case(nab, key, windows, True)
        history, horizon, target = case["history"], case["horizon"], case["target"]
        samples = pd.DataFrame({"timestamp": history["timestamp"], "value": history["value"]})
        buckets = history_from_samples(samples, ["value"], resolution=STEP)["value"]
        model, got = _fit_case(buckets, "value", DEFAULT_CONFIG)
        step = pd.Timedelta(horizon.freq)
        first = horizon[0].floor(STEP) - STEP / 2
        grid = pd.date_range(first, horizon[-1] + step + STEP, freq=STEP)
        frame = pm.predict_frame(model, grid)
        ahead = np.asarray((grid - pm.naive_utc(model.trained_end)) / STEP, dtype=float)
        x = np.asarray((grid - grid[0]).total_seconds(), dtype=float)
        at = np.asarray(((horizon + step / 2) - grid[0]).total_seconds(), dtype=float)
        point = np.interp(at, x, frame["yhat"].to_numpy(dtype=float))
        return Case(
            name=case["name"],
            **_backtest_arrays(model, buckets, got),
            point=point,
            steps=np.zeros(len(at), dtype=np.int64),
            when=np.asarray(horizon),
            actual=np.asarray(target, dtype=float),
            lower_bound=None,
            upper_bound=None,
            grid_point=frame["yhat"].to_numpy(dtype=float),
            grid_steps=np.ceil(ahead - 1e-9).astype(np.int64),
            grid_when=grid.to_numpy(),
            at=at,
        )

    keys = [k for k, _ in fe.SERIES]
    with workers.thread_pool(2, name="calibration") as pool:
        return list(pool.map(one, keys))


# ------------------------------------------------------------------- calibrations

Calibration = Callable[[Case], Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]


def _edges() -> tuple[int, ...]:
    return tuple(DEFAULT_CONFIG.steps(h) for h in conformal.DEFAULT_EDGES_HOURS)


def _bands(case: Case, weekend: np.ndarray | None, min_origins: int) -> conformal.ConformalBands:
    return conformal.calibrate(
        conformal.with_spread(case.residuals, case.spread),
        interval_width=0.8,
        edges=_edges(),
        weekend=weekend,
        min_origins=min_origins,
    )


def pooled(case: Case) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    bands = _bands(case, None, 0)
    return lambda steps, when: bands.quantiles(steps)


def recent(origins: int) -> Calibration:
    """Pooled, on the newest ``origins`` origins only (the most recent days weigh alone)."""

    def make(case: Case) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        spread = None if case.spread is None else case.spread[-origins:]
        bands = conformal.calibrate(
            conformal.with_spread(case.residuals[-origins:], spread),
            interval_width=0.8,
            edges=_edges(),
        )
        return lambda steps, when: bands.quantiles(steps)

    return make


def day_type(min_origins: int) -> Calibration:
    """The service's calibrate() with day types (conformal.is_weekend of each forecast time)."""

    def make(case: Case) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        bands = _bands(case, conformal.is_weekend(case.times), min_origins)
        return lambda steps, when: bands.quantiles(steps, conformal.is_weekend(when))

    return make


def _clip(point, low, high, lo_b, hi_b):  # the arithmetic of ConformalBands.interval
    lo = -np.inf if lo_b is None else lo_b
    hi = np.inf if hi_b is None else hi_b
    lower = np.clip(point + low, lo, hi)
    upper = np.clip(point + high, lo, hi)
    need = conformal.MIN_WIDTH_SHARE * (high - low)
    short = (upper - lower) < need
    at_low = short & (lower <= lo)
    upper = np.where(at_low, np.minimum(lo + need, hi), upper)
    at_high = short & ~at_low & (upper >= hi)
    lower = np.where(at_high, np.maximum(hi - need, lo), lower)
    return lower, upper


def coverage(case: Case, calibration: Calibration) -> float:
    quantiles = calibration(case)
    if case.at is None:
        low, high = quantiles(case.steps, case.when)
        lower, upper = _clip(case.point, low, high, case.lower_bound, case.upper_bound)
    else:
        low, high = quantiles(case.grid_steps, case.grid_when)
        lo_g, hi_g = _clip(case.grid_point, low, high, None, None)
        x = (case.grid_when - case.grid_when[0]) / np.timedelta64(1, "s")
        lower, upper = np.interp(case.at, x, lo_g), np.interp(case.at, x, hi_g)
        mask = np.isfinite(case.actual)
        inside = (case.actual >= lower) & (case.actual <= upper) & mask
        return float(inside.sum() / mask.sum())
    return float(np.mean((case.actual >= lower) & (case.actual <= upper)))


CALIBRATIONS: dict[str, Calibration] = {
    "pooled": pooled,
    "recent_16": recent(16),
    "day_type_4": day_type(4),
    "day_type_8": day_type(8),
}


def _cached(cache: Path, key: str, make: Callable[[], list[Case]]) -> list[Case]:
    path = cache / f"{key}.pkl"
    if path.exists():
        with path.open("rb") as f:
            cases: list[Case] = pickle.load(f)
            return cases
    cases = make()
    cache.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(cases, f)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--cache", default=f"/tmp/fcal-{os.getuid()}")
    args = parser.parse_args()
    cache = Path(args.cache)
    if args.real:
        cases = _cached(cache, "real", real_cases)
        print("| series | chosen | " + " | ".join(CALIBRATIONS) + " |")
        print("|---|---|" + "---:|" * len(CALIBRATIONS))
        table = {n: [coverage(c, cal) for c in cases] for n, cal in CALIBRATIONS.items()}
        for i, c in enumerate(cases):
            cells = " | ".join(f"{table[n][i]:.3f}" for n in CALIBRATIONS)
            print(f"| {c.name} | {c.chosen} | {cells} |")
        means = " | ".join(f"**{statistics.mean(v):.3f}**" for v in table.values())
        print(f"| mean | | {means} |")
        return
    summary: dict[str, list[str]] = {n: [] for n in CALIBRATIONS}
    every: dict[str, list[float]] = {n: [] for n in CALIBRATIONS}
    by_kind: dict[tuple[str, str], list[float]] = {
        (n, k): [] for n in CALIBRATIONS for k in ("weekday", "weekend")
    }
    for seed in (int(s) for s in args.seeds.split(",")):
        for back in range(args.days):
            make = functools.partial(synthetic_cases, seed, back)
            cases = _cached(cache, f"seed{seed}-back{back}", make)
            day = pd.Timestamp(cases[0].when[-1]).strftime("%a %m-%d")
            print(f"\n### seed {seed}, held-out {day}\n")
            print("| metric | chosen | " + " | ".join(CALIBRATIONS) + " |")
            print("|---|---|" + "---:|" * len(CALIBRATIONS))
            table = {n: [coverage(c, cal) for c in cases] for n, cal in CALIBRATIONS.items()}
            for i, c in enumerate(cases):
                cells = " | ".join(f"{table[n][i]:.3f}" for n in CALIBRATIONS)
                print(f"| {c.name} | {c.chosen} | {cells} |")
            inside = {n: sum(0.75 <= v <= 0.85 for v in vals) for n, vals in table.items()}
            print(
                "| inside 0.75-0.85 | | "
                + " | ".join(f"{inside[n]} of 14" for n in CALIBRATIONS)
                + " |"
            )
            print(
                "| mean | | "
                + " | ".join(f"{statistics.mean(v):.3f}" for v in table.values())
                + " |"
            )
            for n in CALIBRATIONS:
                summary[n].append(f"{seed}/{day}: {inside[n]}")
                every[n].extend(table[n])
                kind = "weekend" if pd.Timestamp(cases[0].when[-1]).day_of_week >= 5 else "weekday"
                by_kind[(n, kind)].extend(table[n])
    print("\nmetrics inside 0.75-0.85 per held-out day:")
    for n, cells in summary.items():
        values = np.asarray(every[n])
        print(
            f"- {n}: "
            + ", ".join(cells)
            + f"; in all {int(np.sum((values >= 0.75) & (values <= 0.85)))}"
            f" of {values.size}, mean |coverage - 0.8| {np.mean(np.abs(values - 0.8)):.4f}, "
            f"below 0.75 {int(np.sum(values < 0.75))}, above 0.85 {int(np.sum(values > 0.85))}; "
            + "; ".join(
                f"{k} days mean {statistics.mean(by_kind[(n, k)]):.3f}"
                for k in ("weekday", "weekend")
                if by_kind[(n, k)]
            )
        )


if __name__ == "__main__":
    main()

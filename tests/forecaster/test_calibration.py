"""The band calibrated per day type (weekday / weekend, UTC) where each has enough backtest origins."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from services.forecaster.forecasting.conformal import (
    ConformalBands,
    calibrate,
    held_out_coverage,
    is_weekend,
)
from services.forecaster.forecasting.history import MetricHistory, history_from_samples
from services.forecaster.forecasting.prophet_model import (
    DEFAULT_CONFIG,
    fit,
    load_model,
    predict_frame,
    serialize_model,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:prophet")

START = pd.Timestamp("2025-01-06")  # a Monday (naive UTC)
STEP = pd.Timedelta("15min")
DAY = 96
EDGES = (4, 24)
# A host whose batch jobs run at weekends: its errors scatter three times as far then.
WEEKDAY_SIGMA, WEEKEND_SIGMA = 1.0, 3.0


def backtest_times(origins: int, *, spacing: int = 24, first: int = 0) -> np.ndarray:
    """Forecast times (origins x a day of steps) of a backtest with origins every 6 h."""
    index = first + np.arange(origins)[:, None] * spacing + np.arange(DAY)[None, :]
    return (START.to_datetime64() + index * STEP.to_timedelta64()).astype("datetime64[ns]")


def scattered_by_day_type(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = np.where(is_weekend(times), WEEKEND_SIGMA, WEEKDAY_SIGMA)
    return rng.normal(0.0, 1.0, times.shape) * sigma


def coverage(bands: ConformalBands, *, weekend: bool, sigma: float, steps: int) -> float:
    fresh = np.random.default_rng(1).normal(0.0, sigma, 20_000)
    _, lower, upper = bands.interval(
        np.zeros(fresh.size), np.full(fresh.size, steps), weekend=np.full(fresh.size, weekend)
    )
    return float(np.mean((fresh >= lower) & (fresh <= upper)))


def test_is_weekend_reads_utc_days() -> None:
    times = pd.DatetimeIndex(["2025-01-10 23:59", "2025-01-11 00:00", "2025-01-12 23:59"])
    assert is_weekend(times).tolist() == [False, True, True]
    aware = pd.DatetimeIndex(["2025-01-11 00:30"]).tz_localize("UTC").tz_convert("US/Pacific")
    assert is_weekend(aware).tolist() == [True]  # Friday 16:30 in California


def test_split_calibration_covers_both_day_types_where_the_pooled_one_covers_neither() -> None:
    """28 origins over a week (2 of its 8 forecast days at the weekend): the pooled band is
    set by the quiet weekdays and misses most weekend errors; per day type both hold 80 %."""
    times = backtest_times(28)
    residuals = scattered_by_day_type(times, np.random.default_rng(2))
    pooled = calibrate(residuals, interval_width=0.8, edges=EDGES)
    split = calibrate(residuals, interval_width=0.8, edges=EDGES, weekend=is_weekend(times))
    assert pooled.weekday is None and split.weekday is not None and split.weekend is not None
    # Every horizon bucket; the first hour's weekend quantiles rest on 8 origins x 4 steps
    # (32 errors), so they are only roughly at 80 %.
    for steps, slack in ((2, 0.1), (12, 0.05), (60, 0.05)):
        weekday = coverage(pooled, weekend=False, sigma=WEEKDAY_SIGMA, steps=steps)
        weekend = coverage(pooled, weekend=True, sigma=WEEKEND_SIGMA, steps=steps)
        assert weekday > 0.9 and weekend < 0.6, (steps, weekday, weekend)
        for at_weekend, sigma in ((False, WEEKDAY_SIGMA), (True, WEEKEND_SIGMA)):
            covered = coverage(split, weekend=at_weekend, sigma=sigma, steps=steps)
            assert abs(covered - 0.8) <= slack, (steps, at_weekend, covered)
    # Left out in turn, each origin is covered as it would be: about 80 % either way, but
    # the pooled band's 80 % mixes over-covered weekdays with under-covered weekends.
    loo = held_out_coverage(residuals, interval_width=0.8, edges=EDGES, weekend=is_weekend(times))
    assert loo is not None and 0.75 <= loo <= 0.85


def test_a_day_type_with_too_few_origins_is_served_the_pooled_band() -> None:
    # 12 origins every 6 h from Monday: their forecasts end on Thursday, no weekend at all.
    weekdays = backtest_times(12)
    residuals = scattered_by_day_type(weekdays, np.random.default_rng(3))
    bands = calibrate(residuals, interval_width=0.8, edges=EDGES, weekend=is_weekend(weekdays))
    assert bands.weekday is None and bands.weekend is None
    # From Tuesday 18:00 to Friday 12:00: two origins forecast into Saturday, fewer than 4.
    late = backtest_times(12, first=DAY + 72)
    assert 0 < int(is_weekend(late).any(axis=1).sum()) < 4
    bands = calibrate(residuals, interval_width=0.8, edges=EDGES, weekend=is_weekend(late))
    assert bands.weekend is None
    _, lower, upper = bands.interval(np.zeros(2), np.array([30, 30]), weekend=np.array([0, 1]))
    assert lower[0] == lower[1] and upper[0] == upper[1]


def test_day_type_quantiles_are_stored_and_old_bands_load_pooled() -> None:
    times = backtest_times(28)
    residuals = scattered_by_day_type(times, np.random.default_rng(4))
    bands = calibrate(residuals, interval_width=0.8, edges=EDGES, weekend=is_weekend(times))
    again = ConformalBands.from_dict(bands.as_dict())
    assert again == bands
    old = {k: v for k, v in bands.as_dict().items() if k not in ("weekday", "weekend")}
    stored_before = ConformalBands.from_dict(old)
    assert stored_before.weekday is None
    _, lower, upper = stored_before.interval(np.zeros(1), np.array([60]), weekend=np.array([True]))
    assert (lower[0], upper[0]) == (bands.low[2], bands.high[2])


def history(values: np.ndarray) -> MetricHistory:
    ts = pd.date_range(datetime(2025, 1, 6, tzinfo=UTC), periods=len(values), freq=STEP)
    samples = pd.DataFrame({"timestamp": ts, "value": values})
    return history_from_samples(samples, ["value"], resolution=STEP)["value"]


def test_a_fitted_model_covers_weekdays_and_weekends_alike() -> None:
    """Fit on 25 days (to a Friday), forecast Friday to Sunday: each day type near 80 %."""
    rng = np.random.default_rng(5)
    total = 28 * DAY
    times = (START + pd.TimedeltaIndex(np.arange(total) * STEP)).to_numpy()
    h = np.arange(total) * 0.25
    noise = scattered_by_day_type(times, rng)
    y = 50.0 + 10.0 * np.sin(2 * np.pi * h / 24.0) + noise
    fitted = 25 * DAY
    future = pd.DatetimeIndex(times[fitted:]) + STEP / 2
    actual = y[fitted:]
    at_weekend = is_weekend(future)

    def covered(model_config: object) -> tuple[float, float]:
        model = fit(history(y[:fitted]), "value", config=model_config)  # type: ignore[arg-type]
        stored = serialize_model(model)
        frame = predict_frame(load_model(stored.payload, stored.sha256), future)
        inside = (actual >= frame["yhat_lower"].to_numpy()) & (
            actual <= frame["yhat_upper"].to_numpy()
        )
        return float(inside[~at_weekend].mean()), float(inside[at_weekend].mean())

    weekday, weekend = covered(DEFAULT_CONFIG)
    assert 0.72 <= weekday <= 0.88 and 0.72 <= weekend <= 0.88, (weekday, weekend)
    weekday, weekend = covered(replace(DEFAULT_CONFIG, calibrate_by_day_type=False))
    assert weekday > 0.9 and weekend < 0.65, (weekday, weekend)

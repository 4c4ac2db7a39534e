"""The cheap forecasters a backtest weighs against Prophet, on a regular grid of bucket means.

Usage: `grid = regular_grid(frame, step)`, `y = fill_gaps(grid.values, period)`, then
`forecast_candidate("profile_day", y, horizon, periods)` for the ``horizon`` steps after ``y``.
Every candidate is plain numpy: a backtest runs each of them at a dozen origins in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.arrays import FloatArray

# Seasonal naives and level-adjusted seasonal profiles (see docs/forecasting.md).
NAIVE_DAY = "naive_day"
NAIVE_WEEK = "naive_week"
PROFILE_DAY = "profile_day"
PROFILE_WEEK = "profile_week"
PROPHET = "prophet"
MEDIAN = "median"
# The candidates a combination takes the median of, when each is available.
BASE = (PROPHET, NAIVE_DAY, NAIVE_WEEK, PROFILE_DAY, PROFILE_WEEK)
ALL = (*BASE, MEDIAN)
NUMPY = (NAIVE_DAY, NAIVE_WEEK, PROFILE_DAY, PROFILE_WEEK)


@dataclass(frozen=True, slots=True)
class Periods:
    """Steps per day and per week at the grid's step, and how the profiles are built."""

    day: int
    week: int
    profile_days: int = 7  # days the daily profile is the median of
    profile_weeks: int = 4  # weeks the weekly profile is the median of (at least 2)
    level_steps: int = 24  # steps the current level is the mean of

    @classmethod
    def at(cls, step: pd.Timedelta, *, level_hours: float = 6.0) -> Periods:
        day = int(round(pd.Timedelta(days=1) / step))
        return cls(
            day=day,
            week=7 * day,
            level_steps=max(1, int(round(pd.Timedelta(hours=level_hours) / step))),
        )


@dataclass(frozen=True, slots=True)
class Grid:
    """Values on a regular grid: ``values[i]`` is the bucket mean at ``start + i * step`` (NaN: none)."""

    start: pd.Timestamp
    step: pd.Timedelta
    values: FloatArray

    def time(self, index: int) -> pd.Timestamp:
        return self.start + index * self.step


def regular_grid(
    frame: pd.DataFrame, step: pd.Timedelta, *, start: pd.Timestamp | None = None
) -> Grid:
    """A ``ds``/``y`` frame (times on one step's grid) as a regular array with NaN for missing steps."""
    ds = pd.DatetimeIndex(frame["ds"])
    origin = ds[0] if start is None else start
    index = np.rint(np.asarray((ds - origin) / step, dtype=float)).astype(np.int64)
    values = np.full(int(index.max()) + 1 if len(index) else 0, np.nan)
    keep = index >= 0
    values[index[keep]] = frame["y"].to_numpy(dtype=float)[keep]
    return Grid(start=origin, step=step, values=values)


def fill_gaps(values: FloatArray, period: int) -> FloatArray:
    """Missing steps filled with the value one period earlier (or later), else linearly.

    Buckets left out of fitting (anomalies, incidents) or without samples keep the
    seasonal shape instead of a straight line across a day.
    """
    y = np.array(values, dtype=float)
    missing = np.isnan(y)
    if not missing.any() or missing.all():
        return y
    for i in np.flatnonzero(missing):
        if i >= period and not np.isnan(y[i - period]):
            y[i] = y[i - period]
    for i in np.flatnonzero(np.isnan(y))[::-1]:
        if i + period < len(y) and not np.isnan(y[i + period]):
            y[i] = y[i + period]
    left = np.isnan(y)
    if left.any():
        ok = np.flatnonzero(~left)
        y[left] = np.interp(np.flatnonzero(left), ok, y[ok])
    return y


def _seasonal_naive(y: FloatArray, horizon: int, period: int) -> FloatArray | None:
    n = len(y)
    if n < period:
        return None
    k = np.arange(1, horizon + 1)
    source = n - 1 + k - period * np.ceil(k / period).astype(np.int64)
    return np.asarray(y[source], dtype=float)


def seasonal_profile(y: FloatArray, period: int, cycles: int) -> FloatArray | None:
    """Median shape over the last ``cycles`` whole periods, each cycle's mean removed (mean 0).

    Index ``s`` of the result is the step ``s`` positions after the start of the last
    whole cycle counted back from the end, i.e. aligned so that ``y[-period + s]`` is slot s.
    """
    n = len(y)
    count = min(cycles, n // period)
    if count < 1:
        return None
    block = y[n - count * period :].reshape(count, period)
    shape = np.median(block - block.mean(axis=1, keepdims=True), axis=0)
    return np.asarray(shape - shape.mean(), dtype=float)


def _profile(
    y: FloatArray, horizon: int, period: int, cycles: int, level_steps: int
) -> FloatArray | None:
    shape = seasonal_profile(y, period, cycles)
    if shape is None:
        return None
    n = len(y)
    # Slot of y[i] is (i - (n - period)) mod period.
    recent = np.arange(n - min(level_steps, n), n)
    level = float(np.mean(y[recent] - shape[(recent - (n - period)) % period]))
    future = np.arange(n, n + horizon)
    return level + shape[(future - (n - period)) % period]


def forecast_candidate(
    name: str, y: FloatArray, horizon: int, periods: Periods
) -> FloatArray | None:
    """The ``horizon`` steps after ``y`` (gap-filled) by one numpy candidate; None if it needs more history."""
    if name == NAIVE_DAY:
        return _seasonal_naive(y, horizon, periods.day)
    if name == NAIVE_WEEK:
        return _seasonal_naive(y, horizon, periods.week)
    if name == PROFILE_DAY:
        if len(y) < 2 * periods.day:
            return None
        return _profile(y, horizon, periods.day, periods.profile_days, periods.level_steps)
    if name == PROFILE_WEEK:
        if len(y) < 2 * periods.week:
            return None
        return _profile(y, horizon, periods.week, periods.profile_weeks, periods.level_steps)
    raise ValueError(f"{name!r} is not a numpy candidate; known: {', '.join(NUMPY)}")


def combine(forecasts: dict[str, FloatArray]) -> FloatArray | None:
    """The median, point by point, of the base candidates that are available."""
    rows = [forecasts[name] for name in BASE if forecasts.get(name) is not None]
    if len(rows) < 3:
        return None
    return np.asarray(np.median(np.vstack(rows), axis=0), dtype=float)

"""Rolling-origin backtest on a host's own history: every candidate's error, the choice, the residuals.

Usage: `result = backtest(y_fit, y_observed, periods=periods, horizon=96, origins=12, spacing=24,
prophet=forecast_fn)`; `result.chosen` is the candidate with the lowest MAE over every origin and
step ahead, `result.residuals[result.chosen]` what the intervals are calibrated on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.forecaster.forecasting.candidates import (
    MEDIAN,
    NAIVE_DAY,
    NAIVE_WEEK,
    NUMPY,
    PROPHET,
    Periods,
    combine,
    forecast_candidate,
)
from services.forecaster.forecasting.errors import InsufficientHistoryError
from shared.arrays import FloatArray

# Prophet fitted on y[:end], forecasting the `ahead` steps after it.
ProphetForecast = Callable[[int, int], FloatArray]


@dataclass(slots=True)
class BacktestResult:
    """Errors of each candidate over the same origins and steps; residuals = actual - forecast."""

    origins: list[int]  # grid index of each origin's first forecast step
    horizon: int
    select_last: int = 0  # newest origins the choice (and mae) is made on
    mae: dict[str, float] = field(default_factory=dict)
    residuals: dict[str, FloatArray] = field(default_factory=dict)  # origins x horizon
    actual: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    chosen: str = NAIVE_DAY

    @property
    def scored(self) -> int:
        return int(np.isfinite(self.actual).sum())


def origins_for(n: int, *, horizon: int, count: int, spacing: int, min_history: int) -> list[int]:
    """Origins whose horizon ends at or before the last step, newest last; at least min_history before."""
    newest = n - horizon
    return sorted(o for o in (newest - j * spacing for j in range(count)) if o >= min_history)


def backtest(
    y_fit: FloatArray,
    y_observed: FloatArray,
    *,
    periods: Periods,
    horizon: int,
    origins: int,
    spacing: int,
    candidates: tuple[str, ...],
    prophet: ProphetForecast | None = None,
    prophet_refit_every: int = 4,
    select_last: int | None = None,
) -> BacktestResult:
    """Forecast from each origin with every candidate, score against ``y_observed``.

    ``y_fit`` is the gap-filled history the candidates see, ``y_observed`` the bucket means
    scored (NaN where none). Prophet is refitted every ``prophet_refit_every`` origins (a
    day at the default spacing) and forecasts the origins in between from that fit: it
    does not condition on recent values, so this only hands it slightly older data.
    The choice and ``mae`` use the newest ``select_last`` origins (default: all); the
    residuals of every origin are kept, to calibrate intervals on more varied days.
    """
    n = len(y_fit)
    starts = origins_for(
        n, horizon=horizon, count=origins, spacing=spacing, min_history=2 * periods.day
    )
    if not starts:
        raise InsufficientHistoryError(
            f"{n} steps of history: a backtest needs at least {2 * periods.day + horizon}"
        )
    actual = np.vstack([y_observed[o : o + horizon] for o in starts])
    chosen_on = min(select_last or len(starts), len(starts))
    result = BacktestResult(origins=starts, horizon=horizon, actual=actual, select_last=chosen_on)
    paths: dict[str, list[FloatArray | None]] = {name: [] for name in candidates}
    prophet_fits: dict[int, FloatArray] = {}
    for i, origin in enumerate(starts):
        forecasts: dict[str, FloatArray | None] = {}
        for name in candidates:
            if name in NUMPY:
                forecasts[name] = forecast_candidate(name, y_fit[:origin], horizon, periods)
        if prophet is not None and PROPHET in candidates:
            anchor = starts[i - i % prophet_refit_every]
            if anchor not in prophet_fits:
                prophet_fits[anchor] = prophet(
                    anchor, (prophet_refit_every - 1) * spacing + horizon
                )
            path = prophet_fits[anchor]
            forecasts[PROPHET] = path[origin - anchor : origin - anchor + horizon]
        if MEDIAN in candidates:
            forecasts[MEDIAN] = combine({k: v for k, v in forecasts.items() if v is not None})
        for name in candidates:
            paths[name].append(forecasts.get(name))
    for name, rows in paths.items():
        if any(row is None for row in rows):
            continue  # not available at every origin: not comparable
        predicted = np.vstack([row for row in rows if row is not None])
        residual = actual - predicted
        ok = np.isfinite(residual)
        if not ok.any():
            continue
        recent = residual[-(select_last or len(starts)) :]
        scored = np.isfinite(recent)
        if not scored.any():
            continue
        result.residuals[name] = residual
        result.mae[name] = float(np.mean(np.abs(recent[scored])))
    if not result.mae:
        raise InsufficientHistoryError(
            "no candidate could be scored: nothing observed after the origins"
        )
    result.chosen = min(result.mae, key=lambda name: (result.mae[name], candidates.index(name)))
    return result


def naive_maes(result: BacktestResult) -> tuple[float | None, float | None]:
    """The backtest MAE of the daily and weekly seasonal naives (None where unavailable)."""
    return result.mae.get(NAIVE_DAY), result.mae.get(NAIVE_WEEK)


def summary(
    result: BacktestResult,
    *,
    coverage: float | None,
    interval_width: float,
    scale: float | None,
) -> dict[str, object]:
    """The evaluation stored with a version: the choice, every candidate's MAE, the naives'."""
    chosen = result.residuals[result.chosen][-result.select_last :]
    ok = np.isfinite(chosen)
    actual = result.actual[-result.select_last :][ok]
    errors = np.abs(chosen[ok])
    nonzero = np.abs(actual) > 1e-9
    mae = result.mae[result.chosen]
    day, week = naive_maes(result)
    naives = [m for m in (day, week) if m is not None]
    best = min(naives) if naives else None
    return {
        "method": "backtest",
        "chosen": result.chosen,
        "candidates": dict(sorted(result.mae.items(), key=lambda kv: kv[1])),
        "origins": result.select_last,
        "calibration_origins": len(result.origins),
        "horizon_steps": result.horizon,
        "n_points": int(ok.sum()),
        "mae": mae,
        "mape": float(np.mean(errors[nonzero] / np.abs(actual[nonzero])) * 100.0)
        if nonzero.any()
        else None,
        "mase": mae / scale if scale else None,
        "coverage": coverage,
        "interval_width": interval_width,
        "naive_day_mae": day,
        "naive_week_mae": week,
        "best_naive_mae": best,
        "beats_naive": best is None or mae < best,
    }

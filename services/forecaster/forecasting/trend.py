"""The fitted trend of a metric: slope, direction and the change points where the slope moves.

Usage: `analyse_trend(model).as_dict()` is what a model version stores for GET /forecast/trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from services.forecaster.forecasting.prediction import naive_utc
from services.forecaster.forecasting.prophet_model import MetricModel, with_conditions
from shared.schemas.forecast import Direction


def direction(change: float, tolerance: float) -> Direction:
    """ "rising" or "falling" when `change` passes `tolerance` either way, else "flat"."""
    if change > tolerance:
        return "rising"
    if change < -tolerance:
        return "falling"
    return "flat"


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """A point where the fitted trend's slope changes."""

    time: datetime
    delta: float  # Prophet's rate change, in its scaled units
    slope_change_per_hour: float  # metric units per hour
    slope_change_per_day: float


@dataclass(frozen=True, slots=True)
class TrendAnalysis:
    """Slope and direction of the trend over a window ending at the last fitted point."""

    metric: str
    window_start: datetime
    window_end: datetime
    start_value: float
    end_value: float
    slope_per_hour: float
    slope_per_day: float
    direction: Direction
    flat_tolerance_per_day: float
    change_points: tuple[ChangePoint, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON document stored with the model version (registry `metrics["trend"]`)."""
        return {
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "slope_per_hour": self.slope_per_hour,
            "slope_per_day": self.slope_per_day,
            "direction": self.direction,
            "flat_tolerance_per_day": self.flat_tolerance_per_day,
            "change_points": [
                {
                    "time": point.time.isoformat(),
                    "slope_change_per_hour": point.slope_change_per_hour,
                    "slope_change_per_day": point.slope_change_per_day,
                }
                for point in self.change_points
            ],
        }


def analyse_trend(
    model: MetricModel,
    *,
    window_hours: float = 24.0,
    flat_tolerance: float = 0.01,
    changepoint_threshold: float = 0.01,
) -> TrendAnalysis:
    """Slope and direction of the trend component over the last ``window_hours`` of history.

    "flat" while the trend moves less than ``flat_tolerance`` x the metric's scale (the
    largest absolute value fitted) per day. Change points are Prophet's potential ones whose
    |delta| is at least ``changepoint_threshold``, the cut Prophet's own plotting uses.
    """
    prophet = model.prophet
    end = naive_utc(model.trained_end)
    start = max(end - pd.Timedelta(hours=window_hours), naive_utc(model.trained_start))
    frame = prophet.setup_dataframe(
        with_conditions(pd.DataFrame({"ds": [start, end]}), model.config)
    )
    trend = np.asarray(prophet.predict_trend(frame), dtype=float)
    hours = max((end - start) / pd.Timedelta(hours=1), 1e-9)
    per_hour = float(trend[-1] - trend[0]) / hours
    tolerance = flat_tolerance * model.y_scale

    assert prophet.t_scale is not None and prophet.changepoints is not None, "model is not fitted"
    t_scale = pd.Timedelta(prophet.t_scale)
    per_hour_factor = model.y_scale / (t_scale / pd.Timedelta(hours=1))
    deltas = np.nanmean(np.asarray(prophet.params["delta"], dtype=float), axis=0)
    points = [
        ChangePoint(
            time=pd.Timestamp(when).tz_localize("UTC").to_pydatetime(),
            delta=float(delta),
            slope_change_per_hour=float(delta) * per_hour_factor,
            slope_change_per_day=float(delta) * per_hour_factor * 24.0,
        )
        for when, delta in zip(prophet.changepoints, deltas, strict=True)
        if abs(delta) >= changepoint_threshold
    ]
    return TrendAnalysis(
        metric=model.metric,
        window_start=start.tz_localize("UTC").to_pydatetime(),
        window_end=end.tz_localize("UTC").to_pydatetime(),
        start_value=float(trend[0]),
        end_value=float(trend[-1]),
        slope_per_hour=per_hour,
        slope_per_day=per_hour * 24.0,
        direction=direction(per_hour * 24.0, tolerance),
        flat_tolerance_per_day=tolerance,
        change_points=tuple(points),
    )

"""Forecast values on a time grid: what the workers compute, the store writes and reads answer from.

Usage: `grid = forecast_grid(now, step=pd.Timedelta("15min"), hours=25)`, then `Prediction(grid, ...)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from shared.arrays import FloatArray

# Probability mass between a forecast's bounds, unless a model was fitted with another.
DEFAULT_INTERVAL_WIDTH = 0.8


@dataclass(slots=True)
class Prediction:
    """One metric's forecast: times (UTC) and yhat with the interval's bounds at each."""

    times: list[datetime]
    yhat: FloatArray
    lower: FloatArray
    upper: FloatArray

    def frame(self) -> pd.DataFrame:
        """As columns ``timestamp`` (UTC), ``yhat``, ``yhat_lower``, ``yhat_upper``."""
        return pd.DataFrame(
            {
                "timestamp": pd.DatetimeIndex(self.times),
                "yhat": self.yhat,
                "yhat_lower": self.lower,
                "yhat_upper": self.upper,
            }
        )


def utc_timestamp(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    """An aware UTC timestamp; a naive one is taken as UTC (the contract everywhere)."""
    ts = pd.Timestamp(moment)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def naive_utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    """A naive UTC timestamp, as Prophet's ``ds`` column holds them."""
    return utc_timestamp(moment).tz_localize(None)


def forecast_grid(start: datetime, *, step: pd.Timedelta, hours: float) -> list[datetime]:
    """Times after `start` on the step's grid, up to `start + hours` rounded up to the grid."""
    origin = utc_timestamp(start).floor(step)
    count = math.ceil(pd.Timedelta(hours=hours) / step) + 1
    grid = pd.date_range(origin + step, periods=count, freq=step)
    return [ts.to_pydatetime() for ts in grid]

"""How forecasters are fitted, chosen and drawn: `ForecastConfig`, its measured defaults (docs/forecasting.md).

Usage: `replace(DEFAULT_CONFIG, lower_bound=0.0, upper_bound=100.0)` for a percentage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import pandas as pd

from services.forecaster.forecasting.candidates import ALL
from services.forecaster.forecasting.prediction import DEFAULT_INTERVAL_WIDTH
from shared.catalogue import METRICS_BY_NAME

DEFAULT_RESOLUTION = "15min"


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    """The defaults are the measured choices (docs/forecasting.md, bench/RESULTS.md)."""

    resolution: str = DEFAULT_RESOLUTION
    interval_width: float = DEFAULT_INTERVAL_WIDTH
    # Physical bounds of the series (e.g. 0 and 100 for a percentage): they bound the
    # forecast and its band, never by the column's name. None: unbounded.
    lower_bound: float | None = None
    upper_bound: float | None = None
    # Candidates the backtest chooses from (candidates.ALL).
    candidates: tuple[str, ...] = ALL
    # Origins every `backtest_spacing_hours`: the newest `backtest_select_origins` choose
    # the forecaster, all of them calibrate its interval (more varied days).
    backtest_origins: int = 28
    backtest_select_origins: int = 12
    backtest_spacing_hours: float = 6.0
    backtest_horizon_hours: float = 24.0
    # Separate interval quantiles for forecast times on weekdays and at weekends (UTC), each
    # from the backtest residuals of its own day type, where each has enough origins.
    calibrate_by_day_type: bool = True
    # Prophet is refitted once per this many hours of origins (its forecast does not
    # depend on values after its fit, so the origins in between reuse the fit).
    prophet_refit_hours: float = 96.0
    # Steps of the newest history the profiles' current level is the mean of.
    level_hours: float = 6.0
    # A change of level is searched in the last `level_shift_search_hours`, must last
    # `level_shift_min_hours` to the end and exceed `level_shift_threshold` robust sigmas.
    level_shift_search_hours: float = 48.0
    level_shift_min_hours: float = 4.0
    level_shift_threshold: float = 4.0
    # Prophet's configuration.
    changepoint_prior_scale: float = 0.01
    changepoint_range: float = 0.9
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    daily_fourier_order: int = 10
    weekly_fourier_order: int = 6
    # Separate daily shapes for weekdays and weekends (UTC): additive daily + weekly
    # seasonality cannot express a daily curve whose height depends on the day.
    weekend_daily_seasonality: bool = True
    # Fit on the means of samples labelled normal and not flagged as anomalous.
    exclude_labelled_anomalies: bool = True
    # Fewer usable bucket means than this raises InsufficientHistoryError.
    min_points: int = 48

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(self.resolution)

    def steps(self, hours: float) -> int:
        return max(1, int(round(pd.Timedelta(hours=hours) / self.step)))


DEFAULT_CONFIG = ForecastConfig()


def catalogue_bounds(metric: str) -> tuple[float | None, float | None]:
    """A catalogue metric's physical bounds: 0 for non-negative ones, 100 for percentages."""
    spec = METRICS_BY_NAME.get(metric)
    if spec is None:
        return None, None
    return (0.0 if spec.non_negative else None), (100.0 if spec.is_percent else None)


def for_metric(config: ForecastConfig, metric: str) -> ForecastConfig:
    """``config`` with a catalogue metric's bounds (what the service fits with); others unchanged."""
    lower, upper = catalogue_bounds(metric)
    return replace(config, lower_bound=lower, upper_bound=upper)

"""Prophet, one of the candidates: its construction, fit on a ``ds``/``y`` frame, and point forecasts.

Usage: `prophet = fit_prophet(frame, config)`, `prophet_yhat(prophet, ds, config)`; intervals do not
come from Prophet (see conformal.py), so its forecasts draw no samples and are deterministic.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

# prophet.plot logs an ERROR at import time when plotly is missing; we never plot.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)

from cmdstanpy.utils import get_logger as _cmdstanpy_logger  # noqa: E402
from prophet import Prophet  # noqa: E402
from prophet.serialize import model_from_json, model_to_json  # noqa: E402

from services.forecaster.forecasting.config import ForecastConfig  # noqa: E402
from shared.arrays import FloatArray  # noqa: E402

# cmdstanpy logs "Chain [1] start/done processing" at INFO for every fit.
_cmdstanpy_logger().setLevel(logging.WARNING)
logging.getLogger("prophet").setLevel(logging.WARNING)
# Prophet 1.5 calls DataFrame.drop(inplace=True), deprecated in pandas 3 (Pandas4Warning,
# a DeprecationWarning). Nothing we can change from here; keep it out of service logs.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"prophet(\.|$)")

__all__ = ["Prophet", "fit_prophet", "model_from_json", "model_to_json", "prophet_yhat"]


def _new_prophet(config: ForecastConfig) -> Prophet:
    split = config.weekend_daily_seasonality
    model = Prophet(
        growth="linear",
        daily_seasonality=False if split else config.daily_fourier_order,
        weekly_seasonality=config.weekly_fourier_order,
        yearly_seasonality=False,
        seasonality_mode=config.seasonality_mode,
        changepoint_prior_scale=config.changepoint_prior_scale,
        changepoint_range=config.changepoint_range,
        interval_width=config.interval_width,
        uncertainty_samples=0,
    )
    if split:
        for name in ("weekday", "weekend"):
            model.add_seasonality(
                name=f"daily_{name}",
                period=1.0,
                fourier_order=config.daily_fourier_order,
                condition_name=name,
            )
    return model


def with_conditions(frame: pd.DataFrame, config: ForecastConfig) -> pd.DataFrame:
    """Add the condition columns the conditional seasonalities read, when configured."""
    if not config.weekend_daily_seasonality:
        return frame
    weekend = pd.DatetimeIndex(frame["ds"]).day_of_week >= 5
    return frame.assign(weekend=np.asarray(weekend), weekday=~np.asarray(weekend))


def fit_prophet(frame: pd.DataFrame, config: ForecastConfig) -> Prophet:
    """Prophet fitted (MAP) on ``frame`` (``ds`` naive UTC, ``y``)."""
    model = _new_prophet(config)
    model.fit(with_conditions(frame[["ds", "y"]], config))
    return model


def prophet_yhat(model: Prophet, ds: pd.DatetimeIndex, config: ForecastConfig) -> FloatArray:
    """Prophet's point forecast at naive-UTC times (no sampling: deterministic)."""
    model.uncertainty_samples = 0
    raw = model.predict(with_conditions(pd.DataFrame({"ds": ds}), config))
    return np.asarray(raw["yhat"].to_numpy(dtype=float), dtype=float)


def y_scale(model: Prophet) -> float:
    value = model.y_scale
    return float(value) if value else 1.0

"""The forecaster's own code path as a `forecast(history, horizon)` for shared/benchmarks/forecast.

    PYTHONPATH=$PWD:$PWD/bench .venv/bin/python ../shared/benchmarks/forecast/forecast_eval.py \
        forecast_adapter:forecast

The history is bucketed as the service buckets it (`history.history_from_samples`, the service's
resolution, bucket means stamped at the bucket's middle), fitted with the service's defaults
(`fit`, backtest and all), and the forecast, made at the bucket middles, is interpolated at the
middle of each of the benchmark's bins. The series are not catalogue metrics: no bounds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from services.forecaster.forecasting.history import history_from_samples
from services.forecaster.forecasting.prophet_model import DEFAULT_CONFIG, fit, predict_frame

COLUMN = "value"


def forecast(history: pd.DataFrame, horizon: pd.DatetimeIndex) -> pd.DataFrame:
    samples = pd.DataFrame({"timestamp": history["timestamp"], COLUMN: history["value"]})
    buckets = history_from_samples(samples, [COLUMN], resolution=DEFAULT_CONFIG.resolution)
    model = fit(buckets[COLUMN], COLUMN, config=DEFAULT_CONFIG)
    step = pd.Timedelta(horizon.freq) if horizon.freq is not None else horizon[1] - horizon[0]
    res = DEFAULT_CONFIG.step
    first = horizon[0].floor(res) - res / 2
    grid = pd.date_range(first, horizon[-1] + step + res, freq=res)
    predicted = predict_frame(model, grid)
    x = np.asarray((grid - grid[0]).total_seconds(), dtype=float)
    at = np.asarray(((horizon + step / 2) - grid[0]).total_seconds(), dtype=float)
    columns = ("yhat", "yhat_lower", "yhat_upper")
    return pd.DataFrame({c: np.interp(at, x, predicted[c].to_numpy(dtype=float)) for c in columns})

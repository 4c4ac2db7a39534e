"""One Prophet model per metric: its configuration, fit, prediction, and storage as versioned JSON.

Usage: `model = fit(history, "cpu_usage_percent")`, `predict(model, times)`,
`stored = serialize_model(model)`, `load_model(stored.payload, stored.sha256)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import pandas as pd

# prophet.plot logs an ERROR at import time when plotly is missing; we never plot.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)

from cmdstanpy.utils import get_logger as _cmdstanpy_logger  # noqa: E402
from prophet import Prophet  # noqa: E402
from prophet.serialize import model_from_json, model_to_json  # noqa: E402

from services.forecaster.forecasting.errors import (  # noqa: E402
    InsufficientHistoryError,
    ModelIntegrityError,
    UnsupportedModelFormat,
)
from services.forecaster.forecasting.history import MetricHistory  # noqa: E402
from services.forecaster.forecasting.prediction import (  # noqa: E402
    DEFAULT_INTERVAL_WIDTH,
    Prediction,
    naive_utc,
)
from shared.catalogue import METRICS_BY_NAME  # noqa: E402

# cmdstanpy logs "Chain [1] start/done processing" at INFO for every fit.
_cmdstanpy_logger().setLevel(logging.WARNING)
logging.getLogger("prophet").setLevel(logging.WARNING)
# Prophet 1.5 calls DataFrame.drop(inplace=True), deprecated in pandas 3 (Pandas4Warning,
# a DeprecationWarning). Nothing we can change from here; keep it out of service logs.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"prophet(\.|$)")

DEFAULT_RESOLUTION = "15min"
# The one artifact format this code reads and writes; any other is refused by name.
SERIALIZATION_FORMAT = "autofix-ml/prophet-json/1"


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    """How models are fitted and forecasts drawn; the defaults are the measured choices (docs/forecasting.md)."""

    resolution: str = DEFAULT_RESOLUTION
    interval_width: float = DEFAULT_INTERVAL_WIDTH
    uncertainty_samples: int = 300
    changepoint_prior_scale: float = 0.01
    changepoint_range: float = 0.9
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    daily_fourier_order: int = 10
    weekly_fourier_order: int = 6
    # Separate daily shapes for weekdays and weekends (UTC): additive daily + weekly
    # seasonality cannot express a daily curve whose height depends on the day.
    weekend_daily_seasonality: bool = True
    # Fit on the means of samples labelled normal (synthetic data carries labels).
    exclude_labelled_anomalies: bool = True
    # Rescale the interval to cover `interval_width` of every fitted bucket as observed.
    calibrate_interval: bool = True
    # Fewer usable bucket means than this raises InsufficientHistoryError.
    min_points: int = 48
    # Seed for Prophet's interval draws, so that a stored model gives the same forecast.
    seed: int | None = 0

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(self.resolution)


DEFAULT_CONFIG = ForecastConfig()


@dataclass(slots=True)
class MetricModel:
    """A fitted Prophet model for one metric and the facts needed to use it."""

    metric: str
    prophet: Prophet
    config: ForecastConfig
    trained_start: datetime  # middle of the first bucket fitted (UTC)
    trained_end: datetime  # middle of the last bucket fitted (UTC)
    n_points: int
    fit_seconds: float = 0.0
    # Factors applied to Prophet's lower and upper half-widths (see calibrate_interval).
    interval_scale_lower: float = 1.0
    interval_scale_upper: float = 1.0

    @property
    def y_scale(self) -> float:
        """The metric's typical magnitude: Prophet's y_scale (the largest |y| fitted)."""
        return y_scale(self.prophet)


def y_scale(prophet: Prophet) -> float:
    value = prophet.y_scale
    return float(value) if value else 1.0


# --------------------------------------------------------------------------------- fit


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
        uncertainty_samples=config.uncertainty_samples,
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


def _interval_scales(
    model: Prophet, observed: pd.DataFrame, config: ForecastConfig
) -> tuple[float, float]:
    """Factors that make the in-sample interval cover ``interval_width`` of ``observed``.

    In sample, Prophet's interval is yhat +/- z * sigma_obs (no trend uncertainty yet),
    so the factors are the empirical residual quantiles over that half-width.
    """
    sigma = float(np.nanmean(np.asarray(model.params["sigma_obs"], dtype=float)))
    half = NormalDist().inv_cdf((1.0 + config.interval_width) / 2.0) * sigma * y_scale(model)
    if half <= 0 or observed.empty:
        return 1.0, 1.0
    samples = model.uncertainty_samples
    model.uncertainty_samples = 0  # point predictions only: fast
    try:
        fitted = model.predict(with_conditions(observed[["ds"]], config))
    finally:
        model.uncertainty_samples = samples
    residual = observed["y"].to_numpy(dtype=float) - fitted["yhat"].to_numpy(dtype=float)
    tail = (1.0 - config.interval_width) / 2.0
    low, high = np.quantile(residual, [tail, 1.0 - tail])
    return max(-float(low), 0.0) / half, max(float(high), 0.0) / half


def fit(
    history: MetricHistory, metric: str, *, config: ForecastConfig = DEFAULT_CONFIG
) -> MetricModel:
    """Fit one metric's model on its bucket means; the interval is calibrated on every bucket.

    With ``exclude_labelled_anomalies`` off, the model fits the means of every sample.
    """
    frame = history.fit if config.exclude_labelled_anomalies else history.observed
    if len(frame) < config.min_points:
        raise InsufficientHistoryError(
            f"{metric}: {len(frame)} usable points at {config.resolution}, "
            f"need at least {config.min_points}"
        )
    started = time.perf_counter()
    model = _new_prophet(config)
    model.fit(with_conditions(frame, config))
    scale_lower = scale_upper = 1.0
    if config.calibrate_interval and config.uncertainty_samples > 0:
        scale_lower, scale_upper = _interval_scales(model, history.observed, config)
    first, last = frame["ds"].iloc[0], frame["ds"].iloc[-1]
    return MetricModel(
        metric=metric,
        prophet=model,
        config=config,
        trained_start=pd.Timestamp(first).tz_localize("UTC").to_pydatetime(),
        trained_end=pd.Timestamp(last).tz_localize("UTC").to_pydatetime(),
        n_points=len(frame),
        fit_seconds=time.perf_counter() - started,
        interval_scale_lower=scale_lower,
        interval_scale_upper=scale_upper,
    )


# ----------------------------------------------------------------------------- predict

# Prophet draws its intervals from numpy's global RNG. Seeding it under a lock, and
# restoring the previous state afterwards, makes a stored model's forecast reproducible
# without disturbing other users of the global RNG.
_RNG_LOCK = threading.Lock()


def predict_frame(model: MetricModel, ds: pd.DatetimeIndex) -> pd.DataFrame:
    """Prophet's yhat and calibrated bounds at naive-UTC times, clipped to the metric's bounds."""
    prophet = model.prophet
    prophet.uncertainty_samples = model.config.uncertainty_samples
    prophet.interval_width = model.config.interval_width
    future = with_conditions(pd.DataFrame({"ds": ds}), model.config)
    with _RNG_LOCK:
        saved = np.random.get_state()
        try:
            if model.config.seed is not None:
                np.random.seed(model.config.seed)
            raw = prophet.predict(future)
        finally:
            np.random.set_state(saved)
    yhat = raw["yhat"].to_numpy(dtype=float)
    # uncertainty_samples=0 means no interval: Prophet then omits the bounds.
    lower = raw.get("yhat_lower", raw["yhat"]).to_numpy(dtype=float)
    upper = raw.get("yhat_upper", raw["yhat"]).to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "ds": ds,
            "yhat": yhat,
            "yhat_lower": yhat - model.interval_scale_lower * (yhat - lower),
            "yhat_upper": yhat + model.interval_scale_upper * (upper - yhat),
        }
    )
    spec = METRICS_BY_NAME.get(model.metric)
    if spec is not None:
        cols = ["yhat", "yhat_lower", "yhat_upper"]
        low = 0.0 if spec.non_negative else None
        high = 100.0 if spec.is_percent else None
        out[cols] = out[cols].clip(lower=low, upper=high)
    return out


def predict(model: MetricModel, times: Iterable[datetime]) -> Prediction:
    """The forecast at the given times (aware UTC, or naive taken as UTC)."""
    grid = list(times)
    frame = predict_frame(model, pd.DatetimeIndex([naive_utc(t) for t in grid]))
    return Prediction(
        times=grid,
        yhat=frame["yhat"].to_numpy(dtype=float),
        lower=frame["yhat_lower"].to_numpy(dtype=float),
        upper=frame["yhat_upper"].to_numpy(dtype=float),
    )


# ------------------------------------------------------------------------ serialisation


@dataclass(frozen=True, slots=True)
class SerializedModel:
    """A model as JSON text plus the sha256 of its UTF-8 bytes."""

    payload: str
    sha256: str


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A stored version's verified bytes, parsed into a model in the worker that predicts."""

    payload: bytes
    sha256: str


def _digest(payload: str | bytes) -> str:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hashlib.sha256(data).hexdigest()


def serialize_model(model: MetricModel) -> SerializedModel:
    """Prophet's own JSON wrapped with the metric, config and format version; never pickle."""
    document = {
        "format": SERIALIZATION_FORMAT,
        "metric": model.metric,
        "config": asdict(model.config),
        "trained_start": model.trained_start.isoformat(),
        "trained_end": model.trained_end.isoformat(),
        "n_points": model.n_points,
        "fit_seconds": model.fit_seconds,
        "interval_scale_lower": model.interval_scale_lower,
        "interval_scale_upper": model.interval_scale_upper,
        "prophet": model_to_json(model.prophet),
    }
    payload = json.dumps(document, separators=(",", ":"), sort_keys=True)
    return SerializedModel(payload=payload, sha256=_digest(payload))


def read_document(payload: str | bytes, sha256: str) -> dict[str, Any]:
    """The stored document, its checksum and format version checked.

    Raises ModelIntegrityError on a checksum mismatch, UnsupportedModelFormat (naming the
    version) when the artifact was written in another format.
    """
    if not hmac.compare_digest(_digest(payload), sha256.lower()):
        raise ModelIntegrityError(
            "model checksum mismatch: the stored model was altered or corrupted"
        )
    document: dict[str, Any] = json.loads(payload)
    found = document.get("format")
    if found != SERIALIZATION_FORMAT:
        raise UnsupportedModelFormat(
            f"model format {found!r} is not supported: this forecaster reads "
            f"{SERIALIZATION_FORMAT!r} only; retrain the forecaster"
        )
    return document


def stored_model(payload: bytes, sha256: str) -> StoredModel:
    """A version's artifact checked once on load (checksum, format), kept as bytes for workers."""
    read_document(payload, sha256)
    return StoredModel(payload=payload, sha256=sha256)


def load_model(payload: str | bytes, sha256: str) -> MetricModel:
    """Rebuild a model from ``serialize_model`` output (see `read_document` for what is refused)."""
    document = read_document(payload, sha256)
    return MetricModel(
        metric=document["metric"],
        prophet=model_from_json(document["prophet"]),
        config=ForecastConfig(**document["config"]),
        trained_start=datetime.fromisoformat(document["trained_start"]),
        trained_end=datetime.fromisoformat(document["trained_end"]),
        n_points=int(document["n_points"]),
        fit_seconds=float(document["fit_seconds"]),
        interval_scale_lower=float(document["interval_scale_lower"]),
        interval_scale_upper=float(document["interval_scale_upper"]),
    )

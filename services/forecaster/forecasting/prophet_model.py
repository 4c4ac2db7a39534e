"""One forecaster per metric, chosen by backtest: fit, prediction, and storage as versioned JSON.

Usage: `model = fit(history, "cpu_usage_percent", config=replace(DEFAULT_CONFIG, lower_bound=0.0))`,
`predict(model, times)`, `stored = serialize_model(model)`, `load_model(stored.payload, stored.sha256)`.
The name is historical: Prophet is one candidate (always fitted, for the trend) among others.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from services.forecaster.forecasting import candidates as cand
from services.forecaster.forecasting.backtest import backtest, summary
from services.forecaster.forecasting.config import (
    DEFAULT_CONFIG,
    DEFAULT_RESOLUTION,
    ForecastConfig,
)
from services.forecaster.forecasting.conformal import (
    DEFAULT_EDGES_HOURS,
    ConformalBands,
    calibrate,
    held_out_coverage,
    is_weekend,
    with_spread,
)
from services.forecaster.forecasting.errors import (
    InsufficientHistoryError,
    ModelIntegrityError,
    UnsupportedModelFormat,
)
from services.forecaster.forecasting.history import MetricHistory
from services.forecaster.forecasting.level_shift import LevelShift, find_level_shift, relevel
from services.forecaster.forecasting.prediction import Prediction, naive_utc
from services.forecaster.forecasting.prophet_fit import (
    Prophet,
    fit_prophet,
    model_from_json,
    model_to_json,
    prophet_yhat,
    with_conditions,
    y_scale,
)
from shared.arrays import FloatArray

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_RESOLUTION",
    "ForecastConfig",
    "MetricModel",
    "fit",
    "load_model",
    "predict",
    "predict_frame",
    "serialize_model",
    "with_conditions",
]

# The one artifact format this code reads and writes; any other is refused by name.
SERIALIZATION_FORMAT = "autofix-ml/forecast-json/2"


@dataclass(slots=True)
class MetricModel:
    """A metric's chosen forecaster, the history it forecasts from, and its calibrated bands."""

    metric: str
    prophet: Prophet
    config: ForecastConfig
    trained_start: datetime  # middle of the first bucket fitted (UTC)
    trained_end: datetime  # middle of the last bucket fitted (UTC)
    n_points: int
    chosen: str
    tail: FloatArray  # the newest gap-filled (re-levelled) bucket means, tail[-1] at trained_end
    bands: ConformalBands
    fit_seconds: float = 0.0
    evaluation: dict[str, Any] = field(default_factory=dict)
    level_shift: LevelShift | None = None

    @property
    def y_scale(self) -> float:
        """The metric's typical magnitude: Prophet's y_scale (the largest |y| fitted)."""
        return y_scale(self.prophet)


def _edges(config: ForecastConfig) -> tuple[int, ...]:
    return tuple(config.steps(h) for h in DEFAULT_EDGES_HOURS)


def _frame(grid: cand.Grid, values: FloatArray, keep: np.ndarray, end: int) -> pd.DataFrame:
    index = np.flatnonzero(keep[:end])
    return pd.DataFrame({"ds": grid.start + index * grid.step, "y": values[index]})


def _aligned(values: FloatArray, n: int) -> FloatArray:
    out = np.full(n, np.nan)
    m = min(n, len(values))
    out[:m] = values[:m]
    return out


def _naive_scale(observed: FloatArray, day: int) -> float | None:
    if len(observed) <= day:
        return None
    diff = np.abs(observed[day:] - observed[:-day])
    ok = np.isfinite(diff)
    return float(np.mean(diff[ok])) if ok.any() else None


def fit(
    history: MetricHistory, metric: str, *, config: ForecastConfig = DEFAULT_CONFIG
) -> MetricModel:
    """Backtest every candidate on ``history``, keep the best, calibrate its bands out of sample.

    ``metric`` only names the model: bounds come from ``config`` (``lower_bound``,
    ``upper_bound``), never from the name, so any series can be fitted.
    """
    frame = history.fit if config.exclude_labelled_anomalies else history.observed
    if len(frame) < config.min_points:
        raise InsufficientHistoryError(
            f"{metric}: {len(frame)} usable points at {config.resolution}, "
            f"need at least {config.min_points}"
        )
    unknown = [c for c in config.candidates if c not in cand.ALL]
    if unknown:
        raise ValueError(f"unknown candidate(s) {unknown}; known: {', '.join(cand.ALL)}")
    started = time.perf_counter()
    step = config.step
    origin = min(frame["ds"].iloc[0], history.observed["ds"].iloc[0])
    fitted = cand.regular_grid(frame, step, start=origin)
    observed_grid = cand.regular_grid(history.observed, step, start=origin)
    n = len(fitted.values)
    observed = _aligned(observed_grid.values, n)
    periods = cand.Periods.at(step, level_hours=config.level_hours)
    have = ~np.isnan(fitted.values)
    filled = cand.fill_gaps(fitted.values, periods.day)
    shift = find_level_shift(
        filled,
        day=periods.day,
        search_steps=config.steps(config.level_shift_search_hours),
        min_after=config.steps(config.level_shift_min_hours),
        threshold=config.level_shift_threshold,
    )
    y = relevel(filled, shift)
    observed = relevel(observed, shift)

    def prophet_path(end: int, ahead: int) -> FloatArray:
        model = fit_prophet(_frame(fitted, y, have, end), config)
        return prophet_yhat(
            model, pd.DatetimeIndex(fitted.time(end) + np.arange(ahead) * step), config
        )

    horizon = config.steps(config.backtest_horizon_hours)
    spacing = config.steps(config.backtest_spacing_hours)
    edges = _edges(config)
    try:
        result = backtest(
            y,
            observed,
            periods=periods,
            horizon=horizon,
            origins=config.backtest_origins,
            spacing=spacing,
            candidates=config.candidates,
            prophet=prophet_path,
            prophet_refit_every=max(
                1, int(round(config.prophet_refit_hours / config.backtest_spacing_hours))
            ),
            select_last=config.backtest_select_origins,
        )
    except InsufficientHistoryError as exc:
        result = None
        reason = str(exc)
    prophet = fit_prophet(_frame(fitted, y, have, n), config)
    if result is not None:
        spread = None
        if history.spread is not None and not history.spread.empty:
            spread_values = _aligned(
                cand.regular_grid(history.spread, step, start=origin).values, n
            )
            spread = np.vstack([spread_values[o : o + horizon] for o in result.origins])
        residuals = with_spread(result.residuals[result.chosen], spread)
        index = np.asarray(result.origins)[:, None] + np.arange(horizon)[None, :]
        times = fitted.start.to_datetime64() + index * step.to_timedelta64()
        weekend = is_weekend(times) if config.calibrate_by_day_type else None
        width = config.interval_width
        bands = calibrate(residuals, interval_width=width, edges=edges, weekend=weekend)
        evaluation = summary(
            result,
            coverage=held_out_coverage(
                residuals, interval_width=width, edges=edges, weekend=weekend
            ),
            interval_width=config.interval_width,
            scale=_naive_scale(observed, periods.day),
        )
        evaluation["holdout_start"] = _aware(
            fitted.time(result.origins[-result.select_last])
        ).isoformat()
        evaluation["holdout_end"] = _aware(fitted.time(n - 1)).isoformat()
        chosen = result.chosen
    else:
        # Too short to backtest: Prophet, with bands from its in-sample residuals.
        chosen = cand.PROPHET
        inside = prophet_yhat(
            prophet, pd.DatetimeIndex(fitted.time(0) + np.arange(n) * step), config
        )
        residuals = (observed - inside)[None, :]
        bands = calibrate(residuals, interval_width=config.interval_width, edges=())
        evaluation = {"method": "in-sample", "chosen": chosen, "evaluation_error": reason}
    evaluation["level_shift"] = (
        None
        if shift is None
        else {
            **shift.as_dict(),
            "at_time": _aware(fitted.time(shift.at)).isoformat(),
        }
    )
    evaluation["excluded_points"] = int(np.sum(~have & np.isfinite(observed)))
    keep = periods.week * periods.profile_weeks
    return MetricModel(
        metric=metric,
        prophet=prophet,
        config=config,
        trained_start=_aware(frame["ds"].iloc[0]),
        trained_end=_aware(fitted.time(n - 1)),
        n_points=len(frame),
        chosen=chosen,
        tail=np.asarray(y[-keep:], dtype=float),
        bands=bands,
        fit_seconds=time.perf_counter() - started,
        evaluation=evaluation,
        level_shift=shift,
    )


def _aware(ts: Any) -> datetime:
    return pd.Timestamp(ts).tz_localize("UTC").to_pydatetime()


# ----------------------------------------------------------------------------- predict


def _numpy_path(
    model: MetricModel, name: str, steps_ahead: FloatArray, periods: cand.Periods
) -> FloatArray | None:
    count = int(np.ceil(max(float(steps_ahead.max()), 1.0))) + 1
    path = cand.forecast_candidate(name, model.tail, count, periods)
    if path is None:
        return None
    return np.asarray(np.interp(steps_ahead, np.arange(1, count + 1), path), dtype=float)


def predict_frame(model: MetricModel, ds: pd.DatetimeIndex) -> pd.DataFrame:
    """The chosen forecaster's yhat and calibrated bounds at naive-UTC times, within the bounds."""
    config = model.config
    steps_ahead = np.asarray((ds - naive_utc(model.trained_end)) / config.step, dtype=float)
    periods = cand.Periods.at(config.step, level_hours=config.level_hours)
    if model.chosen == cand.PROPHET:
        yhat = prophet_yhat(model.prophet, ds, config)
    elif model.chosen in cand.NUMPY:
        path = _numpy_path(model, model.chosen, steps_ahead, periods)
        yhat = path if path is not None else prophet_yhat(model.prophet, ds, config)
    else:
        forecasts: dict[str, FloatArray] = {cand.PROPHET: prophet_yhat(model.prophet, ds, config)}
        for name in cand.NUMPY:
            if (path := _numpy_path(model, name, steps_ahead, periods)) is not None:
                forecasts[name] = path
        combined = cand.combine(forecasts)
        yhat = combined if combined is not None else forecasts[cand.PROPHET]
    point, lower, upper = model.bands.interval(
        yhat,
        np.ceil(steps_ahead - 1e-9).astype(np.int64),
        weekend=is_weekend(ds),
        lower_bound=config.lower_bound,
        upper_bound=config.upper_bound,
    )
    return pd.DataFrame({"ds": ds, "yhat": point, "yhat_lower": lower, "yhat_upper": upper})


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
    """JSON: the choice, its history tail and bands, Prophet's own JSON, the format version; never pickle."""
    document = {
        "format": SERIALIZATION_FORMAT,
        "metric": model.metric,
        "config": asdict(model.config),
        "trained_start": model.trained_start.isoformat(),
        "trained_end": model.trained_end.isoformat(),
        "n_points": model.n_points,
        "fit_seconds": model.fit_seconds,
        "chosen": model.chosen,
        "tail": [float(v) for v in model.tail],
        "bands": model.bands.as_dict(),
        "evaluation": model.evaluation,
        "level_shift": None if model.level_shift is None else model.level_shift.as_dict(),
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
    config = dict(document["config"])
    config["candidates"] = tuple(config["candidates"])
    shift = document.get("level_shift")
    return MetricModel(
        metric=document["metric"],
        prophet=model_from_json(document["prophet"]),
        config=ForecastConfig(**config),
        trained_start=datetime.fromisoformat(document["trained_start"]),
        trained_end=datetime.fromisoformat(document["trained_end"]),
        n_points=int(document["n_points"]),
        chosen=str(document["chosen"]),
        tail=np.asarray(document["tail"], dtype=float),
        bands=ConformalBands.from_dict(document["bands"]),
        fit_seconds=float(document["fit_seconds"]),
        evaluation=dict(document.get("evaluation") or {}),
        level_shift=None if shift is None else LevelShift(**shift),
    )

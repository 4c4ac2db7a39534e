"""Per-metric Prophet forecasting: fit, forecast, evaluate, serialise, trend and breach analysis.

A pure domain module: no HTTP, no database. The forecaster service calls it from a
worker thread; every function here is blocking and CPU-bound.

Usage::

    result = fit_models(history_df)                  # one Prophet model per metric
    frame = forecast(result.models["cpu_usage_percent"], hours_ahead=6)
    breach = detect_breach(frame, threshold=85.0)

Resolution. Histories are resampled to 15-minute means before fitting
(``DEFAULT_RESOLUTION``), each mean stamped at its bucket's middle. Measured on 30 days
of synthetic data (``python -m bench.bench_forecast``, 2 shared cores): one metric fits
in ~0.25 s at 15 minutes against 6-18 s at 1 minute; all 14 metrics in 2-3 s. Scored on
the same 15-minute held-out means, CPU MAE is 6.63 at 15 min, 6.61 at 5 min, 6.60 at
1 min and 6.73 hourly: 15 minutes gives up about 0.5 % against 1-minute fits.

Anomalies. When the history has a ``label`` column (synthetic data), labelled anomaly
minutes are left out of the fit so the mean learns normal behaviour; the interval is
then calibrated on every observed bucket. Holdout evaluation scores every held-out
bucket, anomalous ones included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import pandas as pd

# prophet.plot logs an ERROR at import time when plotly is missing; we never plot.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)

from cmdstanpy.utils import get_logger as _cmdstanpy_logger  # noqa: E402
from prophet import Prophet  # noqa: E402
from prophet.serialize import model_from_json, model_to_json  # noqa: E402

from shared.catalogue import METRIC_NAMES, METRICS_BY_NAME  # noqa: E402

# cmdstanpy logs "Chain [1] start/done processing" at INFO for every fit.
_cmdstanpy_logger().setLevel(logging.WARNING)
logging.getLogger("prophet").setLevel(logging.WARNING)
# Prophet 1.5 calls DataFrame.drop(inplace=True), deprecated in pandas 3 (Pandas4Warning,
# a DeprecationWarning). Nothing we can change from here; keep it out of service logs.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"prophet(\.|$)")

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = "15min"
DEFAULT_INTERVAL_WIDTH = 0.8
MAX_HOURS_AHEAD = 24.0
SERIALIZATION_FORMAT = "autofix-ml/prophet-json/1"

Direction = Literal["rising", "falling", "flat"]


class ForecastError(ValueError):
    """Base class for the forecaster's domain errors."""


class InsufficientHistoryError(ForecastError):
    """The history has too few usable points to fit a model."""


class ModelIntegrityError(ForecastError):
    """A stored model's checksum does not match its payload."""


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    """How models are fitted and how forecasts are drawn.

    The defaults are the measured choices recorded in bench/RESULTS.md.
    """

    resolution: str = DEFAULT_RESOLUTION
    interval_width: float = DEFAULT_INTERVAL_WIDTH
    # Draws for the interval: 300 keeps the 80 % bounds within ~3 % of the interval
    # width of their 5,000-draw value, and predicting 24 h takes ~20 ms (bench).
    uncertainty_samples: int = 300
    # 0.01 (Prophet's default is 0.05) and weekly order 6 (default 3) beat both naive
    # baselines on held-out Wednesdays to Mondays alike; the defaults lost on Sun/Mon.
    changepoint_prior_scale: float = 0.01
    changepoint_range: float = 0.9
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    daily_fourier_order: int = 10
    weekly_fourier_order: int = 6
    # Separate daily shapes for weekdays and weekends (UTC): business-hour load is a
    # daily curve whose height depends on the day, which additive daily + weekly
    # seasonality cannot express.
    weekend_daily_seasonality: bool = True
    # Drop samples whose label is not "normal" before fitting (only when a 'label'
    # column exists, as in synthetic data); real hosts carry no labels.
    exclude_labelled_anomalies: bool = True
    # Rescale the interval so it covers ``interval_width`` of every fitted bucket as
    # observed (labelled anomalies included): the mean comes from normal behaviour, but
    # the interval must describe what will actually be seen. Prophet's own Gaussian
    # interval under-covers when incidents happen (bench/RESULTS.md).
    calibrate_interval: bool = True
    # Fewer usable resampled points than this raises InsufficientHistoryError.
    min_points: int = 48
    # Seed for Prophet's interval draws so that a stored model gives the same forecast.
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
    trained_start: datetime  # middle of the first resampled bucket (UTC)
    trained_end: datetime  # middle of the last resampled bucket (UTC)
    n_points: int
    fit_seconds: float = 0.0
    # Factors applied to Prophet's lower and upper half-widths (see calibrate_interval).
    interval_scale_lower: float = 1.0
    interval_scale_upper: float = 1.0


@dataclass(slots=True)
class FitResult:
    """Models that fitted, and the reason for each metric that did not."""

    models: dict[str, MetricModel]
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- resampling


def _to_utc_index(index: pd.Index) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(index)
    if idx.tz is None:
        # The contract is UTC everywhere; a naive timestamp is read as UTC.
        return idx.tz_localize("UTC")
    return idx.tz_convert("UTC")


def _metric_series(
    history: pd.DataFrame | pd.Series, metric: str | None, *, exclude_labelled: bool
) -> pd.Series:
    """The metric's raw values indexed by UTC timestamp, anomalies masked if asked."""
    if isinstance(history, pd.Series):
        values = pd.to_numeric(history, errors="coerce").astype(float)
        return pd.Series(values.to_numpy(), index=_to_utc_index(history.index), name=metric)
    if metric is None:
        raise ForecastError("metric is required when history is a DataFrame")
    if metric not in history.columns:
        raise ForecastError(f"history has no column {metric!r}")
    if "timestamp" in history.columns:
        index = _to_utc_index(pd.DatetimeIndex(pd.to_datetime(history["timestamp"], utc=True)))
    else:
        index = _to_utc_index(history.index)
    raw = pd.to_numeric(history[metric], errors="coerce").astype(float).to_numpy()
    if exclude_labelled and "label" in history.columns:
        normal = (history["label"].astype(str) == "normal").to_numpy()
        raw = np.where(normal, raw, np.nan)
    return pd.Series(raw, index=index, name=metric, dtype=float)


def resample_history(
    history: pd.DataFrame | pd.Series,
    metric: str | None = None,
    *,
    resolution: str = DEFAULT_RESOLUTION,
    exclude_labelled_anomalies: bool = True,
) -> pd.DataFrame:
    """Bucket means of one metric as Prophet's ``ds`` (naive UTC, bucket middle) / ``y`` frame.

    ``history`` is a DataFrame with a ``timestamp`` column (or a DatetimeIndex) and the
    metric column, or a Series indexed by timestamp. Empty buckets (gaps) are dropped,
    not filled: Prophet fits irregular series directly.
    """
    series = _metric_series(history, metric, exclude_labelled=exclude_labelled_anomalies)
    series = series[np.asarray(series.index.notna())].sort_index()
    buckets = series.resample(resolution, label="left", closed="left").mean().dropna()
    # A bucket mean stands for the bucket's middle; labelling it by its start would
    # shift every fitted curve half a bucket early.
    middle = pd.DatetimeIndex(buckets.index) + pd.Timedelta(resolution) / 2
    ds = middle.tz_convert("UTC").tz_localize(None)
    return pd.DataFrame({"ds": ds, "y": buckets.to_numpy(dtype=float)})


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


def _with_conditions(frame: pd.DataFrame, config: ForecastConfig) -> pd.DataFrame:
    """Add the condition columns conditional seasonalities read, when configured."""
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
    half = NormalDist().inv_cdf((1.0 + config.interval_width) / 2.0) * sigma * _y_scale(model)
    if half <= 0 or observed.empty:
        return 1.0, 1.0
    samples = model.uncertainty_samples
    model.uncertainty_samples = 0  # point predictions only: fast
    try:
        fitted = model.predict(_with_conditions(observed[["ds"]], config))
    finally:
        model.uncertainty_samples = samples
    residual = observed["y"].to_numpy(dtype=float) - fitted["yhat"].to_numpy(dtype=float)
    tail = (1.0 - config.interval_width) / 2.0
    low, high = np.quantile(residual, [tail, 1.0 - tail])
    return max(-float(low), 0.0) / half, max(float(high), 0.0) / half


def fit_frame(
    frame: pd.DataFrame,
    metric: str,
    *,
    config: ForecastConfig = DEFAULT_CONFIG,
    observed: pd.DataFrame | None = None,
) -> MetricModel:
    """Fit one model on an already resampled ``ds``/``y`` frame.

    ``observed`` is the same history with nothing left out, used to calibrate the
    interval; it defaults to ``frame``.
    """
    if len(frame) < config.min_points:
        raise InsufficientHistoryError(
            f"{metric}: {len(frame)} usable points at {config.resolution}, "
            f"need at least {config.min_points}"
        )
    started = time.perf_counter()
    model = _new_prophet(config)
    model.fit(_with_conditions(frame, config))
    scale_lower = scale_upper = 1.0
    if config.calibrate_interval and config.uncertainty_samples > 0:
        scale_lower, scale_upper = _interval_scales(
            model, frame if observed is None else observed, config
        )
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


def fit_metric(
    history: pd.DataFrame | pd.Series,
    metric: str,
    *,
    config: ForecastConfig = DEFAULT_CONFIG,
) -> MetricModel:
    """Resample one metric's history and fit its model."""
    frame = resample_history(
        history,
        metric,
        resolution=config.resolution,
        exclude_labelled_anomalies=config.exclude_labelled_anomalies,
    )
    observed = resample_history(
        history, metric, resolution=config.resolution, exclude_labelled_anomalies=False
    )
    return fit_frame(frame, metric, config=config, observed=observed)


def fit_models(
    history: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    config: ForecastConfig = DEFAULT_CONFIG,
    max_workers: int = 2,
) -> FitResult:
    """Fit one model per metric in parallel threads.

    Threads parallelise because the optimiser runs in a CmdStan subprocess; on two cores
    two workers beat a process pool, which pays ~2 s to import Prophet per worker (bench).
    A metric that cannot be fitted is reported in ``failures`` rather than raised.
    """
    names = list(metrics) if metrics is not None else [m for m in METRIC_NAMES if m in history]
    started = time.perf_counter()
    result = FitResult(models={})

    def work(name: str) -> MetricModel:
        return fit_metric(history, name, config=config)

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        futures = {name: pool.submit(work, name) for name in names}
        for name, future in futures.items():
            try:
                result.models[name] = future.result()
            except Exception as exc:  # a bad metric must not sink the others
                log.warning("forecaster: fitting %s failed: %s", name, exc)
                result.failures[name] = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------- forecast

# Prophet draws its intervals from numpy's global RNG. Seeding it under a lock, and
# restoring the previous state afterwards, makes a stored model's forecast reproducible
# without disturbing other users of the global RNG.
_RNG_LOCK = threading.Lock()


def _predict(model: MetricModel, ds: pd.DatetimeIndex | pd.Series) -> pd.DataFrame:
    """Prophet predictions at the given naive-UTC times, clipped to the metric's bounds."""
    prophet = model.prophet
    prophet.uncertainty_samples = model.config.uncertainty_samples
    prophet.interval_width = model.config.interval_width
    future = _with_conditions(pd.DataFrame({"ds": pd.DatetimeIndex(ds)}), model.config)
    with _RNG_LOCK:
        saved = np.random.get_state()
        try:
            if model.config.seed is not None:
                np.random.seed(model.config.seed)
            raw = prophet.predict(future)
        finally:
            np.random.set_state(saved)
    out = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(raw["ds"]).tz_localize("UTC"),
            "yhat": raw["yhat"].to_numpy(dtype=float),
            # uncertainty_samples=0 means no interval: Prophet then omits the bounds.
            "yhat_lower": raw.get("yhat_lower", raw["yhat"]).to_numpy(dtype=float),
            "yhat_upper": raw.get("yhat_upper", raw["yhat"]).to_numpy(dtype=float),
        }
    )
    yhat = out["yhat"].to_numpy()
    out["yhat_lower"] = yhat - model.interval_scale_lower * (yhat - out["yhat_lower"].to_numpy())
    out["yhat_upper"] = yhat + model.interval_scale_upper * (out["yhat_upper"].to_numpy() - yhat)
    spec = METRICS_BY_NAME.get(model.metric)
    if spec is not None:
        cols = ["yhat", "yhat_lower", "yhat_upper"]
        lower = 0.0 if spec.non_negative else None
        upper = 100.0 if spec.is_percent else None
        out[cols] = out[cols].clip(lower=lower, upper=upper)
    return out


def _naive_utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(moment)
    if ts.tzinfo is None:
        return ts
    return ts.tz_convert("UTC").tz_localize(None)


def forecast(
    model: MetricModel,
    *,
    hours_ahead: float = MAX_HOURS_AHEAD,
    step: str | None = None,
    start: datetime | None = None,
) -> pd.DataFrame:
    """Forecast ``hours_ahead`` hours after ``start`` on a grid of ``step``.

    Returns columns ``timestamp`` (UTC-aware), ``yhat``, ``yhat_lower``, ``yhat_upper``.
    ``start`` defaults to the last fitted bucket; the first point is the next grid time
    after it and the last is ``start + hours_ahead`` (rounded up to the grid). ``step``
    defaults to the model's resolution; a finer step (e.g. ``"5min"``) is evaluated
    by Prophet directly, not interpolated.
    """
    if not 0 < hours_ahead <= MAX_HOURS_AHEAD:
        raise ForecastError(f"hours_ahead must be in (0, {MAX_HOURS_AHEAD:g}], got {hours_ahead}")
    step_td = pd.Timedelta(step or model.config.resolution)
    if step_td <= pd.Timedelta(0):
        raise ForecastError(f"step must be positive, got {step!r}")
    origin = _naive_utc(start if start is not None else model.trained_end).floor(step_td)
    count = math.ceil(pd.Timedelta(hours=hours_ahead) / step_td)
    grid = pd.date_range(origin + step_td, periods=count, freq=step_td)
    return _predict(model, grid)


def predict_at(model: MetricModel, times: Iterable[datetime | pd.Timestamp]) -> pd.DataFrame:
    """Predictions at arbitrary times (UTC-aware or naive UTC); same columns as ``forecast``."""
    ds = pd.DatetimeIndex([_naive_utc(t) for t in times])
    return _predict(model, ds)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class MetricEvaluation:
    """Accuracy of a model on the held-out final stretch against seasonal-naive forecasts.

    All figures are computed on every held-out bucket (anomalous ones included) at the
    model's resolution. MAPE skips actual values of zero; None when none are left.
    MASE scales by the in-sample MAE of the one-day seasonal-naive forecast.
    """

    metric: str
    resolution: str
    score_resolution: str
    holdout_start: datetime
    holdout_end: datetime
    n_points: int
    mae: float
    mape: float | None
    mase: float | None
    coverage: float
    interval_width: float
    naive_day_mae: float | None
    naive_week_mae: float | None
    naive_day_mape: float | None
    naive_week_mape: float | None
    fit_seconds: float

    @property
    def best_naive_mae(self) -> float | None:
        maes = [m for m in (self.naive_day_mae, self.naive_week_mae) if m is not None]
        return min(maes) if maes else None

    @property
    def beats_naive(self) -> bool:
        best = self.best_naive_mae
        return best is None or self.mae < best

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["holdout_start"] = self.holdout_start.isoformat()
        data["holdout_end"] = self.holdout_end.isoformat()
        data["best_naive_mae"] = self.best_naive_mae
        data["beats_naive"] = self.beats_naive
        return data


def _mae(actual: np.ndarray, predicted: np.ndarray) -> float | None:
    ok = ~np.isnan(predicted) & ~np.isnan(actual)
    return float(np.mean(np.abs(actual[ok] - predicted[ok]))) if ok.any() else None


def _mape(actual: np.ndarray, predicted: np.ndarray, zero_tol: float = 1e-9) -> float | None:
    ok = ~np.isnan(predicted) & ~np.isnan(actual) & (np.abs(actual) > zero_tol)
    if not ok.any():
        return None
    return float(np.mean(np.abs((actual[ok] - predicted[ok]) / actual[ok])) * 100.0)


def _lagged(series: pd.Series, ds: pd.Series, lag: pd.Timedelta) -> np.ndarray:
    return series.reindex(pd.DatetimeIndex(ds) - lag).to_numpy(dtype=float)


def evaluate_metric(
    history: pd.DataFrame | pd.Series,
    metric: str,
    *,
    config: ForecastConfig = DEFAULT_CONFIG,
    holdout_hours: float = 24.0,
    score_resolution: str | None = None,
) -> MetricEvaluation:
    """Fit on all but the final ``holdout_hours`` and score the forecast of that stretch.

    Actuals and the naive forecasts are bucket means at ``score_resolution`` (default:
    the model's resolution); pass one resolution to compare models fitted at several.
    """
    scored_at = score_resolution or config.resolution
    scored = resample_history(
        history, metric, resolution=scored_at, exclude_labelled_anomalies=False
    )
    training = resample_history(
        history,
        metric,
        resolution=config.resolution,
        exclude_labelled_anomalies=config.exclude_labelled_anomalies,
    )
    observed = resample_history(
        history, metric, resolution=config.resolution, exclude_labelled_anomalies=False
    )
    return evaluate_frames(
        training,
        observed,
        metric,
        config=config,
        holdout_hours=holdout_hours,
        scored=scored,
        score_resolution=scored_at,
    )


def evaluate_frames(
    frame: pd.DataFrame,
    observed: pd.DataFrame,
    metric: str,
    *,
    config: ForecastConfig = DEFAULT_CONFIG,
    holdout_hours: float = 24.0,
    scored: pd.DataFrame | None = None,
    score_resolution: str | None = None,
) -> MetricEvaluation:
    """``evaluate_metric`` on already resampled ``ds``/``y`` frames (as ``fit_frame`` takes).

    ``frame`` is what the model fits (anomalies left out), ``observed`` every bucket at
    the model's resolution; ``scored`` (default ``observed``) holds the actuals at
    ``score_resolution``. For callers that bucket in the database.
    """
    scored_at = score_resolution or config.resolution
    if scored is None:
        scored = observed
    if scored.empty:
        raise InsufficientHistoryError(f"{metric}: no data")
    end = scored["ds"].iloc[-1] + pd.Timedelta(scored_at) / 2
    cutoff = end - pd.Timedelta(hours=holdout_hours)
    training = frame[frame["ds"] < cutoff]
    raw_training = observed[observed["ds"] < cutoff]
    test = scored[scored["ds"] >= cutoff].reset_index(drop=True)
    if test.empty:
        raise InsufficientHistoryError(f"{metric}: nothing to hold out")
    model = fit_frame(training, metric, config=config, observed=raw_training)
    predicted = _predict(model, pd.DatetimeIndex(test["ds"]))

    actual = test["y"].to_numpy(dtype=float)
    yhat = predicted["yhat"].to_numpy(dtype=float)
    inside = (actual >= predicted["yhat_lower"].to_numpy()) & (
        actual <= predicted["yhat_upper"].to_numpy()
    )
    by_time = pd.Series(scored["y"].to_numpy(dtype=float), index=pd.DatetimeIndex(scored["ds"]))
    naive_day = _lagged(by_time, test["ds"], pd.Timedelta(days=1))
    naive_week = _lagged(by_time, test["ds"], pd.Timedelta(days=7))

    in_sample = scored[scored["ds"] < cutoff]
    scale = _mae(
        in_sample["y"].to_numpy(dtype=float),
        _lagged(by_time, in_sample["ds"], pd.Timedelta(days=1)),
    )
    mae = float(np.mean(np.abs(actual - yhat)))
    return MetricEvaluation(
        metric=metric,
        resolution=config.resolution,
        score_resolution=scored_at,
        holdout_start=pd.Timestamp(cutoff).tz_localize("UTC").to_pydatetime(),
        holdout_end=pd.Timestamp(test["ds"].iloc[-1]).tz_localize("UTC").to_pydatetime(),
        n_points=len(test),
        mae=mae,
        mape=_mape(actual, yhat),
        mase=mae / scale if scale else None,
        coverage=float(inside.mean()),
        interval_width=config.interval_width,
        naive_day_mae=_mae(actual, naive_day),
        naive_week_mae=_mae(actual, naive_week),
        naive_day_mape=_mape(actual, naive_day),
        naive_week_mape=_mape(actual, naive_week),
        fit_seconds=model.fit_seconds,
    )


def evaluate(
    history: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    *,
    config: ForecastConfig = DEFAULT_CONFIG,
    holdout_hours: float = 24.0,
    score_resolution: str | None = None,
    max_workers: int = 2,
) -> dict[str, MetricEvaluation]:
    """``evaluate_metric`` for many metrics in parallel threads; failures are logged and skipped."""
    names = list(metrics) if metrics is not None else [m for m in METRIC_NAMES if m in history]
    out: dict[str, MetricEvaluation] = {}
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        futures = {
            name: pool.submit(
                evaluate_metric,
                history,
                name,
                config=config,
                holdout_hours=holdout_hours,
                score_resolution=score_resolution,
            )
            for name in names
        }
        for name, future in futures.items():
            try:
                out[name] = future.result()
            except ForecastError as exc:
                log.warning("forecaster: evaluating %s failed: %s", name, exc)
    return out


# ------------------------------------------------------------------------ serialisation


@dataclass(frozen=True, slots=True)
class SerializedModel:
    """A model as JSON text plus the sha256 of its UTF-8 bytes."""

    payload: str
    sha256: str


def _digest(payload: str | bytes) -> str:
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return hashlib.sha256(data).hexdigest()


def serialize_model(model: MetricModel) -> SerializedModel:
    """Prophet's own JSON wrapped with the metric and config; never pickle."""
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


def load_model(payload: str | bytes, sha256: str) -> MetricModel:
    """Rebuild a model from ``serialize_model`` output.

    Raises ModelIntegrityError when ``sha256`` does not match the payload.
    """
    if not hmac.compare_digest(_digest(payload), sha256.lower()):
        raise ModelIntegrityError(
            "model checksum mismatch: the stored model was altered or corrupted"
        )
    document = json.loads(payload)
    if document.get("format") != SERIALIZATION_FORMAT:
        raise ForecastError(f"unsupported model format {document.get('format')!r}")
    config = ForecastConfig(**document["config"])
    return MetricModel(
        metric=document["metric"],
        prophet=model_from_json(document["prophet"]),
        config=config,
        trained_start=datetime.fromisoformat(document["trained_start"]),
        trained_end=datetime.fromisoformat(document["trained_end"]),
        n_points=int(document["n_points"]),
        fit_seconds=float(document["fit_seconds"]),
        interval_scale_lower=float(document["interval_scale_lower"]),
        interval_scale_upper=float(document["interval_scale_upper"]),
    )


# -------------------------------------------------------------------------------- trend


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """A point where the fitted trend's slope changes."""

    time: datetime
    delta: float  # Prophet's rate change, in its scaled units
    slope_change_per_hour: float  # metric units per hour
    slope_change_per_day: float


@dataclass(frozen=True, slots=True)
class TrendAnalysis:
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


def _y_scale(prophet: Prophet) -> float:
    y_scale = prophet.y_scale
    return float(y_scale) if y_scale else 1.0


def _scale(model: MetricModel) -> float:
    """The metric's typical magnitude: Prophet's y_scale (the largest |y| fitted)."""
    return _y_scale(model.prophet)


def _direction(change: float, tolerance: float) -> Direction:
    if change > tolerance:
        return "rising"
    if change < -tolerance:
        return "falling"
    return "flat"


def analyse_trend(
    model: MetricModel,
    *,
    window_hours: float = 24.0,
    flat_tolerance: float = 0.01,
    changepoint_threshold: float = 0.01,
) -> TrendAnalysis:
    """Slope and direction of the trend component over the last ``window_hours`` of history.

    Direction is "flat" while the trend moves less than ``flat_tolerance`` x the metric's
    scale (the largest absolute value fitted) per day. Change points are Prophet's
    potential change points whose |delta| (scaled rate change) is at least
    ``changepoint_threshold``, the same cut Prophet's own plotting uses.
    """
    prophet = model.prophet
    end = _naive_utc(model.trained_end)
    start = max(end - pd.Timedelta(hours=window_hours), _naive_utc(model.trained_start))
    frame = prophet.setup_dataframe(
        _with_conditions(pd.DataFrame({"ds": [start, end]}), model.config)
    )
    trend = np.asarray(prophet.predict_trend(frame), dtype=float)
    hours = max((end - start) / pd.Timedelta(hours=1), 1e-9)
    per_hour = float(trend[-1] - trend[0]) / hours
    tolerance = flat_tolerance * _scale(model)

    assert prophet.t_scale is not None and prophet.changepoints is not None, "model is not fitted"
    t_scale = pd.Timedelta(prophet.t_scale)
    per_hour_factor = _scale(model) / (t_scale / pd.Timedelta(hours=1))
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
        direction=_direction(per_hour * 24.0, tolerance),
        flat_tolerance_per_day=tolerance,
        change_points=tuple(points),
    )


# ------------------------------------------------------------------------------ breaches


@dataclass(frozen=True, slots=True)
class Breach:
    """A predicted upward crossing of a threshold within a forecast horizon.

    ``at`` is when yhat first reaches the threshold, or, if only the upper bound does,
    when the upper bound first does. ``probability`` is P(value >= threshold) at ``at``
    and ``peak_probability`` its maximum over the horizon, both from a normal
    distribution whose spread is read off the upper half of the interval.
    """

    metric: str | None
    threshold: float
    yhat_crossing_at: datetime | None
    upper_crossing_at: datetime | None
    at: datetime
    predicted_value: float
    predicted_upper: float
    probability: float
    peak_probability: float


def exceedance_probability(
    yhat: np.ndarray, upper: np.ndarray, threshold: float, interval_width: float
) -> np.ndarray:
    """P(value >= threshold) per point, a normal with sigma = (upper - yhat) / z."""
    z = NormalDist().inv_cdf((1.0 + interval_width) / 2.0)
    sigma = (upper - yhat) / z
    out = np.where(yhat >= threshold, 1.0, 0.0)
    ok = sigma > 0
    if ok.any():
        dist = NormalDist()
        cdf = np.vectorize(dist.cdf, otypes=[float])
        out[ok] = 1.0 - cdf((threshold - yhat[ok]) / sigma[ok])
    return np.asarray(out, dtype=float)


def _first_time(frame: pd.DataFrame, mask: np.ndarray) -> tuple[int, datetime] | None:
    hits = np.flatnonzero(mask)
    if hits.size == 0:
        return None
    i = int(hits[0])
    return i, pd.Timestamp(frame["timestamp"].iloc[i]).to_pydatetime()


def detect_breach(
    frame: pd.DataFrame,
    *,
    threshold: float,
    interval_width: float = DEFAULT_INTERVAL_WIDTH,
    metric: str | None = None,
) -> Breach | None:
    """First upward crossing of ``threshold`` by yhat and by yhat_upper; None if neither does."""
    frame = frame.sort_values("timestamp").reset_index(drop=True)
    yhat = frame["yhat"].to_numpy(dtype=float)
    upper = frame["yhat_upper"].to_numpy(dtype=float)
    by_yhat = _first_time(frame, yhat >= threshold)
    by_upper = _first_time(frame, upper >= threshold)
    if by_upper is None and by_yhat is None:
        return None
    first = by_yhat if by_yhat is not None else by_upper
    assert first is not None
    i, at = first
    probability = exceedance_probability(yhat, upper, threshold, interval_width)
    return Breach(
        metric=metric,
        threshold=threshold,
        yhat_crossing_at=by_yhat[1] if by_yhat else None,
        upper_crossing_at=by_upper[1] if by_upper else None,
        at=at,
        predicted_value=float(yhat[i]),
        predicted_upper=float(upper[i]),
        probability=float(probability[i]),
        peak_probability=float(probability.max()),
    )


def thresholds(overrides: Mapping[str, float | None] | None = None) -> dict[str, float]:
    """Alert thresholds: the catalogue defaults, with overrides (None removes one)."""
    out = {m.name: m.threshold for m in METRICS_BY_NAME.values() if m.threshold is not None}
    for name, value in (overrides or {}).items():
        if name not in METRICS_BY_NAME:
            raise ForecastError(
                f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}"
            )
        if value is None:
            out.pop(name, None)
        else:
            out[name] = float(value)
    return out


def detect_breaches(
    forecasts: Mapping[str, pd.DataFrame],
    *,
    threshold_overrides: Mapping[str, float | None] | None = None,
    interval_width: float = DEFAULT_INTERVAL_WIDTH,
) -> list[Breach]:
    """Every predicted breach across metrics, soonest first."""
    limits = thresholds(threshold_overrides)
    found = [
        breach
        for name, frame in forecasts.items()
        if name in limits
        and (
            breach := detect_breach(
                frame, threshold=limits[name], interval_width=interval_width, metric=name
            )
        )
        is not None
    ]
    return sorted(found, key=lambda b: b.at)


# ----------------------------------------------------------------------------- next hour


@dataclass(frozen=True, slots=True)
class NextHour:
    metric: str
    current_value: float
    at: datetime
    yhat: float
    yhat_lower: float
    yhat_upper: float
    change: float
    direction: Direction


def next_hour(
    model: MetricModel,
    *,
    current_value: float,
    now: datetime | None = None,
    flat_tolerance: float = 0.02,
) -> NextHour:
    """The forecast one hour after ``now`` against the current value.

    "flat" while |forecast - current| is below ``flat_tolerance`` x the metric's scale.
    """
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    at = moment + timedelta(hours=1)
    row = predict_at(model, [at]).iloc[0]
    yhat = float(row["yhat"])
    change = yhat - float(current_value)
    return NextHour(
        metric=model.metric,
        current_value=float(current_value),
        at=at.astimezone(UTC),
        yhat=yhat,
        yhat_lower=float(row["yhat_lower"]),
        yhat_upper=float(row["yhat_upper"]),
        change=change,
        direction=_direction(change, flat_tolerance * _scale(model)),
    )


__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_INTERVAL_WIDTH",
    "DEFAULT_RESOLUTION",
    "MAX_HOURS_AHEAD",
    "Breach",
    "ChangePoint",
    "FitResult",
    "ForecastConfig",
    "ForecastError",
    "InsufficientHistoryError",
    "MetricEvaluation",
    "MetricModel",
    "ModelIntegrityError",
    "NextHour",
    "SerializedModel",
    "TrendAnalysis",
    "analyse_trend",
    "detect_breach",
    "detect_breaches",
    "evaluate",
    "evaluate_frames",
    "evaluate_metric",
    "exceedance_probability",
    "fit_frame",
    "fit_metric",
    "fit_models",
    "forecast",
    "load_model",
    "next_hour",
    "predict_at",
    "resample_history",
    "serialize_model",
    "thresholds",
]

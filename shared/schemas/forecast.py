"""Pydantic models of the forecasting API, shared by the forecaster and the gateway's OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.catalogue import METRIC_NAMES
from shared.clock import utc
from shared.schemas.common import Input, IsoDatetime, Schema
from shared.schemas.health import ServiceHealth

Direction = Literal["rising", "falling", "flat"]


def unknown_metric_message(names: list[str]) -> str:
    return f"unknown metric(s) {', '.join(names)}; known metrics: {', '.join(METRIC_NAMES)}"


class TrainForecasterRequest(Input):
    """What to fit: every field is optional; `{}` fits all 14 metrics on the last 30 days."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{}, {"metrics": ["cpu_usage_percent", "memory_usage_mb"], "days": 14}]
        },
    )

    metrics: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=len(METRIC_NAMES),
        description="Metrics to fit, names from the catalogue; default: all 14.",
    )
    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Host whose history is fitted; default: the host with the most samples.",
    )
    start: IsoDatetime | None = Field(
        default=None, description="First sample of the training window (UTC unless an offset)."
    )
    end: IsoDatetime | None = Field(
        default=None,
        description="Last sample of the training window; default: the host's newest sample.",
    )
    days: float | None = Field(
        default=None,
        gt=0,
        le=365,
        description="Window length in days ending at `end`, when `start` is not given; default 30.",
    )
    interval_width: float = Field(
        default=0.8,
        ge=0.5,
        le=0.99,
        description="Probability mass of the forecast interval (yhat_lower..yhat_upper).",
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [name for name in value if name not in METRIC_NAMES]
        if unknown:
            raise ValueError(unknown_metric_message(unknown))
        return list(dict.fromkeys(value))

    @field_validator("start", "end")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)

    @model_validator(mode="after")
    def _window(self) -> TrainForecasterRequest:
        if self.start is not None and self.days is not None:
            raise ValueError("give start or days, not both")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class MetricEvaluationOut(Schema):
    """Rolling-origin backtest on the host's own history: the choice, every candidate's error."""

    chosen: str = Field(
        description="Forecaster chosen: the candidate with the lowest backtest MAE."
    )
    candidates: dict[str, float] = Field(
        description="Backtest MAE of every candidate that could run (prophet, naive_day, "
        "naive_week, profile_day, profile_week, median), lowest first."
    )
    origins: int = Field(description="Forecast origins of the backtest (every 6 h by default).")
    mae: float = Field(description="Backtest MAE of the chosen forecaster.")
    mape: float | None = Field(description="Mean absolute percentage error (zeros skipped).")
    mase: float | None = Field(description="MAE over the in-sample MAE of the one-day naive.")
    coverage: float | None = Field(
        description="Share of backtest points inside the interval, each origin's interval "
        "calibrated on the other origins (out of sample)."
    )
    naive_day_mae: float | None = Field(description="Backtest MAE of 'same time yesterday'.")
    naive_week_mae: float | None = Field(description="Backtest MAE of 'same time last week'.")
    beats_naive: bool = Field(description="Whether MAE is below the better naive forecast.")
    holdout_start: datetime = Field(description="First forecast step of the earliest origin.")
    n_points: int = Field(description="Backtest points scored (origins x steps with data).")
    level_shift: dict[str, Any] | None = Field(
        default=None,
        description="A recent lasting change of level the forecast starts from (at_time, delta).",
    )
    excluded_points: int = Field(
        default=0,
        description="Buckets left out of fitting: labelled anomalous, inside an ML_ANOMALY "
        "incident or holding a sample the detector flagged.",
    )


class TrainedMetric(Schema):
    metric: str = Field(description="Metric the model forecasts.")
    model_id: int = Field(description="Id of the new version in the model registry.")
    version: int = Field(description="Version number within (forecaster, host, metric).")
    artifact_sha256: str = Field(description="Checksum of the stored Prophet JSON.")
    points: int = Field(description="Resampled points fitted.")
    fit_seconds: float = Field(description="Time to fit this model.")
    evaluation: MetricEvaluationOut | None = Field(
        description="Held-out-day accuracy; null when the window is too short to hold a day out."
    )
    evaluation_error: str | None = Field(default=None, description="Why there is no evaluation.")


class TrainForecasterResponse(Schema):
    host: str = Field(description="Host the models were fitted for.")
    host_chosen: bool = Field(description="True when the host was chosen (most samples).")
    start: datetime = Field(description="Start of the training window.")
    end: datetime = Field(description="End of the training window.")
    resolution_minutes: float = Field(description="Bucket width the history was resampled to.")
    interval_width: float = Field(description="Probability mass of the forecast interval.")
    samples: int = Field(description="Raw samples in the window.")
    models: list[TrainedMetric] = Field(description="One new active version per fitted metric.")
    failures: dict[str, str] = Field(description="Metrics that could not be fitted, and why.")
    forecasts_written: int = Field(description="Forecast points stored for the next hours.")
    generated_at: datetime = Field(description="Generation time of the stored forecasts.")
    predicted_breaches: int = Field(description="Metrics predicted to breach their threshold.")
    seconds: float = Field(description="Wall time of the whole request.")
    fit_seconds: float = Field(description="Wall time of fitting and evaluation.")


class ForecastPoint(Schema):
    timestamp: datetime = Field(description="Time the prediction is for (UTC).")
    yhat: float = Field(description="Predicted value.")
    yhat_lower: float = Field(description="Lower bound of the interval.")
    yhat_upper: float = Field(description="Upper bound of the interval.")


class MetricForecast(Schema):
    host: str = Field(description="Host forecast.")
    metric: str = Field(description="Metric forecast.")
    model_id: int | None = Field(description="Registry id of the model that made it.")
    model_version: int | None = Field(description="Version of that model.")
    generated_at: datetime = Field(description="When these predictions were computed.")
    points: list[ForecastPoint] = Field(description="Predictions, soonest first.")


HOST_OR_FLEET = (
    "Host answered: the one asked for, or the only host with a model; null when the answer "
    "covers several hosts (see `hosts`)."
)


class ForecastResponse(Schema):
    host: str | None = Field(description=HOST_OR_FLEET)
    hosts: list[str] = Field(description="Every host answered, in order.")
    hours_ahead: int = Field(description="Horizon asked for, in hours.")
    step_minutes: float = Field(description="Spacing of the points (the model resolution).")
    forecasts: list[MetricForecast] = Field(
        description="One entry per host and metric asked for, by host then metric."
    )


class NextHourItem(Schema):
    host: str = Field(description="Host.")
    metric: str = Field(description="Metric.")
    current_value: float | None = Field(description="Value of the newest sample (null: none).")
    current_at: datetime | None = Field(description="Time of the newest sample.")
    at: datetime = Field(
        description="The time forecast: the request's minute (seconds dropped) plus an hour."
    )
    yhat: float = Field(description="Forecast an hour ahead.")
    yhat_lower: float = Field(description="Lower bound an hour ahead.")
    yhat_upper: float = Field(description="Upper bound an hour ahead.")
    change: float | None = Field(description="yhat minus the current value.")
    direction: Direction = Field(
        description="rising / falling, or flat when the change is under 2 % of the metric's scale."
    )


class NextHourResponse(Schema):
    host: str | None = Field(description=HOST_OR_FLEET)
    hosts: list[str] = Field(description="Every host answered, in order.")
    generated_at: datetime | None = Field(description="Newest forecast generation used.")
    metrics: list[NextHourItem] = Field(
        description="One entry per host and forecast metric, by host then catalogue order."
    )


class BreachAlert(Schema):
    host: str = Field(description="Host predicted to breach.")
    metric: str = Field(description="Metric predicted to breach.")
    threshold: float = Field(description="Threshold (catalogue default or ML_FORECAST_THRESHOLDS).")
    yhat_crossing_at: datetime | None = Field(
        description="First time the forecast itself reaches the threshold (null: it does not)."
    )
    upper_crossing_at: datetime | None = Field(
        description="First time the interval's upper bound reaches the threshold."
    )
    at: datetime = Field(description="yhat_crossing_at if any, else upper_crossing_at.")
    predicted_value: float = Field(description="yhat at `at`.")
    predicted_upper: float = Field(description="Upper bound at `at`.")
    probability: float = Field(description="P(value >= threshold) at `at`, 0..1.")
    peak_probability: float = Field(description="Largest P(value >= threshold) in the horizon.")
    severity: str = Field(description="critical (yhat within 1 h), high (yhat), medium (bound).")
    model_id: int | None = Field(description="Model that made the forecast.")
    generated_at: datetime = Field(description="When the forecast was computed.")


class AlertsResponse(Schema):
    host: str | None = Field(description=HOST_OR_FLEET)
    hosts: list[str] = Field(description="Every host searched, in order.")
    hours_ahead: int = Field(description="Horizon searched, in hours.")
    thresholds: dict[str, float] = Field(description="Thresholds in force, per metric.")
    alerts: list[BreachAlert] = Field(
        description="Predicted breaches of every host searched, soonest first."
    )
    count: int = Field(description="Number of alerts.")


class ChangePointOut(Schema):
    time: datetime = Field(description="Where the trend's slope changes.")
    slope_change_per_hour: float = Field(description="Size of the change, metric units per hour.")
    slope_change_per_day: float = Field(description="Size of the change, metric units per day.")


class TrendResponse(Schema):
    host: str = Field(description="Host.")
    metric: str = Field(description="Metric.")
    model_id: int = Field(description="Model whose trend this is.")
    model_version: int = Field(description="Its version.")
    window_start: datetime = Field(description="Start of the stretch the slope is measured on.")
    window_end: datetime = Field(description="End of it (the last fitted point).")
    slope_per_hour: float = Field(description="Trend slope, metric units per hour.")
    slope_per_day: float = Field(description="Trend slope, metric units per day.")
    direction: Direction = Field(description="rising, falling or flat (under 1 % of scale a day).")
    change_points: list[ChangePointOut] = Field(
        description="Significant slope changes, oldest first."
    )


class RefreshedHost(Schema):
    host: str = Field(description="Host refreshed.")
    generated_at: datetime = Field(description="Generation time of the new forecasts.")
    metrics: list[str] = Field(description="Metrics whose forecasts were rewritten.")
    failures: dict[str, str] = Field(description="Metrics that could not be refreshed, and why.")
    forecasts_written: int = Field(description="Points stored.")
    predicted_breaches: int = Field(description="Metrics predicted to breach.")
    incidents_opened: int = Field(description="predicted_breach incidents opened or reopened.")
    incidents_resolved: int = Field(description="predicted_breach incidents resolved.")


class RefreshResponse(Schema):
    hosts: list[RefreshedHost] = Field(description="One entry per host with active models.")
    seconds: float = Field(description="Wall time.")


class ForecasterHealth(ServiceHealth):
    fit_running: bool = Field(default=False, description="Whether a training run is in progress.")
    fit_started_at: datetime | None = Field(default=None, description="When that run started.")
    last_refresh_at: datetime | None = Field(
        default=None, description="When this process last wrote forecasts."
    )
    refresh_minutes: float = Field(default=60.0, description="ML_FORECAST_REFRESH_MINUTES.")


def evaluation_out(data: dict[str, Any] | None) -> MetricEvaluationOut | None:
    return None if not data else MetricEvaluationOut.model_validate(data)


class ForecastHostQuery(Input):
    """Query parameter of the forecast reads: which host."""

    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Host; default: every host with a forecaster model.",
    )


class ForecastQuery(ForecastHostQuery):
    """Query parameters of GET /forecast."""

    hours_ahead: int = Field(default=6, ge=1, le=24, description="Hours ahead, 1 to 24.")
    metric: str | None = Field(
        default=None, description="One metric; default: every forecast metric."
    )


class AlertsQuery(ForecastHostQuery):
    """Query parameters of GET /forecast/alerts."""

    hours_ahead: int = Field(default=24, ge=1, le=24, description="Horizon, 1 to 24 hours.")


class TrendQuery(Input):
    """Query parameter of GET /forecast/trend/{metric}: which host."""

    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Host; may be left out when only one host has a model of the metric.",
    )

"""Pydantic models of the API, shared by the services and the gateway's OpenAPI schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from shared.catalogue import LABELS, METRICS, Metric
from shared.db import utc, utcnow

# How far ahead of the receiving clock a pushed sample may be stamped (clock skew).
MAX_FUTURE_SKEW = timedelta(minutes=5)
# The oldest timestamp a sample may carry (older is a client bug, not a measurement).
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# Query parameters of the sample filters (collector and gateway declare the same ones).
HostQuery = Annotated[str | None, Query(max_length=255, description="Only samples of this host.")]
StartDateQuery = Annotated[
    str | None,
    Query(description="ISO date or datetime, inclusive (UTC unless an offset is given)."),
]
EndDateQuery = Annotated[
    str | None,
    Query(description="ISO date (the whole day) or datetime, inclusive (UTC unless an offset)."),
]
# Row ids are 64-bit integers in both engines.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Row id.")]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Values past these bounds are client bugs, not measurements (and would overflow the
# database's INTEGER or the statistics' sums of squares).
MAX_METRIC_VALUE = 1e12
MAX_INTEGER_METRIC = 2**31 - 1


def _metric_field(metric: Metric) -> Any:
    constraints: dict[str, Any] = {
        "ge": 0 if metric.non_negative else -MAX_METRIC_VALUE,
        "le": MAX_INTEGER_METRIC if metric.is_integer else MAX_METRIC_VALUE,
    }
    if metric.is_percent:
        constraints["le"] = 100
    annotation: Any = (int | None) if metric.is_integer else (float | None)
    return (
        annotation,
        Field(default=None, description=f"{metric.description} ({metric.unit})", **constraints),
    )


class _TimedSample(BaseModel):
    """Fields and rules every submitted sample shares: a timestamp, never in the future."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    timestamp: datetime | None = Field(
        default=None,
        description="When the sample was taken (UTC if no offset is given); default: now. "
        "At most 5 minutes in the future.",
    )

    @field_validator("timestamp")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        if value > utcnow() + MAX_FUTURE_SKEW:
            raise ValueError("timestamp is more than 5 minutes in the future")
        if value < EARLIEST_TIMESTAMP:
            raise ValueError("timestamp is before 1970-01-01")
        return value


def metric_fields() -> dict[str, Any]:
    """The 14 metrics as optional, validated pydantic fields (for `create_model`)."""
    return {m.name: _metric_field(m) for m in METRICS}


class _SampleBase(_TimedSample):
    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The machine the sample describes; default: the receiving collector's host.",
    )
    label: str = Field(
        default="normal",
        min_length=1,
        max_length=50,
        description=f"Label for supervised learning, e.g. {', '.join(LABELS)}.",
    )


MetricSample = create_model(
    "MetricSample",
    __base__=_SampleBase,
    __doc__="One sample of any of the 14 metrics; absent metrics are stored as null.",
    **metric_fields(),
)


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[MetricSample] = Field(
        min_length=1, max_length=10_000, description="Samples to store, 1 to 10,000 per request."
    )


class IngestResponse(Schema):
    accepted: int = Field(description="Samples stored.")


class MetricSummary(Schema):
    mean: float | None = Field(description="Mean over the selected samples.")
    std: float | None = Field(description="Sample standard deviation.")
    min: float | None = Field(description="Smallest value.")
    max: float | None = Field(description="Largest value.")
    count: int = Field(description="Samples with a value for this metric.")


class StatsResponse(Schema):
    total_samples: int = Field(description="Samples in the selection.")
    metrics: dict[str, MetricSummary] = Field(description="Summary per metric.")
    data_duration_hours: float = Field(description="Hours between the oldest and newest sample.")
    label_distribution: dict[str, int] = Field(description="Samples per label.")
    hosts: list[str] = Field(description="Hosts in the selection.")
    start: datetime | None = Field(description="Oldest sample in the selection.")
    end: datetime | None = Field(description="Newest sample in the selection.")


class ExportSample(Schema):
    """One exported row; the 14 metrics follow the same names as on ingest."""

    timestamp: datetime = Field(description="UTC time of the sample.")
    host: str = Field(description="Host the sample describes.")
    label: str = Field(description="Label of the sample.")
    cpu_usage_percent: float | None = Field(default=None, description="... and the other 13.")


class ExportResponse(Schema):
    samples: list[ExportSample] = Field(description="Samples, oldest first.")
    count: int = Field(description="Number of samples.")


ServiceStatus = Literal["up", "down", "degraded"]


class ServiceState(Schema):
    status: ServiceStatus = Field(description="up, degraded (up, database away) or down.")
    url: str = Field(description="Where the gateway reaches the service.")
    latency_ms: float | None = Field(default=None, description="Health check round trip.")
    detail: str | None = Field(default=None, description="Why it is not up.")


class CollectorHealth(Schema):
    status: Literal["healthy", "degraded"] = Field(description="degraded: database unreachable.")
    database: bool = Field(description="Whether the database answered.")
    metrics_collected: int = Field(description="Rows in metrics_history.")
    data_collection_active: bool = Field(
        description="Sampling loop enabled and a sample taken within two intervals."
    )
    oldest_data_age_hours: float | None = Field(description="Age of the oldest stored sample.")
    newest_data_age_seconds: float | None = Field(description="Age of the newest stored sample.")
    last_collection_at: datetime | None = Field(description="When the loop last sampled.")
    collection_interval_seconds: float = Field(description="ML_COLLECTION_INTERVAL.")
    buffered_samples: int = Field(description="Samples waiting for the database.")
    dropped_samples: int = Field(description="Samples dropped because the buffer was full.")


class ServiceHealth(Schema):
    status: Literal["healthy", "degraded"] = Field(description="degraded: database unreachable.")
    service: str = Field(description="Service name.")
    database: bool = Field(description="Whether the database answered.")
    active_models: int = Field(default=0, description="Models with status active.")


class HealthResponse(Schema):
    status: Literal["healthy", "degraded", "unhealthy"] = Field(
        description="healthy: every service up; degraded: some down; unhealthy: collector down."
    )
    metrics_collected: int = Field(description="Rows in metrics_history.")
    data_collection_active: bool = Field(description="Whether samples are arriving.")
    oldest_data_age_hours: float | None = Field(description="Age of the oldest sample.")
    active_models: int = Field(description="Models with status active.")
    message: str = Field(description="One line for a person.")
    services: dict[str, ServiceState] = Field(description="State of each service.")


class GenerateSyntheticRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(default=30, ge=1, le=365, description="Days of 1-minute samples, 1 to 365.")
    seed: int = Field(
        default=42, ge=0, le=2**32 - 1, description="Random seed; same seed, same data."
    )
    host: str = Field(
        default="synthetic",
        min_length=1,
        max_length=255,
        description="Host the samples are stored under; earlier rows of that host in the "
        "generated window are replaced.",
    )


class GenerateSyntheticResponse(Schema):
    count: int = Field(description="Samples stored.")
    label_distribution: dict[str, int] = Field(description="Samples per label.")
    host: str = Field(description="Host the samples were stored under.")
    start: datetime = Field(description="First sample.")
    end: datetime = Field(description="Last sample.")
    generation_seconds: float = Field(description="Time to generate.")
    storage_seconds: float = Field(description="Time to store.")
    seconds: float = Field(description="Total time taken.")


class ModelSummary(Schema):
    id: int = Field(description="Model id.")
    name: str = Field(description="Model family, e.g. anomaly_detector.")
    model_type: str = Field(description="isolation_forest, prophet, lightgbm.")
    version: int = Field(description="Version within the family.")
    status: str = Field(description="training, candidate, active, retired or failed.")
    host: str | None = Field(default=None, description="Host the model was trained for.")
    metric: str | None = Field(default=None, description="Metric, for per-metric models.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Training parameters.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Evaluation figures.")
    training_start: datetime | None = Field(default=None, description="First training sample.")
    training_end: datetime | None = Field(default=None, description="Last training sample.")
    sample_count: int | None = Field(default=None, description="Training samples.")
    artifact_sha256: str | None = Field(default=None, description="Checksum of the stored model.")
    created_at: datetime = Field(description="When it was trained.")
    activated_at: datetime | None = Field(default=None, description="When it became active.")


class ModelList(Schema):
    models: list[ModelSummary] = Field(description="Models, newest first.")
    count: int = Field(description="Number of models.")


class ErrorResponse(Schema):
    detail: Any = Field(description="What went wrong; for 422, a list of {field, msg}.")


class IncidentOut(Schema):
    id: int = Field(description="Incident id.")
    type: str = Field(description="ML_ANOMALY, predicted_breach, ...")
    severity: str = Field(description="low, medium, high or critical.")
    status: str = Field(description="open or resolved.")
    host: str = Field(description="Host the incident is about.")
    metric: str | None = Field(default=None, description="Metric, where one is the cause.")
    dedup_key: str = Field(description="One open incident per key.")
    title: str = Field(description="One line for a person.")
    description: str | None = Field(default=None, description="More detail.")
    details: dict[str, Any] = Field(default_factory=dict, description="Scores, top metrics, ...")
    started_at: datetime = Field(description="When it was opened.")
    updated_at: datetime = Field(description="Last change.")
    resolved_at: datetime | None = Field(default=None, description="When it was resolved.")
    notified_at: datetime | None = Field(default=None, description="When the webhook took it.")
    notification_status: str | None = Field(default=None, description="sent or failed.")


class IncidentList(Schema):
    incidents: list[IncidentOut] = Field(description="Incidents, newest first.")
    count: int = Field(description="Number returned.")


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=1000, description="Why it is resolved.")

"""API models of metric samples: submitting, summarising and exporting them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    field_validator,
)

from shared.catalogue import LABELS, METRIC_NAMES, METRICS, Metric
from shared.clock import utc, utcnow
from shared.schemas.common import Input, IsoDatetime, Schema

# How far ahead of the receiving clock a pushed sample may be stamped (clock skew).
MAX_FUTURE_SKEW = timedelta(minutes=5)
# The oldest timestamp a sample may carry (older is a client bug, not a measurement).
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# Values past these bounds are client bugs, not measurements (and would overflow the
# database's INTEGER or the statistics' sums of squares).
MAX_METRIC_VALUE = 1e12
# A date or datetime in a query, kept as text (a date alone means a whole day); the schema
# says which strings are accepted.
DateOrDatetime = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            # An empty value (`?start_date=`) means no bound.
            "anyOf": [{"format": "date"}, {"format": "date-time"}, {"maxLength": 0}],
        },
        mode="validation",
    ),
]
MAX_INTEGER_METRIC = 2**31 - 1


# Magnitudes below this are stored as 0: a measurement is never that small, and PostgreSQL
# refuses to square them (an underflow error, in the statistics).
TINY = 1e-100


def _a_number(value: Any) -> Any:
    # JSON true/false or "1.5" is a client bug, not a measurement: pydantic would convert it.
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


def _tiny_is_zero(value: Any) -> Any:
    return 0.0 if isinstance(value, float) and abs(value) < TINY else value


def _metric_field(metric: Metric) -> Any:
    constraints: dict[str, Any] = {
        "ge": 0 if metric.non_negative else -MAX_METRIC_VALUE,
        "le": MAX_INTEGER_METRIC if metric.is_integer else MAX_METRIC_VALUE,
    }
    if metric.is_percent:
        constraints["le"] = 100
    number: Any = (int | None) if metric.is_integer else (float | None)
    annotation = Annotated[number, BeforeValidator(_a_number), AfterValidator(_tiny_is_zero)]
    return (
        annotation,
        Field(default=None, description=f"{metric.description} ({metric.unit})", **constraints),
    )


class _TimedSample(Input):
    """Fields and rules every submitted sample shares: a timestamp, never in the future."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    timestamp: IsoDatetime | None = Field(
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


class IngestRequest(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "samples": [
                        {
                            "host": "web-1",
                            "cpu_usage_percent": 45.2,
                            "memory_usage_mb": 2048,
                            "error_rate": 0.02,
                            "label": "normal",
                        }
                    ]
                }
            ]
        },
    )

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


class SampleQuery(Input):
    """Query parameters that select stored samples (stats, export)."""

    host: str | None = Field(default=None, max_length=255, description="Only samples of this host.")
    start_date: DateOrDatetime | None = Field(
        default=None,
        description="ISO date or datetime, inclusive (UTC unless an offset is given).",
    )
    end_date: DateOrDatetime | None = Field(
        default=None,
        description="ISO date (the whole day) or datetime, inclusive (UTC unless an offset).",
    )


class ExportQuery(SampleQuery):
    """Query parameters of GET /metrics/export."""

    format: Literal["json", "csv"] = Field(default="json", description="json (default) or csv")


# A comma-separated list of catalogue metrics, as the schema can state it.
_METRIC_ALTERNATIVES = "|".join(METRIC_NAMES)
METRIC_LIST_PATTERN = rf"^({_METRIC_ALTERNATIVES})(,({_METRIC_ALTERNATIVES}))*$"


class SeriesQuery(Input):
    """Query parameters of GET /metrics/series: one host's metrics, bucketed in the database."""

    host: str = Field(min_length=1, max_length=255, description="The host whose samples to read.")
    metrics: str | None = Field(
        default=None,
        max_length=2000,
        pattern=METRIC_LIST_PATTERN,
        description="Comma-separated metric names; default: all 14.",
    )
    start: IsoDatetime | None = Field(
        default=None, description="First moment (UTC unless an offset); default: end - 24 h."
    )
    end: IsoDatetime | None = Field(default=None, description="Last moment; default: now.")
    points: int = Field(
        default=300,
        ge=10,
        le=5000,
        description="At most this many buckets over the window, 10 to 5000: each bucket "
        "holds the average, minimum and maximum of its samples.",
    )

    @field_validator("metrics", mode="before")
    @classmethod
    def _known_metrics(cls, value: Any) -> Any:
        # before the pattern, so that the answer names the unknown metric
        if isinstance(value, str):
            unknown = [m for m in value.split(",") if m not in METRIC_NAMES]
            if unknown:
                raise ValueError(
                    f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRIC_NAMES)}"
                )
        return value

    @field_validator("start", "end")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None


class SeriesValues(Schema):
    avg: list[float | None] = Field(description="Average per bucket (null: no value).")
    min: list[float | None] = Field(description="Smallest value per bucket.")
    max: list[float | None] = Field(description="Largest value per bucket.")


class SeriesResponse(Schema):
    host: str = Field(description="The host.")
    start: datetime = Field(description="Start of the window (the first bucket's start).")
    end: datetime = Field(description="End of the window.")
    step_seconds: int = Field(description="Width of a bucket in seconds.")
    timestamps: list[int] = Field(
        description="Unix seconds (UTC) of each bucket's start; buckets without samples are "
        "left out."
    )
    counts: list[int] = Field(description="Samples per bucket.")
    series: dict[str, SeriesValues] = Field(
        description="Per metric asked, aligned with timestamps."
    )


class HostSamples(Schema):
    host: str = Field(description="A host with stored samples.")
    newest: datetime = Field(description="Time of its newest sample.")


class HostsResponse(Schema):
    hosts: list[HostSamples] = Field(description="Every host with samples, by name.")
    count: int = Field(description="Number of hosts.")

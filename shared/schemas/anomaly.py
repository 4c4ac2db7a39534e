"""Pydantic models of the anomaly-detection API (trainer and gateway share them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, create_model, field_validator

from shared.catalogue import METRIC_NAMES
from shared.clock import utc
from shared.schemas.common import Input, IsoDatetime, Schema
from shared.schemas.models import ModelSummary
from shared.schemas.samples import _TimedSample, metric_fields
from shared.severity import Severity

FeedbackKind = Literal["false_positive", "true_positive"]


class TrainAnomalyRequest(Input):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"contamination": 0.05, "n_estimators": 100},
                {"contamination": 0.05, "n_estimators": 100, "use_synthetic": True},
            ]
        },
    )

    contamination: float = Field(
        default=0.05,
        gt=0,
        le=0.5,
        description="Expected share of anomalous samples, 0 < c <= 0.5: the threshold starts "
        "at the (1 - c) quantile of the calibrated training scores.",
    )
    n_estimators: int = Field(
        default=100, ge=10, le=1000, description="Trees in the Isolation Forest, 10 to 1000."
    )
    use_synthetic: bool = Field(
        default=False,
        description="If the history is too short (under 3 days of samples), first generate "
        "30 days of synthetic data (host 'synthetic') and train on that.",
    )
    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Train on this host's samples; default: the host with the most samples.",
    )
    start: IsoDatetime | None = Field(default=None, description="First training sample (UTC).")
    end: IsoDatetime | None = Field(default=None, description="Last training sample (UTC).")
    force: bool = Field(
        default=False,
        description="Activate the new version even if it evaluates worse than the active one.",
    )
    seed: int = Field(
        default=42, ge=0, le=2**32 - 1, description="Seed of the synthetic month, if generated."
    )

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None


class ScenarioEvaluation(Schema):
    events: int = Field(description="Labelled events of this scenario.")
    events_detected: int = Field(description="Events with at least one flagged sample.")
    event_recall: float = Field(description="Events detected / events.")


class TrainAnomalyResponse(Schema):
    model: ModelSummary = Field(description="The new version as stored in the registry.")
    activated: bool = Field(description="Whether the new version is now the active one.")
    reason: str = Field(description="Why it was or was not activated.")
    previous_model_id: int | None = Field(description="The version active before, if any.")
    evaluation: dict[str, Any] = Field(
        description="`synthetic`: per-scenario event recall and overall event precision on a "
        "synthetic month of another seed (always); `held_out`: the same on the last 20 % of a "
        "labelled history (when it has labels), scored by the same settings fitted on the "
        "rest; the version put in service is fitted on every row. Detections count after "
        "ML_ANOMALY_CONSECUTIVE samples in a row above the threshold."
    )
    synthetic_generated: int = Field(description="Synthetic samples generated and stored first.")
    seconds: float = Field(description="Wall time of the whole request.")


class _PredictBase(_TimedSample):
    """A sample to score: the collector's sample fields, validated the same way, no label."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "cpu_usage_percent": 95.0,
                    "memory_usage_mb": 7500,
                    "error_rate": 0.25,
                    "response_time_p95": 8000,
                }
            ],
            # at least one metric with a value: a body without any is a 422 (nothing to score)
            "anyOf": [
                {"required": [m], "properties": {m: {"type": "number"}}} for m in METRIC_NAMES
            ],
        }
    )

    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Score with this host's detectors (its per-metric detectors and its forest, "
        "if it has one). Default: the host whose forest was trained last (after the quick "
        "start, 'synthetic').",
    )


PredictRequest = create_model(
    "PredictRequest",
    __base__=_PredictBase,
    __doc__="One sample of any of the 14 metrics to score; absent metrics are filled from the "
    "host's newest sample if it is at most 3 collection intervals old, else scored as missing. "
    "Unknown fields are rejected.",
    **metric_fields(),
)


class Contribution(Schema):
    """One metric of a scored sample: what was observed, expected, and how unlikely it is."""

    metric: str = Field(description="Metric name.")
    value: float = Field(
        validation_alias=AliasChoices("value", "observed"), description="Observed value."
    )
    expected: float = Field(description="The level the metric's detector expected.")
    lower: float | None = Field(default=None, description="Lower edge of the expected band.")
    upper: float | None = Field(default=None, description="Upper edge of the expected band.")
    likelihood: float | None = Field(
        default=None,
        description="How unlikely the metric's recent behaviour is under what its detector "
        "learned, 0..1 (0 while it is still learning).",
    )


class ScoringModels(Schema):
    per_metric: bool = Field(
        description="The host's per-metric streaming detectors scored it (false: none yet)."
    )
    forest_model_id: int | None = Field(description="The host's forest that scored it, if any.")
    forest_model_version: int | None = Field(description="Its version.")


class PredictResponse(Schema):
    score: float = Field(
        description="The host's score, 0..1: the per-metric likelihood, or the forest's "
        "score on the same scale if higher."
    )
    is_anomaly: bool = Field(description="score >= threshold.")
    severity: Severity = Field(
        description="low < 0.95 <= medium < 0.99 <= high < 0.999 <= critical."
    )
    threshold: float = Field(description="The threshold in force (ML_ANOMALY_THRESHOLD).")
    host: str = Field(description="The host whose detectors scored it.")
    models: ScoringModels = Field(description="What scored it.")
    model_id: int | None = Field(description="The forest that scored it (models.forest_model_id).")
    model_version: int | None = Field(description="Its version.")
    per_metric_score: float = Field(description="The per-metric layer's likelihood.")
    forest_score: float | None = Field(
        description="The forest's calibrated score on its own scale, if the host has a forest."
    )
    forest_threshold: float | None = Field(
        description="The forest's own threshold (its record's, moved by feedback); its score "
        "at this threshold maps onto `threshold`."
    )
    learning: bool = Field(
        description="The host's per-metric detectors are still learning (probation)."
    )
    timestamp: datetime = Field(description="Time of the sample (UTC).")
    filled_metrics: list[str] = Field(
        description="Metrics not in the request, filled from the host's newest sample."
    )
    filled_from: datetime | None = Field(
        description="Time of the sample they were filled from (null: none filled)."
    )
    missing_metrics: list[str] = Field(
        description="Metrics neither posted nor recent: scored as missing (the forest gets "
        "its training medians)."
    )
    top_metrics: list[Contribution] = Field(
        description="The most unlikely metrics, top first, with expected value and band."
    )


class AnomalyScoreOut(Schema):
    id: int = Field(description="Score id, for feedback.")
    metrics_id: int | None = Field(
        default=None, description="The scored metrics_history row; null for a posted prediction."
    )
    model_id: int | None = Field(default=None, description="Model that scored it.")
    timestamp: datetime = Field(description="Time of the sample.")
    host: str = Field(description="Host of the sample.")
    score: float = Field(description="The host's score, 0..1.")
    threshold: float = Field(description="Threshold in force when it was scored.")
    is_anomaly: bool = Field(description="score >= threshold.")
    severity: Severity = Field(description="low, medium, high or critical.")
    contributions: list[Contribution] = Field(
        description="The most unlikely metrics: value, expected, band and likelihood."
    )
    feedback: FeedbackKind | None = Field(default=None, description="Operator feedback, if any.")
    feedback_at: datetime | None = Field(default=None, description="When feedback was given.")


class AnomalyScoreList(Schema):
    scores: list[AnomalyScoreOut] = Field(description="Scores, newest first.")
    count: int = Field(description="Number returned.")


class FeedbackRequest(Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"feedback": "false_positive"}]}
    )

    feedback: FeedbackKind = Field(
        description="false_positive raises the host's threshold towards just above this score; "
        "true_positive lowers it towards just below. One verdict per score: a new one replaces "
        "the last (its move is undone first)."
    )


class FeedbackResponse(Schema):
    score_id: int = Field(description="The score the feedback is about.")
    feedback: FeedbackKind = Field(description="The feedback recorded.")
    replaced: FeedbackKind | None = Field(
        description="The verdict this one replaced on the same score, if any."
    )
    score: float = Field(description="That sample's score.")
    host: str = Field(description="The host whose threshold moved.")
    threshold_before: float = Field(description="The host's threshold before the feedback.")
    threshold_after: float = Field(description="The host's threshold now (persisted).")
    threshold_lower: float = Field(
        description="Lowest threshold feedback may reach, learned from the host's scores."
    )
    threshold_upper: float = Field(description="Highest threshold feedback may reach.")
    verdicts: int = Field(description="Scores of this host with feedback.")
    precision_before: float | None = Field(
        description="Of the host's judged scores the old threshold flags, the share of true "
        "positives (null: it flags none)."
    )
    precision_after: float | None = Field(description="The same at the new threshold.")


class HostThreshold(Schema):
    host: str = Field(description="Host.")
    threshold: float = Field(description="Its likelihood threshold, moved by feedback.")
    lower: float | None = Field(default=None, description="Range learned at the last feedback.")
    upper: float | None = Field(default=None, description="Range learned at the last feedback.")
    verdicts: int = Field(description="Scores of this host with feedback.")
    precision_before: float | None = Field(default=None, description="Before the last feedback.")
    precision_after: float | None = Field(default=None, description="After the last feedback.")
    updated_at: datetime = Field(description="Last feedback.")


class HostThresholdList(Schema):
    default_threshold: float = Field(description="ML_ANOMALY_THRESHOLD: hosts not listed use it.")
    thresholds: list[HostThreshold] = Field(description="Hosts with their own threshold.")
    count: int = Field(description="Number returned.")


class HostThresholdQuery(Input):
    """Query parameters of GET /anomaly-thresholds."""

    host: str | None = Field(default=None, max_length=255, description="Only this host.")


class ActivateResponse(Schema):
    model: ModelSummary = Field(description="The model, now active.")
    previous_model_id: int | None = Field(description="The version active before, if any.")


class AnomalyScoreQuery(Input):
    """Query parameters of GET /anomaly-scores."""

    host: str | None = Field(default=None, max_length=255, description="Only samples of this host.")
    start: IsoDatetime | None = Field(default=None, description="Scores at or after (UTC).")
    end: IsoDatetime | None = Field(default=None, description="Scores at or before (UTC).")
    min_severity: Severity | None = Field(default=None, description="Only this severity or worse.")
    anomalies_only: bool = Field(default=False, description="Only scores above the threshold.")
    limit: int = Field(default=100, ge=1, le=10_000, description="At most this many.")

    @field_validator("start", "end")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None

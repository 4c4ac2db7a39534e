"""Pydantic models of the failure-prediction API (trainer and gateway share them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, create_model, field_validator

from shared.clock import utc
from shared.schemas.common import Input, IsoDatetime, Schema
from shared.schemas.models import ModelSummary
from shared.schemas.samples import _TimedSample, metric_fields

Horizon = Literal[5, 10, 15, 30, 45, 60, 90, 120]
HORIZON_CHOICES: tuple[int, ...] = get_args(Horizon)


class TrainFailureRequest(Input):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Train on this host's history; default: on every host with enough history "
        "(one fleet model, used for hosts without their own).",
    )
    start: IsoDatetime | None = Field(default=None, description="First training sample (UTC).")
    end: IsoDatetime | None = Field(default=None, description="Last training sample (UTC).")
    horizons: list[Horizon] = Field(
        default=[15, 30, 60],
        min_length=1,
        max_length=4,
        json_schema_extra={"uniqueItems": True},
        description=f"Horizons in minutes, one booster each, distinct; each one of {HORIZON_CHOICES}.",
    )
    use_synthetic: bool = Field(
        default=False,
        description="If the history is too short (under 7 days of samples), train the host "
        "'synthetic' instead: on its stored samples if it has 7 days of them, else on "
        "`synthetic_days` of synthetic data generated first.",
    )
    synthetic_days: int = Field(
        default=30, ge=7, le=90, description="Days of synthetic data generated, 7 to 90."
    )
    seed: int = Field(
        default=42, ge=0, le=2**32 - 1, description="Seed of the synthetic data, if generated."
    )
    num_boost_round: int = Field(
        default=200,
        ge=5,
        le=2000,
        description="At most this many boosting rounds per horizon (validation stops earlier).",
    )
    precision_target: float = Field(
        default=0.8,
        gt=0,
        lt=1,
        description="Warnings on the validation period must reach this precision (the lower "
        "bound of its interval); the warning threshold is the lowest that does.",
    )
    force: bool = Field(
        default=False,
        description="Activate the new version even if it evaluates worse than the active one.",
    )

    @field_validator("horizons")
    @classmethod
    def _distinct_horizons(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("horizons must be distinct")
        return sorted(value)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None


class TrainFailureResponse(Schema):
    model: ModelSummary = Field(description="The new version as stored in the registry.")
    activated: bool = Field(description="Whether the new version is now the active one.")
    reason: str = Field(description="Why it was or was not activated.")
    previous_model_id: int | None = Field(description="The version active before, if any.")
    hosts: list[str] = Field(description="The hosts whose histories it was trained on.")
    evaluation: dict[str, Any] = Field(
        description="On the last 20 % of each history (not trained on): the failure definition "
        "in words, the warning rule, PR-AUC per horizon, per kind of event the share warned and "
        "the lead times, precision of warnings, false warnings per host-day, the same per "
        "horizon and for three baselines (trend breach, anomaly score, persistence)."
    )
    synthetic_generated: int = Field(description="Synthetic samples generated and stored first.")
    seconds: float = Field(description="Wall time of the whole request.")


_FailureSampleBase = create_model(
    "FailureSample",
    __base__=_TimedSample,
    __doc__="One sample of the host; absent metrics are taken from its newest stored sample.",
    **metric_fields(),
)


class PredictFailureRequest(Input):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str = Field(
        min_length=1,
        max_length=255,
        description="The host: its own model if it has one, else the fleet model.",
    )
    sample: _FailureSampleBase | None = Field(
        default=None,
        description="A new sample, scored after the host's stored last hour; default: the "
        "host's latest stored state (its newest sample after its last hour).",
    )
    explain: int = Field(
        default=3, ge=0, le=10, description="Top contributing features to return, 0 to 10."
    )


class HorizonProbability(Schema):
    horizon_minutes: int = Field(description="A failure within this many minutes.")
    probability: float = Field(description="Its probability, 0..1.")
    threshold: float = Field(
        description="The warning threshold chosen on validation (2.0: this horizon never warns, "
        "no threshold reached the precision target)."
    )
    warning: bool = Field(description="probability >= threshold.")


class FailureContribution(Schema):
    feature: str = Field(description="Feature id, e.g. memory_usage_percent:slope_60m.")
    value: float | None = Field(description="The feature's value (null: not computable).")
    contribution: float = Field(description="Log-odds it pushed towards failure (pred_contrib).")
    text: str = Field(description="The feature in words.")


class PredictFailureResponse(Schema):
    host: str = Field(description="The host.")
    timestamp: datetime = Field(description="The sample scored (UTC).")
    model_id: int = Field(description="The model version that scored it.")
    model_version: int = Field(description="Its version number.")
    warning: bool = Field(description="Any horizon at or over its threshold.")
    horizons: list[HorizonProbability] = Field(description="Per horizon, shortest first.")
    contributions: list[FailureContribution] = Field(
        description="For the most alarmed horizon: the features that pushed it up most."
    )
    samples_used: int = Field(description="Samples of the host's last hour the features used.")


class FailurePredictionOut(Schema):
    id: int = Field(description="Row id.")
    model_id: int | None = Field(description="The model version (null once it was deleted).")
    timestamp: datetime = Field(description="The sample scored (UTC).")
    host: str = Field(description="The host.")
    horizon_minutes: int = Field(description="A failure within this many minutes.")
    failure_probability: float = Field(description="Its probability, 0..1.")
    predicted_failure_type: str | None = Field(
        description="The failure condition the top contributions point at, if any."
    )
    will_fail: bool = Field(description="Whether the probability reached the warning threshold.")
    top_features: list[dict[str, Any]] = Field(description="Top contributions, in words.")
    created_at: datetime = Field(description="When the row was written.")


class FailurePredictionList(Schema):
    predictions: list[FailurePredictionOut] = Field(description="Newest first.")
    count: int = Field(description="How many.")


class FailurePredictionQuery(Input):
    """Query parameters of GET /failure-predictions."""

    host: str | None = Field(default=None, max_length=255, description="Only this host.")
    start: IsoDatetime | None = Field(default=None, description="Predictions at or after (UTC).")
    end: IsoDatetime | None = Field(default=None, description="Predictions at or before (UTC).")
    min_probability: float = Field(
        default=0.0, ge=0, le=1, description="Only predictions with at least this probability."
    )
    horizon_minutes: int | None = Field(
        default=None, ge=1, le=1440, description="Only this horizon (minutes)."
    )
    warnings_only: bool = Field(default=False, description="Only predictions over the threshold.")
    limit: int = Field(default=100, ge=1, le=10_000, description="At most this many.")

    @field_validator("start", "end")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return utc(value) if value is not None else None

"""API models of the model registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from shared.schemas.common import Input, Schema


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


class ModelListQuery(Input):
    """Query parameters of GET /models."""

    name: str | None = Field(default=None, description="Only this model family.")
    status: str | None = Field(default=None, description="Only this status, e.g. active.")
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")

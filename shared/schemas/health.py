"""API models of health: each service's own answer and the gateway's aggregate."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.schemas.common import Schema

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

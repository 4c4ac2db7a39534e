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
    problems: list[str] = Field(
        default_factory=list, description="Why it is degraded: database away or full."
    )


class LoopHealth(Schema):
    name: str = Field(description="Background loop (anomaly-scoring, anomaly-score-writer, ...).")
    running: bool = Field(description="Whether its task runs.")
    stalled: bool = Field(
        description="No successful pass for AUTOFIX_LOOP_STALL_INTERVALS intervals (at least "
        "AUTOFIX_LOOP_STALL_MIN_SECONDS), or its task ended."
    )
    interval_seconds: float = Field(description="Seconds between passes.")
    runs: int = Field(description="Successful passes.")
    failures: int = Field(description="Failed passes.")
    last_success_at: datetime | None = Field(description="End of the last successful pass.")
    seconds_since_success: float | None = Field(
        description="Since the last successful pass, else since the loop started."
    )
    last_error: str | None = Field(description="The last failure: type and message.")
    last_error_at: datetime | None = Field(description="When it failed.")


class ScoringHealth(Schema):
    newest_sample_at: datetime | None = Field(description="Newest stored sample (any host).")
    newest_scored_at: datetime | None = Field(
        description="Newest sample the scoring loop has scored."
    )
    lag_seconds: float | None = Field(
        description="How far scoring trails the samples: newest stored minus newest scored "
        "(0 when caught up; null until something is scored)."
    )
    lag_limit_seconds: float = Field(description="ML_SCORING_LAG_LIMIT: above it, degraded.")


class ServiceHealth(Schema):
    status: Literal["healthy", "degraded"] = Field(
        description="degraded: database unreachable, a background loop stalled, or scoring "
        "lagging (the problems say which)."
    )
    service: str = Field(description="Service name.")
    database: bool = Field(description="Whether the database answered.")
    active_models: int = Field(default=0, description="Models with status active.")
    problems: list[str] = Field(default_factory=list, description="Why it is degraded.")
    loops: list[LoopHealth] = Field(default_factory=list, description="Its background loops.")


class TrainerHealth(ServiceHealth):
    scoring: ScoringHealth | None = Field(
        default=None, description="How far scoring trails the samples (null: database away)."
    )
    pending_scores: int = Field(
        default=0,
        description="Scores of answered predictions waiting to be written (the database away).",
    )
    dropped_scores: int = Field(
        default=0,
        description="Scores dropped because more than ML_WRITE_QUEUE_SIZE waited to be written.",
    )


class Readiness(Schema):
    status: Literal["ready", "degraded", "not_ready"] = Field(
        description="ready; degraded (serving, but e.g. the database is full); not_ready "
        "(the database does not answer): the answer is then a 503."
    )
    service: str = Field(description="Service name.")
    database: bool = Field(description="Whether the database answered within 2 s.")
    problems: list[str] = Field(default_factory=list, description="Why it is not ready.")


class GatewayReadiness(Schema):
    status: Literal["ready", "degraded", "not_ready"] = Field(
        description="ready: every service ready; degraded: the trainer or forecaster is not "
        "(the gateway still serves the rest); not_ready (a 503): the collector or the "
        "database is not."
    )
    services: dict[str, Readiness | None] = Field(
        description="Each service's /ready answer (null: it did not answer)."
    )
    problems: list[str] = Field(default_factory=list, description="What is not ready, and why.")


class Liveness(Schema):
    status: Literal["alive"] = Field(description="The process answers.")


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
    scoring: ScoringHealth | None = Field(
        default=None, description="The trainer's scoring lag (null while it is down)."
    )
    loops: dict[str, list[LoopHealth]] = Field(
        default_factory=dict, description="Background loops of each service that reports them."
    )

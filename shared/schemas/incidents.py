"""API models of incidents."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.schemas.common import Input, Schema


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


class ResolveRequest(Input):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "Restarted the leaking worker."}]},
    )

    reason: str | None = Field(default=None, max_length=1000, description="Why it is resolved.")


class IncidentListQuery(Input):
    """Query parameters of GET /incidents."""

    status: Literal["open", "resolved"] | None = Field(default=None, description="open or resolved")
    type: str | None = Field(default=None, description="ML_ANOMALY, predicted_breach, ...")
    host: str | None = Field(default=None, max_length=255, description="Only this host.")
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")

"""Settings of incidents and where they are sent (webhook, Alertmanager); part of `Settings`.

Usage: read through `shared.settings.Settings` (which inherits them), never on their own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class IncidentSettings(BaseSettings):
    """Incidents and their notification (README, "Incidents" and "Alertmanager")."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    webhook_url: str = Field(
        default="",
        validation_alias=_env("AUTOFIX_WEBHOOK_URL"),
        description="Where each incident is POSTed; empty: no webhook.",
    )
    webhook_format: Literal["json", "alertmanager"] = Field(
        default="json", validation_alias=_env("AUTOFIX_WEBHOOK_FORMAT")
    )
    webhook_timeout: float = Field(
        default=5.0, gt=0, validation_alias=_env("AUTOFIX_WEBHOOK_TIMEOUT")
    )
    webhook_retries: int = Field(default=5, ge=0, validation_alias=_env("AUTOFIX_WEBHOOK_RETRIES"))
    alertmanager_url: str = Field(
        default="",
        validation_alias=_env("ML_ALERTMANAGER_URL"),
        description="Alertmanager's base URL (http://alertmanager:9093): incidents are pushed "
        "to its /api/v2/alerts as firing and resolved alerts; empty: not pushed.",
    )
    alertmanager_resend_seconds: float = Field(
        default=60.0,
        gt=0,
        validation_alias=_env("ML_ALERTMANAGER_RESEND_SECONDS"),
        description="How often the trainer re-sends every open incident as a firing alert; "
        "keep it well below Alertmanager's resolve_timeout (5 min), which ends an alert not "
        "re-sent.",
    )
    alertmanager_timeout: float = Field(
        default=5.0, gt=0, validation_alias=_env("ML_ALERTMANAGER_TIMEOUT")
    )
    alertmanager_retries: int = Field(
        default=3, ge=0, validation_alias=_env("ML_ALERTMANAGER_RETRIES")
    )
    public_url: str = Field(
        default="",
        validation_alias=_env("AUTOFIX_PUBLIC_URL"),
        description="The gateway's address as people reach it (https://autofix.example.com), "
        "for links in alerts; empty: http://AUTOFIX_BIND_HOST:AUTOFIX_API_PORT.",
    )
    incident_cooldown_minutes: float = Field(
        default=15.0,
        ge=0,
        validation_alias=_env("ML_INCIDENT_COOLDOWN_MINUTES"),
        description="A cause that recurs within this long after resolving reopens its incident.",
    )

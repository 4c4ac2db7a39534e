"""API models of incident analyses: the structured analysis, its stored form, the requests.

The same ``Analysis`` comes from every analyst (Ollama, an OpenAI-compatible endpoint, the rules);
``ANALYSIS_JSON_SCHEMA`` is what the LLMs are constrained by.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from shared.schemas.common import Input, Schema

CauseCategory = Literal[
    "cpu_saturation",
    "memory_leak",
    "error_storm",
    "disk_filling",
    "latency_regression",
    "traffic_surge",
    "unknown",
]
CAUSE_CATEGORIES: tuple[str, ...] = CauseCategory.__args__  # type: ignore[attr-defined]

ActionName = Literal[
    "restart_service", "scale_out", "rollback", "clear_cache", "rotate_logs", "page_human"
]
ACTION_NAMES: tuple[str, ...] = ActionName.__args__  # type: ignore[attr-defined]
Provider = Literal["rules", "ollama", "openai"]
PARAMETER_NAMES = ("host", "service", "replicas", "to_version", "urgency")
# The parameters each action needs (the others may be null).
REQUIRED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "restart_service": ("host", "service"),
    "scale_out": ("service", "replicas"),
    "rollback": ("service",),
    "clear_cache": ("host", "service"),
    "rotate_logs": ("host",),
    "page_human": ("urgency",),
}


class ActionParameters(Schema):
    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(default=None, description="Host to act on.")
    service: str | None = Field(default=None, description="Service to act on.")
    replicas: int | None = Field(default=None, ge=1, le=100, description="Replicas to add.")
    to_version: str | None = Field(default=None, description="Version to roll back to.")
    urgency: Literal["low", "high"] | None = Field(default=None, description="Paging urgency.")


class Action(Schema):
    model_config = ConfigDict(extra="forbid")

    action: ActionName = Field(description="From the catalogue the remediation bot executes.")
    parameters: ActionParameters = Field(description="The action's parameters.")
    reason: str = Field(max_length=500, description="Why, in one sentence.")

    @model_validator(mode="after")
    def _required(self) -> Action:
        missing = [
            p for p in REQUIRED_PARAMETERS[self.action] if getattr(self.parameters, p) is None
        ]
        if missing:
            raise ValueError(f"action {self.action} needs parameters {', '.join(missing)}")
        return self


class Cause(Schema):
    model_config = ConfigDict(extra="forbid")

    category: CauseCategory = Field(description="From the taxonomy.")
    text: str = Field(max_length=1000, description="The probable cause in a sentence or two.")


class Claim(Schema):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=500, description="One statement of fact.")
    evidence: list[str] = Field(min_length=1, description="Ids of the evidence items it rests on.")


class Analysis(Schema):
    """What an analyst answers (an LLM's answer must validate as this)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    summary: str = Field(max_length=2000, description="What happened, for the person on call.")
    cause: Cause = Field(description="The probable cause.")
    claims: list[Claim] = Field(min_length=1, max_length=20, description="Facts with evidence.")
    actions: list[Action] = Field(max_length=6, description="What to do, in order.")
    confidence: float = Field(ge=0, le=1, description="0..1.")
    top_metric: str | None = Field(default=None, description="The metric most at fault.")


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


# Strict-mode compatible (every property required, no extra properties): OpenAI's json_schema
# response_format and Ollama's `format` both take it.
ANALYSIS_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["summary", "cause", "claims", "actions", "confidence", "top_metric"],
    "properties": {
        "summary": {"type": "string"},
        "cause": {
            "type": "object",
            "additionalProperties": False,
            "required": ["category", "text"],
            "properties": {
                "category": {"type": "string", "enum": list(CAUSE_CATEGORIES)},
                "text": {"type": "string"},
            },
        },
        "claims": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["text", "evidence"],
                "properties": {
                    "text": {"type": "string"},
                    "evidence": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "actions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["action", "parameters", "reason"],
                "properties": {
                    "action": {"type": "string", "enum": list(ACTION_NAMES)},
                    "parameters": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": list(PARAMETER_NAMES),
                        "properties": {
                            "host": _nullable("string"),
                            "service": _nullable("string"),
                            "replicas": _nullable("integer"),
                            "to_version": _nullable("string"),
                            "urgency": {"type": ["string", "null"], "enum": ["low", "high", None]},
                        },
                    },
                    "reason": {"type": "string"},
                },
            },
        },
        "confidence": {"type": "number"},
        "top_metric": _nullable("string"),
    },
}


class AnalysisOut(Schema):
    """A stored analysis of an incident."""

    id: int = Field(description="Analysis id.")
    incident_id: int | None = Field(description="The incident analysed.")
    provider: str = Field(description="Who wrote the answer served: rules, ollama or openai.")
    requested_provider: str | None = Field(description="Who was asked first.")
    fallback: bool = Field(description="The rules' answer, served because the LLM's failed.")
    rejected_reason: str | None = Field(description="Why the LLM's answer was not served.")
    model: str | None = Field(description="LLM model, or the rules' version.")
    status: str = Field(description="ok or fallback.")
    summary: str = Field(description="What happened.")
    category: str | None = Field(description="Cause category from the taxonomy.")
    root_cause: str | None = Field(description="The probable cause in words.")
    analysis: dict[str, Any] = Field(description="The whole structured analysis.")
    recommendations: list[dict[str, Any]] = Field(description="The recommended actions.")
    confidence: float | None = Field(description="0..1.")
    latency_ms: float | None = Field(description="Time to the answer served, evidence included.")
    prompt_tokens: int | None = Field(description="LLM prompt tokens (null for the rules).")
    completion_tokens: int | None = Field(description="LLM answer tokens.")
    evidence: dict[str, Any] = Field(description="The evidence pack the analysis rests on.")
    created_at: datetime = Field(description="When it was stored.")


class AnalysisList(Schema):
    analyses: list[AnalysisOut] = Field(description="Analyses, newest first.")
    count: int = Field(description="Number returned.")


class AnalyzeRequest(Input):
    model_config = ConfigDict(extra="forbid")

    provider: Provider | None = Field(
        default=None, description="rules, ollama or openai; default ML_ANALYSIS_PROVIDER."
    )


class AnalysisListQuery(Input):
    """Query parameters of GET /analyses."""

    incident_id: int | None = Field(default=None, ge=1, description="Only this incident's.")
    host: str | None = Field(default=None, max_length=255, description="Only this host's.")
    provider: Provider | None = Field(default=None, description="Only answers by this analyst.")
    category: CauseCategory | None = Field(default=None, description="Only this cause.")
    fallback: bool | None = Field(default=None, description="Only fallbacks (or only not).")
    limit: int = Field(default=100, ge=1, le=1000, description="At most this many.")

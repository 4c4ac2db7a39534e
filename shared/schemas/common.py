"""What every API model shares: the base model, the error body, severities."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from shared.severity import Severity

__all__ = [
    "NUL_FREE",
    "IsoDatetime",
    "ErrorResponse",
    "Input",
    "Schema",
    "Severity",
    "nul_free_strings",
    "text_problem",
]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorResponse(Schema):
    detail: Any = Field(description="What went wrong; for 422, a list of {field, msg}.")


def text_problem(value: str) -> str | None:
    """Why a text cannot be stored (PostgreSQL refuses NUL; UTF-8 has no lone surrogates)."""
    if "\x00" in value:
        return "contains a NUL byte (\\x00), which text may not hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text (a lone surrogate)"
    return None


# The JSON Schema pattern of a text without NUL, as every input's text must be (text_problem).
NUL_FREE = "^[^\\u0000]*$"
_OWN_RULES = frozenset({"format", "enum", "const", "pattern", "anyOf"})


def nul_free_strings(node: Any) -> None:
    """Give every plain string of a JSON Schema (an OpenAPI document) the NUL_FREE pattern,
    so that the schema states the rule that ``Input`` enforces: ``nul_free_strings(openapi)``."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not _OWN_RULES & node.keys():
            node["pattern"] = NUL_FREE
        for value in node.values():
            nul_free_strings(value)
    elif isinstance(node, list):
        for value in node:
            nul_free_strings(value)


def _iso_only(value: Any) -> Any:
    # pydantic reads a number (or "0.0") as Unix time: the schema says an ISO 8601 string.
    if isinstance(value, bool | int | float):
        raise ValueError("must be an ISO 8601 datetime (2024-01-31T12:00:00Z), not a number")
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("must be an ISO 8601 datetime (2024-01-31T12:00:00Z), not a number")
    return value


# A datetime given as ISO 8601 text only (in a body or a query).
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            raise ValueError(problem)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_text(item)


class Input(BaseModel):
    """The base of every request body and query model: no field holds text that cannot be
    stored, so a NUL byte is a 422 naming the field, not a 500 from the database."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, int | float):
            _check_text(value)
        return value

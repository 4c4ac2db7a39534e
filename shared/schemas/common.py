"""What every API model shares: the base model, the error body, severities."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.severity import Severity

__all__ = ["ErrorResponse", "Input", "Schema", "Severity", "text_problem"]


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

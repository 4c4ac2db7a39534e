"""What every API model shares: the base model, the error body, severities."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.severity import Severity

__all__ = ["ErrorResponse", "Schema", "Severity"]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorResponse(Schema):
    detail: Any = Field(description="What went wrong; for 422, a list of {field, msg}.")

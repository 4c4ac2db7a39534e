"""What every API model shares: the base model, the error body, row ids, severities."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from shared.severity import Severity

__all__ = ["ErrorResponse", "MetricPath", "RowId", "Schema", "Severity"]

# Row ids are 64-bit integers in both engines.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Row id.")]
# A metric named in a path (checked against the catalogue by the service, which lists the known).
MetricPath = Annotated[str, Path(max_length=100, description="A metric of the catalogue.")]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorResponse(Schema):
    detail: Any = Field(description="What went wrong; for 422, a list of {field, msg}.")

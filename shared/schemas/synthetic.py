"""API models of synthetic training data generation."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from shared.schemas.common import Input, Schema


class GenerateSyntheticRequest(Input):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"days": 30, "seed": 42}]}
    )

    days: int = Field(default=30, ge=1, le=365, description="Days of 1-minute samples, 1 to 365.")
    seed: int = Field(
        default=42, ge=0, le=2**32 - 1, description="Random seed; same seed, same data."
    )
    host: str = Field(
        default="synthetic",
        min_length=1,
        max_length=255,
        description="Host the samples are stored under; earlier synthetic rows of that host "
        "in the generated window are replaced.",
    )
    overwrite: bool = Field(
        default=False,
        description="Replace the host's real (collected or pushed) samples in the window too; "
        "without it a host holding real samples there is a 409.",
    )


class GenerateSyntheticResponse(Schema):
    count: int = Field(description="Samples stored.")
    label_distribution: dict[str, int] = Field(description="Samples per label.")
    host: str = Field(description="Host the samples were stored under.")
    start: datetime = Field(description="First sample.")
    end: datetime = Field(description="Last sample.")
    generation_seconds: float = Field(description="Time to generate.")
    storage_seconds: float = Field(description="Time to store.")
    seconds: float = Field(description="Total time taken.")

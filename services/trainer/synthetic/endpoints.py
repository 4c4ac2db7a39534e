"""POST /train/generate-synthetic."""

from __future__ import annotations

from fastapi import APIRouter

from services.trainer.synthetic import service
from shared.schemas.synthetic import GenerateSyntheticRequest, GenerateSyntheticResponse
from shared.web import EngineDep

router = APIRouter()


@router.post(
    "/train/generate-synthetic",
    response_model=GenerateSyntheticResponse,
    summary="Generate labelled synthetic samples and store them",
)
async def generate_synthetic(
    body: GenerateSyntheticRequest, engine: EngineDep
) -> GenerateSyntheticResponse:
    return await service.generate(engine, body)

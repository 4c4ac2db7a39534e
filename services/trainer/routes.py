"""HTTP routes of the trainer."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter

from services.trainer.synthetic import SyntheticDataGenerator, label_distribution, store_frame
from shared.schemas.synthetic import GenerateSyntheticRequest, GenerateSyntheticResponse
from shared.web import ConnDep

router = APIRouter()


@router.post(
    "/train/generate-synthetic",
    response_model=GenerateSyntheticResponse,
    summary="Generate labelled synthetic samples and store them",
)
async def generate_synthetic(
    body: GenerateSyntheticRequest, conn: ConnDep
) -> GenerateSyntheticResponse:
    started = time.perf_counter()
    generator = SyntheticDataGenerator(seed=body.seed)
    frame = await asyncio.to_thread(generator.generate_full_training_set, body.days)
    generated = time.perf_counter()
    count = await store_frame(conn, frame, host=body.host)
    stored = time.perf_counter()
    return GenerateSyntheticResponse(
        count=count,
        label_distribution=label_distribution(frame),
        host=body.host,
        start=frame["timestamp"].iloc[0].to_pydatetime(),
        end=frame["timestamp"].iloc[-1].to_pydatetime(),
        generation_seconds=generated - started,
        storage_seconds=stored - generated,
        seconds=stored - started,
    )

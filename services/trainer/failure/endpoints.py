"""HTTP routes of failure prediction: train, predict, stored predictions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from services.trainer.deps import FailureServiceDep
from shared.schemas.failure import (
    FailurePredictionList,
    FailurePredictionQuery,
    PredictFailureRequest,
    PredictFailureResponse,
    TrainFailureRequest,
    TrainFailureResponse,
)

router = APIRouter()


@router.post(
    "/train/failure-predictor",
    response_model=TrainFailureResponse,
    summary="Train a new failure predictor version (409 while another trains)",
)
async def train(service: FailureServiceDep, body: TrainFailureRequest) -> TrainFailureResponse:
    return await service.train(body)


@router.post(
    "/predict/failure",
    response_model=PredictFailureResponse,
    summary="Probability of a failure per horizon for a sample or the host's latest state",
)
async def predict(service: FailureServiceDep, body: PredictFailureRequest) -> Response:
    # Built by the service from typed values; skipping re-validation keeps this path short.
    return Response(await service.predict(body), media_type="application/json")


@router.get(
    "/failure-predictions",
    response_model=FailurePredictionList,
    summary="Stored failure predictions (scoring loop), newest first",
)
async def list_predictions(
    service: FailureServiceDep, query: Annotated[FailurePredictionQuery, Query()]
) -> FailurePredictionList:
    return await service.list_predictions(query)

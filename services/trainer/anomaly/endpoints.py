"""HTTP routes of anomaly detection: train, predict, stored scores and feedback on them."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from services.trainer.deps import AnomalyServiceDep
from shared.errors import Unprocessable
from shared.schemas.anomaly import (
    AnomalyScoreList,
    AnomalyScoreQuery,
    FeedbackRequest,
    FeedbackResponse,
    HostThresholdList,
    HostThresholdQuery,
    PredictRequest,
    PredictResponse,
    TrainAnomalyRequest,
    TrainAnomalyResponse,
)
from shared.web import RowId

router = APIRouter()


@router.post(
    "/train/anomaly-detector",
    response_model=TrainAnomalyResponse,
    summary="Train a new anomaly detector version (409 while another trains)",
)
async def train(service: AnomalyServiceDep, body: TrainAnomalyRequest) -> TrainAnomalyResponse:
    return await service.train(body)


@router.post(
    "/predict/anomaly", response_model=PredictResponse, summary="Score one sample in real time"
)
async def predict(service: AnomalyServiceDep, body: PredictRequest) -> Response:
    values: dict[str, Any] = {
        k: v for k, v in body.model_dump(exclude={"host", "timestamp"}).items() if v is not None
    }
    if not values:
        # Nothing to score: filling every metric from the newest sample would score a copy of
        # it minutes later (held still, which the forest finds unusual).
        raise Unprocessable(
            [
                {
                    "field": "body",
                    "loc": ["body"],
                    "msg": "no metric posted: post at least one of the 14 metrics (the stored "
                    "scores of a host's samples: GET /api/ml/anomaly-scores?host=...)",
                    "type": "missing",
                }
            ]
        )
    answer = await service.predict(values, host=body.host, timestamp=body.timestamp)
    # Built by the service from typed values; skipping re-validation keeps this path short.
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get(
    "/anomaly-scores",
    response_model=AnomalyScoreList,
    summary="Stored anomaly scores, newest first",
)
async def list_scores(
    service: AnomalyServiceDep, query: Annotated[AnomalyScoreQuery, Query()]
) -> AnomalyScoreList:
    return await service.list_scores(query)


@router.post(
    "/anomaly-scores/{score_id}/feedback",
    response_model=FeedbackResponse,
    summary="Tell the detector a score was a false or true positive: moves its host's threshold",
)
async def feedback(
    service: AnomalyServiceDep, score_id: RowId, body: FeedbackRequest
) -> FeedbackResponse:
    return await service.feedback(score_id, body.feedback)


@router.get(
    "/anomaly-thresholds",
    response_model=HostThresholdList,
    summary="Each host's own anomaly threshold (moved by feedback) and the default",
)
async def thresholds(
    service: AnomalyServiceDep, query: Annotated[HostThresholdQuery, Query()]
) -> HostThresholdList:
    return await service.thresholds(query.host)

"""HTTP routes of anomaly detection in the trainer: train, activate, predict, scores, feedback."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from services.trainer import repository as repo
from services.trainer.anomaly import AnomalyService
from shared.db import utc
from shared.schemas.anomaly import (
    ActivateResponse,
    AnomaliesOnlyQuery,
    AnomalyScoreList,
    AnomalyScoreOut,
    FeedbackRequest,
    FeedbackResponse,
    MinSeverityQuery,
    PredictRequest,
    PredictResponse,
    ScoresEndQuery,
    ScoresLimitQuery,
    ScoresStartQuery,
    TrainAnomalyRequest,
    TrainAnomalyResponse,
)
from shared.schemas.common import RowId
from shared.schemas.models import ModelSummary
from shared.schemas.samples import HostQuery
from shared.web import ConnDep

router = APIRouter()


def service(request: Request) -> AnomalyService:
    svc: AnomalyService = request.app.state.anomaly
    return svc


@router.post(
    "/train/anomaly-detector",
    response_model=TrainAnomalyResponse,
    summary="Train a new anomaly detector version (409 while another trains)",
)
async def train(request: Request, body: TrainAnomalyRequest) -> TrainAnomalyResponse:
    result = await service(request).train(body)
    result["model"] = ModelSummary.model_validate(result["model"])
    return TrainAnomalyResponse.model_validate(result)


@router.post(
    "/models/{model_id}/activate",
    response_model=ActivateResponse,
    summary="Make a stored version the active one (rollback)",
)
async def activate(request: Request, model_id: RowId) -> ActivateResponse:
    result = await service(request).activate(model_id)
    return ActivateResponse(
        model=ModelSummary.model_validate(result["model"]),
        previous_model_id=result["previous_model_id"],
    )


@router.post(
    "/predict/anomaly", response_model=PredictResponse, summary="Score one sample in real time"
)
async def predict(request: Request, body: PredictRequest) -> Response:
    values: dict[str, Any] = {
        k: v for k, v in body.model_dump(exclude={"host", "timestamp"}).items() if v is not None
    }
    answer = await service(request).predict(values, host=body.host, timestamp=body.timestamp)
    # Built by the service from typed values; skipping re-validation keeps this path short.
    return Response(orjson.dumps(answer), media_type="application/json")


@router.get(
    "/anomaly-scores",
    response_model=AnomalyScoreList,
    summary="Stored anomaly scores, newest first",
)
async def list_scores(
    conn: ConnDep,
    host: HostQuery = None,
    start: ScoresStartQuery = None,
    end: ScoresEndQuery = None,
    min_severity: MinSeverityQuery = None,
    anomalies_only: AnomaliesOnlyQuery = False,
    limit: ScoresLimitQuery = 100,
) -> AnomalyScoreList:
    flt = repo.ScoreFilter(
        host=host,
        start=utc(start) if start else None,
        end=utc(end) if end else None,
        min_severity=min_severity,
        anomalies_only=anomalies_only,
    )
    rows = await repo.list_scores(conn, flt, limit=limit)
    return AnomalyScoreList(
        scores=[AnomalyScoreOut.model_validate(r) for r in rows], count=len(rows)
    )


@router.post(
    "/anomaly-scores/{score_id}/feedback",
    response_model=FeedbackResponse,
    summary="Tell the detector a score was a false or true positive: moves the threshold",
)
async def feedback(request: Request, score_id: RowId, body: FeedbackRequest) -> FeedbackResponse:
    result = await service(request).feedback(score_id, body.feedback)
    return FeedbackResponse.model_validate(result)

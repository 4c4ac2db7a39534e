"""Gateway routes of anomaly detection: /api/ml/train/anomaly-detector, predict, scores."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.api.routes import ERRORS, clients
from shared.schemas.anomaly import (
    ActivateResponse,
    AnomaliesOnlyQuery,
    AnomalyScoreList,
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
from shared.schemas.common import ErrorResponse, RowId
from shared.schemas.samples import HostQuery

router = APIRouter(prefix="/api/ml")

# Training a month of samples takes seconds; the generous limit covers a slow database too.
TRAINING_TIMEOUT = 600.0


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


@router.post(
    "/train/anomaly-detector",
    response_model=TrainAnomalyResponse,
    responses={
        **ERRORS,
        409: _error(
            "Another training is running, or the history is too short without use_synthetic."
        ),
    },
    summary="Train a new anomaly detector version; activated unless worse than the active one",
)
async def train_anomaly_detector(request: Request, body: TrainAnomalyRequest) -> Response:
    svc = clients(request)
    return await svc.forward(
        "trainer",
        "/train/anomaly-detector",
        request,
        timeout=max(svc.settings.http_timeout, TRAINING_TIMEOUT),
    )


@router.post(
    "/models/{model_id}/activate",
    response_model=ActivateResponse,
    responses={
        **ERRORS,
        404: _error("No model with this id."),
        409: _error("Not an anomaly detector, or its artifact fails its sha256 check."),
    },
    summary="Make a stored model version the active one (rollback)",
)
async def activate_model(request: Request, model_id: RowId) -> Response:
    return await clients(request).forward("trainer", f"/models/{model_id}/activate", request)


@router.post(
    "/predict/anomaly",
    response_model=PredictResponse,
    responses={**ERRORS, 409: _error("No anomaly detector trained yet: train one first.")},
    summary="Score one sample in real time: score, severity, top contributing metrics",
)
async def predict_anomaly(request: Request, body: PredictRequest) -> Response:
    return await clients(request).forward("trainer", "/predict/anomaly", request)


@router.get(
    "/anomaly-scores",
    response_model=AnomalyScoreList,
    responses=ERRORS,
    summary="Stored anomaly scores (scoring loop and predictions), newest first",
)
async def anomaly_scores(
    request: Request,
    host: HostQuery = None,
    start: ScoresStartQuery = None,
    end: ScoresEndQuery = None,
    min_severity: MinSeverityQuery = None,
    anomalies_only: AnomaliesOnlyQuery = False,
    limit: ScoresLimitQuery = 100,
) -> Response:
    return await clients(request).forward("trainer", "/anomaly-scores", request)


@router.post(
    "/anomaly-scores/{score_id}/feedback",
    response_model=FeedbackResponse,
    responses={
        **ERRORS,
        404: _error("No score with this id."),
        409: _error("No active anomaly detector."),
    },
    summary="Mark a score as a false or true positive: moves and records the threshold",
)
async def anomaly_feedback(request: Request, score_id: RowId, body: FeedbackRequest) -> Response:
    return await clients(request).forward(
        "trainer", f"/anomaly-scores/{score_id}/feedback", request
    )

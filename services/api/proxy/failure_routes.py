"""The gateway's routes of failure prediction (the trainer), spliced into ``table.ROUTES``."""

from __future__ import annotations

from services.api.proxy.route import ProxyRoute, errors
from shared.schemas.failure import (
    FailurePredictionList,
    FailurePredictionQuery,
    PredictFailureRequest,
    PredictFailureResponse,
    TrainFailureRequest,
    TrainFailureResponse,
)

FAILURE = ("failure prediction",)

FAILURE_ROUTES: tuple[ProxyRoute, ...] = (
    ProxyRoute(
        name="predict_failure",
        tags=FAILURE,
        method="POST",
        path="/predict/failure",
        service="trainer",
        role="operator",
        rate="predict",
        body=PredictFailureRequest,
        response=PredictFailureResponse,
        errors=errors(
            conflict="No failure predictor for the host (its own or a fleet model), or the host "
            "has no samples and none was sent."
        ),
        summary="Probability of a host failure within each horizon, warning, reasons in words",
    ),
    ProxyRoute(
        name="failure_predictions",
        tags=FAILURE,
        method="GET",
        path="/failure-predictions",
        service="trainer",
        role="reader",
        query=FailurePredictionQuery,
        response=FailurePredictionList,
        summary="Stored failure predictions (scoring loop), newest first",
    ),
    ProxyRoute(
        name="train_failure_predictor",
        tags=FAILURE,
        method="POST",
        path="/train/failure-predictor",
        service="trainer",
        role="admin",
        body=TrainFailureRequest,
        response=TrainFailureResponse,
        timeout="training",
        errors=errors(
            conflict="Another training is running, or the history is too short without "
            "use_synthetic."
        ),
        summary="Train a new failure predictor version; activated unless worse than the active one",
    ),
)

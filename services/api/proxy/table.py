"""The gateway's proxied routes, one declarative entry each (see docs/gateway.md).

Use: a new public route is one `ProxyRoute(...)` in ROUTES plus its endpoint in the service.
"""

from __future__ import annotations

from services.api.proxy.failure_routes import FAILURE_ROUTES
from services.api.proxy.route import (
    API_PREFIX,
    GATEWAY_ADMIN_PATHS,
    SERVICES,
    STORAGE_FULL,
    TIMEOUT_FLOORS,
    BodyLimit,
    ProxyRoute,
    RateClass,
    Service,
    TimeoutClass,
    errors,
    timeouts,
)
from services.api.proxy.samples_table import SAMPLE_ROUTES
from shared.schemas.analysis import AnalysisList, AnalysisListQuery, AnalysisOut, AnalyzeRequest
from shared.schemas.anomaly import (
    ActivateResponse,
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
from shared.schemas.forecast import (
    AlertsQuery,
    AlertsResponse,
    ForecastHostQuery,
    ForecastQuery,
    ForecastResponse,
    NextHourResponse,
    RefreshResponse,
    TrainForecasterRequest,
    TrainForecasterResponse,
    TrendQuery,
    TrendResponse,
)
from shared.schemas.incidents import IncidentList, IncidentListQuery, IncidentOut, ResolveRequest
from shared.schemas.models import ModelList, ModelListQuery, ModelSummary
from shared.schemas.synthetic import GenerateSyntheticRequest, GenerateSyntheticResponse
from shared.web import MetricPath, RowId

MODEL_ID = {"model_id": RowId}
# Feature tags: Swagger UI and ReDoc group operations by them (app.py's OPENAPI_TAGS).
ANOMALY, FORECASTING, INCIDENTS = ("anomaly detection",), ("forecasting",), ("incidents",)
MODELS, SYNTHETIC = ("models",), ("synthetic data",)
NO_FORECAST = "No forecaster model (or no stored forecast) yet; the detail says to train."
UNKNOWN_METRIC = "Unknown metric; the detail lists the known."
UNKNOWN_METRIC_OR_HOST = (
    "Unknown metric, or a host without a forecaster model; the detail lists the known."
)
NOT_CONFIGURED = "The provider asked for is not configured; the detail names its settings."
NO_MODEL = "No model with this id."
NO_INCIDENT = "No incident with this id."
UNKNOWN_HOST = "A host without a forecaster model; the detail lists the hosts with one."

# Routes are matched in this order, one by one: the most requested come first.
ROUTES: tuple[ProxyRoute, ...] = (
    # Anomaly detection: the trainer.
    ProxyRoute(
        name="predict_anomaly",
        tags=ANOMALY,
        method="POST",
        path="/predict/anomaly",
        service="trainer",
        role="operator",
        rate="predict",
        body=PredictRequest,
        response=PredictResponse,
        errors=errors(conflict="No anomaly detector trained yet: train one first."),
        summary="Score one sample in real time: score, severity, top contributing metrics",
    ),
    ProxyRoute(
        name="anomaly_scores",
        tags=ANOMALY,
        method="GET",
        path="/anomaly-scores",
        service="trainer",
        role="reader",
        query=AnomalyScoreQuery,
        response=AnomalyScoreList,
        summary="Stored anomaly scores (scoring loop and predictions), newest first",
    ),
    ProxyRoute(
        name="anomaly_feedback",
        tags=ANOMALY,
        method="POST",
        path="/anomaly-scores/{score_id}/feedback",
        service="trainer",
        role="operator",
        path_params={"score_id": RowId},
        body=FeedbackRequest,
        response=FeedbackResponse,
        errors=errors(not_found="No score with this id."),
        summary="Mark a score as a false or true positive: moves and records its host's threshold",
    ),
    ProxyRoute(
        name="anomaly_thresholds",
        tags=ANOMALY,
        method="GET",
        path="/anomaly-thresholds",
        service="trainer",
        role="reader",
        query=HostThresholdQuery,
        response=HostThresholdList,
        summary="Each host's own anomaly threshold (moved by feedback) and the default",
    ),
    ProxyRoute(
        name="train_anomaly_detector",
        tags=ANOMALY,
        method="POST",
        path="/train/anomaly-detector",
        service="trainer",
        role="admin",
        body=TrainAnomalyRequest,
        response=TrainAnomalyResponse,
        timeout="training",
        errors=errors(
            conflict="Another training is running, or the history is too short without "
            "use_synthetic."
        ),
        summary="Train a new anomaly detector version; activated unless worse than the active one",
    ),
    # Failure prediction: the trainer (services/api/proxy/failure_routes.py).
    *FAILURE_ROUTES,
    # Samples: the collector (proxy/samples_table.py).
    *SAMPLE_ROUTES,
    # Incidents: the trainer.
    ProxyRoute(
        name="incident_list",
        tags=INCIDENTS,
        method="GET",
        path="/incidents",
        service="trainer",
        role="reader",
        query=IncidentListQuery,
        response=IncidentList,
        summary="Incidents (ML_ANOMALY, predicted_breach, ...), newest first",
    ),
    ProxyRoute(
        name="incident",
        tags=INCIDENTS,
        method="GET",
        path="/incidents/{incident_id}",
        service="trainer",
        role="reader",
        path_params={"incident_id": RowId},
        response=IncidentOut,
        errors=errors(not_found=NO_INCIDENT),
        summary="One incident",
    ),
    ProxyRoute(
        name="incident_resolve",
        tags=INCIDENTS,
        method="POST",
        path="/incidents/{incident_id}/resolve",
        service="trainer",
        role="operator",
        path_params={"incident_id": RowId},
        body=ResolveRequest,
        body_required=False,
        response=IncidentOut,
        errors=errors(not_found=NO_INCIDENT, conflict="Already resolved"),
        summary="Resolve an incident",
    ),
    # Incident analysis: the trainer (docs/incident-analysis.md).
    ProxyRoute(
        name="incident_analyze",
        tags=INCIDENTS,
        method="POST",
        path="/incidents/{incident_id}/analyze",
        service="trainer",
        role="operator",
        path_params={"incident_id": RowId},
        body=AnalyzeRequest,
        body_required=False,
        response=AnalysisOut,
        timeout="analysis",
        errors=errors(not_found="No incident with this id.", conflict=NOT_CONFIGURED),
        summary="Analyse an incident now (again), optionally by another provider",
    ),
    ProxyRoute(
        name="incident_analysis",
        tags=INCIDENTS,
        method="GET",
        path="/incidents/{incident_id}/analysis",
        service="trainer",
        role="reader",
        path_params={"incident_id": RowId},
        response=AnalysisOut,
        errors=errors(not_found="No incident with this id, or no analysis of it yet."),
        summary="The latest analysis of an incident: summary, cause, claims, actions",
    ),
    ProxyRoute(
        name="analyses",
        tags=INCIDENTS,
        method="GET",
        path="/analyses",
        service="trainer",
        role="reader",
        query=AnalysisListQuery,
        response=AnalysisList,
        summary="Incident analyses, newest first (filters: incident, host, provider, cause)",
    ),
    # Forecasting: the forecaster.
    ProxyRoute(
        name="forecast",
        method="GET",
        path="/forecast",
        service="forecaster",
        role="reader",
        query=ForecastQuery,
        response=ForecastResponse,
        errors=errors(not_found=UNKNOWN_METRIC_OR_HOST, conflict=NO_FORECAST),
        tags=FORECASTING,
        summary="Forecast 1-24 hours ahead with bounds, every host (or `host`), stored forecasts",
    ),
    ProxyRoute(
        name="forecast_next_hour",
        method="GET",
        path="/forecast/next-hour",
        service="forecaster",
        role="reader",
        query=ForecastHostQuery,
        response=NextHourResponse,
        errors=errors(not_found=UNKNOWN_HOST, conflict=NO_FORECAST),
        tags=FORECASTING,
        summary="Every metric of every host (or `host`): now, an hour ahead, bounds, direction",
    ),
    ProxyRoute(
        name="forecast_alerts",
        method="GET",
        path="/forecast/alerts",
        service="forecaster",
        role="reader",
        query=AlertsQuery,
        response=AlertsResponse,
        errors=errors(not_found=UNKNOWN_HOST, conflict=NO_FORECAST),
        tags=FORECASTING,
        summary="Every predicted threshold breach of every host (or `host`) in the horizon",
    ),
    ProxyRoute(
        name="forecast_trend",
        method="GET",
        path="/forecast/trend/{metric}",
        service="forecaster",
        role="reader",
        path_params={"metric": MetricPath},
        query=TrendQuery,
        response=TrendResponse,
        errors=errors(not_found=UNKNOWN_METRIC_OR_HOST, conflict=NO_FORECAST),
        tags=FORECASTING,
        summary="Trend slope per hour and per day, direction and change points",
    ),
    ProxyRoute(
        name="train_forecaster",
        method="POST",
        path="/train/forecaster",
        service="forecaster",
        role="admin",
        body=TrainForecasterRequest,
        body_required=False,
        response=TrainForecasterResponse,
        timeout="training",
        errors=errors(
            not_found="The host has no samples.",
            conflict="A training run is already in progress, or there is no data to fit.",
        ),
        tags=FORECASTING,
        summary="Fit one Prophet model per metric (waits for the result, seconds for 30 days)",
    ),
    ProxyRoute(
        name="forecast_refresh",
        method="POST",
        path="/forecast/refresh",
        service="forecaster",
        role="admin",
        response=RefreshResponse,
        timeout="refresh",
        errors=errors(invalid=False),
        tags=FORECASTING,
        summary="Recompute the stored forecasts and breach incidents now (normally scheduled)",
    ),
    # Model registry and synthetic data: the trainer.
    ProxyRoute(
        name="models",
        tags=MODELS,
        method="GET",
        path="/models",
        service="trainer",
        role="reader",
        query=ModelListQuery,
        response=ModelList,
        summary="All trained models with versions and evaluation figures",
    ),
    ProxyRoute(
        name="model",
        tags=MODELS,
        method="GET",
        path="/models/{model_id}",
        service="trainer",
        role="reader",
        path_params=MODEL_ID,
        response=ModelSummary,
        errors=errors(not_found=NO_MODEL),
        summary="One model version",
    ),
    ProxyRoute(
        name="activate_model",
        tags=MODELS,
        method="POST",
        path="/models/{model_id}/activate",
        service="trainer",
        role="admin",
        path_params=MODEL_ID,
        response=ActivateResponse,
        errors=errors(
            not_found=NO_MODEL,
            conflict="Not an anomaly detector, or its artifact fails its sha256 check.",
        ),
        summary="Make a stored model version the active one (rollback)",
    ),
    ProxyRoute(
        name="generate_synthetic",
        tags=SYNTHETIC,
        method="POST",
        path="/train/generate-synthetic",
        service="trainer",
        role="admin",
        body=GenerateSyntheticRequest,
        response=GenerateSyntheticResponse,
        errors=errors(
            conflict="The host holds real samples in the window; see overwrite.",
            storage_full=STORAGE_FULL,
        ),
        timeout="synthetic",
        summary="Generate labelled synthetic training data and store it",
    ),
)


# Paths whose requests the gateway counts as traffic="admin": its own long work, its health,
# its docs (services/api/metrics/middleware.py).
ADMIN_PATHS = frozenset({API_PREFIX + r.path for r in ROUTES if r.admin}) | GATEWAY_ADMIN_PATHS

__all__ = [
    "ADMIN_PATHS",
    "API_PREFIX",
    "ROUTES",
    "SERVICES",
    "TIMEOUT_FLOORS",
    "BodyLimit",
    "ProxyRoute",
    "RateClass",
    "Service",
    "TimeoutClass",
    "errors",
    "timeouts",
]

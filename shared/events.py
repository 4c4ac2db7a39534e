"""What happened in a service's process: incidents, trainings, activations; counted for
/metrics (shared/observability.py) and logged as structured events (shared/logs.py).

Usage: `events.incident_opened(incident_type=..., incident_id=..., host=..., severity=...)`,
`events.model_trained(family=..., model_id=..., host=..., seconds=...)`,
`events.analysis_stored(analysis, host=...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.logs import event
from shared.schemas.analysis import AnalysisOut
from shared.schemas.models import ModelSummary

TRAINING_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Series present from the start (at 0), so alerts and dashboards see them before the first event.
INCIDENT_TYPES = ("ML_ANOMALY", "predicted_breach")
MODEL_FAMILIES = ("anomaly_detector", "forecaster")


class EventMetrics:
    """What happened in this process: incidents, trainings. One per process (a service)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.incidents_opened = Counter(
            "autofix_incidents_opened",
            "Incidents opened (or reopened), by type.",
            ["type"],
            registry=self.registry,
        )
        self.incidents_resolved = Counter(
            "autofix_incidents_resolved",
            "Incidents resolved, by type.",
            ["type"],
            registry=self.registry,
        )
        self.models_trained = Counter(
            "autofix_models_trained",
            "Model versions trained and stored, by family.",
            ["family"],
            registry=self.registry,
        )
        self.training_duration = Histogram(
            "autofix_training_duration_seconds",
            "Time to train one model version, by family.",
            ["family"],
            buckets=TRAINING_BUCKETS,
            registry=self.registry,
        )
        for kind in INCIDENT_TYPES:
            self.incidents_opened.labels(kind)
            self.incidents_resolved.labels(kind)
        for family in MODEL_FAMILIES:
            self.models_trained.labels(family)
            self.training_duration.labels(family)


EVENTS = EventMetrics()
log = logging.getLogger("autofix_ml.events")


def incident_opened(*, incident_type: str, incident_id: int, host: str, severity: str) -> None:
    EVENTS.incidents_opened.labels(incident_type).inc()
    event(
        log,
        "incident_opened",
        "incident %s opened: %s on %s",
        incident_id,
        incident_type,
        host,
        incident_id=incident_id,
        type=incident_type,
        host=host,
        severity=severity,
    )


def incident_resolved(*, incident_type: str, incident_id: int, host: str) -> None:
    EVENTS.incidents_resolved.labels(incident_type).inc()
    event(
        log,
        "incident_resolved",
        "incident %s resolved: %s on %s",
        incident_id,
        incident_type,
        host,
        incident_id=incident_id,
        type=incident_type,
        host=host,
    )


def analysis_stored(analysis: AnalysisOut, *, host: str) -> None:
    """An incident's analysis stored: who wrote it, whether the rules stood in, how long."""
    event(
        log,
        "analysis_stored",
        "analysis %s stored for incident %s on %s by %s%s",
        analysis.id,
        analysis.incident_id,
        host,
        analysis.provider,
        " (fallback)" if analysis.fallback else "",
        analysis_id=analysis.id,
        incident_id=analysis.incident_id,
        host=host,
        provider=analysis.provider,
        requested_provider=analysis.requested_provider,
        model=analysis.model,
        fallback=analysis.fallback,
        rejected_reason=analysis.rejected_reason,
        category=analysis.category,
        latency_ms=None if analysis.latency_ms is None else round(analysis.latency_ms, 1),
    )


def model_trained(*, family: str, model_id: int, host: str | None, seconds: float) -> None:
    EVENTS.models_trained.labels(family).inc()
    EVENTS.training_duration.labels(family).observe(seconds)
    event(
        log,
        "model_trained",
        "%s model %s trained for %s in %.1f s",
        family,
        model_id,
        host,
        seconds,
        family=family,
        model_id=model_id,
        host=host,
        seconds=round(seconds, 3),
    )


def model_activated(model: ModelSummary, *, reason: str, previous: ModelSummary | None) -> None:
    """A version made active; `model_rolled_back` when it is older than the one it replaces."""
    rolled_back = previous is not None and model.version < previous.version
    event(
        log,
        "model_rolled_back" if rolled_back else "model_activated",
        "%s model %s (version %s) %s for %s (%s)",
        model.name,
        model.id,
        model.version,
        "rolled back to" if rolled_back else "activated",
        model.host,
        reason,
        family=model.name,
        model_id=model.id,
        version=model.version,
        host=model.host,
        metric=model.metric,
        previous_model_id=previous.id if previous else None,
        reason=reason,
    )


def versions_trained(
    versions: Iterable[tuple[ModelSummary, float, ModelSummary | None]],
) -> None:
    """Versions trained and made active at once (the forecaster's per-metric models), each
    with the active version it replaced (None for a first version)."""
    for model, seconds, previous in versions:
        model_trained(family=model.name, model_id=model.id, host=model.host, seconds=seconds)
        model_activated(model, reason="trained", previous=previous)

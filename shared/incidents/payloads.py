"""Bodies of an incident: Alertmanager's webhook format (version 4), plain JSON, or one alert of
Alertmanager's own API (POST /api/v2/alerts).

Usage: `alertmanager_payload(incident)` or `json_payload(incident)` for an `IncidentOut`;
`alertmanager_alert(incident, base_url="https://autofix.example.com")`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from shared.schemas.incidents import IncidentOut

_TIMESTAMPS = ("started_at", "updated_at", "resolved_at", "notified_at")


def _iso(value: datetime | None) -> str:
    if value is None:
        return "0001-01-01T00:00:00Z"
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def analysis_annotations(analysis: dict[str, Any]) -> dict[str, str]:
    """The analysis as Alertmanager annotations (strings): summary, cause, actions as JSON."""
    cause = analysis.get("cause") or {}
    return {
        "analysis_summary": str(analysis.get("summary", "")),
        "analysis_cause": str(cause.get("category", "")),
        "analysis_actions": json.dumps(analysis.get("actions", []), separators=(",", ":")),
        "analysis_provider": str(analysis.get("provider", "")),
    }


def alertmanager_payload(
    incident: IncidentOut, analysis: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Alertmanager's webhook format, version 4, with one alert (and the incident's analysis
    in its annotations, once there is one)."""
    status = "resolved" if incident.status == "resolved" else "firing"
    labels = {
        "alertname": incident.type,
        "host": incident.host,
        "severity": incident.severity,
        "incident_id": str(incident.id),
    }
    if incident.metric:
        labels["metric"] = incident.metric
    annotations = {"summary": incident.title, "description": incident.description or ""}
    if analysis is not None:
        annotations.update(analysis_annotations(analysis))
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _iso(incident.started_at),
        "endsAt": _iso(incident.resolved_at),
        "generatorURL": "",
        "fingerprint": hashlib.sha256(incident.dedup_key.encode()).hexdigest()[:16],
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{incident.type}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "autofix-ml",
        "groupLabels": {"alertname": incident.type},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [alert],
    }


def alert_labels(incident: IncidentOut) -> dict[str, str]:
    """What identifies the alert in Alertmanager: the same cause keeps the same labels (no
    incident id, so a reopened incident is the same alert and routing rules stay short)."""
    labels = {
        "alertname": incident.type,
        "host": incident.host,
        "severity": incident.severity,
        "service": "autofix-ml",
    }
    if incident.metric:
        labels["metric"] = incident.metric
    return labels


def alertmanager_alert(
    incident: IncidentOut, *, base_url: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    """One alert for POST /api/v2/alerts: firing (no endsAt: Alertmanager holds it for its
    resolve_timeout, so it is re-sent) or resolved (endsAt = when the incident resolved)."""
    base = base_url.rstrip("/")
    dashboard = f"{base}/#/host/{quote(incident.host, safe='')}"
    annotations = {
        "summary": incident.title,
        "description": incident.description or "",
        "incident_id": str(incident.id),
        "url": f"{base}/api/ml/incidents/{incident.id}",
        "dashboard": dashboard,
        **(extra or {}),
    }
    alert: dict[str, Any] = {
        "labels": alert_labels(incident),
        "annotations": annotations,
        "startsAt": _iso(incident.started_at),
        "generatorURL": dashboard,
    }
    if incident.status == "resolved":
        alert["endsAt"] = _iso(incident.resolved_at or incident.updated_at)
    return alert


def json_payload(incident: IncidentOut, analysis: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every field of the incident, timestamps as ISO 8601 UTC with a Z; ``event`` is
    ``incident``, or ``analysis`` for the follow-up that adds the ``analysis``."""
    out = incident.model_dump()
    for key in _TIMESTAMPS:
        if out[key] is not None:
            out[key] = _iso(out[key])
    if analysis is not None:
        out["event"] = "analysis"
        out["analysis"] = analysis
    return out

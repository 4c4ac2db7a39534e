"""Webhook bodies of a resolved incident: Alertmanager's resolved alert and plain JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.incidents.payloads import alertmanager_payload, json_payload
from shared.schemas.incidents import IncidentOut

STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RESOLVED = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)


def resolved_incident() -> IncidentOut:
    return IncidentOut(
        id=7,
        type="predicted_breach",
        severity="medium",
        status="resolved",
        host="db-1",
        metric=None,
        dedup_key="predicted_breach:db-1:disk_usage_percent",
        title="disk predicted to fill",
        details={"threshold": 90.0},
        started_at=STARTED,
        updated_at=RESOLVED,
        resolved_at=RESOLVED,
    )


def test_alertmanager_payload_of_a_resolved_incident() -> None:
    body = alertmanager_payload(resolved_incident())
    assert body["status"] == "resolved" and body["groupLabels"] == {"alertname": "predicted_breach"}
    [alert] = body["alerts"]
    assert alert["status"] == "resolved"
    assert alert["startsAt"] == "2024-05-01T12:00:00Z"
    assert alert["endsAt"] == "2024-05-01T12:30:15Z"
    assert "metric" not in alert["labels"]  # no metric, no label
    assert alert["annotations"] == {"summary": "disk predicted to fill", "description": ""}
    assert (
        alert["fingerprint"]
        == alertmanager_payload(resolved_incident())["alerts"][0]["fingerprint"]
    )


def test_json_payload_has_every_field_with_utc_timestamps() -> None:
    body = json_payload(resolved_incident())
    assert set(body) == set(IncidentOut.model_fields)
    assert body["resolved_at"] == "2024-05-01T12:30:15Z"
    assert body["notified_at"] is None
    assert body["details"] == {"threshold": 90.0}


ANALYSIS = {
    "id": 3,
    "summary": "disk_usage_percent climbed to 91.2",
    "cause": {"category": "disk_filling", "text": "disk usage kept growing"},
    "actions": [{"action": "rotate_logs", "parameters": {"host": "db-1"}, "reason": "logs"}],
    "confidence": 0.85,
    "provider": "rules",
    "fallback": False,
}


def test_the_follow_up_carries_the_analysis_in_both_formats() -> None:
    body = json_payload(resolved_incident(), ANALYSIS)
    notes = alertmanager_payload(resolved_incident(), ANALYSIS)["alerts"][0]["annotations"]
    assert body["event"] == "analysis" and body["analysis"] == ANALYSIS
    assert body["id"] == 7  # still the incident's own fields
    assert notes["analysis_summary"] == ANALYSIS["summary"]
    assert notes["analysis_cause"] == "disk_filling" and notes["analysis_provider"] == "rules"
    assert json.loads(notes["analysis_actions"])[0]["action"] == "rotate_logs"
    assert all(isinstance(v, str) for v in notes.values())

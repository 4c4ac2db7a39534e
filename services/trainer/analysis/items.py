"""Evidence items from the rows an evidence pack is read from, shared by both read paths
(``repository.read_pack``'s portable one and PostgreSQL's single-statement one in
``repository_pg``): each function takes a row as a tuple in the order its query selects.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from services.trainer.analysis.evidence import EvidenceItem, fig, iso, overlap, signature
from shared.clock import utc

SIMILAR_SCAN = 100  # latest incidents compared by signature
SIMILAR_KEEP = 3
MIN_SIMILARITY = 0.5
MODEL_CHANGES = timedelta(days=7)
FORECAST_AHEAD = timedelta(hours=24)
BREACHES = 5
FAILURES = 3
MODELS = 5
BREACH_LOOKBACK = timedelta(hours=24)
FEEDBACK_LEAD = timedelta(minutes=10)  # feedback on scores this long before a past incident
FEEDBACK_OPEN = timedelta(hours=1)  # ... and up to its resolve, or this long after an open one


def forecast_item(row: Sequence[Any]) -> EvidenceItem:
    """(metric, max yhat, max upper, first target, last target, generated at)."""
    metric, yhat, upper, first, last, generated = row
    return EvidenceItem(
        f"forecast:{metric}",
        "forecast",
        {
            "metric": metric,
            "peak_forecast": fig(float(yhat)),
            "peak_upper": fig(float(upper)),
            "from": iso(utc(first)),
            "to": iso(utc(last)),
            "generated_at": iso(utc(generated)),
        },
    )


def breach_item(row: Sequence[Any]) -> EvidenceItem:
    """(id, metric, details, status, started at) of a predicted_breach incident."""
    bid, metric, details, status, started = row
    d = details or {}
    return EvidenceItem(
        f"breach:{bid}",
        "predicted_breach",
        {
            "metric": metric,
            "status": status,
            "threshold": fig(d.get("threshold")),
            "probability": fig(d.get("probability")),
            "at": d.get("at"),
            "predicted_value": fig(d.get("predicted_value")),
            "raised_at": iso(utc(started)),
        },
    )


def failure_item(row: Sequence[Any]) -> EvidenceItem:
    """(id, timestamp, horizon minutes, probability, predicted type)."""
    fid, ts, horizon, prob, kind = row
    return EvidenceItem(
        f"failure:{fid}",
        "failure_prediction",
        {
            "at": iso(utc(ts)),
            "horizon_minutes": horizon,
            "failure_probability": fig(prob),
            "type": kind,
        },
    )


def model_item(row: Sequence[Any]) -> EvidenceItem:
    """(id, name, model type, version, status, metric, host, created at, activated at)."""
    mid, name, model_type, version, status, metric, _host, created, activated = row
    return EvidenceItem(
        f"model:{mid}",
        "model_change",
        {
            "model_id": mid,
            "name": name,
            "model_type": model_type,
            "version": version,
            "status": status,
            "metric": metric,
            "created_at": iso(utc(created)),
            "activated_at": iso(utc(activated)) if activated else None,
        },
    )


def candidate(row: Sequence[Any]) -> dict[str, Any]:
    """(id, host, type, metric, started at, resolved at, top metrics, resolution) of a past
    incident, as the dict similarity works on (only the used parts of its details)."""
    cid, host, kind, metric, started, resolved, top_metrics, resolution = row
    return {
        "id": cid,
        "host": host,
        "type": kind,
        "metric": metric,
        "started_at": utc(started),
        "resolved_at": utc(resolved) if resolved is not None else None,
        "details": {"top_metrics": top_metrics, "resolution": resolution},
    }


def most_similar(
    candidates: list[dict[str, Any]], names: set[str]
) -> list[tuple[float, dict[str, Any]]]:
    ranked = [(overlap(names, signature(c)), c) for c in candidates]
    ranked = [r for r in ranked if r[0] >= MIN_SIMILARITY]
    ranked.sort(key=lambda x: -x[0])  # stable: the most recent first among equals
    return ranked[:SIMILAR_KEEP]


def similar_item(
    sim: float,
    other: dict[str, Any],
    analyses: dict[int, tuple[Any, Any]],
    verdicts: dict[int, dict[str, int]],
) -> EvidenceItem:
    data: dict[str, Any] = {
        "incident_id": other["id"],
        "host": other["host"],
        "type": other["type"],
        "similarity": fig(sim),
        "metrics": sorted(signature(other)),
        "started_at": iso(other["started_at"]),
        "resolved_at": iso(other["resolved_at"]),
        "resolution": (other["details"] or {}).get("resolution"),
        "feedback": verdicts.get(other["id"], {}),
    }
    if other["id"] in analyses:
        data["analysis_category"], data["analysis_summary"] = analyses[other["id"]]
    return EvidenceItem(f"similar:{other['id']}", "similar_incident", data)

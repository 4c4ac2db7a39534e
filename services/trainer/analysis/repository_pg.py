"""PostgreSQL's path of ``read_pack``: the evidence pack in three statements on the asyncpg
connection (the incident; everything else about its window in one row of arrays; the similar
incidents' analyses and feedback) instead of ten SQLAlchemy queries, for the same pack
(``tests/trainer/analysis/test_pack_paths.py``; figures in bench/RESULTS.md, Issue 13).

Each part of the one-row statement is an ``ARRAY(SELECT ROW(...) ... ORDER BY ...)``: asyncpg
decodes it as a list of tuples (jsonb through the codec SQLAlchemy set on the connection), in
the column order of the portable path's query, so both paths share ``items``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from services.trainer.analysis.evidence import (
    EvidencePack,
    Samples,
    build_pack,
    incident_window,
    signature,
)
from services.trainer.analysis.items import (
    BREACH_LOOKBACK,
    BREACHES,
    FAILURES,
    FEEDBACK_LEAD,
    FEEDBACK_OPEN,
    FORECAST_AHEAD,
    MODEL_CHANGES,
    MODELS,
    SIMILAR_SCAN,
    breach_item,
    candidate,
    failure_item,
    forecast_item,
    model_item,
    most_similar,
    similar_item,
)
from shared.catalogue import METRIC_NAMES
from shared.db import row_dict
from shared.errors import NotFound

_METRICS = ", ".join(f'"{m}"' for m in METRIC_NAMES)

INCIDENT = "SELECT * FROM incidents WHERE id = $1"

# $1 host, $2 before start, $3 window start, $4 window end, $5 after end, $6 forecasts until,
# $7 breaches raised since, $8 model changes since, $9 incident id, $10 incident started at
WINDOW = f"""
SELECT
  ARRAY(
    SELECT ROW(extract(epoch FROM timestamp)::float8, {_METRICS})
    FROM metrics_history
    WHERE host = $1 AND timestamp >= $2 AND timestamp <= $5
    ORDER BY timestamp
  ) AS samples,
  sc.scores,
  sc.contributions,
  ARRAY(
    SELECT ROW(f.metric, max(f.yhat), max(f.yhat_upper), min(f.target_timestamp),
               max(f.target_timestamp), max(f.generated_at))
    FROM metric_forecasts f
    JOIN forecast_generations g
      ON g.host = f.host AND g.metric = f.metric AND g.generated_at = f.generated_at
    WHERE f.host = $1 AND f.target_timestamp >= $4 AND f.target_timestamp <= $6
    GROUP BY f.metric
    ORDER BY f.metric
  ) AS forecasts,
  ARRAY(
    SELECT ROW(id, metric, details, status, started_at)
    FROM incidents
    WHERE host = $1 AND type = 'predicted_breach' AND (status = 'open' OR started_at >= $7)
    ORDER BY started_at DESC
    LIMIT {BREACHES}
  ) AS breaches,
  ARRAY(
    SELECT ROW(id, timestamp, horizon_minutes, failure_probability, predicted_failure_type)
    FROM failure_predictions
    WHERE host = $1 AND timestamp <= $4
    ORDER BY timestamp DESC
    LIMIT {FAILURES}
  ) AS failures,
  ARRAY(
    SELECT ROW(id, name, model_type, version, status, metric, host, created_at, activated_at)
    FROM ml_models
    WHERE (host = $1 OR host IS NULL)
      AND coalesce(activated_at, created_at) >= $8
      AND coalesce(activated_at, created_at) <= $4
    ORDER BY coalesce(activated_at, created_at) DESC
    LIMIT {MODELS}
  ) AS models,
  (
    SELECT json_agg(
             json_build_array(id, host, type, metric, started_at, resolved_at,
                              details -> 'top_metrics', details -> 'resolution')
             ORDER BY started_at DESC, id DESC)
    FROM (
      SELECT * FROM incidents
      WHERE id != $9 AND started_at <= $10
      ORDER BY started_at DESC, id DESC
      LIMIT {SIMILAR_SCAN}
    ) AS recent
  ) AS candidates
FROM (
  -- the window's scores, and the per-metric readings of those during it as one JSON text
  SELECT
    array_agg(ROW(timestamp, score, threshold, is_anomaly) ORDER BY timestamp, id) AS scores,
    json_agg(contributions ORDER BY timestamp, id) FILTER (WHERE timestamp >= $3)
      AS contributions
  FROM anomaly_scores
  WHERE host = $1 AND timestamp >= $2 AND timestamp <= $4
) AS sc
"""

# $1 incident ids; $2 hosts, $3 from, $4 to (feedback on their scores)
SIMILAR = """
SELECT
  ARRAY(
    SELECT ROW(a.incident_id, a.category, a.summary)
    FROM llm_analyses a
    JOIN (
      SELECT incident_id, max(id) AS id FROM llm_analyses
      WHERE incident_id = ANY($1::bigint[]) GROUP BY incident_id
    ) latest ON latest.id = a.id
  ) AS analyses,
  ARRAY(
    SELECT ROW(c.id, s.feedback, count(*))
    FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[])
      AS c(id, host, lo, hi)
    JOIN anomaly_scores s
      ON s.host = c.host AND s.timestamp >= c.lo AND s.timestamp <= c.hi
     AND s.feedback IS NOT NULL
    GROUP BY c.id, s.feedback
    ORDER BY c.id, s.feedback
  ) AS verdicts
"""


def _samples(rows: list[tuple[Any, ...]]) -> Samples:
    # None (a missing metric) becomes NaN
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(METRIC_NAMES) + 1)
    return Samples(
        np.ascontiguousarray(table[:, 0]),
        {m: table[:, j + 1] for j, m in enumerate(METRIC_NAMES)},
    )


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


async def read_pack(driver: Any, incident_id: int, *, now: datetime) -> EvidencePack:
    """The pack of an incident on an asyncpg connection (``driver_connection``)."""
    found = await driver.fetchrow(INCIDENT, incident_id)
    if found is None:
        raise NotFound(f"incident {incident_id} not found")
    incident = row_dict(found)
    window = incident_window(incident, now=now)
    row = await driver.fetchrow(
        WINDOW,
        incident["host"],
        window.before_start,
        window.start,
        window.end,
        window.after_end,
        window.end + FORECAST_AHEAD,
        window.start - BREACH_LOOKBACK,
        window.end - MODEL_CHANGES,
        incident["id"],
        incident["started_at"],
    )
    readings = iter(row["contributions"] or ())
    scores = [
        {
            "timestamp": t,
            "score": s,
            "threshold": th,
            "is_anomaly": a,
            "contributions": next(readings) if t >= window.start else None,
        }
        for t, s, th, a in row["scores"] or ()
    ]
    forecasts = [forecast_item(r) for r in row["forecasts"]]
    forecasts += [breach_item(r) for r in row["breaches"]]
    forecasts += [failure_item(r) for r in row["failures"]]
    pack = build_pack(
        incident,
        samples=_samples(row["samples"]),
        scores=scores,
        forecasts=forecasts,
        models=[model_item(r) for r in row["models"]],
        now=now,
    )
    candidates = [
        candidate((cid, host, kind, metric, _ts(started), _ts(resolved), top, resolution))
        for cid, host, kind, metric, started, resolved, top, resolution in row["candidates"] or ()
    ]
    ranked = most_similar(candidates, signature(incident) | set(list(pack.metrics)[:3]))
    if not ranked:
        return pack
    others = [other for _sim, other in ranked]
    found_similar = await driver.fetchrow(
        SIMILAR,
        [o["id"] for o in others],
        [o["host"] for o in others],
        [o["started_at"] - FEEDBACK_LEAD for o in others],
        [o["resolved_at"] or o["started_at"] + FEEDBACK_OPEN for o in others],
    )
    analyses = {r[0]: (r[1], r[2]) for r in found_similar["analyses"]}
    verdicts: dict[int, dict[str, int]] = {}
    for incident_of, feedback, n in found_similar["verdicts"]:
        verdicts.setdefault(int(incident_of), {})[str(feedback)] = int(n)
    pack.items += [similar_item(sim, other, analyses, verdicts) for sim, other in ranked]
    return pack

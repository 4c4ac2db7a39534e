"""The evidence pack of an incident: what the analysts may say, each item with an id.

Usage: ``pack = build_pack(incident, samples=Samples(times, values), scores=[...], ...)``;
``pack.to_json()`` is what an LLM reads and what is stored with the analysis.

Summaries, not dumps: each metric's before / during / after figures and the points that matter
(its peak and when, the first crossing of its alert threshold); figures are rounded to 4
significant digits, so what an LLM copies from the pack matches it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shared.arrays import FloatArray
from shared.catalogue import METRICS_BY_NAME

BEFORE = timedelta(minutes=60)
AFTER = timedelta(minutes=60)
MAX_DURING = timedelta(hours=24)
SIGNIFICANT = 4


def fig(x: float | None) -> float | None:
    """A figure as the pack holds it: 4 significant digits, None for missing or not finite."""
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    digits = SIGNIFICANT - int(math.floor(math.log10(abs(x)))) - 1
    return float(round(x, max(digits, 0))) if digits > 0 else float(round(x, digits))


def iso(ts: datetime | float | None) -> str | None:
    """A time as the pack holds it: ISO 8601 UTC to the second, with a Z."""
    if ts is None:
        return None
    if isinstance(ts, float | int):
        ts = datetime.fromtimestamp(float(ts), UTC)
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return ts.replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    id: str
    kind: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, **self.data}


@dataclass(frozen=True, slots=True)
class Window:
    """The incident's stretch of time: before [start - 1 h, start), during, after."""

    start: datetime
    end: datetime
    resolved: bool

    @property
    def before_start(self) -> datetime:
        return self.start - BEFORE

    @property
    def after_end(self) -> datetime:
        return self.end + AFTER if self.resolved else self.end


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One metric around the incident; ``z`` and ``ratio`` compare its peak with before."""

    metric: str
    before_mean: float
    before_std: float
    during_mean: float
    during_min: float
    during_max: float
    peak: float  # the during value furthest from the before mean
    peak_at: float  # epoch seconds
    last: float
    slope_per_min: float
    trend_r: float  # correlation with time during (a steady climb is near 1)
    z: float
    ratio: float | None
    after_mean: float | None
    threshold: float | None
    crossed_at: float | None

    @property
    def change(self) -> float:
        return self.peak - self.before_mean

    def to_item(self) -> EvidenceItem:
        unit = METRICS_BY_NAME[self.metric].unit if self.metric in METRICS_BY_NAME else ""
        data: dict[str, Any] = {
            "metric": self.metric,
            "unit": unit,
            "before_mean": fig(self.before_mean),
            "during_mean": fig(self.during_mean),
            "during_min": fig(self.during_min),
            "during_max": fig(self.during_max),
            "peak": fig(self.peak),
            "peak_at": iso(self.peak_at),
            "last": fig(self.last),
            "change": fig(self.change),
            "ratio": fig(self.ratio),
            "slope_per_min": fig(self.slope_per_min),
            "z": fig(self.z),
        }
        if self.after_mean is not None:
            data["after_mean"] = fig(self.after_mean)
        if self.threshold is not None:
            data["threshold"] = fig(self.threshold)
            data["crossed_at"] = iso(self.crossed_at)
        return EvidenceItem(f"metric:{self.metric}", "metric", data)


@dataclass(slots=True)
class Samples:
    """A host's samples around the incident: epoch seconds and one array per metric."""

    times: FloatArray
    values: dict[str, FloatArray]


# Least spread a metric is judged against: a flat metric's first wiggle is not a 1000-sigma event.
def _scale(metric: str, before: FloatArray) -> float:
    std = float(np.std(before)) if before.size > 1 else 0.0
    m = METRICS_BY_NAME.get(metric)
    floor = 0.01  # SMD-style metrics, scaled to [0, 1]
    if m is not None:
        floor = 1.0 if m.is_percent else max(0.05 * abs(float(np.mean(before))), 1e-3)
        if metric == "error_rate":
            floor = 0.005
    return max(std, floor)


def summarize_metric(
    metric: str, times: FloatArray, values: FloatArray, window: Window
) -> MetricSummary | None:
    """Before / during / after figures of one metric; None without samples during."""
    ok = np.isfinite(values)
    t, v = times[ok], values[ok]
    b0, s, e = window.before_start.timestamp(), window.start.timestamp(), window.end.timestamp()
    before = v[(t >= b0) & (t < s)]
    in_during = (t >= s) & (t <= e)
    during, dt = v[in_during], t[in_during]
    if during.size == 0:
        return None
    if before.size == 0:
        before = during[:1]
    mean_b = float(np.mean(before))
    scale = _scale(metric, before)
    far = int(np.argmax(np.abs(during - mean_b)))
    peak = float(during[far])
    slope, r = 0.0, 0.0
    if during.size >= 3 and float(np.ptp(dt)) > 0:
        x = (dt - dt.mean()) / 60.0  # minutes
        y = during - during.mean()
        sxx, syy, sxy = float(x @ x), float(y @ y), float(x @ y)
        slope = sxy / sxx
        r = sxy / (sxx * syy) ** 0.5 if syy > 0 else 0.0
    after_mean = None
    if window.resolved:
        after = v[(t > e) & (t <= window.after_end.timestamp())]
        after_mean = float(np.mean(after)) if after.size else None
    m = METRICS_BY_NAME.get(metric)
    threshold = m.threshold if m is not None else None
    crossed = None
    if threshold is not None:
        over = np.flatnonzero(during >= threshold)
        crossed = float(dt[over[0]]) if over.size else None
    return MetricSummary(
        metric=metric,
        before_mean=mean_b,
        before_std=float(np.std(before)),
        during_mean=float(np.mean(during)),
        during_min=float(np.min(during)),
        during_max=float(np.max(during)),
        peak=peak,
        peak_at=float(dt[far]),
        last=float(during[-1]),
        slope_per_min=slope,
        trend_r=r,
        z=(peak - mean_b) / scale,
        ratio=peak / mean_b if abs(mean_b) > 1e-9 else None,
        after_mean=after_mean,
        threshold=threshold,
        crossed_at=crossed,
    )


@dataclass(slots=True)
class EvidencePack:
    """Everything an analysis may rest on, by id; ``metrics`` holds the typed summaries."""

    incident: dict[str, Any]
    window: Window
    items: list[EvidenceItem] = field(default_factory=list)
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    attribution: dict[str, float] = field(default_factory=dict)  # metric -> weight in top

    @property
    def host(self) -> str:
        return str(self.incident["host"])

    @property
    def ids(self) -> set[str]:
        return {i.id for i in self.items}

    def item(self, item_id: str) -> EvidenceItem | None:
        return next((i for i in self.items if i.id == item_id), None)

    def hosts(self) -> set[str]:
        """Hosts the pack speaks of: the incident's and those of similar incidents."""
        out = {self.host}
        out |= {str(i.data["host"]) for i in self.items if i.kind == "similar_incident"}
        return out

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "items": [i.to_json() for i in self.items]}


def incident_window(incident: Mapping[str, Any], *, now: datetime) -> Window:
    """From the first flagged sample (or the opening) to the resolve (or now), at most 24 h."""
    details = incident.get("details") or {}
    start: datetime = incident["started_at"]
    first = details.get("first_seen")
    if isinstance(first, str):
        try:
            start = min(start, datetime.fromisoformat(first))
        except ValueError:
            pass
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start
    resolved_at = incident.get("resolved_at")
    end: datetime = resolved_at or now
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end
    end = max(min(end, start + MAX_DURING), start)
    return Window(start=start, end=end, resolved=resolved_at is not None)


def _incident_item(incident: Mapping[str, Any], window: Window) -> EvidenceItem:
    details = incident.get("details") or {}
    data: dict[str, Any] = {
        "incident_id": incident["id"],
        "type": incident["type"],
        "severity": incident["severity"],
        "status": incident["status"],
        "host": incident["host"],
        "metric": incident.get("metric"),
        "title": incident["title"],
        "started_at": iso(incident["started_at"]),
        "window_start": iso(window.start),
        "window_end": iso(window.end),
        "resolved_at": iso(incident.get("resolved_at")),
        "duration_minutes": fig((window.end - window.start).total_seconds() / 60.0),
    }
    for key in ("threshold", "score", "peak_score", "consecutive", "probability", "at"):
        value = details.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            data[key] = fig(float(value))
        elif isinstance(value, str):
            data[key] = value
    if details.get("peak_at"):
        data["peak_at"] = details["peak_at"]
    if details.get("top_metrics"):
        data["top_metrics"] = [c.get("metric") for c in details["top_metrics"]]
    return EvidenceItem(f"incident:{incident['id']}", "incident", data)


def anomaly_items(
    scores: Sequence[Mapping[str, Any]], window: Window
) -> tuple[list[EvidenceItem], dict[str, float]]:
    """The host's anomaly likelihoods in the window and which metrics made them (from the
    stored per-metric readings), with the weight of each metric among the flagged scores."""
    during = [s for s in scores if s["timestamp"] >= window.start]
    if not during:
        return [], {}
    peak = max(during, key=lambda s: s["score"])
    flagged = [s for s in during if s["is_anomaly"]]
    items = [
        EvidenceItem(
            "anomaly:scores",
            "anomaly_scores",
            {
                "peak_score": fig(peak["score"]),
                "peak_at": iso(peak["timestamp"]),
                "threshold": fig(peak["threshold"]),
                "flagged": len(flagged),
                "scored": len(during),
                "first_flagged_at": iso(flagged[0]["timestamp"]) if flagged else None,
                "before_peak_score": fig(
                    max((s["score"] for s in scores if s["timestamp"] < window.start), default=0.0)
                ),
            },
        )
    ]
    weight: dict[str, float] = {}
    likelihood: dict[str, list[float]] = {}
    for s in flagged or during:
        for rank, c in enumerate(s.get("contributions") or []):
            name = c.get("metric")
            if not isinstance(name, str):
                continue
            weight[name] = weight.get(name, 0.0) + 1.0 / (rank + 1)
            lk = c.get("likelihood", c.get("share"))
            if isinstance(lk, int | float):
                likelihood.setdefault(name, []).append(float(lk))
    total = sum(weight.values()) or 1.0
    for name, w in sorted(weight.items(), key=lambda kv: -kv[1])[:5]:
        lks = likelihood.get(name, [])
        items.append(
            EvidenceItem(
                f"attribution:{name}",
                "attribution",
                {
                    "metric": name,
                    "weight": fig(w / total),
                    "max_likelihood": fig(max(lks)) if lks else None,
                },
            )
        )
    return items, {k: v / total for k, v in weight.items()}


def build_pack(
    incident: Mapping[str, Any],
    *,
    samples: Samples,
    scores: Sequence[Mapping[str, Any]] = (),
    forecasts: Sequence[EvidenceItem] = (),
    similar: Sequence[EvidenceItem] = (),
    models: Sequence[EvidenceItem] = (),
    now: datetime,
    max_metrics: int = 8,
) -> EvidencePack:
    """The pack of one incident from what the repository read (all plain data)."""
    window = incident_window(incident, now=now)
    pack = EvidencePack(incident=dict(incident), window=window)
    pack.items.append(_incident_item(incident, window))
    summaries = [
        s
        for name, v in samples.values.items()
        if (s := summarize_metric(name, samples.times, v, window)) is not None
    ]
    anomaly, pack.attribution = anomaly_items(scores, window)
    named = set(pack.attribution) | {incident.get("metric")}
    summaries.sort(key=lambda s: (s.metric not in named, -abs(s.z)))
    for s in summaries[:max_metrics]:
        pack.metrics[s.metric] = s
        pack.items.append(s.to_item())
    pack.items += anomaly
    pack.items += forecasts
    pack.items += similar
    pack.items += models
    return pack


def signature(incident: Mapping[str, Any]) -> set[str]:
    """The metrics an incident is about: its top metrics, else its metric."""
    details = incident.get("details") or {}
    names = {c.get("metric") for c in details.get("top_metrics") or [] if isinstance(c, dict)}
    if incident.get("metric"):
        names.add(incident["metric"])
    return {n for n in names if isinstance(n, str)}


def overlap(a: set[str], b: set[str]) -> float:
    """Shared metrics over the smaller signature: {cpu} and {cpu, p95, p99} overlap fully."""
    return len(a & b) / min(len(a), len(b)) if a and b else 0.0

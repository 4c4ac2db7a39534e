"""The rules analyst: deterministic, always available, a few milliseconds; the LLMs' fallback.

Usage: ``analysis = analyze(pack)`` for an ``EvidencePack``; every figure it writes is copied
from the pack, so its answer passes the grounding check.

The cause is the first rule that holds, most specific first: error storm, memory leak, disk
filling, CPU saturation, traffic surge, latency regression; else unknown (with the metric
that moved most; without samples during the incident, the detector's top metric or the
incident's own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.trainer.analysis.evidence import EvidencePack, MetricSummary, fig, iso
from shared.schemas.analysis import Action, ActionParameters, Analysis, Cause, Claim

VERSION = "rules-1"
SERVICE = "app"  # the service the remediation bot acts on when the pack names none
LATENCY = ("response_time_p95", "response_time_p99", "response_time_p50")
MEMORY = ("memory_usage_percent", "memory_usage_mb")


@dataclass(frozen=True, slots=True)
class Finding:
    category: str
    metric: str
    confidence: float


def _m(pack: EvidencePack, name: str) -> MetricSummary | None:
    return pack.metrics.get(name)


def _rises(s: MetricSummary | None, *, ratio: float, z: float = 4.0) -> bool:
    return s is not None and s.change > 0 and s.z >= z and (s.ratio or 0.0) >= ratio


def _error_storm(pack: EvidencePack) -> Finding | None:
    s = _m(pack, "error_rate")
    if s is not None and _rises(s, ratio=3.0) and s.peak >= 0.05:
        return Finding("error_storm", "error_rate", 0.9)
    return None


def _memory_leak(pack: EvidencePack) -> Finding | None:
    for name in MEMORY:
        s = _m(pack, name)
        if s is None:
            continue
        climbed = s.during_max - s.before_mean
        rel = climbed / s.before_mean if s.before_mean > 0 else 0.0
        if s.slope_per_min > 0 and s.trend_r >= 0.8 and rel >= 0.15:
            return Finding("memory_leak", "memory_usage_percent" if name in MEMORY else name, 0.85)
    return None


def _disk_filling(pack: EvidencePack) -> Finding | None:
    s = _m(pack, "disk_usage_percent")
    if s is None or s.slope_per_min <= 0:
        return None
    steady = s.trend_r >= 0.9 and s.during_max - s.before_mean >= 1.5
    if steady or s.change >= 5.0 or (s.threshold is not None and s.peak >= s.threshold):
        return Finding("disk_filling", "disk_usage_percent", 0.85)
    return None


def _cpu(pack: EvidencePack) -> Finding | None:
    s = _m(pack, "cpu_usage_percent")
    if s is None or s.change <= 0:
        return None
    if s.peak >= 85.0 or (s.change >= 30.0 and s.z >= 4):
        return Finding("cpu_saturation", "cpu_usage_percent", 0.85)
    if s.trend_r >= 0.8 and s.change >= 10.0 and s.z >= 4:  # climbing towards it
        return Finding("cpu_saturation", "cpu_usage_percent", 0.6)
    return None


def _traffic(pack: EvidencePack) -> Finding | None:
    if _rises(_m(pack, "active_requests"), ratio=1.8):
        return Finding("traffic_surge", "active_requests", 0.75)
    return None


def _latency(pack: EvidencePack) -> Finding | None:
    for name in LATENCY:
        if _rises(_m(pack, name), ratio=1.5):
            return Finding("latency_regression", name, 0.75)
    return None


RULES: tuple[Callable[[EvidencePack], Finding | None], ...] = (
    _error_storm,
    _memory_leak,
    _disk_filling,
    _cpu,
    _traffic,
    _latency,
)


def top_moved(pack: EvidencePack) -> str | None:
    """The metric furthest from its own before (in its spread before); the detector's
    attribution, which ranks worse on SMD's labelled events (bench/RESULTS.md), only without
    samples."""
    if not pack.metrics:
        return max(pack.attribution, key=lambda m: pack.attribution[m], default=None)
    return max(pack.metrics.values(), key=lambda s: abs(s.z)).metric


def classify(pack: EvidencePack) -> Finding:
    for rule in RULES:
        found = rule(pack)
        if found is not None:
            return found
    metric = top_moved(pack) or str(pack.incident.get("metric") or "")
    return Finding("unknown", metric, 0.3)


def _describe(s: MetricSummary) -> str:
    return f"{s.metric} went from {fig(s.before_mean)} before to {fig(s.peak)} at {iso(s.peak_at)}"


def _attribution_claim(metric: str, pack: EvidencePack) -> Claim | None:
    """What the detector's attribution says of ``metric``: "mostly" only when no attributed
    metric weighs as much, else the one that weighs most with ``metric``'s own weight."""
    attributed = [i for i in pack.items if i.kind == "attribution"]
    mine = next((i for i in attributed if i.data["metric"] == metric), None)
    if mine is None:
        return None
    weight = mine.data["weight"]
    rivals = [i for i in attributed if i is not mine and i.data["weight"] >= weight]
    if not rivals:
        text = f"the detector attributes the anomaly mostly to {metric} (weight {weight})"
        return Claim(text=text, evidence=[mine.id])
    top = max(rivals, key=lambda i: float(i.data["weight"]))
    if top.data["weight"] == weight:
        text = f"the detector weighs {metric} and {top.data['metric']} alike (weight {weight})"
    else:
        text = (
            f"the detector attributes the anomaly mostly to {top.data['metric']} "
            f"(weight {top.data['weight']}); {metric} weighs {weight}"
        )
    return Claim(text=text, evidence=[top.id, mine.id])


def _actions(f: Finding, pack: EvidencePack) -> list[Action]:
    host = pack.host
    service = str(pack.incident.get("details", {}).get("service") or SERVICE)

    def act(name: str, reason: str, **params: object) -> Action:
        return Action.model_validate(
            {"action": name, "parameters": ActionParameters(**params), "reason": reason}
        )

    severe = pack.incident.get("severity") in ("high", "critical")
    out: list[Action] = []
    if f.category == "error_storm":
        # no rollback: the pack holds no deployment of the application, and its model_change
        # items are versions of this product's own models (the anomaly detector, forecasters)
        out.append(
            act("restart_service", "errors are failing requests", host=host, service=service)
        )
    elif f.category == "memory_leak":
        out.append(act("restart_service", "frees the leaked memory", host=host, service=service))
    elif f.category == "disk_filling":
        out.append(act("rotate_logs", "logs are the usual filler", host=host))
        out.append(act("clear_cache", "caches hold disk space", host=host, service=service))
    elif f.category in ("cpu_saturation", "traffic_surge"):
        out.append(act("scale_out", "spreads the load", service=service, replicas=1))
    elif f.category == "latency_regression":
        out.append(
            act("clear_cache", "a cold or bad cache slows answers", host=host, service=service)
        )
    if severe or f.category == "unknown":
        out.append(
            act("page_human", "needs a person to judge", urgency="high" if severe else "low")
        )
    return out


def _unknown_text(metric: str, pack: EvidencePack) -> str:
    """The cause of an incident no rule fits, true to where ``classify`` took its metric:
    the one that moved most (described after it), else (no samples during the incident) the
    one the detector weighed most, else the incident's own (a predicted breach's)."""
    if metric in pack.metrics:
        return "no known pattern fits; the metric that moved most is named"
    if not metric:
        return "no known pattern fits, and without samples during it no metric is named"
    if metric in pack.attribution:
        return f"no known pattern fits; no samples during it, the detector weighed {metric} most"
    return f"no known pattern fits; no samples during it, the incident is about {metric}"


def analyze(pack: EvidencePack) -> Analysis:
    """The structured analysis of an incident from its evidence pack."""
    f = classify(pack)
    incident_id = f"incident:{pack.incident['id']}"
    claims: list[Claim] = []
    s = pack.metrics.get(f.metric)
    if s is not None:
        claims.append(Claim(text=_describe(s), evidence=[f"metric:{s.metric}"]))
    scores = pack.item("anomaly:scores")
    if scores is not None and scores.data.get("flagged"):
        claims.append(
            Claim(
                text=(
                    f"{scores.data['flagged']} samples were flagged, peak anomaly score "
                    f"{scores.data['peak_score']} at {scores.data['peak_at']}"
                ),
                evidence=["anomaly:scores"],
            )
        )
    attributed = _attribution_claim(f.metric, pack)
    if attributed is not None:
        claims.append(attributed)
    others = [
        m for m in pack.metrics.values() if m.metric != f.metric and abs(m.z) >= 4 and m.change
    ][:2]
    for m in others:
        claims.append(Claim(text=_describe(m), evidence=[f"metric:{m.metric}"]))
    similar = [i for i in pack.items if i.kind == "similar_incident"][:1]
    for item in similar:
        claims.append(
            Claim(
                text=f"a similar incident happened on {item.data['host']} at "
                f"{item.data['started_at']}",
                evidence=[item.id],
            )
        )
    if not claims:
        claims.append(Claim(text=str(pack.incident["title"]), evidence=[incident_id]))
    cause_text = {
        "error_storm": "errors jumped well above their usual rate",
        "memory_leak": "memory climbed steadily without coming back down",
        "disk_filling": "disk usage kept growing",
        "cpu_saturation": "CPU ran near its limit",
        "traffic_surge": "far more concurrent requests than usual",
        "latency_regression": "requests got slower while load and errors stayed usual",
        "unknown": _unknown_text(f.metric, pack),
    }[f.category]
    top = f" ({_describe(s)})" if s is not None else ""
    summary = f"{pack.incident['type']} on {pack.host}: {cause_text}{top}."
    return Analysis(
        summary=summary,
        cause=Cause(category=f.category, text=f"{cause_text}{top}"),
        claims=claims,
        actions=_actions(f, pack),
        confidence=f.confidence,
        top_metric=f.metric or None,
    )

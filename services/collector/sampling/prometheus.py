"""Application metrics from a Prometheus text-format endpoint: parsing, quantiles, rates.

Usage: `application_metrics(previous_snapshot, parse_prometheus_text(text, at=..., ...))`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass(slots=True)
class ScrapeSnapshot:
    """The cumulative values read from one scrape."""

    at: float
    active_requests: float | None = None
    errors_total: float | None = None
    # (upper bound, cumulative count) pairs, summed over every label set.
    latency_buckets: list[tuple[float, float]] = field(default_factory=list)


def parse_prometheus_text(
    text: str,
    *,
    active_metric: str,
    errors_metric: str,
    latency_metric: str,
    at: float,
    labels: Mapping[str, str] | None = None,
) -> ScrapeSnapshot:
    """Sum the gauge, the counter and the histogram buckets across their label sets.

    ``labels`` keeps only the series whose labels have these values; a series without one of
    the labels counts (``{"traffic": "serving"}`` leaves out the gateway's admin routes and
    keeps every series of an application that does not label its traffic).
    """
    wanted = dict(labels or {})

    def keep(sample_labels: Mapping[str, str]) -> bool:
        return all(sample_labels.get(k, v) == v for k, v in wanted.items())

    snapshot = ScrapeSnapshot(at=at)
    errors_base = errors_metric.removesuffix("_total")
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == active_metric:
            snapshot.active_requests = sum(s.value for s in family.samples if keep(s.labels))
        elif family.name in (errors_metric, errors_base):
            snapshot.errors_total = sum(
                s.value
                for s in family.samples
                if s.name in (errors_metric, errors_base) and keep(s.labels)
            )
        elif family.name == latency_metric:
            for s in family.samples:
                if s.name == f"{latency_metric}_bucket" and keep(s.labels):
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    snapshot.latency_buckets = sorted(buckets.items())
    return snapshot


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) buckets; None with no data."""
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def application_metrics(prev: ScrapeSnapshot, cur: ScrapeSnapshot) -> dict[str, float | None]:
    """Active requests, error rate (errors/s) and latency percentiles (ms) over the interval."""
    elapsed = max(cur.at - prev.at, 1e-9)
    out: dict[str, float | None] = {"active_requests": cur.active_requests}
    if cur.errors_total is not None:
        # A counter that went down means the target restarted: count from zero.
        base = prev.errors_total if prev.errors_total is not None else 0.0
        delta = cur.errors_total - base if cur.errors_total >= base else cur.errors_total
        out["error_rate"] = delta / elapsed
    else:
        out["error_rate"] = None
    prev_counts = dict(prev.latency_buckets)
    deltas = []
    reset = any(count < prev_counts.get(le, 0.0) for le, count in cur.latency_buckets)
    for le, count in cur.latency_buckets:
        deltas.append((le, count if reset else count - prev_counts.get(le, 0.0)))
    for name, q in (
        ("response_time_p50", 0.5),
        ("response_time_p95", 0.95),
        ("response_time_p99", 0.99),
    ):
        value = histogram_quantile(q, deltas)
        out[name] = None if value is None else value * 1000.0
    return out

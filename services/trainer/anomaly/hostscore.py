"""A host's score: its per-metric streaming detectors, joined by its own forest when it has one.

Usage (the scoring loop, in a thread)::

    cache = StreamCache(METRIC_NAMES, idle_seconds=1800, max_hosts=10_000)
    stream = cache.get(host) or cache.put(host, HostStream(METRIC_NAMES), now=time.time())
    batch = score_host(stream, times, values, forest=HostForest(det, history), threshold=0.9999)
    batch.scored[0].score, batch.scored[0].contributions, batch.late

The combined score is the largest of the per-metric likelihood, the forest's calibrated score
mapped onto the same scale (``forest_on_stream_scale``: the forest's own threshold lands on the
host's threshold) and the two layers' p-values joined by Fisher's method (``joint_likelihood``:
both layers unusual at once, neither past the threshold alone), so one threshold flags all
three; attribution always comes from the per-metric likelihoods (docs/anomaly-detection.md).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.history import RecentHistory
from services.trainer.anomaly.streaming import HostReading, HostStream, MetricReading
from services.trainer.anomaly.threshold import host_severity
from shared.arrays import FloatArray
from shared.catalogue import METRICS_BY_NAME
from shared.severity import Severity

TOP_METRICS = 3  # per-metric readings stored with each score


def forest_on_stream_scale(forest: float, forest_threshold: float, threshold: float) -> float:
    """The forest's calibrated score, mapped piecewise linearly so that 0, its own threshold
    and 1 land on 0, ``threshold`` and 1: above one threshold exactly when above the other."""
    forest = min(max(forest, 0.0), 1.0)
    if forest < forest_threshold:
        return forest * threshold / forest_threshold if forest_threshold > 0 else threshold
    if forest_threshold >= 1.0:
        return 1.0
    return threshold + (forest - forest_threshold) * (1.0 - threshold) / (1.0 - forest_threshold)


def joint_likelihood(stream: float, forest: float) -> float:
    """1 - Fisher's combined p of the two layers (p = 1 - likelihood, 1 - calibrated score):
    q (1 - ln q) with q the product; its threshold is the host's, as the layers' own are."""
    q = max(1.0 - stream, 0.0) * max(1.0 - min(max(forest, 0.0), 1.0), 0.0)
    if q <= 0.0:
        return 1.0
    return max(1.0 - q * (1.0 - math.log(q)), 0.0)


def combine(
    stream_score: float, forest: float | None, forest_threshold: float, threshold: float
) -> float:
    """The host's score: the per-metric likelihood, the forest's on the same scale, or the two
    joined (``joint_likelihood``), whichever is highest."""
    if forest is None or math.isnan(forest):  # no forest, or it abstains (a gap)
        return stream_score
    mapped = forest_on_stream_scale(forest, forest_threshold, threshold)
    return max(stream_score, mapped, joint_likelihood(stream_score, forest))


def combine_all(
    stream: FloatArray, forest: FloatArray, forest_threshold: float, threshold: float
) -> FloatArray:
    """``combine`` over rows (replays: the forest's budget, the benches)."""
    return np.array(
        [
            combine(s, f, forest_threshold, threshold)
            for s, f in zip(stream.tolist(), forest.tolist(), strict=True)
        ]
    )


def reading_dicts(metrics: Sequence[MetricReading], k: int = TOP_METRICS) -> list[dict[str, Any]]:
    """The ``k`` most unlikely metrics as stored and returned: value, expected, band, likelihood."""
    top = sorted(metrics, key=lambda m: m.surprise, reverse=True)[:k]
    return [
        {
            "metric": m.metric,
            "value": _finite(m.value),
            "expected": _finite(m.expected),
            **_band(m.metric, _finite(m.lower), _finite(m.upper)),
            "likelihood": _finite(m.likelihood),
        }
        for m in top
    ]


def _band(metric: str, lower: float, upper: float) -> dict[str, float]:
    """The band within what the metric can be: no negative latency, no CPU over 100 %."""
    known = METRICS_BY_NAME.get(metric)
    if known is not None and known.non_negative:
        lower, upper = max(lower, 0.0), max(upper, 0.0)
    if known is not None and known.is_percent:
        lower, upper = min(lower, 100.0), min(upper, 100.0)
    return {"lower": lower, "upper": upper}


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


@dataclass(slots=True)
class HostForest:
    """A host's active forest and its buffer of that host's recent samples."""

    det: AnomalyDetector
    history: RecentHistory
    columns: list[int]  # the forest's metrics, as indices into the stream's metrics
    threshold: float  # its fitted threshold, on its own scale


@dataclass(frozen=True, slots=True)
class ScoredSample:
    index: int  # position in the rows given to ``score_host``
    score: float
    stream_score: float
    forest_score: float | None
    is_anomaly: bool
    severity: Severity
    learning: bool  # every metric of the sample still in probation: raises nothing
    contributions: list[dict[str, Any]]


@dataclass(slots=True)
class HostBatch:
    scored: list[ScoredSample] = field(default_factory=list)
    late: int = 0  # late or duplicate samples, skipped


def score_host(
    stream: HostStream,
    times: FloatArray,
    values: FloatArray,
    *,
    forest: HostForest | None,
    threshold: float,
    severity_step: float = 1.0,
) -> HostBatch:
    """Score a host's new samples (epoch seconds; values in ``stream.metrics`` order, NaN =
    missing) in time order, learning from each; late ones are skipped and counted."""
    order = np.argsort(times, kind="stable")
    batch = HostBatch()
    readings: list[tuple[int, HostReading]] = []
    for i in order.tolist():
        # NaN (missing) is skipped by the detectors like None
        sample = dict(zip(stream.metrics, values[i].tolist(), strict=True))
        with stream.lock:  # predict reads the state on the event loop meanwhile
            reading = stream.update(float(times[i]), sample)
        if reading.accepted:
            readings.append((i, reading))
        else:
            batch.late += 1
    forest_scores: list[float | None] = [None] * len(readings)
    if forest is not None and readings:
        idx = [i for i, _ in readings]
        scores = forest.det.score_new(
            forest.history,
            times[idx],
            values[np.ix_(idx, forest.columns)],
            threshold=forest.threshold,
        )
        forest_scores = [None if math.isnan(s) else float(s) for s in scores.score.tolist()]
    for (i, reading), f in zip(readings, forest_scores, strict=True):
        f_threshold = forest.threshold if forest is not None else 1.0
        score = combine(reading.score, f, f_threshold, threshold)
        learning = bool(reading.metrics) and all(m.learning for m in reading.metrics)
        batch.scored.append(
            ScoredSample(
                index=i,
                score=score,
                stream_score=reading.score,
                forest_score=f,
                is_anomaly=score >= threshold,
                severity=host_severity(score, threshold, step=severity_step),
                learning=learning or not reading.metrics,
                contributions=reading_dicts(reading.metrics),
            )
        )
    return batch


@dataclass(slots=True)
class StreamCache:
    """The hosts' streaming detectors held in memory, least recently used first: which changed
    since the last save, and which may be dropped (their state is in the database): those idle
    for ``idle_seconds``, and the least recently used past ``max_hosts`` (0: no bound). A host
    whose state changed is never dropped before it is saved."""

    metrics: tuple[str, ...]
    idle_seconds: float
    max_hosts: int = 0
    streams: OrderedDict[str, HostStream] = field(default_factory=OrderedDict)
    seen: dict[str, float] = field(default_factory=dict)  # wall time of each host's last sample
    dirty: set[str] = field(default_factory=set)
    dropped: list[str] = field(default_factory=list)  # dropped past max_hosts, not yet reported
    evicted: int = 0

    def __len__(self) -> int:
        return len(self.streams)

    def get(self, host: str) -> HostStream | None:
        stream = self.streams.get(host)
        if stream is not None:
            self.streams.move_to_end(host)
        return stream

    def put(self, host: str, stream: HostStream, *, now: float) -> HostStream:
        self.streams[host] = stream
        self.streams.move_to_end(host)
        self.seen.setdefault(host, now)
        self._bound()
        return stream

    def touch(self, host: str, stream: HostStream, *, now: float) -> None:
        """The host's stream learned samples: it changed and it is not idle (held again if it
        was dropped meanwhile, so nothing it learned is lost before it is saved)."""
        self.streams[host] = stream
        self.streams.move_to_end(host)
        self.seen[host] = now
        self.dirty.add(host)

    def new_stream(self) -> HostStream:
        return HostStream(self.metrics)

    def take_dirty(self) -> dict[str, HostStream]:
        """The states to save now (and forget that they were dirty)."""
        out = {h: self.streams[h] for h in self.dirty if h in self.streams}
        self.dirty = set()
        return out

    def _bound(self) -> None:
        """Drop the least recently used saved hosts past ``max_hosts``."""
        excess = len(self.streams) - self.max_hosts
        if self.max_hosts <= 0 or excess <= 0:
            return
        gone = list(islice((h for h in self.streams if h not in self.dirty), excess))
        for host in gone:
            del self.streams[host]
            self.seen.pop(host, None)
        self.dropped += gone
        self.evicted += len(gone)

    def evict_idle(self, *, now: float) -> list[str]:
        """Drop the hosts idle past ``idle_seconds`` whose state is saved, and those past
        ``max_hosts``; the names of every host dropped since the last call."""
        self._bound()
        gone = [
            h
            for h, t in self.seen.items()
            if now - t >= self.idle_seconds and h not in self.dirty and h in self.streams
        ]
        for host in gone:
            del self.streams[host]
            del self.seen[host]
        self.evicted += len(gone)
        gone += self.dropped
        self.dropped = []
        return gone

"""Per-metric streaming anomaly detection: learns from a host's first sample, no training needed.

Usage::

    stream = HostStream(("cpu_usage_percent", "memory_usage_mb"))
    reading = stream.update(ts, {"cpu_usage_percent": 93.0, "memory_usage_mb": None})
    reading.score, reading.metrics[0].likelihood, reading.metrics[0].expected
    peek = stream.score(ts, values)            # same answer, learns nothing (predict)
    blob = stream.to_bytes(); HostStream.from_bytes(blob)   # persisted state

Each metric is watched through four views, each calibrated against that metric's own past
(see docs/anomaly-detection.md): the deviation from its recent level, the same deviation
averaged over a short time, the deviation from its usual value at this time of day, and a
value outside everything it has shown. Every window is measured in seconds, not rows, so
any sampling interval (1 s to 1 h, irregular, with gaps) means the same thing. A sample as
old as or older than the last one accepted is skipped and counted (``late``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import orjson

from services.trainer.anomaly.tails import DEV_CAP, N_BINS, bins, percentiles, tail_surprise
from shared.arrays import BoolArray, FloatArray

DAY = 86400.0
_N_VIEWS = 3  # level, short-term level, time of day (the range view needs no histogram)
MAX_SURPRISE = 30.0


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Time constants (seconds), probation and calibration of the per-metric detectors."""

    level_tau: float = 3 * 3600.0  # memory of the expected level
    scale_tau: float = DAY  # memory of the spread
    short_tau: float = 900.0  # a deviation averaged over about this long (level shifts)
    calibration_tau: float = 7 * DAY  # memory of how unusual each view has been
    profile_days: float = 1.0  # memory of the time-of-day profile, in days
    profile_bins: int = 96  # time-of-day bins (15 minutes)
    range_tau: float = 30 * DAY  # the range seen fades towards the level this slowly
    range_tolerance: float = 0.05  # beyond the range by this share of it: never seen
    never_seen: float = 8.0  # surprise (-log10 p) of a value outside the range seen
    clip: float = 8.0  # a sample moves level and spread by at most this many spreads
    refresh_every: int = 16  # samples between refreshes of the percentiles
    min_tail_octaves: float = 0.5  # the 90th to 99th percentile span is at least this (log2)
    band: float = 4.0  # the expected band: expected +- band spreads
    probation_s: float = 3600.0  # quiet for the first hour ...
    probation_n: int = 30  # ... and the first samples of each metric


@dataclass(frozen=True, slots=True)
class MetricReading:
    metric: str
    value: float
    expected: float
    lower: float
    upper: float
    likelihood: float  # 0..1: 1 - p of the most unusual view of this metric
    surprise: float  # -log10 p, unbounded above (ranking past likelihood's float limit)
    learning: bool  # still in probation: reported, raises nothing


@dataclass(frozen=True, slots=True)
class HostReading:
    timestamp: float
    score: float  # the host's likelihood: its most unusual metric, for the number of metrics
    surprise: float  # -log10 of the host's p
    metrics: list[MetricReading]
    accepted: bool  # False: late or duplicate, skipped (nothing learned or scored)

    def top(self, k: int = 3) -> list[MetricReading]:
        return sorted(self.metrics, key=lambda m: m.surprise, reverse=True)[:k]


def likelihood_of(surprise: float) -> float:
    return 1.0 - math.pow(10.0, -surprise)


def surprise_of(likelihood: float) -> float:
    return -math.log10(max(1.0 - likelihood, 10.0**-MAX_SURPRISE))


class _Step:
    """What one sample does to every metric, before it is (maybe) learned."""

    __slots__ = (
        "x",
        "seen",
        "first",
        "dt",
        "dev",
        "short",
        "bin",
        "season_ok",
        "season_dev",
        "surprise",
    )

    x: FloatArray
    seen: BoolArray
    first: BoolArray
    dt: FloatArray
    dev: FloatArray
    short: FloatArray
    bin: int
    season_ok: BoolArray
    season_dev: FloatArray
    surprise: FloatArray


@dataclass
class HostStream:
    """The per-metric detectors of one host, vectorised over its metrics."""

    metrics: tuple[str, ...]
    config: StreamConfig = field(default_factory=StreamConfig)
    late: int = 0
    last_ts: float = math.nan

    _ARRAYS: ClassVar[tuple[str, ...]] = (
        "n",
        "first_seen",
        "last_seen",
        "level",
        "spread",
        "short",
        "low",
        "high",
        "season_spread",
        "season_n",
    )
    _MATRICES: ClassVar[tuple[str, ...]] = ("profile", "calib", "quantiles")

    def __post_init__(self) -> None:
        m = len(self.metrics)
        self.index = {name: i for i, name in enumerate(self.metrics)}
        self.n: FloatArray = np.zeros(m)  # samples seen per metric
        self.first_seen: FloatArray = np.zeros(m)
        self.last_seen: FloatArray = np.zeros(m)
        self.level: FloatArray = np.zeros(m)
        self.spread: FloatArray = np.zeros(m)  # mean absolute deviation from the level
        self.short: FloatArray = np.zeros(m)  # deviation averaged over short_tau
        self.low: FloatArray = np.zeros(m)
        self.high: FloatArray = np.zeros(m)
        self.season_spread: FloatArray = np.zeros(m)
        self.season_n: FloatArray = np.zeros(m)
        self.profile: FloatArray = np.full((m, self.config.profile_bins), math.nan)
        self.calib: FloatArray = np.zeros((m, _N_VIEWS, N_BINS))
        # log2 of each view's 50th, 90th, 99th percentile and its weight, refreshed from
        # `calib` every `refresh_every` samples (scoring reads only these)
        self.quantiles: FloatArray = np.zeros((m, _N_VIEWS, 4))
        self.samples: int = 0
        self.refreshed_ts: float = math.nan

    # -- scoring -------------------------------------------------------------------

    def update(self, ts: float, values: Mapping[str, float | None]) -> HostReading:
        """Score one sample and learn from it."""
        return self._run(ts, values, learn=True)

    def score(self, ts: float, values: Mapping[str, float | None]) -> HostReading:
        """Score one sample as ``update`` would, without learning from it."""
        return self._run(ts, values, learn=False)

    def _run(self, ts: float, values: Mapping[str, float | None], *, learn: bool) -> HostReading:
        if not math.isnan(self.last_ts) and ts <= self.last_ts:
            if learn:
                self.late += 1
            return HostReading(ts, 0.0, 0.0, [], accepted=False)
        step = self._evaluate(ts, values)
        reading = self._reading(ts, step)
        if learn:
            self._learn(ts, step)
        return reading

    def _evaluate(self, ts: float, values: Mapping[str, float | None]) -> _Step:
        cfg = self.config
        s = _Step()
        x = np.full(len(self.metrics), math.nan)
        for name, v in values.items():
            i = self.index.get(name)
            if i is not None and v is not None and math.isfinite(v):
                x[i] = v
        known = self.n > 0
        s.x = x
        s.seen = x == x  # not NaN
        s.first = s.seen & ~known
        scored = s.seen & known
        s.dt = np.where(known, np.maximum(ts - self.last_seen, 0.0), 0.0)
        dev = np.abs(x - self.level) / self._scale()
        s.dev = np.where(scored, np.minimum(dev, DEV_CAP), 0.0)
        a_short = 1.0 - np.exp(-s.dt / cfg.short_tau)
        s.short = np.where(known, self.short + a_short * (s.dev - self.short), 0.0)
        s.bin = int((ts % DAY) / DAY * cfg.profile_bins)
        expected_now = self.profile[:, s.bin]
        s.season_ok = scored & (expected_now == expected_now) & (ts - self.first_seen > DAY)
        season_dev = np.abs(x - expected_now) / np.maximum(self.season_spread, self._floor())
        s.season_dev = np.where(s.season_ok, np.minimum(season_dev, DEV_CAP), 0.0)

        views = np.stack((s.dev, s.short, s.season_dev), axis=1)
        surprises = self._surprise(views)
        surprises[:, 2] *= s.season_ok & (self.season_n > cfg.probation_n)
        surprise = surprises.max(axis=1)
        width = self.high - self.low
        margin = cfg.range_tolerance * width
        outside = (self.n > 1) & (width > 0) & ((x > self.high + margin) | (x < self.low - margin))
        never = cfg.never_seen + np.minimum(s.dev, 100.0) / 10.0
        surprise = np.where(outside, np.maximum(surprise, never), surprise)
        s.surprise = np.where(scored, np.minimum(surprise, MAX_SURPRISE), 0.0)
        return s

    def _floor(self) -> FloatArray:
        return np.maximum(1e-6 * np.abs(self.level), 1e-9)

    def _scale(self) -> FloatArray:
        return np.maximum(self.spread, self._floor())

    def _surprise(self, views: FloatArray) -> FloatArray:
        return tail_surprise(
            self.quantiles, views, self.config.min_tail_octaves, self.config.probation_n
        )

    def _refresh(self, ts: float) -> None:
        """Fade the histograms for the time since the last refresh; recompute the percentiles."""
        if not math.isnan(self.refreshed_ts):
            self.calib *= math.exp(-max(ts - self.refreshed_ts, 0.0) / self.config.calibration_tau)
        self.refreshed_ts = ts
        self.quantiles = percentiles(self.calib)

    def _reading(self, ts: float, s: _Step) -> HostReading:
        cfg = self.config
        elapsed = np.where(self.n > 0, ts - self.first_seen, 0.0)
        learning = (self.n + 1 <= cfg.probation_n) | (elapsed < cfg.probation_s)
        active = s.seen & ~learning
        host_surprise = 0.0
        n_active = int(active.sum())
        if n_active:
            # the most unusual of m metrics: p * m (Bonferroni), so more metrics are not noisier
            host_surprise = max(0.0, float(s.surprise[active].max()) - math.log10(n_active))
        use_season = s.season_ok & (self.season_spread < self.spread)
        expected = np.where(s.first, s.x, np.where(use_season, self.profile[:, s.bin], self.level))
        half = cfg.band * np.where(use_season, self.season_spread, self.spread)
        xs, exp_l, half_l = s.x.tolist(), expected.tolist(), half.tolist()
        sur_l, act_l, learn_l = s.surprise.tolist(), active.tolist(), learning.tolist()
        readings = []
        for i in np.flatnonzero(s.seen).tolist():
            on = act_l[i]
            readings.append(
                MetricReading(
                    self.metrics[i],
                    xs[i],
                    exp_l[i],
                    exp_l[i] - half_l[i],
                    exp_l[i] + half_l[i],
                    likelihood_of(sur_l[i]) if on else 0.0,
                    sur_l[i] if on else 0.0,
                    learn_l[i],
                )
            )
        return HostReading(ts, likelihood_of(host_surprise), host_surprise, readings, True)

    def _learn(self, ts: float, s: _Step) -> None:
        cfg = self.config
        self.last_ts = ts
        seen, first, n, dt = s.seen, s.first, self.n, s.dt
        scale = self._scale()
        early = 1.0 / (n + 1.0)  # early on, memories are as long as the history, then fade

        # calibration: count this sample's deviations (faded in steps, at each refresh)
        counted = np.flatnonzero(seen & ~first)
        if len(counted):
            at = bins(np.stack((s.dev, s.short, s.season_dev), axis=1)[counted])
            self.calib[counted, 0, at[:, 0]] += 1.0
            self.calib[counted, 1, at[:, 1]] += 1.0
            season = np.flatnonzero(s.season_ok[counted])
            self.calib[counted[season], 2, at[season, 2]] += 1.0
        self.samples += 1
        if self.samples % cfg.refresh_every == 0 or self.samples <= cfg.probation_n:
            self._refresh(ts)

        # time-of-day profile and its spread
        col = self.profile[:, s.bin]
        has_col = seen & (col == col)
        a_season = np.maximum(1.0 - np.exp(-dt / cfg.scale_tau), 1.0 / (self.season_n + 1.0))
        err = np.abs(s.x - col)
        cap = cfg.clip * np.maximum(self.season_spread, self._floor())
        err = np.where(self.season_n > 0, np.minimum(err, cap), err)
        self.season_spread = np.where(
            has_col, self.season_spread + a_season * (err - self.season_spread), self.season_spread
        )
        self.season_n = self.season_n + has_col
        a_prof = min(1.0, 1.0 - math.exp(-cfg.profile_bins / (DAY * cfg.profile_days)))
        a_prof_dt = 1.0 - (1.0 - a_prof) ** dt
        self.profile[:, s.bin] = np.where(
            has_col, col + a_prof_dt * (s.x - col), np.where(seen, s.x, col)
        )

        # level and spread (a sample moves them by at most `clip` spreads)
        clipped = np.clip(s.x, self.level - cfg.clip * scale, self.level + cfg.clip * scale)
        xc = np.where(self.spread > self._floor(), clipped, s.x)
        d = np.where(seen, xc - self.level, 0.0)
        a_level = np.maximum(1.0 - np.exp(-dt / cfg.level_tau), early)
        a_spread = np.maximum(1.0 - np.exp(-dt / cfg.scale_tau), early)
        self.level = np.where(first, s.x, self.level + a_level * d)
        self.spread = np.where(
            seen & ~first, self.spread + a_spread * (np.abs(d) - self.spread), self.spread
        )
        self.short = np.where(seen, s.short, self.short)

        # the range seen, fading towards the level
        a_range = 1.0 - np.exp(-dt / cfg.range_tau)
        high = np.fmax(self.high - a_range * (self.high - self.level), s.x)
        low = np.fmin(self.low + a_range * (self.level - self.low), s.x)
        self.high = np.where(first, s.x, high)
        self.low = np.where(first, s.x, low)

        self.first_seen = np.where(first, ts, self.first_seen)
        self.last_seen = np.where(seen, ts, self.last_seen)
        self.n = n + seen

    # -- state -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state: a JSON header and the float64 arrays."""
        header = {
            "format": 1,
            "metrics": list(self.metrics),
            "config": {f.name: getattr(self.config, f.name) for f in fields(self.config)},
            "late": self.late,
            "last_ts": None if math.isnan(self.last_ts) else self.last_ts,
            "samples": self.samples,
            "refreshed_ts": None if math.isnan(self.refreshed_ts) else self.refreshed_ts,
        }
        head = orjson.dumps(header)
        names = self._ARRAYS + self._MATRICES
        body = b"".join(np.ascontiguousarray(getattr(self, a), "<f8").tobytes() for a in names)
        return struct.pack("<I", len(head)) + head + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> HostStream:
        (size,) = struct.unpack_from("<I", blob)
        header = orjson.loads(blob[4 : 4 + size])
        if header.get("format") != 1:
            raise ValueError(f"detector state format {header.get('format')!r} is not supported")
        stream = cls(tuple(header["metrics"]), StreamConfig(**header["config"]))
        stream.late = int(header["late"])
        stream.last_ts = math.nan if header["last_ts"] is None else float(header["last_ts"])
        stream.samples = int(header["samples"])
        refreshed = header["refreshed_ts"]
        stream.refreshed_ts = math.nan if refreshed is None else float(refreshed)
        offset = 4 + size
        for name in cls._ARRAYS + cls._MATRICES:
            current = getattr(stream, name)
            value = np.frombuffer(blob, "<f8", count=current.size, offset=offset)
            setattr(stream, name, value.reshape(current.shape).copy())
            offset += current.nbytes
        return stream

    def nbytes(self) -> int:
        """Memory held by the state's arrays."""
        return sum(getattr(self, a).nbytes for a in self._ARRAYS + self._MATRICES)

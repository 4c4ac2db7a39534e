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
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import orjson

from services.trainer.anomaly import kernel
from services.trainer.anomaly.kernel import DAY, MAX_SURPRISE, N_VIEWS
from services.trainer.anomaly.tails import N_BINS
from shared.arrays import FloatArray


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
    # the range view speaks once a metric has been seen for a day (a new host's first hours
    # hold no daily peak yet: its morning ramp would look "never seen")
    range_warmup: float = DAY
    # a view's surprise is never past what its own counts say for deviations seen at least
    # probation_n times (``tails.counted_surprise``); 0: the power-law tail alone
    counts_cap: float = 1.0
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


def config_vector(config: StreamConfig) -> FloatArray:
    """The config as the kernel reads it (kernel.CONFIG_FIELDS order)."""
    return np.array([float(getattr(config, f)) for f in kernel.CONFIG_FIELDS])


def likelihood_of(surprise: float) -> float:
    return 1.0 - math.pow(10.0, -surprise)


def surprise_of(likelihood: float) -> float:
    return -math.log10(max(1.0 - likelihood, 10.0**-MAX_SURPRISE))


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
        self.calib: FloatArray = np.zeros((m, N_VIEWS, N_BINS))
        # log2 of each view's 50th, 90th, 99th percentile and its weight, refreshed from
        # `calib` every `refresh_every` samples (scoring reads only these)
        self.quantiles: FloatArray = np.zeros((m, N_VIEWS, 4))
        self.samples: int = 0
        self.refreshed_ts: float = math.nan
        self._cfg = config_vector(self.config)
        # Held by whoever reads or changes the state while another thread may (the scoring
        # loop updates in a worker thread, predict reads on the event loop): one sample each.
        self.lock = threading.Lock()

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
        x = np.full(len(self.metrics), math.nan)
        for name, v in values.items():
            i = self.index.get(name)
            if i is not None and v is not None and math.isfinite(v):
                x[i] = v
        if learn:
            self.last_ts = ts
        counters = np.array([self.samples, self.refreshed_ts], dtype=np.float64)
        out = np.empty((len(self.metrics), kernel.N_OUT))
        host_surprise = kernel.step(
            x, float(ts), learn, self._cfg, self.n, self.first_seen, self.last_seen, self.level,
            self.spread, self.short, self.low, self.high, self.season_spread, self.season_n,
            self.profile, self.calib, self.quantiles, counters, out,
        )  # fmt: skip
        if learn:
            self.samples, self.refreshed_ts = int(counters[0]), float(counters[1])
        return self._reading(ts, x, out, host_surprise)

    def _reading(self, ts: float, x: FloatArray, out: FloatArray, host: float) -> HostReading:
        rows = out.tolist()
        xs = x.tolist()
        readings = []
        for i in np.flatnonzero(x == x).tolist():
            sur, expected, half, active, learning = rows[i]
            readings.append(
                MetricReading(
                    self.metrics[i],
                    xs[i],
                    expected,
                    expected - half,
                    expected + half,
                    likelihood_of(sur) if active else 0.0,
                    sur,
                    learning > 0.0,
                )
            )
        return HostReading(ts, likelihood_of(host), host, readings, True)

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

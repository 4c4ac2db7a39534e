"""Per-metric streaming anomaly detection: learns from a host's first sample, no training needed.

Usage::

    stream = HostStream(("cpu_usage_percent", "memory_usage_mb"))
    reading = stream.update(ts, {"cpu_usage_percent": 93.0, "memory_usage_mb": None})
    reading.score, reading.metrics[0].likelihood, reading.metrics[0].expected
    peek = stream.score(ts, values)            # same answer, learns nothing (predict)
    blob = stream.to_bytes(); HostStream.from_bytes(blob)   # persisted state

Every window is measured in seconds, not rows, so any sampling interval (1 s to 1 h,
irregular, with gaps) means the same thing. A sample older than or as old as the last
one accepted is skipped and counted (``late``), never raised on.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import orjson

from shared.arrays import FloatArray

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """Time constants (seconds) and probation of the per-metric detectors."""

    level_tau: float = 3 * 3600.0  # the expected level's memory
    scale_tau: float = 6 * 3600.0  # the spread's memory
    short_tau: float = 600.0  # how long a deviation is averaged before it counts
    score_tau: float = 24 * 3600.0  # memory of the distribution of raw scores
    probation_s: float = 3600.0  # quiet for the first hour ...
    probation_n: int = 30  # ... and the first samples
    clip: float = 6.0  # a sample moves the level by at most this many spreads
    band_z: float = 3.0  # the expected band: level +- band_z spreads


@dataclass(frozen=True, slots=True)
class MetricReading:
    metric: str
    value: float
    expected: float
    lower: float
    upper: float
    likelihood: float  # 0..1: how unlikely the recent behaviour is under what was learned
    learning: bool  # still in probation: likelihood is reported but raises nothing


@dataclass(frozen=True, slots=True)
class HostReading:
    timestamp: float
    score: float  # the host's likelihood: the largest of its metrics' (0 while all learn)
    metrics: list[MetricReading]
    accepted: bool  # False: late or duplicate, skipped (nothing learned or scored)

    def top(self, k: int = 3) -> list[MetricReading]:
        return sorted(self.metrics, key=lambda m: m.likelihood, reverse=True)[:k]


def _decay(dt: FloatArray | float, tau: float) -> FloatArray | float:
    return np.exp(-np.asarray(dt) / tau)


@dataclass
class HostStream:
    """The per-metric detectors of one host, vectorised over its metrics."""

    metrics: tuple[str, ...]
    config: StreamConfig = field(default_factory=StreamConfig)
    late: int = 0
    first_ts: float = math.nan
    last_ts: float = math.nan

    _STATE: ClassVar[tuple[str, ...]] = (
        "n",
        "last_seen",
        "level",
        "var",
        "short",
        "s_mean",
        "s_var",
    )

    def __post_init__(self) -> None:
        m = len(self.metrics)
        self.index = {name: i for i, name in enumerate(self.metrics)}
        self.n = np.zeros(m)
        self.last_seen = np.full(m, math.nan)
        self.level = np.zeros(m)
        self.var = np.zeros(m)
        self.short = np.zeros(m)
        self.s_mean = np.zeros(m)
        self.s_var = np.zeros(m)

    # -- scoring -------------------------------------------------------------------

    def update(self, ts: float, values: Mapping[str, float | None]) -> HostReading:
        """Score one sample and learn from it."""
        return self._step(ts, values, learn=True)

    def score(self, ts: float, values: Mapping[str, float | None]) -> HostReading:
        """Score one sample as ``update`` would, without learning from it."""
        return self._step(ts, values, learn=False)

    def _step(self, ts: float, values: Mapping[str, float | None], *, learn: bool) -> HostReading:
        if not math.isnan(self.last_ts) and ts <= self.last_ts:
            if learn:
                self.late += 1
            return HostReading(ts, 0.0, [], accepted=False)
        cfg = self.config
        x = np.full(len(self.metrics), math.nan)
        for name, v in values.items():
            i = self.index.get(name)
            if i is not None and v is not None and math.isfinite(v):
                x[i] = v
        seen = ~np.isnan(x)
        first = seen & (self.n == 0)
        dt = np.where(np.isnan(self.last_seen), 0.0, ts - self.last_seen)
        dt = np.maximum(dt, 0.0)

        level, var = self.level, self.var
        spread = np.sqrt(var)
        floor = np.maximum(1e-6 * np.abs(level), 1e-9)
        scale = np.maximum(spread, floor)
        dev = np.where(seen & ~first, np.abs(x - level) / scale, 0.0)
        # a series that has never moved: any change is a full deviation, no change none
        dev = np.where((spread <= floor) & (dev > 0), np.minimum(dev, 10.0), dev)
        raw = dev / (1.0 + dev)

        a_short = 1.0 - _decay(dt, cfg.short_tau)
        short = np.where(first, raw, self.short + a_short * (raw - self.short))
        s_std = np.sqrt(np.maximum(self.s_var, 1e-6))
        z = (short - self.s_mean) / s_std
        likelihood = 0.5 * (1.0 + _erf(z / _SQRT2))
        n_after = self.n + seen
        elapsed = np.where(np.isnan(self.last_seen), 0.0, ts - self.first_ts)
        learning = (n_after <= cfg.probation_n) | (elapsed < cfg.probation_s)
        likelihood = np.where(seen & ~learning, likelihood, 0.0)

        readings = []
        band = cfg.band_z * spread
        for i in np.flatnonzero(seen):
            exp_i = float(level[i]) if not first[i] else float(x[i])
            readings.append(
                MetricReading(
                    self.metrics[i],
                    float(x[i]),
                    exp_i,
                    exp_i - float(band[i]),
                    exp_i + float(band[i]),
                    float(likelihood[i]),
                    bool(learning[i]),
                )
            )
        host_score = float(likelihood.max()) if len(likelihood) else 0.0

        if learn:
            self._learn(ts, x, seen, first, dt, raw, short, scale)
        return HostReading(ts, host_score, readings, accepted=True)

    def _learn(
        self,
        ts: float,
        x: FloatArray,
        seen: np.ndarray,
        first: np.ndarray,
        dt: FloatArray,
        raw: FloatArray,
        short: FloatArray,
        scale: FloatArray,
    ) -> None:
        cfg = self.config
        if math.isnan(self.first_ts):
            self.first_ts = ts
        self.last_ts = ts
        # early on, the memories are as long as the history (a plain mean), then they fade
        n = self.n
        a_level = np.maximum(1.0 - _decay(dt, cfg.level_tau), 1.0 / (n + 1.0))
        a_var = np.maximum(1.0 - _decay(dt, cfg.scale_tau), 1.0 / (n + 1.0))
        a_score = np.maximum(1.0 - _decay(dt, cfg.score_tau), 1.0 / (n + 1.0))
        xc = np.clip(x, self.level - cfg.clip * scale, self.level + cfg.clip * scale)
        xc = np.where(first, x, xc)
        d = xc - self.level
        level = self.level + a_level * d
        var = (1.0 - a_var) * (self.var + a_var * d * d)
        s_d = short - self.s_mean
        s_mean = self.s_mean + a_score * s_d
        s_var = (1.0 - a_score) * (self.s_var + a_score * s_d * s_d)
        self.level = np.where(seen, level, self.level)
        self.var = np.where(seen & ~first, var, self.var)
        self.short = np.where(seen, short, self.short)
        self.s_mean = np.where(seen, s_mean, self.s_mean)
        self.s_var = np.where(seen, s_var, self.s_var)
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
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "arrays": list(self._STATE),
        }
        head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
        body = b"".join(
            np.ascontiguousarray(getattr(self, a), "<f8").tobytes() for a in self._STATE
        )
        return struct.pack("<I", len(head)) + head + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> HostStream:
        (size,) = struct.unpack_from("<I", blob)
        header = orjson.loads(blob[4 : 4 + size])
        if header.get("format") != 1:
            raise ValueError(f"detector state format {header.get('format')!r} is not supported")
        stream = cls(tuple(header["metrics"]), StreamConfig(**header["config"]))
        stream.late = int(header["late"])
        stream.first_ts = float(header["first_ts"]) if header["first_ts"] is not None else math.nan
        stream.last_ts = float(header["last_ts"]) if header["last_ts"] is not None else math.nan
        body = np.frombuffer(blob, "<f8", offset=4 + size).reshape(len(header["arrays"]), -1)
        for name, row in zip(header["arrays"], body, strict=True):
            setattr(stream, name, row.copy())
        return stream

    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in self._STATE) + 64 * len(self.metrics)


def _erf(x: FloatArray) -> FloatArray:
    from scipy.special import erf

    return np.asarray(erf(x), dtype=float)


def score_series(
    timestamps: Sequence[float] | FloatArray,
    values: FloatArray,
    metrics: Sequence[str],
    config: StreamConfig | None = None,
) -> FloatArray:
    """Host scores of a whole history, sample by sample, as the service scores it (causal)."""
    stream = HostStream(tuple(metrics), config or StreamConfig())
    out = np.zeros(len(values))
    for i, ts in enumerate(np.asarray(timestamps, dtype=float)):
        row = {m: float(v) for m, v in zip(metrics, values[i], strict=True)}
        out[i] = stream.update(float(ts), row).score
    return out

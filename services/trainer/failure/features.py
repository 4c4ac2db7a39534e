"""Look-back features of a host's recent samples, the same numbers in batch and one at a time.

Usage::

    fx = FeatureSpec.for_metrics(METRIC_NAMES, definition.conditions)
    X = batch_features(fx, times, values)                  # every row of a history (training)
    row = window_features(fx, recent_times, recent_values) # the last row only (prediction)
    describe(fx, j, row)   # "memory rising 0.60 %/min over 60 min, at its highest for 40 min"

Both paths run one compiled function per row (kernel.row_features), so they give the same
numbers. Windows are in seconds; ``times`` are epoch seconds, ascending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from services.trainer.failure import kernel
from services.trainer.failure.definition import Condition
from shared.arrays import FloatArray, IntArray
from shared.catalogue import METRICS_BY_NAME

ETA_CAP_MIN = kernel.ETA_CAP_MIN
BREACH_CAP_MIN = kernel.BREACH_CAP_MIN
# Metric names in words, for explanations; a metric not listed is named as it is.
WORDS: dict[str, str] = {
    "cpu_usage_percent": "CPU",
    "memory_usage_mb": "memory (MB)",
    "memory_usage_percent": "memory",
    "disk_usage_percent": "disk",
    "disk_io_read_mb": "disk reads",
    "disk_io_write_mb": "disk writes",
    "active_requests": "active requests",
    "error_rate": "error rate",
    "response_time_p50": "p50 latency",
    "response_time_p95": "p95 latency",
    "response_time_p99": "p99 latency",
    "cpu_rate_of_change": "CPU change",
    "memory_rate_of_change": "memory change",
    "error_rate_trend": "error rate change",
}
PER_METRIC = ("level", "mean_5m", "mean_15m", "mean_60m", "slope_15m", "slope_60m", "std_15m",
              "max_15m", "rising_for")  # fmt: skip
PER_CONDITION = ("distance", "eta")
BREACH_WINDOWS_MIN = (15, 60)
TIME = ("hour_sin", "hour_cos")


RELATIVE = {"level": "level_vs_60m", "mean_5m": "mean_5m_vs_60m", "mean_15m": "mean_15m_vs_60m",
            "max_15m": "max_15m_vs_60m"}  # fmt: skip


@dataclass(frozen=True)
class FeatureSpec:
    """Which metrics and condition lines the features look at; windows are fixed (minutes).

    Levels are features only for ``absolute`` metrics (by default the ones a failure condition
    watches); the others are seen relative to their own 60-minute mean, so a slow drift (a
    disk filling 0.1 % a day) cannot serve the model as a calendar of past failures.

    ``breach``: (metric, line) pairs; for each, the minutes the metric's 15- and 60-minute
    linear trends take to reach the line (what the forecaster's breach alert and the trend
    baseline ask). By default, for every metric a condition watches, its catalogue alert line
    and the levels of its conditions. A spec stored before these existed has none.
    """

    metrics: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()
    absolute: tuple[str, ...] = ()
    time_of_day: bool = True
    breach: tuple[tuple[str, float], ...] = ()

    @classmethod
    def for_metrics(
        cls,
        metrics: Sequence[str],
        conditions: Sequence[Condition] = (),
        *,
        absolute: Sequence[str] | None = None,
        time_of_day: bool = True,
        breach: Sequence[tuple[str, float]] | None = None,
    ) -> FeatureSpec:
        known = set(metrics)
        kept = tuple(c for c in conditions if c.metric in known)
        if absolute is None:
            absolute = [c.metric for c in kept]
        chosen = tuple(m for m in metrics if m in set(absolute))
        if breach is None:
            breach = default_breach_lines(kept)
        lines = tuple((str(m), float(v)) for m, v in breach if m in known)
        return cls(tuple(metrics), kept, chosen, time_of_day, lines)

    @property
    def lookback_s(self) -> float:
        return kernel.LOOKBACK_S

    @cached_property
    def compiled(self) -> tuple[IntArray, IntArray, FloatArray, IntArray, FloatArray, IntArray]:
        """What the kernel reads: relative flags, condition metric and level, breach metric
        and line; kept columns."""
        index = {name: i for i, name in enumerate(self.metrics)}
        absolute = set(self.absolute)
        relative = np.array([m not in absolute for m in self.metrics], dtype=np.int64)
        metric = np.array([index[c.metric] for c in self.conditions], dtype=np.int64)
        level = np.array([c.watch_level for c in self.conditions], dtype=np.float64)
        b_metric = np.array([index[m] for m, _ in self.breach], dtype=np.int64)
        b_level = np.array([v for _, v in self.breach], dtype=np.float64)
        n_all = (
            len(self.metrics) * len(PER_METRIC)
            + 2 * len(self.conditions)
            + len(BREACH_WINDOWS_MIN) * len(self.breach)
            + len(TIME)
        )
        dropped = {
            j * len(PER_METRIC) + PER_METRIC.index("mean_60m")
            for j in np.flatnonzero(relative).tolist()
        }
        if not self.time_of_day:
            dropped |= {n_all - 2, n_all - 1}
        columns = np.array([c for c in range(n_all) if c not in dropped], dtype=np.int64)
        return relative, metric, level, b_metric, b_level, columns

    @cached_property
    def names(self) -> list[str]:
        absolute = set(self.absolute)
        per_metric = [
            f"{m}:{k}" if m in absolute else f"{m}:{RELATIVE.get(k, k)}"
            for m in self.metrics
            for k in PER_METRIC
            if m in absolute or k != "mean_60m"
        ]
        return [
            *per_metric,
            *(f"{c.name}:{k}" for c in self.conditions for k in PER_CONDITION),
            *(f"{m}:{breach_kind(w, v)}" for m, v in self.breach for w in BREACH_WINDOWS_MIN),
            *(f"time:{k}" for k in TIME if self.time_of_day),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": list(self.metrics),
            "conditions": [asdict(c) for c in self.conditions],
            "absolute": list(self.absolute),
            "time_of_day": self.time_of_day,
            "breach": [[m, v] for m, v in self.breach],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        conditions = tuple(Condition(**c) for c in data["conditions"])
        absolute = tuple(str(m) for m in data["absolute"])
        metrics = tuple(str(m) for m in data["metrics"])
        breach = tuple((str(m), float(v)) for m, v in data.get("breach", ()))
        return cls(metrics, conditions, absolute, bool(data["time_of_day"]), breach)


def default_breach_lines(conditions: Sequence[Condition]) -> tuple[tuple[str, float], ...]:
    """Per metric a condition watches: its catalogue alert line and its conditions' levels."""
    lines: dict[str, set[float]] = {}
    for c in conditions:
        known = METRICS_BY_NAME.get(c.metric)
        chosen = lines.setdefault(c.metric, set())
        if known is not None and known.threshold is not None:
            chosen.add(float(known.threshold))
        chosen.add(float(c.watch_level))
    return tuple((m, v) for m, levels in lines.items() for v in sorted(levels))


def breach_kind(window_min: int, line: float) -> str:
    return f"eta_{window_min}m_to_{line:g}"


def window_features(spec: FeatureSpec, times: FloatArray, values: FloatArray) -> FloatArray:
    """Features of the last sample from the samples before it (at least its last hour).

    ``values`` (n, len(spec.metrics)). Older samples are ignored, so a caller may pass a
    longer history.
    """
    t = np.ascontiguousarray(times, dtype=np.float64)
    x = np.ascontiguousarray(values, dtype=np.float64)
    relative, cond_metric, cond_level, b_metric, b_level, columns = spec.compiled
    width = len(relative) * len(PER_METRIC) + 2 * len(cond_metric) + 2 * len(b_metric)
    out = np.empty(width + len(TIME))
    first = int(np.searchsorted(t, t[-1] - kernel.LOOKBACK_S, side="right"))
    kernel.row_features(
        t, x, first, len(t) - 1, relative, cond_metric, cond_level, b_metric, b_level, out
    )
    row: FloatArray = out[columns]
    return row


def batch_features(spec: FeatureSpec, times: FloatArray, values: FloatArray) -> FloatArray:
    """Features of every row of a history, each from the samples up to it (causal)."""
    t = np.ascontiguousarray(times, dtype=np.float64)
    x = np.ascontiguousarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape != (len(t), len(spec.metrics)):
        raise ValueError(f"values must be (len(times), {len(spec.metrics)}), got {x.shape}")
    relative, cond_metric, cond_level, b_metric, b_level, columns = spec.compiled
    out = np.empty((len(t), len(columns)))
    kernel.all_rows(t, x, relative, cond_metric, cond_level, b_metric, b_level, columns, out)
    return out


def features_at(
    spec: FeatureSpec, times: FloatArray, values: FloatArray, rows: IntArray
) -> FloatArray:
    """``batch_features(spec, times, values)[rows]`` without the other rows (``rows`` ascending)."""
    t = np.ascontiguousarray(times, dtype=np.float64)
    x = np.ascontiguousarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape != (len(t), len(spec.metrics)):
        raise ValueError(f"values must be (len(times), {len(spec.metrics)}), got {x.shape}")
    relative, cond_metric, cond_level, b_metric, b_level, columns = spec.compiled
    idx = np.ascontiguousarray(rows, dtype=np.int64)
    out = np.empty((len(idx), len(columns)))
    kernel.some_rows(t, x, idx, relative, cond_metric, cond_level, b_metric, b_level, columns, out)
    return out


def describe(spec: FeatureSpec, j: int, row: FloatArray) -> str:
    """Feature j of a row in the metric's words."""
    name = spec.names[j]
    subject, kind = name.split(":", 1)
    v = float(row[j])
    if subject == "time":
        hour = (np.degrees(np.arctan2(row[spec.names.index("time:hour_sin")],
                                      row[spec.names.index("time:hour_cos")])) % 360) / 15.0  # fmt: skip
        return f"time of day {int(hour):02d}:{int(round((hour % 1) * 60)) % 60:02d} UTC"
    if kind.startswith("eta_") and "_to_" in kind:
        span, line = kind[4:].split("_to_", 1)  # "eta_15m_to_90": "15m", "90"
        window = span.removesuffix("m")
        words, unit = _words(subject)
        target = f"{line}{unit}"
        if not np.isfinite(v):
            return f"{words}: no {window}-min trend towards {target}"
        if v <= 0:
            return f"{words} at or past {target} by its {window}-min trend"
        if v >= BREACH_CAP_MIN:
            return f"{words} not heading for {target} within {BREACH_CAP_MIN:.0f} min ({window}-min trend)"
        return f"{words} reaching {target} in {v:.0f} min at its {window}-min trend"
    if kind in PER_CONDITION:
        c = next(c for c in spec.conditions if c.name == subject)
        words, unit = _words(c.metric)
        if kind == "distance":
            if v <= 0:
                return f"{words} past the {c.name} line ({c.watch_level:g}{unit})"
            return f"{words} {_num(v)}{unit} below the {c.name} line ({c.watch_level:g}{unit})"
        if v <= 0:
            return f"{words} at or past the {c.name} line ({c.watch_level:g}{unit})"
        if v >= ETA_CAP_MIN:
            return f"{words} not heading for the {c.name} line"
        return f"{words} reaching the {c.name} line in {v:.0f} min at its 15-min trend"
    words, unit = _words(subject)
    if kind.endswith("_vs_60m"):
        what = {"level": "", "mean_5m": " over 5 min", "mean_15m": " over 15 min",
                "max_15m": " at its 15-min peak"}[kind[:-7]]  # fmt: skip
        way = "above" if v >= 0 else "below"
        return f"{words}{what} {_num(abs(v))}{unit} {way} its 60-min mean"
    if kind == "level":
        return f"{words} at {_num(v)}{unit}"
    if kind.startswith("mean_"):
        return f"{words} averaging {_num(v)}{unit} over {kind[5:-1]} min"
    if kind.startswith("slope_"):
        rising = row[spec.names.index(f"{subject}:rising_for")]
        way = "rising" if v >= 0 else "falling"
        text = f"{words} {way} {_num(abs(v))}{unit}/min over {kind[6:-1]} min"
        if v > 0 and np.isfinite(rising) and rising >= 5:
            text += f", at its highest for {rising:.0f} min"
        return text
    if kind == "std_15m":
        return f"{words} varying by {_num(v)}{unit} over 15 min"
    if kind == "max_15m":
        return f"{words} peaking at {_num(v)}{unit} in the last 15 min"
    return f"{words} at its highest for {v:.0f} min"


def _words(metric: str) -> tuple[str, str]:
    known = METRICS_BY_NAME.get(metric)
    unit = known.unit if known is not None else ""
    return WORDS.get(metric, metric), (" " + unit if unit and unit != "%" else unit)


def _num(v: float) -> str:
    if not np.isfinite(v):
        return "unknown"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"

"""The synthetic data generator: 1-minute samples of the 14 metrics with labelled incidents.

Usage: `df = SyntheticDataGenerator(seed=42).generate_full_training_set(days=30)`; the
scenarios and how their counts follow the spec's label shares: docs/synthetic.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shared.arrays import FloatArray, IntArray
from shared.catalogue import LABELS, METRIC_NAMES

MINUTES_PER_DAY = 1440
TOTAL_MEMORY_MB = 8192.0
LABEL_SHARES: dict[str, float] = {"cpu_spike": 0.075, "memory_leak": 0.04, "error_storm": 0.035}
MIN_GAP_MINUTES = 60
# Standard deviation of each metric's multiplicative noise.
NOISE_SCALES = {
    "cpu": 0.05,
    "memory": 0.02,
    "read": 0.08,
    "write": 0.08,
    "error": 0.1,
    "p50": 0.05,
    "p95": 0.05,
    "p99": 0.05,
}

CPU_BUILDUP = 60
CPU_PEAK = (10, 15)
CPU_REMEDIATION = (50.0, 35.0)
CPU_RECOVERY = 30
LEAK_GROWTH = (120, 240)
LEAK_SETTLE = 10
STORM_SPIKE = (5, 10)
STORM_RECOVERY = 15
STORM_PEAK_ERROR_RATE = 0.25


@dataclass(frozen=True, slots=True)
class _Kind:
    """Length model of one scenario: labelled = fixed + variable, then an unlabelled tail."""

    label: str
    fixed: int
    variable: tuple[int, int]
    tail: int
    code: int

    @property
    def mean_labelled(self) -> float:
        return self.fixed + sum(self.variable) / 2


KINDS = (
    _Kind(
        "cpu_spike",
        fixed=CPU_BUILDUP + len(CPU_REMEDIATION),
        variable=CPU_PEAK,
        tail=CPU_RECOVERY,
        code=0,
    ),
    _Kind("memory_leak", fixed=1, variable=LEAK_GROWTH, tail=LEAK_SETTLE, code=1),
    _Kind("error_storm", fixed=STORM_RECOVERY, variable=STORM_SPIKE, tail=0, code=2),
)


class _Events:
    """The scheduled events of one kind: start minute and random-length part of each."""

    def __init__(self, kind: _Kind, starts: IntArray, variable: IntArray) -> None:
        self.kind = kind
        self.starts = starts
        self.variable = variable

    def expand(self) -> tuple[IntArray, IntArray, IntArray]:
        """Per minute of every event's footprint: event index, minute within it, row position."""
        lengths = self.kind.fixed + self.variable + self.kind.tail
        index = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        offset = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(lengths) - lengths, lengths
        )
        return index, offset, self.starts[index] + offset


class SyntheticDataGenerator:
    """Labelled 1-minute metric samples for training; same seed and start, same data."""

    def __init__(self, seed: int | None = 42) -> None:
        self.seed = seed

    def generate_full_training_set(
        self, days: int = 30, *, start: datetime | None = None
    ) -> pd.DataFrame:
        """1,440 rows a day: 'timestamp' (UTC, 1-minute steps), the 14 metrics, 'label'.

        `start` defaults to the current UTC minute minus `days`, so the data ends now.
        """
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        if start is None:
            start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=days)
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        n = int(days) * MINUTES_PER_DAY
        rng = np.random.default_rng(self.seed)

        load = _load(start, n)
        noise = dict(
            zip(NOISE_SCALES, _noise(rng, n, np.array(list(NOISE_SCALES.values()))), strict=True)
        )
        cpu = (12.0 + 30.0 * load) * noise["cpu"]
        memory = (31.0 + 6.0 * load) * noise["memory"]
        disk = rng.uniform(40.0, 55.0) + 0.1 * np.arange(n) / MINUTES_PER_DAY
        disk = disk + 0.01 * rng.standard_normal(n)
        disk_read = (20.0 + 80.0 * load) * noise["read"]
        disk_write = (10.0 + 50.0 * load) * noise["write"]
        request_rate = 15.0 + 135.0 * load
        error_rate = (0.008 + 0.004 * load) * noise["error"]
        p50 = (40.0 + 40.0 * load) * noise["p50"]
        p95_ratio = 2.4 * noise["p95"]
        p99_ratio = 1.7 * noise["p99"]
        label_codes = np.zeros(n, dtype=np.int8)

        # Scenario multipliers of requests and latency (p50, p95, p99), 1 outside events.
        requests_factor = np.ones(n)
        latency = np.ones((3, n))

        spikes, leaks, storms = _schedule(rng, n)

        # CPU spike: buildup, peak, remediation labelled; recovery to the baseline is not.
        index, offset, pos = spikes.expand()
        peak_end = CPU_BUILDUP + spikes.variable[index]
        baseline = cpu[pos]
        start_level = cpu[spikes.starts][index]
        buildup = start_level + (85.0 - start_level) * (offset + 1) / CPU_BUILDUP
        peak = np.clip(90.0 + 2.5 * rng.standard_normal(len(pos)), 85.0, 95.0)
        step = np.clip(offset - peak_end, 0, len(CPU_REMEDIATION) - 1)
        remediation = np.asarray(CPU_REMEDIATION)[step]
        since = offset - peak_end - len(CPU_REMEDIATION)
        recovery = baseline + (CPU_REMEDIATION[-1] - baseline) * np.exp(-since / 8.0)
        spike_cpu = np.select(
            [offset < CPU_BUILDUP, offset < peak_end, since < 0],
            [buildup, peak, remediation + rng.standard_normal(len(pos))],
            recovery,
        )
        spike_cpu[offset < CPU_BUILDUP] += 1.5 * rng.standard_normal(
            int(np.count_nonzero(offset < CPU_BUILDUP))
        )
        cpu[pos] = spike_cpu
        surge = np.clip((spike_cpu - baseline) / (85.0 - baseline), 0.0, 1.0)
        requests_factor[pos] *= 1.0 + 1.5 * surge
        disk_read[pos] *= 1.0 + 0.5 * surge
        label_codes[pos[since < 0]] = LABELS.index("cpu_spike")

        # Memory leak: linear growth to 90 %, restart drops below the baseline, warm-up unlabelled.
        index, offset, pos = leaks.expand()
        growth = leaks.variable[index]
        start_level = memory[leaks.starts][index]
        leaked = start_level + (90.0 - start_level) * (offset + 1) / growth
        leaked += 0.15 * rng.standard_normal(len(pos))
        warm_up = memory[pos] - 2.0 * (1.0 - (offset - growth) / (LEAK_SETTLE + 1))
        memory[pos] = np.where(offset < growth, leaked, warm_up)
        pressure = np.where(offset < growth, (offset + 1) / growth, 0.0) ** 3
        cpu[pos] += 8.0 * pressure
        disk_read[pos] *= 1.0 + 1.5 * pressure
        latency[:, pos] *= 1.0 + np.outer([1.0, 2.0, 2.5], pressure)
        label_codes[pos[offset <= growth]] = LABELS.index("memory_leak")

        # Error storm: sudden jump to ~0.25 errors/s, linear recovery over 15 minutes, all labelled.
        index, offset, pos = storms.expand()
        spike_len = storms.variable[index]
        peak_rate = STORM_PEAK_ERROR_RATE * np.clip(
            np.exp(0.05 * rng.standard_normal(len(storms.starts))), 0.85, 1.15
        )
        level = peak_rate[index] * _noise(rng, len(pos), np.array([0.05]))[0]
        fading = np.clip(1.0 - (offset - spike_len + 1) / (STORM_RECOVERY + 1), 0.0, 1.0)
        storm_rate = np.where(offset < spike_len, level, error_rate[pos] + level * fading)
        storm_rate = np.maximum(storm_rate, error_rate[pos])
        intensity = (storm_rate - error_rate[pos]) / STORM_PEAK_ERROR_RATE
        error_rate[pos] = storm_rate
        cpu[pos] += 5.0 * intensity
        requests_factor[pos] *= 1.0 + 0.3 * intensity
        latency[:, pos] *= 1.0 + np.outer([1.5, 4.0, 6.0], intensity)
        label_codes[pos] = LABELS.index("error_storm")

        cpu = np.clip(cpu, 0.0, 100.0)
        memory = np.clip(memory, 0.0, 100.0)
        # Queueing: latency climbs steeply once CPU passes 60 %.
        queueing = 1.0 + 3.0 * np.clip((cpu - 60.0) / 35.0, 0.0, None) ** 2
        p50 = p50 * queueing * latency[0]
        p95 = p50 * p95_ratio * latency[1] / latency[0]
        p99 = p95 * p99_ratio * latency[2] / latency[1]
        active_requests = rng.poisson(request_rate * requests_factor).astype(np.int64)

        columns: dict[str, Any] = {
            "timestamp": pd.date_range(start=start, periods=n, freq="min"),
            "cpu_usage_percent": cpu,
            "memory_usage_mb": memory / 100.0 * TOTAL_MEMORY_MB,
            "memory_usage_percent": memory,
            "disk_usage_percent": np.clip(disk, 0.0, 100.0),
            "disk_io_read_mb": disk_read,
            "disk_io_write_mb": disk_write,
            "active_requests": active_requests,
            "error_rate": error_rate,
            "response_time_p50": p50,
            "response_time_p95": p95,
            "response_time_p99": p99,
            "cpu_rate_of_change": _per_minute_change(cpu),
            "memory_rate_of_change": _per_minute_change(memory),
            "error_rate_trend": _per_minute_change(error_rate),
            "label": np.asarray(LABELS, dtype=object)[label_codes],
        }
        return pd.DataFrame(columns, columns=["timestamp", *METRIC_NAMES, "label"])

    def save_to_database(
        self, df: pd.DataFrame, *, database_url: str | None = None, host: str = "synthetic"
    ) -> int:
        """Replace `host`'s rows in the df's time window with the df; returns rows stored.

        The spec's Python API; blocking (runs its own event loop), for scripts and notebooks.
        """
        from services.trainer.synthetic.service import save_to_database

        return save_to_database(df, database_url=database_url, host=host)


def label_distribution(df: pd.DataFrame) -> dict[str, int]:
    """Rows per label, every label in `shared.catalogue.LABELS` order (zero included)."""
    counts = df["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in LABELS}


def _load(start: datetime, n: int) -> FloatArray:
    """Load in [0.2, 1]: business hours 09-18 UTC high, weekend daytime about a third as busy."""
    minute_of_week = (
        start.weekday() * MINUTES_PER_DAY
        + start.hour * 60
        + start.minute
        + start.second / 60.0
        + np.arange(n, dtype=np.float64)
    )
    hour = (minute_of_week % MINUTES_PER_DAY) / 60.0
    weekend = (minute_of_week // MINUTES_PER_DAY) % 7 >= 5
    business = _sigmoid((hour - 8.5) / 0.6) * _sigmoid((18.5 - hour) / 0.6)
    return 0.2 + 0.8 * business * np.where(weekend, 0.35, 1.0)


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return result


def _noise(rng: np.random.Generator, n: int, scales: FloatArray) -> FloatArray:
    """Multiplicative noise around 1, one row per scale (its standard deviation), capped at 3 sigma.

    Mixes white noise with a drift interpolated between 15-minute knots, as real metrics wander.
    """
    step = 15
    knots = rng.standard_normal((len(scales), n // step + 2))
    minute = np.arange(n)
    knot, frac = minute // step, (minute % step) / step
    drift = knots[:, knot] * (1.0 - frac) + knots[:, knot + 1] * frac
    z = 0.8 * drift + 0.6 * rng.standard_normal((len(scales), n))
    result: FloatArray = 1.0 + scales[:, None] * np.clip(z, -3.0, 3.0)
    return result


def _per_minute_change(values: FloatArray) -> FloatArray:
    return np.diff(values, prepend=values[:1])


def _schedule(rng: np.random.Generator, n: int) -> tuple[_Events, _Events, _Events]:
    """Draw each kind's events and place them all at random without overlap."""
    codes: list[int] = []
    variables: list[int] = []
    for kind in KINDS:
        target = LABEL_SHARES[kind.label] * n
        count = max(1, round(target / kind.mean_labelled))
        low, high = kind.variable
        drawn = rng.integers(low, high + 1, size=count)
        # Nudge the random part so the labelled minutes meet the kind's share.
        nudge = round((target - count * kind.fixed - int(drawn.sum())) / count)
        drawn = np.clip(drawn + nudge, low, high)
        codes.extend([kind.code] * count)
        variables.extend(drawn.tolist())

    code = np.asarray(codes, dtype=np.int64)
    variable = np.asarray(variables, dtype=np.int64)
    fixed = np.asarray([k.fixed for k in KINDS], dtype=np.int64)
    tail = np.asarray([k.tail for k in KINDS], dtype=np.int64)
    footprint = fixed[code] + variable + tail[code] + MIN_GAP_MINUTES

    # Too short a horizon: drop events of the most frequent kind until the rest fit.
    while len(code) and int(footprint.sum()) + MIN_GAP_MINUTES > n:
        drop = np.flatnonzero(code == np.bincount(code).argmax())[-1]
        code, variable, footprint = (np.delete(a, drop) for a in (code, variable, footprint))

    order = rng.permutation(len(code))
    code, variable, footprint = code[order], variable[order], footprint[order]
    slack = n - int(footprint.sum()) - MIN_GAP_MINUTES
    cuts = np.sort(rng.integers(0, slack + 1, size=len(code)))
    extra_gap = np.diff(cuts, prepend=0)
    # Each footprint starts with its minimum gap, so the event itself begins after it.
    starts = np.cumsum(footprint + extra_gap) - footprint + MIN_GAP_MINUTES

    spikes, leaks, storms = (
        _Events(kind, starts[code == kind.code], variable[code == kind.code]) for kind in KINDS
    )
    return spikes, leaks, storms

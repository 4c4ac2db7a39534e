"""What a failure is: configurable conditions over a host's metrics, their onsets, and labels.

Usage::

    definition = FailureDefinition()                      # the defaults, see DEFAULT_CONDITIONS
    state = definition.state(times, values, metrics)      # per row: in a failure state?
    onsets = failure_onsets(times, state)                 # start times of failure states
    y, keep = horizon_labels(times, onsets, state, horizon_s=1800)

Every window is measured in seconds, not rows: a host sampled every 10 s or with gaps
means the same thing. ``times`` are epoch seconds, ascending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from shared.arrays import BoolArray, FloatArray

ConditionKind = Literal["above", "drop"]
HORIZONS_MIN: tuple[int, ...] = (15, 30, 60)


@dataclass(frozen=True, slots=True)
class Condition:
    """One way a host fails.

    ``above``: every sample of ``metric`` is at or above ``line`` for at least ``for_s``
    seconds (0: one sample suffices). ``drop``: ``metric`` falls by ``line`` or more within
    ``for_s`` seconds from a value at or above ``from_level`` (a restart: memory let go).
    """

    name: str
    metric: str
    kind: ConditionKind
    line: float
    for_s: float = 0.0
    from_level: float | None = None

    def describe(self) -> str:
        if self.kind == "drop":
            return (
                f"{self.name}: {self.metric} falls by {self.line:g} or more within "
                f"{self.for_s / 60:g} min from {self.from_level:g} or more"
            )
        held = f" on every sample for {self.for_s / 60:g} min" if self.for_s > 0 else ""
        return f"{self.name}: {self.metric} >= {self.line:g}{held}"

    @property
    def watch_level(self) -> float:
        """The level a host approaches before this condition: the line, or a drop's start."""
        if self.kind == "drop":
            return float(self.from_level if self.from_level is not None else self.line)
        return self.line


DEFAULT_CONDITIONS: tuple[Condition, ...] = (
    # The synthetic CPU spike's peak is clipped to 85-95 % for 10-15 minutes.
    Condition("cpu_saturated", "cpu_usage_percent", "above", 85.0, for_s=300.0),
    Condition("memory_exhausted", "memory_usage_percent", "above", 95.0),
    # The synthetic memory leak ends in a restart: ~90 % back to the baseline (~35 %).
    Condition("memory_restart", "memory_usage_percent", "drop", 20.0, 300.0, from_level=80.0),
    Condition("error_storm", "error_rate", "above", 0.1, for_s=120.0),
    Condition("latency_p95", "response_time_p95", "above", 2000.0, for_s=120.0),
)


@dataclass(frozen=True, slots=True)
class FailureDefinition:
    """A host is in a failure state while any condition holds; a failure is the state's onset.

    ``max_gap_s``: a gap between samples longer than this breaks an ``above`` run (nothing is
    known about the time between).
    """

    conditions: tuple[Condition, ...] = DEFAULT_CONDITIONS
    max_gap_s: float = 300.0
    horizons_min: tuple[int, ...] = field(default=HORIZONS_MIN)

    def __post_init__(self) -> None:
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"condition names must be unique, got {names}")
        for c in self.conditions:
            if c.kind == "drop" and (c.for_s <= 0 or c.from_level is None):
                raise ValueError(f"condition {c.name}: a drop needs for_s > 0 and from_level")
            if c.for_s < 0:
                raise ValueError(f"condition {c.name}: for_s must be >= 0, got {c.for_s}")
        if any(h <= 0 for h in self.horizons_min):
            raise ValueError(f"horizons must be positive minutes, got {self.horizons_min}")

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.metric for c in self.conditions))

    def describe(self) -> str:
        """The definition in words, as the model's evaluation shows it."""
        parts = "; ".join(c.describe() for c in self.conditions) or "(none: labelled states)"
        horizons = ", ".join(f"{h}" for h in self.horizons_min)
        return (
            f"A failure is the onset of a failure state (the first sample in the state after a "
            f"sample outside it). A host is in a failure state while any of these holds: {parts}. "
            f"Windows are in time; a gap over {self.max_gap_s / 60:g} min between samples breaks "
            f"a run. The label for horizon h (minutes: {horizons}) is 1 when an onset falls in "
            f"(t, t+h]; rows inside a failure state are not trained on."
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailureDefinition:
        return cls(
            conditions=tuple(Condition(**c) for c in data["conditions"]),
            max_gap_s=float(data["max_gap_s"]),
            horizons_min=tuple(int(h) for h in data["horizons_min"]),
        )

    def condition_states(
        self, times: FloatArray, values: FloatArray, metrics: Sequence[str]
    ) -> dict[str, BoolArray]:
        """Per condition, per row: does it hold? A metric the host lacks never holds."""
        t = np.asarray(times, dtype=np.float64)
        index = {m: i for i, m in enumerate(metrics)}
        out: dict[str, BoolArray] = {}
        for c in self.conditions:
            if c.metric not in index:
                out[c.name] = np.zeros(len(t), dtype=bool)
                continue
            v = np.asarray(values, dtype=np.float64)[:, index[c.metric]]
            if c.kind == "above":
                out[c.name] = _held_above(t, v, c.line, c.for_s, self.max_gap_s)
            else:
                out[c.name] = _dropped(t, v, c.line, c.for_s, float(c.from_level or 0.0))
        return out

    def state(self, times: FloatArray, values: FloatArray, metrics: Sequence[str]) -> BoolArray:
        states = self.condition_states(times, values, metrics)
        result = np.zeros(len(times), dtype=bool)
        for s in states.values():
            result |= s
        return result


def _held_above(t: FloatArray, v: FloatArray, line: float, for_s: float, gap: float) -> BoolArray:
    """Rows where the run of samples at or above ``line`` has lasted ``for_s`` seconds."""
    over = v >= line  # NaN is not over
    n = len(v)
    if n == 0:
        return over
    gap_before = np.concatenate(([True], np.diff(t) > gap))
    prev_over = np.concatenate(([False], over[:-1]))
    begins = over & (~prev_over | gap_before)
    # Each row's run began at the latest beginning at or before it.
    start_idx = np.maximum.accumulate(np.where(begins, np.arange(n), -1))
    held: BoolArray = over & (start_idx >= 0) & (t - t[np.maximum(start_idx, 0)] >= for_s)
    return held


def _dropped(t: FloatArray, v: FloatArray, drop: float, within_s: float, level: float) -> BoolArray:
    """Rows at least ``drop`` below a sample of the last ``within_s`` seconds that was >= level."""
    n = len(v)
    high = np.where(v >= level, v, -np.inf)
    first = np.searchsorted(t, t - within_s, side="left")
    # Windows are short (a few minutes of samples): a loop over the window length, vectorised
    # over the rows, is exact for irregular steps and linear in the data.
    width = int(np.max(np.arange(n) - first)) if n else 0
    best = np.full(n, -np.inf)
    for lag in range(1, width + 1):
        j = np.arange(n) - lag
        ok = j >= first
        best = np.where(ok, np.maximum(best, high[np.maximum(j, 0)]), best)
    out: BoolArray = np.isfinite(best) & (best - v >= drop)
    return out


def failure_onsets(times: FloatArray, state: BoolArray) -> FloatArray:
    """Times of the first row of each failure state that follows a row outside one.

    A history that begins in a failure state has no onset there: when it began is unknown.
    """
    s = np.asarray(state, dtype=bool)
    if len(s) < 2:
        return np.zeros(0)
    starts = np.flatnonzero(s[1:] & ~s[:-1]) + 1
    onsets: FloatArray = np.asarray(times, dtype=np.float64)[starts]
    return onsets


def state_from_events(n: int, events: Sequence[tuple[int, int]]) -> BoolArray:
    """A failure state from labelled events (first row, last row inclusive), e.g. SMD's."""
    state = np.zeros(n, dtype=bool)
    for start, end in events:
        state[start : end + 1] = True
    return state


def horizon_labels(
    times: FloatArray, onsets: FloatArray, state: BoolArray, *, horizon_s: float
) -> tuple[BoolArray, BoolArray]:
    """Per row: y (an onset falls in (t, t + horizon]) and whether the row is trainable.

    Not trainable: rows inside a failure state, and rows whose horizon runs past the history's
    end without an onset seen (the answer is not known yet).
    """
    t = np.asarray(times, dtype=np.float64)
    nxt = np.searchsorted(onsets, t, side="right")
    has_next = nxt < len(onsets)
    next_onset = np.where(has_next, onsets[np.minimum(nxt, max(len(onsets) - 1, 0))], np.inf)
    y: BoolArray = next_onset <= t + horizon_s
    known = y | (t + horizon_s <= (t[-1] if len(t) else 0.0))
    keep: BoolArray = known & ~np.asarray(state, dtype=bool)
    return y, keep

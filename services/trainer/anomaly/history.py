"""A host's recent samples and shift memory, for scoring new samples one at a time.

Usage: ``h = RecentHistory(fx); h.append({"cpu_usage_percent": 93.0}, ts); h.features()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from services.trainer.anomaly.features import FeatureExtractor, FeatureSet, to_epoch
from services.trainer.anomaly.featureset import since_gap
from shared.arrays import FloatArray, IntArray

HISTORY_MARGIN = 64  # samples a history keeps beyond the feature look-back
# A metric's shift is measured against at least the 2nd-largest of its hourly shift peaks over
# the last 24 hours (docs/anomaly-detection.md).
SHIFT_MEMORY_HOURS = 24
SHIFT_MEMORY_RANK = 2


class RecentHistory:
    """A bounded buffer of one host's recent samples for real-time feature extraction.

    Usage: ``h = RecentHistory(fx); h.append({"cpu_usage_percent": 93.0}, ts); h.features()``.
    Metrics missing from a sample are forward filled from earlier samples (then the
    training medians), exactly as in a batch.
    """

    def __init__(self, extractor: FeatureExtractor, capacity: int | None = None) -> None:
        self.extractor = extractor
        need = extractor.config.lookback + HISTORY_MARGIN
        self.capacity = max(capacity or 0, need)
        m = len(extractor.metrics)
        self._index = {name: i for i, name in enumerate(extractor.metrics)}
        # Double-length buffers so the live window is always one contiguous slice.
        self._times = np.zeros(2 * self.capacity, dtype=np.float64)
        self._values = np.full((2 * self.capacity, m), np.nan, dtype=np.float64)
        # The detector's raw score of each buffered row once computed (NaN: not yet), so a
        # smoothed score needs the forest for the new row only.
        self._scores = np.full(2 * self.capacity, np.nan, dtype=np.float64)
        self._start = 0
        self._len = 0
        # Hourly shift peaks of the rows already scored (kept by the detector), and how many
        # of the newest buffered rows have not been folded into it yet.
        self.memory = ShiftMemory(SHIFT_MEMORY_HOURS, m)
        self.unfolded = 0

    def __len__(self) -> int:
        return self._len

    def append(
        self, sample: Mapping[str, float], timestamp: datetime | pd.Timestamp | str | float
    ) -> None:
        row = np.full(len(self._index), np.nan)
        for name, value in sample.items():
            i = self._index.get(name)
            if i is not None and value is not None:
                row[i] = float(value)
        self.append_array(row, to_epoch(timestamp))

    def append_array(self, row: FloatArray, epoch_s: float) -> None:
        """Add one sample (values in ``extractor.metrics`` order, NaN = missing)."""
        if self._len and epoch_s < self._times[self._start + self._len - 1]:
            raise ValueError("samples must be appended in time order")
        if self._start + self._len == 2 * self.capacity:
            keep = self.capacity - 1
            src = slice(self._start + self._len - keep, self._start + self._len)
            self._times[:keep] = self._times[src]
            self._values[:keep] = self._values[src]
            self._scores[:keep] = self._scores[src]
            self._start, self._len = 0, keep
        end = self._start + self._len
        self._times[end] = epoch_s
        self._values[end] = row
        self._scores[end] = np.nan
        self._len += 1
        if self._len > self.capacity:
            self._start += self._len - self.capacity
            self._len = self.capacity
        self.unfolded = min(self.unfolded + 1, self._len)

    def copy(self) -> RecentHistory:
        """An independent copy (buffers and shift memory): score a sample without keeping it."""
        other = RecentHistory.__new__(RecentHistory)
        other.extractor = self.extractor
        other.capacity = self.capacity
        other._index = self._index
        other._times = self._times.copy()
        other._values = self._values.copy()
        other._scores = self._scores.copy()
        other._start, other._len = self._start, self._len
        memory = self.memory
        other.memory = ShiftMemory(
            memory.window, memory.metrics, memory.hours.copy(), memory.peaks.copy()
        )
        other.memory._cached = memory._cached  # read only: a fold replaces it, never edits it
        other.unfolded = self.unfolded
        return other

    def copy_until(self, epoch_s: float) -> RecentHistory:
        """A copy holding only the samples (and shift memory) up to ``epoch_s``."""
        times, values = self.arrays()
        copy = RecentHistory(self.extractor, capacity=self.capacity)
        keep = np.flatnonzero(times <= epoch_s)
        for i in keep:
            copy.append_array(values[i].copy(), float(times[i]))
        copy.scores()[:] = self.scores()[keep]
        copy.memory = self.memory.until(int(np.floor(epoch_s / 3600.0)))
        # Rows kept that were unfolded here stay unfolded in the copy.
        copy.unfolded = min(copy.unfolded, int(np.sum(keep >= self._len - self.unfolded)))
        return copy

    def extend(self, times: FloatArray, values: FloatArray) -> None:
        """Append time-ordered samples (values in ``extractor.metrics`` order), skipping any
        older than the newest one held."""
        for row, t in zip(values[-self.capacity :], times[-self.capacity :], strict=True):
            if self._len and t < self._times[self._start + self._len - 1]:
                continue
            self.append_array(row, float(t))

    def seed_with_medians(self, epoch_s: float) -> None:
        """A host with no samples yet: assume it sat at the training medians for the look-back,
        so a first sample far from normal shows as the level shift it is, not as a flat line."""
        fx = self.extractor
        step = fx.config.interval_s
        for k in range(fx.config.lookback + 1, 0, -1):
            self.append_array(fx.medians.copy(), epoch_s - k * step)

    def scores(self) -> FloatArray:
        """Raw scores of the buffered rows as set by the detector (a view; NaN = unknown)."""
        return self._scores[self._start : self._start + self._len]

    def arrays(self) -> tuple[FloatArray, FloatArray]:
        sl = slice(self._start, self._start + self._len)
        return self._times[sl], self._values[sl]

    def run_length(self, limit: int) -> int:
        """How many of the newest samples, at most ``limit``, follow the last gap longer than
        the features' look-back (as ``FeatureSet.run_index`` counts them)."""
        times, _ = self.arrays()
        cfg = self.extractor.config
        slots = cfg.slots(times[-limit - 1 :])
        gaps = np.flatnonzero(np.diff(slots) > cfg.lookback)
        return min(limit, len(slots) - 1 - int(gaps[-1])) if len(gaps) else min(limit, len(times))

    def features(self, rows: int = 1) -> FeatureSet:
        """Features of the last ``rows`` samples, computed from the buffered history."""
        if self._len == 0:
            raise ValueError("history is empty")
        times, values = self.arrays()
        cfg = self.extractor.config
        # The look-back in time, plus ``rows - 1`` earlier samples for the extra rows.
        start = max(0, self._len - rows)
        horizon = times[start] - (cfg.lookback + 1) * cfg.interval_s
        first = int(np.searchsorted(times, horizon, side="left"))
        # One sample before the horizon carries the forward-filled values into it.
        first = max(0, first - 1)
        tail = min(rows, self._len)
        # Whether a gap lies within ``lookback + smoothing`` of the rows: the whole buffer.
        gaps = since_gap(cfg.slots(times))[-tail:]
        return self.extractor.compute(times[first:], values[first:].copy(), tail=tail, gaps=gaps)


@dataclass(slots=True)
class ShiftMemory:
    """Hourly peaks of the absolute level shift of each metric over the last ``window`` hours.

    Usage: ``ref = memory.reference(hours, shift, rank); memory.fold(hours, shift)``.
    """

    window: int
    metrics: int
    hours: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    peaks: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    # The reference of the latest hour asked for: rows within one hour share it.
    _cached: tuple[int, int, FloatArray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.peaks.shape != (len(self.hours), self.metrics):
            self.peaks = np.zeros((len(self.hours), self.metrics))

    def reference(self, hours: IntArray, shift: FloatArray, rank: int) -> FloatArray:
        """Per row, the ``rank``-th largest hourly peak of the ``window`` hours before it,
        this memory counting as rows before ``hours`` (which must not precede it)."""
        if len(hours) and hours[0] == hours[-1]:
            # One hour: its reference depends only on the hours before it, which no later
            # fold changes, so it is computed once per hour (the real-time path).
            hour = int(hours[0])
            if self._cached is None or self._cached[:2] != (hour, rank):
                ref = trailing_peak(
                    np.append(self.hours, hour),
                    np.vstack([self.peaks, np.zeros((1, self.metrics))]),
                    window=self.window,
                    rank=rank,
                )[-1]
                self._cached = (hour, rank, ref)
            return np.tile(self._cached[2], (len(hours), 1))
        return trailing_peak(
            np.concatenate([self.hours, hours]),
            np.vstack([self.peaks, shift]),
            window=self.window,
            rank=rank,
        )[len(self.hours) :]

    def fold(self, hours: IntArray, shift: FloatArray) -> None:
        """Add rows (time-ordered, not before the memory) and forget hours out of the window."""
        if len(hours) == 0:
            return
        if len(self.hours) and hours[0] == hours[-1] == self.hours[-1]:
            np.maximum(self.peaks[-1], shift.max(axis=0), out=self.peaks[-1])  # same hour
            return
        all_hours = np.concatenate([self.hours, hours])
        uniq, first = np.unique(all_hours, return_index=True)
        peaks = np.maximum.reduceat(np.vstack([self.peaks, shift]), first, axis=0)
        keep = uniq >= uniq[-1] - self.window
        self.hours, self.peaks = uniq[keep], peaks[keep]
        if self._cached is not None and int(hours[0]) < self._cached[0]:
            self._cached = None  # an earlier hour changed (not in time order)

    def until(self, hour: int) -> ShiftMemory:
        keep = self.hours <= hour
        return ShiftMemory(self.window, self.metrics, self.hours[keep], self.peaks[keep].copy())


def trailing_peak(hours: IntArray, shift: FloatArray, *, window: int, rank: int) -> FloatArray:
    """Per row, the ``rank``-th largest of the hourly peaks (maxima) of ``shift`` over the
    ``window`` hours before the row's hour, per column; hours without rows count as 0.

    ``hours`` (epoch hour of each row) must be non-decreasing. The row's own hour is left
    out, so rows within one hour share their reference and a row never raises its own.
    """
    n, m = shift.shape
    if n == 0 or rank > window:
        return np.zeros((n, m))
    uniq, first = np.unique(hours, return_index=True)
    peaks = np.maximum.reduceat(shift, first, axis=0)  # (hours, m)
    u = len(uniq)
    lo = np.searchsorted(uniq, uniq - window, side="left")
    idx = lo[:, None] + np.arange(window, dtype=np.int64)[None, :]  # (hours, window)
    valid = idx < np.arange(u, dtype=np.int64)[:, None]  # earlier hours only
    gathered = np.where(valid[:, :, None], peaks[np.minimum(idx, u - 1)], 0.0)
    kth = np.partition(gathered, window - rank, axis=1)[:, window - rank]
    out: FloatArray = kth[np.searchsorted(uniq, hours)]
    return out


def causal_mean(x: FloatArray, k: int, run_index: IntArray | None = None) -> FloatArray:
    """Mean of each value and up to ``k - 1`` values before it in its run (``run_index``:
    rows before it since a gap longer than the look-back), summed left to right as
    ``score_sample`` sums them, so any tail gives the same figures."""
    if k <= 1:
        return x
    n = len(x)
    counts = np.minimum(np.arange(1, n + 1), k)
    if run_index is not None:
        counts = np.minimum(counts, run_index + 1)
    padded = np.concatenate([np.zeros(k - 1), x])
    # The oldest of the k slots first; slots outside a row's window add an exact 0.0.
    sums = np.where(counts >= k, padded[0:n], 0.0)
    for j in range(1, k):
        sums = sums + np.where(counts >= k - j, padded[j : j + n], 0.0)
    out: FloatArray = sums / counts.astype(np.float64)
    return out

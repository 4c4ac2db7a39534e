"""Causal features of metric samples for the anomaly detector (any set of metric columns).

Usage: ``fx = FeatureExtractor().fit(train_frame); feats = fx.transform(frame)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import maximum_filter1d, minimum_filter1d

from services.trainer.anomaly.epochs import epoch_seconds as epoch_seconds
from services.trainer.anomaly.epochs import frame_times as frame_times
from services.trainer.anomaly.epochs import to_epoch as to_epoch
from services.trainer.anomaly.featureset import FeatureSet as FeatureSet
from services.trainer.anomaly.featureset import since_gap
from shared.arrays import FloatArray, IntArray

NON_METRIC_COLUMNS = frozenset({"timestamp", "label", "host", "id", "is_anomaly"})
_QUANT = 1024.0  # fixed-point resolution of standardised values
_Z_CLIP = 1000.0  # keeps squared window sums inside int64
_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Which features to compute; windows and lags are in grid slots (minutes at 60 s)."""

    interval_s: float = 60.0
    mean_windows: tuple[int, ...] = (5,)
    std_windows: tuple[int, ...] = (15,)
    min_windows: tuple[int, ...] = ()
    max_windows: tuple[int, ...] = ()
    lags: tuple[int, ...] = (5, 30)
    # Deviation of the current level (the mean of the first mean window) from the mean of
    # the previous ``baseline_window`` slots: a level shift relative to the recent past.
    baseline_window: int = 60
    time_features: bool = True

    def slots(self, times: FloatArray) -> IntArray:
        """The grid slot of each time (epoch seconds): floor(time / interval)."""
        out: IntArray = np.floor(times / self.interval_s).astype(np.int64)
        return out

    @property
    def short_window(self) -> int:
        return self.mean_windows[0] if self.mean_windows else 1

    @property
    def lookback(self) -> int:
        """Slots of history a row's features need (the row itself excluded)."""
        spans = [
            *self.mean_windows,
            *self.std_windows,
            *self.min_windows,
            *self.max_windows,
            *self.lags,
            self.baseline_window + 1,
            self.short_window,
        ]
        return max(spans)

    def validate(self) -> None:
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")
        for name in ("mean_windows", "std_windows", "min_windows", "max_windows", "lags"):
            for w in getattr(self, name):
                if not 1 <= w <= 1440:
                    raise ValueError(f"{name} entries must lie in 1..1440, got {w}")
        if not 1 <= self.baseline_window <= 1440:
            raise ValueError("baseline_window must lie in 1..1440")


@dataclass
class FeatureExtractor:
    """Learns per-metric robust statistics and turns samples into causal features."""

    config: FeatureConfig = field(default_factory=FeatureConfig)
    metrics: tuple[str, ...] = ()
    medians: FloatArray = field(default_factory=lambda: np.zeros(0))
    scales: FloatArray = field(default_factory=lambda: np.zeros(0))

    # -- fitting -------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> FeatureExtractor:
        """Learn metric names, training medians and robust scales from a training frame."""
        self.config.validate()
        names = tuple(metrics) if metrics is not None else metric_columns(frame)
        if not names:
            raise ValueError("no metric columns to learn from")
        values = frame.reindex(columns=list(names)).to_numpy(dtype=np.float64, copy=True)
        medians = np.nanmedian(np.where(np.isfinite(values), values, np.nan), axis=0)
        if np.isnan(medians).any():
            empty = [n for n, m in zip(names, medians, strict=True) if np.isnan(m)]
            raise ValueError(f"metrics with no values in training data: {', '.join(empty)}")
        q1, q3 = np.nanpercentile(values, [25.0, 75.0], axis=0)
        iqr_scale = (q3 - q1) / 1.349
        std = np.nanstd(values, axis=0)
        scales = np.where(iqr_scale > 1e-12 * (1.0 + np.abs(medians)), iqr_scale, std)
        # Constant in training: infinite scale makes its standardised value 0.
        scales = np.where(scales > 1e-12 * (1.0 + np.abs(medians)), scales, np.inf)
        self.metrics = names
        self.medians = medians
        self.scales = scales
        return self

    @property
    def training_medians(self) -> dict[str, float]:
        return {m: float(v) for m, v in zip(self.metrics, self.medians, strict=True)}

    @property
    def feature_names(self) -> list[str]:
        cfg = self.config
        per_metric = ["z"]
        per_metric += [f"mean_{w}" for w in cfg.mean_windows]
        per_metric += [f"std_{w}" for w in cfg.std_windows]
        per_metric += [f"min_{w}" for w in cfg.min_windows]
        per_metric += [f"max_{w}" for w in cfg.max_windows]
        per_metric += [f"diff_{lag}" for lag in cfg.lags]
        per_metric += [f"dev_{cfg.baseline_window}"]
        names = [f"{m}:{k}" for k in per_metric for m in self.metrics]
        if cfg.time_features:
            names += ["hour_sin", "hour_cos", "dow_sin", "dow_cos"]
        return names

    # -- batch ---------------------------------------------------------------------

    def transform(self, frame: pd.DataFrame) -> FeatureSet:
        """Features of every row of a frame (a 'timestamp' column or a DatetimeIndex)."""
        times = frame_times(frame)
        values = frame.reindex(columns=list(self.metrics)).to_numpy(dtype=np.float64, copy=True)
        return self.transform_arrays(times, values)

    def transform_arrays(self, times: FloatArray, values: FloatArray) -> FeatureSet:
        """Features from epoch seconds ``times`` and raw ``values`` (rows, metrics; NaN = missing)."""
        n = len(times)
        if n == 0:
            raise ValueError("no samples")
        if values.shape != (n, len(self.metrics)):
            raise ValueError(f"values must have shape ({n}, {len(self.metrics)})")
        order: IntArray | None = None
        if n > 1 and bool(np.any(np.diff(times) < 0)):
            order = np.argsort(times, kind="stable").astype(np.int64)
            times, values = times[order], values[order]
        out = self.compute(times, values)
        if order is not None:
            inverse = np.empty_like(order)
            inverse[order] = np.arange(n, dtype=np.int64)
            out = out.take(inverse)
        return out

    # -- core ----------------------------------------------------------------------

    def compute(
        self,
        times: FloatArray,
        raw: FloatArray,
        *,
        tail: int | None = None,
        gaps: FloatArray | None = None,
    ) -> FeatureSet:
        """Features of the last ``tail`` rows (all rows by default) of a time-ordered run;
        the earlier rows serve only as their look-back.

        A gap longer than the look-back starts afresh: the rows after it are not compared
        with the rows before it (a host back after an outage is not judged against the last
        values it sent before, which may date from another time of day).
        """
        cfg = self.config
        n = raw.shape[0]
        slots = cfg.slots(times)
        first = 0 if tail is None else max(n - tail, 0)
        starts = np.flatnonzero(np.diff(slots) > cfg.lookback) + 1 if n > 1 else slots[:0]
        if starts.size == 0:
            out = self._compute_run(times, raw, slots, tail=tail)
        else:
            bounds = [0, *starts.tolist(), n]
            runs = [
                self._compute_run(times[a:b], raw[a:b], slots[a:b], tail=b - max(a, first))
                for a, b in itertools.pairwise(bounds)
                if b > first
            ]
            out = runs[0] if len(runs) == 1 else FeatureSet.concat(runs)
        # ``gaps``: the rows' ``since_gap`` read over more samples than these (a host's buffer)
        out.since_gap = since_gap(slots)[first:] if gaps is None else gaps
        return out

    def _compute_run(
        self, times: FloatArray, raw: FloatArray, slots: IntArray, *, tail: int | None
    ) -> FeatureSet:
        """``compute`` over a run with no gap longer than the look-back."""
        cfg = self.config
        n, m = raw.shape
        finite = np.isfinite(raw)
        all_finite = bool(finite.all())
        values = _forward_fill(raw if all_finite else np.where(finite, raw, np.nan), self.medians)

        # Standardise, clip and quantise; constant metrics have scale inf -> 0.
        z = (values - self.medians) / self.scales
        np.clip(z, -_Z_CLIP, _Z_CLIP, out=z)
        q = np.rint(z * _QUANT).astype(np.int64)
        if tail == 1 and bool(np.all(np.diff(slots) == 1)):
            return self._last_row(times[-1:], values[-1:], q, run_start=n - 1)

        # Dense grid of slots with long gaps shortened to the look-back.
        lookback = cfg.lookback
        steps = np.minimum(np.diff(slots), lookback) if n > 1 else np.zeros(0, dtype=np.int64)
        pos = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(steps)])
        grid = int(pos[-1]) + 1
        owner = np.searchsorted(pos, np.arange(grid, dtype=np.int64), side="right") - 1
        qd = q[owner]  # (grid, m): value in force at each slot (last sample wins)
        if tail == 1:  # one row (the real-time path) on an irregular grid: the same sums
            return self._last_row(times[-1:], values[-1:], qd, run_start=n - 1)

        c1 = np.zeros((grid + 1, m), dtype=np.int64)
        np.cumsum(qd, axis=0, out=c1[1:])
        c2 = np.zeros((grid + 1, m), dtype=np.int64)
        np.cumsum(qd * qd, axis=0, out=c2[1:])

        first = 0 if tail is None else max(n - tail, 0)
        if first:
            times, values, q = times[first:], values[first:], q[first:]
        p = pos[first:]  # grid position of each output row
        zq = q.astype(np.float64) / _QUANT
        parts: list[FloatArray] = [zq]

        def window(
            w: int, end: IntArray, squares: bool = False
        ) -> tuple[IntArray, IntArray | None, FloatArray]:
            # rows [end - w + 1, end] clipped at the grid start; end inclusive.
            lo = np.maximum(end - w + 1, 0)
            s1 = c1[end + 1] - c1[lo]
            s2 = c2[end + 1] - c2[lo] if squares else None
            cnt = (end + 1 - lo).astype(np.float64)[:, None]
            return s1, s2, cnt

        short_mean: FloatArray | None = None
        for w in cfg.mean_windows:
            s1, _, cnt = window(w, p)
            mean = s1.astype(np.float64) / cnt / _QUANT
            parts.append(mean)
            if short_mean is None:
                short_mean = mean
        if short_mean is None:
            short_mean = zq
        for w in cfg.std_windows:
            s1, s2, cnt = window(w, p, squares=True)
            assert s2 is not None
            icnt = cnt.astype(np.int64)
            num = (icnt * s2 - s1 * s1).astype(np.float64)
            parts.append(np.sqrt(np.maximum(num, 0.0)) / cnt / _QUANT)
        for w in cfg.min_windows:
            parts.append(_causal_filter(qd, w, minimum_filter1d)[p].astype(np.float64) / _QUANT)
        for w in cfg.max_windows:
            parts.append(_causal_filter(qd, w, maximum_filter1d)[p].astype(np.float64) / _QUANT)
        for lag in cfg.lags:
            parts.append((q - qd[np.maximum(p - lag, 0)]).astype(np.float64) / _QUANT)

        # Baseline: mean of the previous ``baseline_window`` slots (current slot excluded,
        # clipped at the grid start).
        prev_end = p - 1
        s1, _, cnt = window(cfg.baseline_window, np.maximum(prev_end, 0))
        base = s1.astype(np.float64) / cnt / _QUANT
        baseline = np.where((prev_end >= 0)[:, None], base, zq)
        deviation = short_mean - baseline
        return self._finish(
            parts,
            zq=zq,
            deviation=deviation,
            baseline=baseline,
            times=times,
            values=values,
            run_start=first,
        )

    def _last_row(
        self, time: FloatArray, value: FloatArray, q: IntArray, *, run_start: int
    ) -> FeatureSet:
        """``compute`` for the last row of a run (the real-time path), from ``q``: the
        quantised values in force at each slot of the run's grid (the rows themselves when
        they are one slot apart). The same integer window sums and the same float
        operations, taken over slices instead of prefix sums, so the result is identical."""
        cfg = self.config
        p = len(q) - 1  # grid position of the last row
        zq = q[-1:].astype(np.float64) / _QUANT
        parts: list[FloatArray] = [zq]

        def window(w: int, end: int) -> tuple[IntArray, FloatArray]:
            lo = max(end - w + 1, 0)
            block = q[lo : end + 1]
            return block, np.array([[float(end + 1 - lo)]])

        short_mean: FloatArray | None = None
        for w in cfg.mean_windows:
            block, cnt = window(w, p)
            mean = block.sum(axis=0, keepdims=True).astype(np.float64) / cnt / _QUANT
            parts.append(mean)
            if short_mean is None:
                short_mean = mean
        for w in cfg.std_windows:
            block, cnt = window(w, p)
            s1 = block.sum(axis=0, keepdims=True)
            s2 = (block * block).sum(axis=0, keepdims=True)
            num = (cnt.astype(np.int64) * s2 - s1 * s1).astype(np.float64)
            parts.append(np.sqrt(np.maximum(num, 0.0)) / cnt / _QUANT)
        for w in cfg.min_windows:
            block, _ = window(w, p)
            parts.append(block.min(axis=0, keepdims=True).astype(np.float64) / _QUANT)
        for w in cfg.max_windows:
            block, _ = window(w, p)
            parts.append(block.max(axis=0, keepdims=True).astype(np.float64) / _QUANT)
        for lag in cfg.lags:
            parts.append((q[-1:] - q[max(p - lag, 0)]).astype(np.float64) / _QUANT)
        if p > 0:
            block, cnt = window(cfg.baseline_window, p - 1)
            baseline = block.sum(axis=0, keepdims=True).astype(np.float64) / cnt / _QUANT
        else:
            baseline = zq
        deviation = (zq if short_mean is None else short_mean) - baseline
        return self._finish(
            parts,
            zq=zq,
            deviation=deviation,
            baseline=baseline,
            times=time,
            values=value,
            run_start=run_start,
        )

    def _finish(
        self,
        parts: list[FloatArray],
        *,
        zq: FloatArray,
        deviation: FloatArray,
        baseline: FloatArray,
        times: FloatArray,
        values: FloatArray,
        run_start: int,
    ) -> FeatureSet:
        """The feature set from the per-metric blocks: the deviation and time features last.
        ``run_start``: how many rows of the same run come before the first one."""
        parts.append(deviation)
        if self.config.time_features:
            day_frac = np.mod(times, _SECONDS_PER_DAY) / _SECONDS_PER_DAY
            dow = np.mod(np.floor(times / _SECONDS_PER_DAY) + 3.0, 7.0) / 7.0  # Monday = 0
            angles = (2 * np.pi * day_frac, 2 * np.pi * dow)
            parts.append(
                np.column_stack(
                    [np.sin(angles[0]), np.cos(angles[0]), np.sin(angles[1]), np.cos(angles[1])]
                )
            )
        return FeatureSet(
            matrix=np.hstack(parts),
            z=zq,
            deviation=deviation,
            baseline=baseline,
            values=values,
            hour=np.floor(times / 3600.0).astype(np.int64),
            run_index=run_start + np.arange(len(times), dtype=np.int64),
            since_gap=np.full(len(times), np.inf),  # ``compute`` sets it from every sample
        )


def metric_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The numeric columns of a frame that are metrics (not timestamp, label, host...)."""
    return tuple(
        str(c)
        for c in frame.columns
        if str(c) not in NON_METRIC_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
    )


def _forward_fill(values: FloatArray, fallback: FloatArray) -> FloatArray:
    """Forward fill NaN down each column; leading NaN take ``fallback``."""
    mask = np.isnan(values)
    if not mask.any():
        return values
    n = values.shape[0]
    idx = np.where(~mask, np.arange(n)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    cols = np.arange(values.shape[1])[None, :]
    filled = values[np.maximum(idx, 0), cols]
    return np.where(idx >= 0, filled, fallback[None, :])


def _causal_filter(qd: IntArray, w: int, fn: Any) -> IntArray:
    """Min or max over the window [i - w + 1, i] (clipped at the start) of each column."""
    if w == 1:
        return qd
    # The filter is centred at size // 2 + origin; shift it to end at the current row.
    origin = (w - 1) // 2
    padded = np.concatenate([np.repeat(qd[:1], w - 1, axis=0), qd], axis=0)
    out: IntArray = fn(padded, size=w, axis=0, origin=origin, mode="nearest")
    return out[w - 1 :]

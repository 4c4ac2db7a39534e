"""Causal feature extraction for anomaly detection over any set of metric columns.

Usage: ``fx = FeatureExtractor().fit(train_frame); feats = fx.transform(frame)``.

Every row's features depend only on that row and earlier rows, so a sample scored alone
in real time (``extract_one`` or ``RecentHistory``) gets the same features as in a batch.

How it works:

- Samples are placed on a grid of ``interval_s`` seconds (slot = floor(epoch / interval)).
  Windows and lags are counted in slots (minutes by default), so gaps shrink windows in
  time instead of silently stretching them. Missing slots and missing values are forward
  filled; values missing from the start, and metrics absent from the frame, take the
  training median. A gap longer than the longest look-back is shortened to it, which
  changes nothing (the forward-filled values are constant) but bounds the memory.
- Each metric is standardised with its training median and robust scale
  (IQR / 1.349, else the standard deviation). A metric that is constant in training has
  no notion of normal to compare against, so its standardised value is 0.
- Rolling sums run on values quantised to 1/1024 of a robust scale unit in int64, whose
  cumulative sums are exact (two's complement wrap-around cancels in differences). A
  window's sum is therefore the same whether it is computed inside a month-long batch or
  from a one-hour tail: online and batch features agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.ndimage import maximum_filter1d, minimum_filter1d, rank_filter

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

NON_METRIC_COLUMNS = frozenset({"timestamp", "label", "host", "id", "is_anomaly"})
_QUANT = 1024.0  # fixed-point resolution of standardised values
_Z_CLIP = 1000.0  # keeps squared window sums inside int64
_SECONDS_PER_DAY = 86400.0
_EPOCH = pd.Timestamp(0, tz="UTC")
_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
BaselineStat = Literal["mean", "median"]
BASELINE_STATS: tuple[BaselineStat, ...] = ("mean", "median")
HISTORY_MARGIN = 64  # samples a history keeps beyond the feature look-back
_GATHER_ROWS = 256  # below this many rows a window median gathers and sorts its windows


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Which features to compute; windows and lags are in grid slots (minutes at 60 s)."""

    interval_s: float = 60.0
    mean_windows: tuple[int, ...] = (5,)
    std_windows: tuple[int, ...] = (15,)
    min_windows: tuple[int, ...] = ()
    max_windows: tuple[int, ...] = ()
    lags: tuple[int, ...] = (5, 30)
    # Deviation of the current level (see ``level_median``) from the mean (or the median)
    # of the previous ``baseline_window`` slots: a level shift relative to the recent past.
    # The median ignores an event shorter than half the window, so a short spike does not
    # inflate the baseline of the samples after it.
    baseline_window: int = 60
    baseline_stat: BaselineStat = "mean"
    # The level set against that baseline: the mean of the first mean window (0, default),
    # or the median of the last ``level_median`` slots, which a blip of fewer than half of
    # them cannot move. The median of 3 cut false alarms on held-out SMD train data but
    # missed most of machine-2-5's short labelled events (bench/RESULTS.md): an option.
    level_median: int = 0
    time_features: bool = True

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
            self.level_median,
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
        if self.baseline_stat not in BASELINE_STATS:
            raise ValueError(f"baseline_stat must be one of {BASELINE_STATS}")
        if not 0 <= self.level_median <= 60:
            raise ValueError("level_median must lie in 0..60")

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "mean_windows": list(self.mean_windows),
            "std_windows": list(self.std_windows),
            "min_windows": list(self.min_windows),
            "max_windows": list(self.max_windows),
            "lags": list(self.lags),
            "baseline_window": self.baseline_window,
            "baseline_stat": self.baseline_stat,
            "level_median": self.level_median,
            "time_features": self.time_features,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        return cls(
            interval_s=float(data["interval_s"]),
            mean_windows=tuple(int(w) for w in data["mean_windows"]),
            std_windows=tuple(int(w) for w in data["std_windows"]),
            min_windows=tuple(int(w) for w in data["min_windows"]),
            max_windows=tuple(int(w) for w in data["max_windows"]),
            lags=tuple(int(w) for w in data["lags"]),
            baseline_window=int(data["baseline_window"]),
            # Configurations stored before the median baseline used the mean.
            baseline_stat=cast(BaselineStat, str(data.get("baseline_stat", "mean"))),
            # Configurations stored before the median level used the short mean.
            level_median=int(data.get("level_median", 0)),
            time_features=bool(data["time_features"]),
        )


@dataclass(slots=True)
class FeatureSet:
    """Features of a run of rows: the model matrix plus per-metric views used for scoring."""

    matrix: FloatArray  # (rows, features)
    z: FloatArray  # (rows, metrics) standardised value
    deviation: FloatArray  # (rows, metrics) current level minus recent baseline
    baseline: FloatArray  # (rows, metrics) recent baseline, standardised
    values: FloatArray  # (rows, metrics) observed values after filling
    hour: IntArray  # (rows,) UTC hour of each row (epoch seconds // 3600)


def epoch_seconds(timestamps: Any) -> FloatArray:
    """UTC epoch seconds of timestamps (naive values are taken as UTC)."""
    idx = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True))
    return np.asarray(idx.as_unit("us").asi8, dtype=np.float64) / 1e6


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
    def constant_metrics(self) -> tuple[str, ...]:
        return tuple(m for m, s in zip(self.metrics, self.scales, strict=True) if np.isinf(s))

    @property
    def feature_names(self) -> list[str]:
        cfg = self.config
        per_metric = ["z"]
        per_metric += [f"mean_{w}" for w in cfg.mean_windows]
        per_metric += [f"std_{w}" for w in cfg.std_windows]
        per_metric += [f"min_{w}" for w in cfg.min_windows]
        per_metric += [f"max_{w}" for w in cfg.max_windows]
        per_metric += [f"diff_{lag}" for lag in cfg.lags]
        dev = "dev" if cfg.baseline_stat == "mean" else "dev_median"
        per_metric += [f"{dev}_{cfg.baseline_window}"]
        names = [f"{m}:{k}" for k in per_metric for m in self.metrics]
        if cfg.time_features:
            names += ["hour_sin", "hour_cos", "dow_sin", "dow_cos"]
        return names

    @property
    def feature_metric_index(self) -> IntArray:
        """Source metric of each feature column (-1 for the time features)."""
        m = len(self.metrics)
        per = (len(self.feature_names) - (4 if self.config.time_features else 0)) // m
        idx = np.tile(np.arange(m, dtype=np.int64), per)
        if self.config.time_features:
            idx = np.concatenate([idx, np.full(4, -1, dtype=np.int64)])
        return idx

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
        out = self._compute(times, values)
        if order is not None:
            inverse = np.empty_like(order)
            inverse[order] = np.arange(n, dtype=np.int64)
            out = FeatureSet(
                matrix=out.matrix[inverse],
                z=out.z[inverse],
                deviation=out.deviation[inverse],
                baseline=out.baseline[inverse],
                values=out.values[inverse],
                hour=out.hour[inverse],
            )
        return out

    # -- online --------------------------------------------------------------------

    def extract_one(
        self,
        history_tail: pd.DataFrame,
        sample: Mapping[str, float],
        timestamp: datetime | pd.Timestamp | str,
    ) -> FloatArray:
        """Feature vector of one new sample given the recent history before it."""
        hist = RecentHistory(self, capacity=max(len(history_tail) + 1, 2))
        hist.extend_frame(history_tail)
        hist.append(sample, timestamp)
        row: FloatArray = hist.features(rows=1).matrix[-1]
        return row

    # -- core ----------------------------------------------------------------------

    def _compute(self, times: FloatArray, raw: FloatArray, tail: int | None = None) -> FeatureSet:
        """Features of the last ``tail`` rows (all rows by default) of a time-ordered run;
        the earlier rows serve only as their look-back."""
        cfg = self.config
        n, m = raw.shape
        slots = np.floor(times / cfg.interval_s).astype(np.int64)
        finite = np.isfinite(raw)
        all_finite = bool(finite.all())
        values = _forward_fill(raw if all_finite else np.where(finite, raw, np.nan), self.medians)

        # Standardise, clip and quantise; constant metrics have scale inf -> 0.
        z = (values - self.medians) / self.scales
        np.clip(z, -_Z_CLIP, _Z_CLIP, out=z)
        q = np.rint(z * _QUANT).astype(np.int64)
        if (
            tail == 1
            and all_finite
            and cfg.baseline_stat == "mean"
            and not cfg.level_median
            and bool(np.all(np.diff(slots) == 1))
        ):
            return self._last_row(times[-1:], values[-1:], q)

        # Dense grid of slots with long gaps shortened to the look-back.
        lookback = cfg.lookback
        steps = np.minimum(np.diff(slots), lookback) if n > 1 else np.zeros(0, dtype=np.int64)
        pos = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(steps)])
        grid = int(pos[-1]) + 1
        owner = np.searchsorted(pos, np.arange(grid, dtype=np.int64), side="right") - 1
        qd = q[owner]  # (grid, m): value in force at each slot (last sample wins)

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

        # Baseline: mean or median of the previous ``baseline_window`` slots (current slot
        # excluded, clipped at the grid start).
        bw = cfg.baseline_window
        prev_end = p - 1
        has_prev = prev_end >= 0
        safe_end = np.maximum(prev_end, 0)
        if cfg.baseline_stat == "median":
            base = _window_median(qd, safe_end, bw) / _QUANT
        else:
            s1, _, cnt = window(bw, safe_end)
            base = s1.astype(np.float64) / cnt / _QUANT
        baseline = np.where(has_prev[:, None], base, zq)
        if cfg.level_median:
            level = _window_median(qd, p, cfg.level_median) / _QUANT
        else:
            level = short_mean
        deviation = level - baseline
        parts.append(deviation)

        if cfg.time_features:
            day_frac = np.mod(times, _SECONDS_PER_DAY) / _SECONDS_PER_DAY
            dow = np.mod(np.floor(times / _SECONDS_PER_DAY) + 3.0, 7.0) / 7.0  # Monday = 0
            tf = np.column_stack(
                [
                    np.sin(2 * np.pi * day_frac),
                    np.cos(2 * np.pi * day_frac),
                    np.sin(2 * np.pi * dow),
                    np.cos(2 * np.pi * dow),
                ]
            )
            parts.append(tf)
        matrix = np.hstack(parts)
        return FeatureSet(
            matrix=matrix,
            z=zq,
            deviation=deviation,
            baseline=baseline,
            values=values,
            hour=np.floor(times / 3600.0).astype(np.int64),
        )

    def _last_row(self, time: FloatArray, value: FloatArray, q: IntArray) -> FeatureSet:
        """``_compute`` for the last row of a run of samples one slot apart, none missing
        (the real-time path): the same integer window sums and the same float operations,
        taken over slices instead of prefix sums, so the result is identical."""
        cfg = self.config
        p = len(q) - 1  # grid position of the last row (the grid is the rows themselves)
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
        parts.append(deviation)
        if cfg.time_features:
            day_frac = np.mod(time, _SECONDS_PER_DAY) / _SECONDS_PER_DAY
            dow = np.mod(np.floor(time / _SECONDS_PER_DAY) + 3.0, 7.0) / 7.0  # Monday = 0
            parts.append(
                np.column_stack(
                    [
                        np.sin(2 * np.pi * day_frac),
                        np.cos(2 * np.pi * day_frac),
                        np.sin(2 * np.pi * dow),
                        np.cos(2 * np.pi * dow),
                    ]
                )
            )
        return FeatureSet(
            matrix=np.hstack(parts),
            z=zq,
            deviation=deviation,
            baseline=baseline,
            values=value,
            hour=np.floor(time / 3600.0).astype(np.int64),
        )


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
        # Hourly shift peaks of the rows already scored (set by the detector), and how many
        # of the newest buffered rows have not been folded into it yet.
        self.memory: ShiftMemory | None = None
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
        self.append_array(row, _to_epoch(timestamp))

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

    def copy_until(self, epoch_s: float) -> RecentHistory:
        """A copy holding only the samples (and shift memory) up to ``epoch_s``."""
        times, values = self.arrays()
        copy = RecentHistory(self.extractor, capacity=self.capacity)
        keep = np.flatnonzero(times <= epoch_s)
        for i in keep:
            copy.append_array(values[i].copy(), float(times[i]))
        copy.scores()[:] = self.scores()[keep]
        if self.memory is not None:
            copy.memory = self.memory.until(int(np.floor(epoch_s / 3600.0)))
        # Rows kept that were unfolded here stay unfolded in the copy.
        copy.unfolded = min(copy.unfolded, int(np.sum(keep >= self._len - self.unfolded)))
        return copy

    def extend_frame(self, frame: pd.DataFrame) -> None:
        if len(frame) == 0:
            return
        times = frame_times(frame)
        cols = list(self.extractor.metrics)
        values = frame.reindex(columns=cols).to_numpy(dtype=np.float64, copy=True)
        order = np.argsort(times, kind="stable")
        for i in order[-self.capacity :]:
            self.append_array(values[i], float(times[i]))

    def scores(self) -> FloatArray:
        """Raw scores of the buffered rows as set by the detector (a view; NaN = unknown)."""
        return self._scores[self._start : self._start + self._len]

    def arrays(self) -> tuple[FloatArray, FloatArray]:
        sl = slice(self._start, self._start + self._len)
        return self._times[sl], self._values[sl]

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
        return self.extractor._compute(
            times[first:], values[first:].copy(), tail=min(rows, self._len)
        )


@dataclass(slots=True)
class ShiftMemory:
    """Hourly peaks of the absolute level shift of each metric over the last ``window`` hours.

    The detector measures a metric's shift against the larger of its 99.9th training
    percentile and the ``rank``-th largest hourly peak of that metric's shift over the
    ``window`` whole hours before the sample's hour (``trailing_peak``). A host whose metric
    has turned volatile thus needs a larger shift to alarm again, while a shift larger than
    anything of the past day (bar one hour) still alarms. Peaks are maxima, so folding rows
    hour by hour or all at once gives the same memory: online and batch agree exactly.
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


def metric_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The numeric columns of a frame that are metrics (not timestamp, label, host...)."""
    return tuple(
        str(c)
        for c in frame.columns
        if str(c) not in NON_METRIC_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
    )


def frame_times(frame: pd.DataFrame) -> FloatArray:
    """Epoch seconds of a frame's rows, from its 'timestamp' column or DatetimeIndex."""
    if "timestamp" in frame.columns:
        return epoch_seconds(frame["timestamp"])
    if isinstance(frame.index, pd.DatetimeIndex):
        return epoch_seconds(frame.index)
    raise ValueError("frame needs a 'timestamp' column or a DatetimeIndex")


def _to_epoch(ts: datetime | pd.Timestamp | str | float) -> float:
    if isinstance(ts, int | float):
        return float(ts)
    if type(ts) is datetime:  # plain datetime (not pandas'): microseconds, exact and fast
        aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
        return float((aware - _EPOCH_DT) // _MICROSECOND) / 1e6
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    micros = (stamp - _EPOCH) // pd.Timedelta(microseconds=1)
    return float(micros) / 1e6


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


def _window_median(qd: IntArray, ends: IntArray, w: int) -> FloatArray:
    """Median of each column over the slots [end - w + 1, end] (clipped at 0) of each end.

    An even count takes the mean of its two middle values. The order statistics are exact
    on the quantised integers, so any method gives the same result bit for bit: a few ends
    gather and sort their windows, many use a running rank filter for the full windows.
    """
    r, m = len(ends), qd.shape[1]
    out = np.empty((r, m), dtype=np.float64)
    if r == 0:
        return out
    lo_rank, hi_rank = (w - 1) // 2, w // 2
    full = ends >= w - 1
    if r >= _GATHER_ROWS and bool(full.any()) and len(qd) >= w:
        cols = np.ascontiguousarray(qd.T)
        origin = (w - 1) // 2  # the filter centred at w // 2 + origin ends at the row
        lo = np.empty((m, len(qd)), dtype=np.int64)
        hi = lo if hi_rank == lo_rank else np.empty((m, len(qd)), dtype=np.int64)
        for j in range(m):
            lo[j] = rank_filter(cols[j], rank=lo_rank, size=w, origin=origin, mode="nearest")
            if hi is not lo:
                hi[j] = rank_filter(cols[j], rank=hi_rank, size=w, origin=origin, mode="nearest")
        e = ends[full]
        out[full] = (lo[:, e].T.astype(np.float64) + hi[:, e].T.astype(np.float64)) / 2.0
        rest = np.flatnonzero(~full)
    else:
        rest = np.arange(r, dtype=np.int64)
    if len(rest):
        e = ends[rest]
        idx = e[:, None] - np.arange(w - 1, -1, -1, dtype=np.int64)[None, :]  # (rows, w)
        win = qd[np.maximum(idx, 0)]  # (rows, w, m)
        # Slots before the grid start sort last and are never picked.
        win = np.where((idx >= 0)[:, :, None], win, np.iinfo(np.int64).max)
        win.sort(axis=1)
        count = np.minimum(e + 1, w)
        a = np.take_along_axis(win, ((count - 1) // 2)[:, None, None], axis=1)[:, 0]
        b = np.take_along_axis(win, (count // 2)[:, None, None], axis=1)[:, 0]
        out[rest] = (a.astype(np.float64) + b.astype(np.float64)) / 2.0
    return out

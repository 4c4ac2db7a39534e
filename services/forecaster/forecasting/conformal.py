"""Forecast intervals from out-of-sample residuals (split conformal, per horizon bucket and day type).

Usage: `bands = calibrate(residuals, interval_width=0.8, edges=(4, 24), weekend=weekend)` with
``residuals`` the backtest's actual - forecast, one row per origin and one column per step ahead,
and ``weekend`` (same shape, optional) whether each forecast time falls on a Saturday or Sunday
(UTC, `is_weekend`); then `point, lower, upper = bands.interval(yhat, steps_ahead,
weekend=is_weekend(times), lower_bound=0.0)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from shared.arrays import FloatArray, IntArray

# Horizon buckets (steps ahead, inclusive upper edges): the first hour, up to 6 h, beyond.
DEFAULT_EDGES_HOURS = (1.0, 6.0)
# A band clipped by a bound keeps at least this share of its calibrated width.
MIN_WIDTH_SHARE = 0.5
# A day type (weekday, weekend) gets its own quantiles in a horizon bucket only where at least
# this many backtest origins forecast into it there (a day's worth at the default 6 h spacing);
# otherwise that bucket's pooled quantiles serve it.
DAY_TYPE_MIN_ORIGINS = 4


def is_weekend(times: pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Whether each time (naive UTC or aware) falls on a Saturday or Sunday, UTC; keeps the shape."""
    values = np.asarray(times)
    index = pd.DatetimeIndex(values.ravel())
    if index.tz is not None:
        index = index.tz_convert("UTC")
    return np.asarray(index.day_of_week >= 5).reshape(values.shape)


Quantiles = tuple[tuple[float, ...], tuple[float, ...]]  # (low per bucket, high per bucket)


@dataclass(frozen=True, slots=True)
class ConformalBands:
    """Residual quantiles per horizon bucket: bucket ``i`` holds steps ``edges[i-1] < k <= edges[i]``.

    ``weekday`` and ``weekend``, when calibrated, hold each day type's own quantiles (the
    pooled ones in buckets where that day type had too few origins): residuals are larger
    on busy weekdays than at quiet weekends, and one pooled band under-covers the former
    and over-covers the latter. Without them (or without day types) the pooled ones serve.
    """

    interval_width: float
    edges: tuple[int, ...]  # upper edges of every bucket but the last (open-ended)
    low: tuple[float, ...]  # residual quantile (1 - w) / 2 per bucket, every day pooled
    high: tuple[float, ...]  # residual quantile (1 + w) / 2 per bucket, every day pooled
    weekday: Quantiles | None = None
    weekend: Quantiles | None = None

    def bucket(self, steps_ahead: np.ndarray) -> IntArray:
        """The bucket of each number of steps ahead (1 = the first step after the history)."""
        found = np.searchsorted(np.asarray(self.edges), np.maximum(steps_ahead, 1), side="left")
        return np.asarray(found, dtype=np.int64)

    def quantiles(
        self, steps_ahead: np.ndarray, weekend: np.ndarray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """The residual quantiles (low, high) that apply at each step ahead and day type."""
        which = self.bucket(steps_ahead)
        if weekend is None or self.weekday is None or self.weekend is None:
            return np.asarray(self.low)[which], np.asarray(self.high)[which]
        at_weekend = np.asarray(weekend, dtype=bool)
        low = np.where(
            at_weekend, np.asarray(self.weekend[0])[which], np.asarray(self.weekday[0])[which]
        )
        high = np.where(
            at_weekend, np.asarray(self.weekend[1])[which], np.asarray(self.weekday[1])[which]
        )
        return np.asarray(low, dtype=float), np.asarray(high, dtype=float)

    def interval(
        self,
        yhat: FloatArray,
        steps_ahead: np.ndarray,
        *,
        weekend: np.ndarray | None = None,
        lower_bound: float | None = None,
        upper_bound: float | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(yhat, lower, upper) inside the bounds; a clipped band keeps part of its width.

        ``weekend`` (per point, `is_weekend` of its time) picks the day type's quantiles.
        A bound never collapses the band: where clipping leaves less than MIN_WIDTH_SHARE
        of the calibrated width, the band reaches that far from the bound instead.
        """
        low, high = self.quantiles(steps_ahead, weekend)
        lo = -np.inf if lower_bound is None else lower_bound
        hi = np.inf if upper_bound is None else upper_bound
        point = np.clip(yhat, lo, hi)
        lower = np.clip(point + low, lo, hi)
        upper = np.clip(point + high, lo, hi)
        need = MIN_WIDTH_SHARE * (high - low)
        short = (upper - lower) < need
        if short.any():
            at_low = short & (lower <= lo)
            upper = np.where(at_low, np.minimum(lo + need, hi), upper)
            at_high = short & ~at_low & (upper >= hi)
            lower = np.where(at_high, np.maximum(hi - need, lo), lower)
        return (
            np.asarray(point, dtype=float),
            np.asarray(lower, dtype=float),
            np.asarray(upper, dtype=float),
        )

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "interval_width": self.interval_width,
            "edges": list(self.edges),
            "low": list(self.low),
            "high": list(self.high),
        }
        for name, pair in (("weekday", self.weekday), ("weekend", self.weekend)):
            if pair is not None:
                data[name] = {"low": list(pair[0]), "high": list(pair[1])}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConformalBands:
        """Bands as `as_dict` wrote them; bands stored before day types have none (pooled)."""

        def pair(name: str) -> Quantiles | None:
            part = data.get(name)
            if part is None:
                return None
            return tuple(float(v) for v in part["low"]), tuple(float(v) for v in part["high"])

        return cls(
            interval_width=float(data["interval_width"]),
            edges=tuple(int(e) for e in data["edges"]),
            low=tuple(float(v) for v in data["low"]),
            high=tuple(float(v) for v in data["high"]),
            weekday=pair("weekday"),
            weekend=pair("weekend"),
        )


def _quantiles(values: FloatArray, interval_width: float) -> tuple[float, float]:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return 0.0, 0.0
    tail = (1.0 - interval_width) / 2.0
    # Hazen's plotting positions, (k - 0.5) / n: those of with_spread's nodes. numpy's default
    # ((k - 1) / (n - 1)) put the 10 % and 90 % of a bucket's spread at +-1.10 sigma instead
    # of +-1.28: an 80 % band of samples covered 73 %.
    low, high = np.quantile(ok, [tail, 1.0 - tail], method="hazen")
    return min(float(low), 0.0), max(float(high), 0.0)


def with_spread(residuals: FloatArray, spread: FloatArray | None, nodes: int = 20) -> FloatArray:
    """Residuals of samples, not bucket means: each bucket residual spread by its samples' sigma.

    ``spread`` (same shape as ``residuals``) is the standard deviation of the samples within
    each bucket; each residual becomes ``nodes`` residuals at the normal quantiles of that
    spread (a third axis, at levels (j + 0.5) / nodes), so the quantiles describe where
    samples fall. With `calibrate`'s quantiles, a bucket's spread alone gives +-1.295 sigma
    for 80 % (+-1.282 exactly): 10 nodes gave +-1.34, 40 give +-1.285.
    """
    if spread is None:
        return residuals
    z = np.array([NormalDist().inv_cdf((j + 0.5) / nodes) for j in range(nodes)])
    sigma = np.where(np.isfinite(spread), spread, 0.0)
    return np.asarray(residuals[..., None] + sigma[..., None] * z, dtype=float)


def _day_type(
    residuals: FloatArray,
    in_group: np.ndarray,
    bounds: list[int],
    pooled: Quantiles,
    *,
    interval_width: float,
    min_origins: int,
) -> tuple[Quantiles, bool]:
    """One day type's quantiles per bucket (pooled where it has too few origins); any own?"""
    lows, highs = list(pooled[0]), list(pooled[1])
    own = False
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        mask = in_group[:, a:b] & np.isfinite(residuals[:, a:b, ...]).reshape(
            residuals.shape[0], b - a, -1
        ).any(axis=2)
        if int(mask.any(axis=1).sum()) < min_origins:
            continue
        lows[i], highs[i] = _quantiles(residuals[:, a:b][mask].ravel(), interval_width)
        own = True
    return (tuple(lows), tuple(highs)), own


def calibrate(
    residuals: FloatArray,
    *,
    interval_width: float,
    edges: tuple[int, ...],
    weekend: np.ndarray | None = None,
    min_origins: int = DAY_TYPE_MIN_ORIGINS,
) -> ConformalBands:
    """Quantiles of ``residuals`` (origins x steps ahead [x nodes]; NaN where not scored) per bucket.

    With ``weekend`` (origins x steps ahead: the forecast time is a Saturday or Sunday,
    UTC) each day type also gets its own quantiles per bucket (group-conditional, or
    Mondrian, conformal), where at least ``min_origins`` origins forecast into it.
    """
    steps = residuals.shape[1]
    bounds = [0, *[e for e in edges if e < steps], steps]
    lows, highs = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        low, high = _quantiles(residuals[:, a:b].ravel(), interval_width)
        lows.append(low)
        highs.append(high)
    pooled = (tuple(lows), tuple(highs))
    by_type: list[Quantiles] = []
    if weekend is not None:
        for in_group in (~weekend, weekend):
            quantiles, own = _day_type(
                residuals,
                np.asarray(in_group, dtype=bool),
                bounds,
                pooled,
                interval_width=interval_width,
                min_origins=min_origins,
            )
            if own:
                by_type.append(quantiles)
    split = len(by_type) == 2
    return ConformalBands(
        interval_width=interval_width,
        edges=tuple(bounds[1:-1]),
        low=pooled[0],
        high=pooled[1],
        weekday=by_type[0] if split else None,
        weekend=by_type[1] if split else None,
    )


def held_out_coverage(
    residuals: FloatArray,
    *,
    interval_width: float,
    edges: tuple[int, ...],
    weekend: np.ndarray | None = None,
) -> float | None:
    """Coverage of each origin's residuals by bands calibrated on the other origins (leave one out)."""
    count = residuals.shape[0]
    if count < 2:
        return None
    inside = scored = 0
    steps = np.arange(1, residuals.shape[1] + 1)
    for i in range(count):
        bands = calibrate(
            np.delete(residuals, i, axis=0),
            interval_width=interval_width,
            edges=edges,
            weekend=None if weekend is None else np.delete(weekend, i, axis=0),
        )
        row = residuals[i]
        ok = np.isfinite(row)
        low, high = bands.quantiles(steps, None if weekend is None else weekend[i])
        low = low.reshape((-1,) + (1,) * (row.ndim - 1))
        high = high.reshape((-1,) + (1,) * (row.ndim - 1))
        inside += int(np.sum(ok & (row >= low) & (row <= high)))
        scored += int(ok.sum())
    return inside / scored if scored else None

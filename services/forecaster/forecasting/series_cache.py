"""A stored forecast generation as the fleet reads serve it: arrays, JSON pieces, and the
pieces of a response put together (``read_cache`` keeps these, one per series).

Usage: ``entry = cached(stored, parameters, limit)``; ``forecast_body(windows([entry], now,
until), host=None, hours_ahead=6, step_minutes=5.0)``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from services.forecaster.forecasting.breach import interval_width
from services.forecaster.forecasting.stored import StoredForecast
from shared.catalogue import METRIC_NAMES

Key = tuple[str, str]  # (host, metric)
_Z = orjson.OPT_UTC_Z  # datetimes as pydantic writes them: 2026-01-01T00:00:00Z
_ORDER = {name: i for i, name in enumerate(METRIC_NAMES)}


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_Z)


@dataclass(slots=True)
class CachedSeries:
    """One host and metric's newest generation, ready to slice: arrays, and each point's JSON."""

    host: str
    metric: str
    model_id: int | None
    model_version: int | None
    generated_at: datetime
    times: list[datetime]
    seconds: list[float]  # the points' times, epoch seconds
    yhat: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    values: tuple[list[float], list[float], list[float]]  # yhat, lower, upper as floats
    points: list[bytes]  # each point as JSON (a ForecastPoint)
    head: bytes  # a MetricForecast's JSON up to its points: '{"host":...,"points":['
    scale: float  # the model's y_scale: next hour's "flat" tolerance
    width: float  # the interval width the model's band was made for
    reach: list[int]  # indices of points at or above the metric's threshold (yhat or upper)
    rank: int  # the metric's place in the catalogue (next hour's order within a host)

    def reaches(self, i: int, j: int) -> bool:
        k = bisect_left(self.reach, i)
        return k < len(self.reach) and self.reach[k] < j

    def at(self, k: int, share: float) -> tuple[float, float, float]:
        """yhat, lower and upper at `share` of the way from point k - 1 to point k (share 0:
        point k - 1 itself; see `interpolation`)."""
        y, lo, hi = self.values
        if share == 0.0:
            return y[k - 1], lo[k - 1], hi[k - 1]
        return (
            y[k - 1] + share * (y[k] - y[k - 1]),
            lo[k - 1] + share * (lo[k] - lo[k - 1]),
            hi[k - 1] + share * (hi[k] - hi[k - 1]),
        )


def interpolation(xs: Sequence[float], i: int, j: int, when: float) -> tuple[int, float]:
    """(k, share) locating `when` among points [i, j) of `xs` as np.interp does (held at the
    ends): the value there is v[k - 1] + share * (v[k] - v[k - 1])."""
    k = bisect_right(xs, when, i, j)
    if k == i:
        return i + 1, 0.0
    if k == j:
        return j, 0.0
    return k, (when - xs[k - 1]) / (xs[k] - xs[k - 1])


Window = tuple[CachedSeries, int, int]  # a series and its points [i, j) in a window


def windows(series: Sequence[CachedSeries], after: datetime, until: datetime) -> list[Window]:
    """Each series with points in (after, until], and their indices [i, j).

    Series of one generation share their time grid (one list, see ReadCache.put): the
    window is looked up once per grid.
    """
    lo, hi = after.timestamp(), until.timestamp()
    found: dict[int, tuple[int, int]] = {}
    out: list[Window] = []
    for entry in series:
        grid = entry.seconds
        span = found.get(id(grid))
        if span is None:
            span = found[id(grid)] = (bisect_right(grid, lo), bisect_right(grid, hi))
        if span[0] < span[1]:
            out.append((entry, span[0], span[1]))
    return out


def cached(
    stored: StoredForecast, parameters: Mapping[str, Any], limit: float | None
) -> CachedSeries:
    yhat = np.asarray(stored.yhat, dtype=float)
    lower = np.asarray(stored.lower, dtype=float)
    upper = np.asarray(stored.upper, dtype=float)
    head = {
        "host": stored.host,
        "metric": stored.metric,
        "model_id": stored.model_id,
        "model_version": stored.model_version,
        "generated_at": stored.generated_at,
    }
    reach = (
        []
        if limit is None
        else [int(i) for i in np.flatnonzero((yhat >= limit) | (upper >= limit))]
    )
    return CachedSeries(
        host=stored.host,
        metric=stored.metric,
        model_id=stored.model_id,
        model_version=stored.model_version,
        generated_at=stored.generated_at,
        times=list(stored.times),
        seconds=[t.timestamp() for t in stored.times],
        yhat=yhat,
        lower=lower,
        upper=upper,
        values=(list(stored.yhat), list(stored.lower), list(stored.upper)),
        points=[
            dumps({"timestamp": t, "yhat": y, "yhat_lower": lo, "yhat_upper": hi})
            for t, y, lo, hi in zip(
                stored.times, stored.yhat, stored.lower, stored.upper, strict=True
            )
        ],
        head=dumps(head)[:-1] + b',"points":[',
        scale=float(parameters.get("y_scale") or 0.0),
        width=interval_width(parameters),
        reach=reach,
        rank=_ORDER.get(stored.metric, len(_ORDER)),
    )


def answered(host: str | None, hosts: Sequence[str]) -> str | None:
    """The response's `host`: the one asked for, or the only one answered; else None."""
    if host is not None:
        return host
    return hosts[0] if len(hosts) == 1 else None


def forecast_body(
    found: Sequence[Window], *, host: str | None, hours_ahead: int, step_minutes: float
) -> bytes | None:
    """A ForecastResponse's JSON from `windows(...)`; None when no series has points."""
    if not found:
        return None
    hosts = list(dict.fromkeys(entry.host for entry, _, _ in found))
    parts = [entry.head + b",".join(entry.points[i:j]) + b"]}" for entry, i, j in found]
    head = dumps(
        {
            "host": answered(host, hosts),
            "hosts": hosts,
            "hours_ahead": hours_ahead,
            "step_minutes": float(step_minutes),
        }
    )
    return head[:-1] + b',"forecasts":[' + b",".join(parts) + b"]}"

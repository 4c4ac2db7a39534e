"""Fleet reads answered from memory: each stored forecast generation is turned once into arrays
and JSON pieces, then sliced to each request's window.

A generation (host, metric, generated_at) never changes once written, so an entry is good for as
long as the store's newest generation of its series is the one it holds. The reads ask the store
for that index on every request (one small indexed read, so a generation written by another
process is seen by the next read) and load only the generations they do not hold yet.

Usage:
    cache = ReadCache(thresholds)
    stale = cache.stale(index)                # index: {(host, metric): generated_at}
    cache.put(stored, parameters)             # each generation loaded for `stale`
    body = cache.forecast_body(cache.series(index), after=now, until=..., ...)
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson

from services.forecaster.forecasting.breach import interval_width
from services.forecaster.forecasting.next_hour import NEXT_HOUR_FLAT_TOLERANCE
from services.forecaster.forecasting.prediction import Prediction
from services.forecaster.forecasting.stored import StoredForecast
from services.forecaster.forecasting.trend import direction
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
    points: list[bytes]  # each point as JSON (a ForecastPoint)
    head: bytes  # a MetricForecast's JSON up to its points: '{"host":...,"points":['
    scale: float  # the model's y_scale: next hour's "flat" tolerance
    width: float  # the interval width the model's band was made for
    reach: list[int]  # indices of points at or above the metric's threshold (yhat or upper)

    def window(self, after: datetime, until: datetime) -> tuple[int, int]:
        """Indices [i, j) of the points in (after, until]."""
        return (
            bisect_right(self.seconds, after.timestamp()),
            bisect_right(self.seconds, until.timestamp()),
        )

    def has_points(self, after: datetime, until: datetime) -> bool:
        i, j = self.window(after, until)
        return i < j

    def reaches(self, i: int, j: int) -> bool:
        k = bisect_left(self.reach, i)
        return k < len(self.reach) and self.reach[k] < j

    def prediction(self, i: int, j: int) -> Prediction:
        return Prediction(
            times=self.times[i:j], yhat=self.yhat[i:j], lower=self.lower[i:j], upper=self.upper[i:j]
        )

    def at(self, i: int, j: int, when: float) -> tuple[float, float, float]:
        """yhat, lower and upper interpolated at `when` over points [i, j) (as np.interp: held
        at the ends)."""
        xs = self.seconds
        k = bisect_right(xs, when, i, j)
        if k == i or k == j:
            n = i if k == i else j - 1
            return float(self.yhat[n]), float(self.lower[n]), float(self.upper[n])
        x0, x1 = xs[k - 1], xs[k]
        share = (when - x0) / (x1 - x0)
        return tuple(  # type: ignore[return-value]
            float(v[k - 1] + share * (v[k] - v[k - 1])) for v in (self.yhat, self.lower, self.upper)
        )


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
    )


class ReadCache:
    """The newest generation of every (host, metric) a read has asked for, by key."""

    def __init__(self, thresholds: Mapping[str, float]) -> None:
        self.thresholds = dict(thresholds)
        self.entries: dict[Key, CachedSeries] = {}

    def stale(self, index: Mapping[Key, datetime]) -> dict[Key, datetime]:
        """The generations of `index` not held (to load and `put`)."""
        return {
            key: at
            for key, at in index.items()
            if (entry := self.entries.get(key)) is None or entry.generated_at != at
        }

    def put(self, stored: StoredForecast, parameters: Mapping[str, Any]) -> None:
        self.entries[(stored.host, stored.metric)] = cached(
            stored, parameters, self.thresholds.get(stored.metric)
        )

    def forget(self, keep: Mapping[Key, datetime]) -> None:
        """Drop entries whose series is no longer stored (`keep`: the whole index)."""
        for key in [k for k in self.entries if k not in keep]:
            del self.entries[key]

    def series(self, index: Mapping[Key, datetime]) -> list[CachedSeries]:
        """The held entries of `index` that are its generation, by host then metric."""
        return [
            entry
            for key in sorted(index)
            if (entry := self.entries.get(key)) is not None and entry.generated_at == index[key]
        ]


def answered(host: str | None, hosts: Sequence[str]) -> str | None:
    """The response's `host`: the one asked for, or the only one answered; else None."""
    if host is not None:
        return host
    return hosts[0] if len(hosts) == 1 else None


def forecast_body(
    series: Sequence[CachedSeries],
    *,
    after: datetime,
    until: datetime,
    host: str | None,
    hours_ahead: int,
    step_minutes: float,
) -> bytes | None:
    """A ForecastResponse's JSON: each series' points in (after, until]; None when none has any."""
    parts: list[bytes] = []
    hosts: list[str] = []
    for entry in series:
        i, j = entry.window(after, until)
        if i >= j:
            continue
        if not hosts or hosts[-1] != entry.host:
            hosts.append(entry.host)
        parts.append(entry.head + b",".join(entry.points[i:j]) + b"]}")
    if not parts:
        return None
    head = dumps(
        {
            "host": answered(host, hosts),
            "hosts": hosts,
            "hours_ahead": hours_ahead,
            "step_minutes": float(step_minutes),
        }
    )
    return head[:-1] + b',"forecasts":[' + b",".join(parts) + b"]}"


def next_hour_body(
    series: Sequence[CachedSeries],
    *,
    now: datetime,
    step_minutes: float,
    host: str | None,
    samples: Mapping[str, Mapping[str, Any]],
) -> bytes | None:
    """A NextHourResponse's JSON (every metric's forecast an hour from `now` against its newest
    sample); None when no series has points in the hour."""
    at = now + timedelta(hours=1)
    until = at + timedelta(minutes=2 * step_minutes)
    when = at.timestamp()
    items: list[tuple[str, int, dict[str, Any]]] = []
    hosts: list[str] = []
    newest: datetime | None = None
    for entry in series:
        i, j = entry.window(now, until)
        if i >= j:
            continue
        if not hosts or hosts[-1] != entry.host:
            hosts.append(entry.host)
        newest = entry.generated_at if newest is None else max(newest, entry.generated_at)
        sample = samples.get(entry.host) or {}
        raw = sample.get(entry.metric)
        current = None if raw is None else float(raw)
        yhat, lower, upper = entry.at(i, j, when)
        change = None if current is None else yhat - current
        scale = entry.scale or max(abs(yhat), abs(current or 0.0), 1e-9)
        items.append(
            (
                entry.host,
                _ORDER.get(entry.metric, len(_ORDER)),
                {
                    "host": entry.host,
                    "metric": entry.metric,
                    "current_value": current,
                    "current_at": sample.get("timestamp"),
                    "at": at,
                    "yhat": yhat,
                    "yhat_lower": lower,
                    "yhat_upper": upper,
                    "change": change,
                    "direction": (
                        "flat"
                        if change is None
                        else direction(change, NEXT_HOUR_FLAT_TOLERANCE * scale)
                    ),
                },
            )
        )
    if not items:
        return None
    items.sort(key=lambda item: (item[0], item[1]))
    return dumps(
        {
            "host": answered(host, hosts),
            "hosts": hosts,
            "generated_at": newest,
            "metrics": [item[2] for item in items],
        }
    )

"""Fleet reads answered from memory: each stored forecast generation is turned once into arrays
and JSON pieces, then sliced to each request's window.

A generation (host, metric, generated_at) never changes once written, so an entry is good for as
long as the store's newest generation of its series is the one it holds. The reads ask the store
for a fingerprint of its generation index on every request (one aggregate row, so a generation
written by another process is seen by the next read); when it changed, they read the index and
load only the generations they do not hold yet.

Usage:
    cache = ReadCache(thresholds)
    if fingerprint != cache.fingerprint:      # else the cache is the store's newest
        stale = cache.stale(index)            # index: {(host, metric): generated_at}, whole
        cache.put(stored, parameters)         # each generation loaded for `stale`
        cache.settle(index, active_hosts, fingerprint)
    body = forecast_body(windows(cache.scoped(host, metric), now, until), ...)
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
from services.forecaster.forecasting.next_hour import NEXT_HOUR_FLAT_TOLERANCE
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


class ReadCache:
    """The newest generation of every (host, metric) a read has asked for, by key."""

    def __init__(self, thresholds: Mapping[str, float]) -> None:
        self.thresholds = dict(thresholds)
        self.entries: dict[Key, CachedSeries] = {}
        self._grids: dict[tuple[float, ...], list[float]] = {}
        # The store's fingerprint when `ordered` was built from its whole index; None: rebuild.
        self.fingerprint: tuple[Any, ...] | None = None
        self.ordered: list[CachedSeries] = []
        self.hosts: list[str] = []  # hosts with an active model, sorted

    def stale(self, index: Mapping[Key, datetime]) -> dict[Key, datetime]:
        """The generations of `index` not held (to load and `put`)."""
        return {
            key: at
            for key, at in index.items()
            if (entry := self.entries.get(key)) is None or entry.generated_at != at
        }

    def put(self, stored: StoredForecast, parameters: Mapping[str, Any]) -> None:
        entry = cached(stored, parameters, self.thresholds.get(stored.metric))
        # Equal time grids become one list: `windows` then bisects each grid once.
        entry.seconds = self._grids.setdefault(tuple(entry.seconds), entry.seconds)
        self.entries[(stored.host, stored.metric)] = entry

    def forget(self, keep: Mapping[Key, datetime]) -> None:
        """Drop entries whose series is no longer stored (`keep`: the whole index)."""
        for key in [k for k in self.entries if k not in keep]:
            del self.entries[key]
        if len(self._grids) > 2 * len({id(e.seconds) for e in self.entries.values()}) + 16:
            self._grids = {tuple(e.seconds): e.seconds for e in self.entries.values()}

    def settle(
        self, index: Mapping[Key, datetime], hosts: list[str], fingerprint: tuple[Any, ...]
    ) -> None:
        """After loading what `stale(index)` named (`index`: the whole store; `hosts`: those
        with an active model): keep `index`'s series in order and, if every one of them was
        loaded, remember `fingerprint`."""
        self.hosts = hosts
        self.forget(index)
        self.ordered = self.series(index)
        complete = len(self.ordered) == len(index)
        self.fingerprint = fingerprint if complete else None

    def scoped(self, host: str | None, metric: str | None) -> list[CachedSeries]:
        """The ordered series of `host` and `metric` (None: any)."""
        return [
            entry
            for entry in self.ordered
            if (host is None or entry.host == host) and (metric is None or entry.metric == metric)
        ]

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


def next_hour_body(
    found: Sequence[Window],
    *,
    at: datetime,
    host: str | None,
    samples: Mapping[str, Mapping[str, Any]],
) -> bytes | None:
    """A NextHourResponse's JSON: each series of `windows(...)` interpolated at `at` against
    its host's newest sample; None when there is none."""
    if not found:
        return None
    when = at.timestamp()
    at_text = dumps(at)[1:-1].decode()  # formatted once, not 1,400 times
    located: dict[tuple[int, int, int], tuple[int, float]] = {}
    items: list[tuple[str, int, dict[str, Any]]] = []
    newest = found[0][0].generated_at
    host_samples: dict[str, tuple[Mapping[str, Any], str | None]] = {}
    for entry, i, j in found:
        if entry.generated_at > newest:
            newest = entry.generated_at
        spot = located.get((id(entry.seconds), i, j))
        if spot is None:
            spot = located[(id(entry.seconds), i, j)] = interpolation(entry.seconds, i, j, when)
        yhat, lower, upper = entry.at(*spot)
        known = host_samples.get(entry.host)
        if known is None:
            sample = samples.get(entry.host) or {}
            stamp = sample.get("timestamp")
            known = host_samples[entry.host] = (
                sample,
                None if stamp is None else dumps(stamp)[1:-1].decode(),
            )
        raw = known[0].get(entry.metric)
        current = None if raw is None else float(raw)
        change = None if current is None else yhat - current
        scale = entry.scale or max(abs(yhat), abs(current or 0.0), 1e-9)
        items.append(
            (
                entry.host,
                entry.rank,
                {
                    "host": entry.host,
                    "metric": entry.metric,
                    "current_value": current,
                    "current_at": known[1],
                    "at": at_text,
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
    items.sort(key=lambda item: (item[0], item[1]))
    hosts = list(dict.fromkeys(entry.host for entry, _, _ in found))
    return dumps(
        {
            "host": answered(host, hosts),
            "hosts": hosts,
            "generated_at": newest,
            "metrics": [item[2] for item in items],
        }
    )

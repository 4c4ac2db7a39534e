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

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from services.forecaster.forecasting.next_hour import NEXT_HOUR_FLAT_TOLERANCE
from services.forecaster.forecasting.series_cache import (
    CachedSeries,
    Key,
    Window,
    answered,
    cached,
    dumps,
    forecast_body,
    interpolation,
    windows,
)

__all__ = [
    "answered",
    "cached",
    "CachedSeries",
    "dumps",
    "forecast_body",
    "interpolation",
    "Key",
    "NextHourAnswer",
    "NextHourPlan",
    "ReadCache",
    "Window",
    "windows",
]
from services.forecaster.forecasting.stored import StoredForecast


@dataclass(slots=True)
class _Grid:
    """The series of a plan that share one time grid, their values stacked (one row each)."""

    seconds: list[float]
    rows: np.ndarray  # their positions in the plan
    yhat: np.ndarray  # rows x points
    lower: np.ndarray
    upper: np.ndarray
    newest: datetime  # the newest generation among them


Located = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, datetime | None]


@dataclass(slots=True)
class NextHourAnswer:
    """A next-hour answer and what it was built from: the minute asked in, the series
    located for it (NextHourPlan.located) and their hosts, and the samples."""

    minute: datetime
    located: Located
    hosts: list[str]
    samples: list[tuple[Any, ...]]  # the newest samples' rows (repository.latest_sample_rows)
    body: bytes


class NextHourPlan:
    """One scope's series (a host's, or every host's) in the next-hour answer's order (host,
    then catalogue), stacked per time grid, and the last answer built from them.

    An answer interpolates every series of a grid at once (a few numpy operations per grid,
    the same arithmetic as CachedSeries.at) and is one orjson call; it is kept with the
    minute it was asked in and the newest samples it used, so a read in the same minute
    against the same samples is answered by comparing them. A plan lives until the cache
    settles a new store fingerprint (ReadCache.settle drops every plan).
    """

    def __init__(self, series: Sequence[CachedSeries]) -> None:
        self.series = sorted(series, key=lambda e: (e.host, e.rank, e.metric))
        by_grid: dict[int, list[int]] = {}
        for position, entry in enumerate(self.series):
            by_grid.setdefault(id(entry.seconds), []).append(position)
        self.grids: list[_Grid] = []
        for rows in by_grid.values():
            members = [self.series[r] for r in rows]
            self.grids.append(
                _Grid(
                    seconds=members[0].seconds,
                    rows=np.asarray(rows, dtype=np.int64),
                    yhat=np.vstack([m.yhat for m in members]),
                    lower=np.vstack([m.lower for m in members]),
                    upper=np.vstack([m.upper for m in members]),
                    newest=max(m.generated_at for m in members),
                )
            )
        self.scale = np.asarray([e.scale for e in self.series], dtype=float)
        self.last: NextHourAnswer | None = None

    def located(self, after: datetime, at: datetime, until: datetime) -> Located:
        """The positions of the series with points in (after, until], in order, their yhat,
        lower and upper interpolated at `at` (as np.interp, held at the window's ends), and
        the newest generation among them (None: no series has points there)."""
        lo, hi, when = after.timestamp(), until.timestamp(), at.timestamp()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        newest: datetime | None = None
        for grid in self.grids:
            i, j = bisect_right(grid.seconds, lo), bisect_right(grid.seconds, hi)
            if i >= j:
                continue
            k, share = interpolation(grid.seconds, i, j, when)

            def at_share(v: np.ndarray, k: int = k, share: float = share) -> np.ndarray:
                # CachedSeries.at's arithmetic, for every row at once
                if share == 0.0:
                    return np.asarray(v[:, k - 1])
                return np.asarray(v[:, k - 1] + share * (v[:, k] - v[:, k - 1]))

            parts.append(
                (grid.rows, at_share(grid.yhat), at_share(grid.lower), at_share(grid.upper))
            )
            newest = grid.newest if newest is None else max(newest, grid.newest)
        if not parts:
            empty = np.zeros(0)
            return np.zeros(0, dtype=np.int64), empty, empty, empty, None
        rows, yhat, lower, upper = (np.concatenate(column) for column in zip(*parts, strict=True))
        order = np.argsort(rows, kind="stable")
        return rows[order], yhat[order], lower[order], upper[order], newest

    def hosts(self, rows: np.ndarray) -> list[str]:
        return list(dict.fromkeys(self.series[r].host for r in rows.tolist()))

    def body(
        self,
        located: Located,
        *,
        at: datetime,
        host: str | None,
        samples: Mapping[str, Mapping[str, Any]],
    ) -> bytes | None:
        """A NextHourResponse's JSON from `located(...)`, each series against its host's newest
        sample (as next_hour.next_hour does for one series); None when no series is there."""
        rows, yhat, lower, upper, newest = located
        if newest is None:
            return None
        series = [self.series[r] for r in rows.tolist()]
        stamps: dict[str, str | None] = {}
        current: list[float | None] = []
        for entry in series:
            sample = samples.get(entry.host)
            if entry.host not in stamps:
                stamp = None if sample is None else sample.get("timestamp")
                stamps[entry.host] = None if stamp is None else dumps(stamp)[1:-1].decode()
            raw = None if sample is None else sample.get(entry.metric)
            current.append(None if raw is None else float(raw))
        now_values = np.asarray([np.nan if c is None else c for c in current], dtype=float)
        change = yhat - now_values
        fallback = np.maximum(
            np.maximum(np.abs(yhat), np.abs(np.nan_to_num(now_values, nan=0.0))), 1e-9
        )
        scale = self.scale[rows]
        tolerance = NEXT_HOUR_FLAT_TOLERANCE * np.where(scale != 0.0, scale, fallback)
        code = np.where(change > tolerance, 1, np.where(change < -tolerance, 2, 0))
        at_text = dumps(at)[1:-1].decode()
        hosts = list(dict.fromkeys(entry.host for entry in series))
        return dumps(
            {
                "host": answered(host, hosts),
                "hosts": hosts,
                "generated_at": newest,
                "metrics": [
                    {
                        "host": entry.host,
                        "metric": entry.metric,
                        "current_value": now,
                        "current_at": stamps[entry.host],
                        "at": at_text,
                        "yhat": y,
                        "yhat_lower": lo,
                        "yhat_upper": hi,
                        "change": None if now is None else delta,
                        "direction": _DIRECTIONS[c],
                    }
                    for entry, now, y, lo, hi, delta, c in zip(
                        series,
                        current,
                        yhat.tolist(),
                        lower.tolist(),
                        upper.tolist(),
                        change.tolist(),
                        code.tolist(),
                        strict=True,
                    )
                ],
            }
        )


_DIRECTIONS = ("flat", "rising", "falling")


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
        self.plans: dict[str | None, NextHourPlan] = {}  # next hour's, by host (None: all)
        self.breachable: list[CachedSeries] = []  # `ordered`'s series that reach a threshold
        self.quiet: dict[tuple[str | None, int], bytes] = {}  # alerts with none breachable

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
        self.plans = {}
        self.breachable = [entry for entry in self.ordered if entry.reach]
        self.quiet = {}
        complete = len(self.ordered) == len(index)
        self.fingerprint = fingerprint if complete else None

    def scoped(self, host: str | None, metric: str | None) -> list[CachedSeries]:
        """The ordered series of `host` and `metric` (None: any)."""
        return [
            entry
            for entry in self.ordered
            if (host is None or entry.host == host) and (metric is None or entry.metric == metric)
        ]

    def plan(self, host: str | None) -> NextHourPlan:
        """The next-hour plan of `host`'s series (None: every host's), made once per settle."""
        found = self.plans.get(host)
        if found is None:
            found = self.plans[host] = NextHourPlan(self.scoped(host, None))
        return found

    def series(self, index: Mapping[Key, datetime]) -> list[CachedSeries]:
        """The held entries of `index` that are its generation, by host then metric."""
        return [
            entry
            for key in sorted(index)
            if (entry := self.entries.get(key)) is not None and entry.generated_at == index[key]
        ]

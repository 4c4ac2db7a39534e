"""Each host's last hour of samples in memory, kept by the anomaly scoring loop's reads.

Usage (``FailureService``): ``windows = LatestWindows(stale_after=30.0)``; the anomaly loop
calls ``windows.observe(rows_by_host, True)`` after each stored pass;
``w = windows.get(host)`` is the host's window or None (cold or stale: read the database);
after such a read, ``windows.seed(host, rows, ticket=ticket)`` with ``ticket = windows.ticket()``
taken before the read.

A window holds what ``repository.window_rows`` would return as of the loop's last pass: the
host's samples of the ``LOOKBACK_S`` up to its newest, at most ``LOOKBACK_ROWS``, oldest first.
It is only ever made from such a database read, then extended by the rows the loop reads (in
id order, every row stored since its cursor). A row it cannot simply append (older than the
newest held: a late sample, a backfill, synthetic data stored again over the range) drops the
window, so the next request reads the database again. A window is served only while the loop
has caught up with the stored samples within ``stale_after`` seconds: a stopped, failing or
lagging loop (another process storing a backlog) sends requests to the database.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.trainer.anomaly.repository import ID, TIMESTAMP, SampleRow, sample_arrays
from shared.arrays import FloatArray
from shared.catalogue import METRIC_NAMES
from shared.clock import utc

LOOKBACK_S = 3600.0 + 120.0  # the features' hour, and a little more
LOOKBACK_ROWS = 720  # samples before the first new one: the features' hour at 5 s steps
FORGET_EVERY = 1000  # passes after which a host's last delivery is forgotten
MAX_HOSTS = 20_000  # windows kept (about 80 KB each at 5 s steps); the least recently used go


def _epoch(value: Any) -> float:
    return utc(value).timestamp()


@dataclass(slots=True)
class HostWindow:
    """One host's recent samples: epoch seconds, values (METRIC_NAMES order), ids."""

    times: FloatArray
    values: FloatArray
    ids: np.ndarray[Any, np.dtype[np.int64]]
    # The last answer computed from this window: (model id, explain) -> response bytes.
    answers: dict[tuple[int, int], bytes] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Sequence[SampleRow]) -> HostWindow:
        times, values = sample_arrays(rows, METRIC_NAMES)
        ids = np.array([int(r[ID]) for r in rows], dtype=np.int64)
        return cls(times, values, ids)

    @property
    def max_id(self) -> int:
        return int(self.ids.max()) if len(self.ids) else -1

    def extend(self, rows: Sequence[SampleRow]) -> bool:
        """Append rows read after this window was made (id order); False if one cannot be
        appended (it belongs inside the window, or may have been missed): drop the window."""
        if not rows:
            return True
        known = set(self.ids.tolist())
        newest = float(self.times[-1]) if len(self.times) else -np.inf
        top = self.max_id
        fresh: list[SampleRow] = []
        for r in rows:
            rid = int(r[ID])
            if rid in known:
                continue  # read by the database read that made the window
            ts = _epoch(r[TIMESTAMP])
            if ts < newest - LOOKBACK_S:
                continue  # older than the window: it changes nothing the features read
            if rid < top or ts < newest:
                # a late sample, a rewrite, or a row the read did not see: order breaks
                return False
            fresh.append(r)
            newest, top = ts, rid
        if not fresh:
            return True
        times, values = sample_arrays(fresh, METRIC_NAMES)
        ids = np.array([int(r[ID]) for r in fresh], dtype=np.int64)
        all_times = np.concatenate([self.times, times])
        keep = int(np.searchsorted(all_times, all_times[-1] - LOOKBACK_S, side="left"))
        keep = max(keep, len(all_times) - LOOKBACK_ROWS)
        self.times = all_times[keep:]
        self.values = np.vstack([self.values, values])[keep:]
        self.ids = np.concatenate([self.ids, ids])[keep:]
        self.answers.clear()
        return True


class LatestWindows:
    """The windows of every host asked about, and whether the loop feeding them is current."""

    def __init__(self, *, stale_after: float, max_hosts: int = MAX_HOSTS) -> None:
        self.stale_after = stale_after
        self.max_hosts = max_hosts
        self.windows: OrderedDict[str, HostWindow] = OrderedDict()
        self.caught_up_at: float | None = None  # monotonic time of the loop's last catch-up
        self.passes = 0  # stored passes seen
        # The pass that last brought each host's rows: a read overlapping it is not kept.
        self.delivered: dict[str, int] = {}
        self.forgotten = 0  # passes before this one are no longer in ``delivered``
        self.hits = 0  # answers from a window (no database read)
        self.reads = 0  # answers that read the database

    def fresh(self) -> bool:
        at = self.caught_up_at
        return at is not None and time.monotonic() - at <= self.stale_after

    def get(self, host: str) -> HostWindow | None:
        """The host's window if it is current, else None (the caller reads the database)."""
        window = self.windows.get(host)
        if window is None or not self.fresh():
            return None
        self.windows.move_to_end(host)
        return window

    def ticket(self) -> int:
        """Taken before a database read that may seed a window."""
        return self.passes

    def seed(self, host: str, rows: Sequence[SampleRow], *, ticket: int) -> HostWindow | None:
        """Keep a database read of the host's window, unless a pass brought rows of the host
        meanwhile (they could be newer than the read and would not be offered again)."""
        # Before the loop's first pass its cursor is not known yet: rows between this read
        # and that cursor (scored by another process) would never be offered.
        if ticket == 0 or ticket < self.forgotten or not rows:
            return None
        if self.delivered.get(host, -1) > ticket:
            return None
        window = HostWindow.from_rows(rows)
        self.windows[host] = window
        self.windows.move_to_end(host)
        while len(self.windows) > self.max_hosts:
            self.windows.popitem(last=False)
        return window

    def observe(self, rows_by_host: Mapping[str, Sequence[SampleRow]], caught_up: bool) -> None:
        """A pass of the loop stored: its rows extend the windows held (others stay cold)."""
        self.passes += 1
        if self.passes % FORGET_EVERY == 0:
            self.forgotten = self.passes - FORGET_EVERY
            self.delivered = {h: p for h, p in self.delivered.items() if p >= self.forgotten}
        for host, rows in rows_by_host.items():
            self.delivered[host] = self.passes
            window = self.windows.get(host)
            if window is not None and not window.extend(rows):
                del self.windows[host]
        if caught_up:
            self.caught_up_at = time.monotonic()


def appended(
    window: HostWindow,
    ids: np.ndarray[Any, np.dtype[np.int64]],
    times: FloatArray,
    values: FloatArray,
) -> tuple[HostWindow, int] | None:
    """The window followed by the rows read after it was made (id order; values in
    METRIC_NAMES order) that it lacks, and how many those are; None if one belongs inside it
    (a late sample, a rewrite): the host is read again. Rows read twice are taken once."""
    newest = float(window.times[-1]) if len(window.times) else -np.inf
    known = np.isin(ids, window.ids)
    take: list[int] = []
    for k in range(len(ids)):
        ts = float(times[k])
        if known[k] or ts < newest - LOOKBACK_S:
            continue  # read already, or older than anything the features will read
        if ts <= newest:
            return None
        take.append(k)
        newest = ts
    if not take:
        return window, 0
    merged = HostWindow(
        np.concatenate([window.times, times[take]]),
        np.vstack([window.values, values[take]]),
        np.concatenate([window.ids, ids[take]]),
    )
    return merged, len(take)


def trimmed(window: HostWindow, *, max_rows: int) -> HostWindow:
    """The rows a later sample's features may read: the ``LOOKBACK_S`` up to the newest, at
    most ``max_rows``."""
    if len(window.times) == 0:
        return window
    keep = int(np.searchsorted(window.times, window.times[-1] - LOOKBACK_S, side="left"))
    keep = max(keep, len(window.times) - max_rows)
    if keep == 0:
        return window
    return HostWindow(window.times[keep:], window.values[keep:], window.ids[keep:])

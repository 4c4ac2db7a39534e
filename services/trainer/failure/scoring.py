"""The failure-prediction loop: each host's new samples scored, written, warnings as incidents.

Usage (lifespan, through ``FailureService``): ``scorer = FailureScorer(settings, engine,
notifier, models)``; ``scorer.loop.start()``; ``await scorer.loop.stop()``.

Each pass scores, for every host with an active model (its own, else the fleet model), the
samples stored since its last stored prediction (at most ``MAX_ROWS_PER_PASS``; a host seen
for the first time: its newest sample only) and writes one ``failure_predictions`` row per
sample and horizon. A ``predicted_failure`` incident opens after ``failure_consecutive``
samples in a row with a warning (any horizon over its threshold, outside a failure state)
and resolves after as many without (``writer``: many hosts per transaction, dedup per host,
cooldown, webhook after the commit).

The samples come from one read per pass of every sample stored since the last (id order,
the last pass's ids read again: a transaction committed late is not missed) and each host's
last hour kept in memory from the reads before. A host is read by itself (its latest
``SCORE_ROWS`` samples, as the loop always did) on the first pass, when it has no window
(new, idle for a while, more than ``MAX_WINDOWS`` hosts), after a sample it cannot simply
append (a late sample, a regenerated stretch), after its scoring or writing failed, and on
a pass with more than ``MAX_READ`` new samples (a bulk import). A sample stored again over
the same minute (an upsert keeps its id) is not seen again: its window keeps the first
values until the host is read again. Scoring is batched over hosts (``fleet``), with the
same numbers as one host at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly.repository import HOST, ID, SampleRow, sample_arrays, samples_after
from services.trainer.failure import repository as repo
from services.trainer.failure.fleet import (
    EXPLAIN,
    HostInput,
    ScoredRow,
    contribution_dicts,
    score_hosts,
)
from services.trainer.failure.model import FailureModel
from services.trainer.failure.window import (
    LOOKBACK_ROWS,
    MAX_HOSTS,
    HostWindow,
    appended,
    trimmed,
)
from services.trainer.failure.writer import (
    INCIDENT_TYPE,
    HostScores,
    PredictionWriter,
    WarningTracker,
    dedup_key,
    failure_type,
    severity,
)
from shared.active_model import ActiveModel, ActiveModelHolder
from shared.catalogue import METRIC_NAMES
from shared.clock import utcnow
from shared.incidents.notifier import Notifier
from shared.loops import BackgroundLoop
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from shared.tables import metrics_history

__all__ = [
    "EXPLAIN",
    "INCIDENT_TYPE",
    "LOOKBACK_ROWS",
    "FailureScorer",
    "PassOutcome",
    "ScoredRow",
    "WarningTracker",
    "contribution_dicts",
    "dedup_key",
    "failure_type",
    "severity",
]

log = logging.getLogger("autofix_ml.failure")

MAX_ROWS_PER_PASS = 360  # new samples of one host scored per pass (a backlog takes more)
SCORE_ROWS = MAX_ROWS_PER_PASS + LOOKBACK_ROWS  # a host's latest samples a pass looks at
ACTIVE_HOST_WINDOW = timedelta(hours=2)  # the fleet model scores hosts seen this recently
READ_BATCH = 20_000  # new samples per read
MAX_READ = 1_000_000  # new samples held per pass; beyond, every host is read by itself
MAX_WINDOWS = MAX_HOSTS  # hosts whose last hour is kept; others are read by themselves
COLD_READS = 4  # hosts read at once by themselves (PostgreSQL; SQLite reads one at a time)


@dataclass(slots=True)
class PassOutcome:
    hosts: int = 0
    predictions: int = 0
    opened: list[IncidentOut] = field(default_factory=list)
    read_alone: int = 0  # hosts read by themselves (no window, or it could not be used)
    failed: int = 0  # hosts whose scoring or writing failed (tried again next pass)
    seconds: dict[str, float] = field(default_factory=dict)  # hosts, read, score, write


_Fresh = tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, Any], np.ndarray[Any, Any]]


def model_columns(model: FailureModel) -> list[int] | None:
    """The model's metrics as columns of a window (None: one is not a catalogue metric)."""
    index = {m: j for j, m in enumerate(METRIC_NAMES)}
    if any(m not in index for m in model.spec.metrics):
        return None
    return [index[m] for m in model.spec.metrics]


def group_rows(rows: list[SampleRow], into: dict[str, list[SampleRow]]) -> None:
    for r in rows:
        into.setdefault(str(r[HOST]), []).append(r)


def fresh_arrays(rows: list[SampleRow]) -> _Fresh:
    times, values = sample_arrays(rows, METRIC_NAMES)
    return np.array([int(r[ID]) for r in rows], dtype=np.int64), times, values


class FailureScorer:
    """The loop over every host with an active failure model."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        models: ActiveModelHolder[FailureModel],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self.models = models
        self.last: dict[str, datetime] | None = None  # newest scored sample per host
        self.writer = PredictionWriter(settings, engine, notifier)
        self.trackers: dict[str, WarningTracker] = self.writer.trackers
        self.windows: OrderedDict[str, HostWindow] = OrderedDict()
        self.cursor: int | None = None  # the newest sample id read (None: read every host)
        self.reread_from = 0  # the next read starts after this id: the cursor a pass ago
        self.errors: dict[str, str] = {}  # hosts whose last scoring or writing failed
        self.loop = BackgroundLoop(
            "failure-scoring", self.step, interval=settings.failure_scoring_interval
        )

    async def step(self) -> float | None:
        await self.run_pass()
        return None

    async def _hosts(self) -> dict[str, ActiveModel[FailureModel]]:
        async with self.engine.connect() as conn:
            await self.models.refresh(conn)
            if self.last is None:
                self.last = await repo.last_predicted(conn)
            hosts = {m.record.host: m for m in self.models.all() if m.record.host is not None}
            fleet = self.models.get(host=None)
            if fleet is not None:
                for host in await repo.active_hosts(conn, since=utcnow() - ACTIVE_HOST_WINDOW):
                    hosts.setdefault(host, fleet)
        return hosts

    async def _read_new(self) -> tuple[dict[str, _Fresh] | None, int]:
        """Every sample stored since the pass before last, by host, and the newest id; None
        (and the newest id, read first) on the first pass or beyond ``MAX_READ``."""
        async with self.engine.connect() as conn:
            if self.cursor is not None:
                by_host: dict[str, list[SampleRow]] = {}
                after, total = self.reread_from, 0
                while total <= MAX_READ:
                    rows = await samples_after(conn, after, READ_BATCH)
                    group_rows(rows, by_host)
                    total += len(rows)
                    if len(rows) < READ_BATCH:
                        top = max(self.cursor, after if not rows else int(rows[-1][ID]))
                        return {h: fresh_arrays(r) for h, r in by_host.items()}, top
                    after = int(rows[-1][ID])
                log.warning("more than %d new samples: every host read by itself", MAX_READ)
            newest = (await conn.execute(sa.select(sa.func.max(metrics_history.c.id)))).scalar()
        return None, int(newest or 0)

    async def run_pass(self) -> PassOutcome:
        """Score every host's new samples, write them and the incidents; notify after."""
        try:
            return await self._run_pass()
        except BaseException:
            # What was read may not have reached the windows: start again from the database.
            self.windows.clear()
            self.cursor = None
            raise

    async def _run_pass(self) -> PassOutcome:
        outcome = PassOutcome()
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            outcome.seconds[name] = outcome.seconds.get(name, 0.0) + now - clock
            clock = now

        hosts = await self._hosts()
        assert self.last is not None
        lap("hosts")
        fresh, top = await self._read_new()
        inputs: list[HostInput] = []
        kept: dict[str, HostWindow] = {}  # each host's window once its samples are scored
        cold: list[str] = []
        for host, active in sorted(hosts.items()):
            window = self.windows.get(host)
            columns = model_columns(active.model)
            if fresh is None or window is None or columns is None:
                cold.append(host)
                continue
            new = fresh.get(host)
            merged = appended(window, *new) if new is not None else (window, 0)
            if merged is None:
                cold.append(host)  # a sample it cannot simply append: read the host
                continue
            kept[host] = merged[0]
            if merged[1]:
                inputs.append(self._input(host, active.model, merged[0], columns))
        outcome.read_alone = len(cold)
        read = await self._read_hosts(cold)
        for host in cold:
            rows = read.get(host)
            if isinstance(rows, BaseException):
                self._failed(host, rows)
                continue
            assert rows is not None
            model = hosts[host].model
            if model_columns(model) is not None and rows:
                kept[host] = HostWindow.from_rows(rows)
            times, values = sample_arrays(rows, model.spec.metrics)
            inputs.append(HostInput(host, model, times, values, self._after(host)))
        lap("read")
        results = await asyncio.to_thread(score_hosts, inputs, limit=MAX_ROWS_PER_PASS)
        lap("score")
        batch: list[HostScores] = []
        for host in sorted(results):
            result = results[host]
            if isinstance(result, Exception):
                self._failed(host, result)
                kept.pop(host, None)
            elif result:
                batch.append(HostScores(host, hosts[host], result))
        written, notified, failed = await self.writer.write(batch)
        lap("write")
        for host, exc in failed.items():
            self._failed(host, exc)
            kept.pop(host, None)
        for item in written:
            self.last[item.host] = item.scored[-1].ts
            self.errors.pop(item.host, None)
            outcome.hosts += 1
            outcome.predictions += len(item.scored)
        outcome.opened = [i for i in notified if i.status == "open"]
        outcome.failed = len(self.errors)
        # Windows of the hosts of this pass only: another host's rows were not followed.
        windows: OrderedDict[str, HostWindow] = OrderedDict()
        for host, window in kept.items():
            windows[host] = trimmed(window, max_rows=SCORE_ROWS - 1)
        while len(windows) > MAX_WINDOWS:
            windows.popitem(last=False)
        self.windows = windows
        self.reread_from = self.cursor if self.cursor is not None else top
        self.cursor = top
        return outcome

    def _after(self, host: str) -> float | None:
        assert self.last is not None
        last = self.last.get(host)
        return None if last is None else last.timestamp()

    def _input(
        self, host: str, model: FailureModel, window: HostWindow, columns: list[int]
    ) -> HostInput:
        """The host's latest ``SCORE_ROWS`` samples, as its own read would give them."""
        times = window.times[-SCORE_ROWS:]
        values = window.values[-SCORE_ROWS:][:, columns]
        return HostInput(host, model, times, values, self._after(host))

    async def _read_hosts(self, hosts: list[str]) -> dict[str, list[SampleRow] | BaseException]:
        """Each host's latest ``SCORE_ROWS`` samples, a few hosts at a time (PostgreSQL)."""
        out: dict[str, list[SampleRow] | BaseException] = {}
        if not hosts:
            return out
        gate = asyncio.Semaphore(1 if self.engine.dialect.name == "sqlite" else COLD_READS)

        async def one(host: str) -> None:
            async with gate:
                try:
                    async with self.engine.connect() as conn:
                        out[host] = await repo.recent_rows(conn, host=host, limit=SCORE_ROWS)
                except Exception as exc:  # noqa: BLE001 - one host never stops the others
                    out[host] = exc

        await asyncio.gather(*(one(h) for h in hosts))
        return out

    def _failed(self, host: str, exc: BaseException) -> None:
        log.error("failure scoring of host %s failed: %s", host, exc)
        self.errors[host] = f"{type(exc).__name__}: {exc}"

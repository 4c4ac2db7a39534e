"""The failure loop over many hosts: one read of the new samples, windows in memory, batched
scoring and writes give exactly what scoring each host by itself from the database gives.

Real SQLite and PostgreSQL; samples through the collector's ingest path (``insert_samples``);
the small model of test_failure_service. The reference is the loop as it was, one host at a
time: its latest samples read, every row's features, ``Booster.predict`` and one
``pred_contrib`` per explained row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.collector.samples.repository import insert_samples
from services.trainer.anomaly.repository import sample_arrays
from services.trainer.failure import artifact, scoring
from services.trainer.failure import repository as repo
from services.trainer.failure import writer as writer_module
from services.trainer.failure.features import batch_features
from services.trainer.failure.fleet import ScoredRow
from services.trainer.failure.model import Contribution, FailureModel
from services.trainer.failure.scoring import (
    MAX_READ,
    READ_BATCH,
    SCORE_ROWS,
    FailureScorer,
    WarningTracker,
    contribution_dicts,
    failure_type,
)
from services.trainer.failure.training import MODEL_NAME
from services.trainer.failure.writer import HostScores, PredictionWriter
from shared.active_model import ActiveModel, ActiveModelHolder
from shared.catalogue import METRIC_NAMES
from shared.clock import utc, utcnow
from shared.incidents.notifier import Notifier
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings
from shared.tables import failure_predictions as fp
from shared.tables import incidents
from tests.trainer.failure.test_failure_service import install, leak_replay

HOSTS = 12
FIRST = 70  # samples of each host before the first pass
Key = tuple[str, datetime, int]


def reference(
    model: FailureModel, rows: list[Any], after: datetime | None
) -> list[tuple[datetime, dict[int, float], bool, bool, list[Contribution]]]:
    """One host's new rows scored as the loop scored them one host at a time."""
    times, values = sample_arrays(rows, model.spec.metrics)
    if after is None:
        new = np.array([len(times) - 1])
    else:
        new = np.flatnonzero(times > after.timestamp())[-360:]
    if len(new) == 0:
        return []
    x = batch_features(model.spec, times, values)[new]
    probs = model.predict_features(x)
    state = model.definition.state(times, values, model.spec.metrics)[new]
    thresholds = {h.horizon_min: h.threshold for h in model.horizons}
    out = []
    for i, row_index in enumerate(new.tolist()):
        p = {h: float(probs[h][i]) for h in thresholds}
        warning = any(p[h] >= thresholds[h] for h in thresholds) and not bool(state[i])
        contributions: list[Contribution] = []
        if warning or i == len(new) - 1:
            lead = max(thresholds, key=lambda h: p[h] / thresholds[h])  # noqa: B023
            contributions = model.explain(x[i], lead, top=3)
        out.append((utc(rows[row_index][1]), p, warning, bool(state[i]), contributions))
    return out


class Fleet:
    """Hosts, each replaying its own stretch of the leak frame one minute at a time."""

    def __init__(self) -> None:
        frame, _start, restart = leak_replay()
        self.frame = frame
        last = min(len(frame) - 20, restart + 30)
        self.ends = np.linspace(FIRST, last, HOSTS).astype(int).tolist()
        self.base = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=40)
        self.sent = dict.fromkeys(self.hosts, 0)  # frame rows stored per host

    @property
    def hosts(self) -> list[str]:
        return [f"fleet-{i:02d}" for i in range(HOSTS)]

    def sample(self, i: int, k: int, *, at: datetime | None = None) -> dict[str, Any]:
        """Host i's k-th sample of its stretch (k = FIRST - 1 at ``base``)."""
        row = self.frame.iloc[self.ends[i] - FIRST + k]
        sample = {m: float(row[m]) for m in METRIC_NAMES}
        stamp = at or self.base + timedelta(minutes=k - (FIRST - 1))
        sample.update(timestamp=stamp, host=self.hosts[i], label=str(row["label"]))
        return sample

    def next(self, counts: dict[int, int]) -> list[dict[str, Any]]:
        out = []
        for i, n in counts.items():
            host = self.hosts[i]
            out += [self.sample(i, self.sent[host] + j) for j in range(n)]
            self.sent[host] += n
        return out


async def ingest(engine: AsyncEngine, samples: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        await insert_samples(conn, samples)


async def stored_since(engine: AsyncEngine, after_id: int) -> dict[Key, tuple[Any, ...]]:
    query = sa.select(
        fp.c.host,
        fp.c.timestamp,
        fp.c.horizon_minutes,
        fp.c.failure_probability,
        fp.c.will_fail,
        fp.c.predicted_failure_type,
        fp.c.top_features,
    ).where(fp.c.id > after_id)
    async with engine.connect() as conn:
        rows = await conn.execute(query)
        return {(r[0], utc(r[1]), r[2]): tuple(r[3:]) for r in rows}


async def max_id(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.max(fp.c.id)))).scalar() or 0)


async def expected_pass(
    engine: AsyncEngine,
    model: FailureModel,
    hosts: list[str],
    after: dict[str, datetime],
    trackers: dict[str, WarningTracker],
    consecutive: int,
) -> dict[Key, tuple[Any, ...]]:
    """What scoring each host by itself from the database stores; moves ``after`` and the
    reference's trackers."""
    expected: dict[Key, tuple[Any, ...]] = {}
    for host in hosts:
        async with engine.connect() as conn:
            rows = await repo.recent_rows(conn, host=host, limit=SCORE_ROWS)
        for ts, p, warning, in_failure, contributions in reference(model, rows, after.get(host)):
            top = contribution_dicts(contributions)
            kind = failure_type(model, contributions)
            for h, v in p.items():
                threshold = next(m.threshold for m in model.horizons if m.horizon_min == h)
                will_fail = v >= threshold and not in_failure
                expected[(host, ts, h)] = (v, will_fail, kind, top)
            trackers.setdefault(host, WarningTracker(consecutive)).observe(warning)
            after[host] = ts
    return expected


async def test_many_hosts_in_one_pass_store_what_scoring_them_one_by_one_stores(
    settings: Settings, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "WRITE_HOSTS", 5)  # several transactions a pass
    await install(engine, None)
    fleet = Fleet()
    await ingest(engine, fleet.next(dict.fromkeys(range(HOSTS), FIRST)))
    holder: ActiveModelHolder[FailureModel] = ActiveModelHolder(MODEL_NAME, artifact.load)
    scorer = FailureScorer(settings, engine, Notifier(settings), holder)
    model = _loaded(await _refresh(engine))
    after: dict[str, datetime] = {}
    trackers: dict[str, WarningTracker] = {}
    late_host = fleet.hosts[1]
    for n in range(12):
        if n == 1:  # 0, 1 or 2 new samples a host
            await ingest(engine, fleet.next({i: i % 3 for i in range(HOSTS)}))
        elif n == 2:  # a late sample of one host: before its newest, inside its hour
            newest = fleet.base + timedelta(minutes=fleet.sent[late_host] - FIRST)
            late = fleet.sample(1, fleet.sent[late_host] - 2, at=newest - timedelta(seconds=90))
            late["cpu_usage_percent"] = 97.0
            await ingest(engine, [late, *fleet.next(dict.fromkeys(range(HOSTS), 1))])
        elif n > 2:
            await ingest(engine, fleet.next(dict.fromkeys(range(HOSTS), 1)))
        before = await max_id(engine)
        if n == 6:  # more new samples than a pass holds (a bulk import): every host read
            monkeypatch.setattr(scoring, "READ_BATCH", 2)
            monkeypatch.setattr(scoring, "MAX_READ", 3)
        outcome = await scorer.run_pass()
        monkeypatch.setattr(scoring, "READ_BATCH", READ_BATCH)
        monkeypatch.setattr(scoring, "MAX_READ", MAX_READ)
        stored = await stored_since(engine, before)
        expected = await expected_pass(
            engine, model, fleet.hosts, after, trackers, settings.failure_consecutive
        )
        assert stored == expected, f"pass {n}"
        # the first pass reads every host; then only the host whose sample came late
        assert outcome.read_alone == {0: HOSTS, 2: 1, 6: HOSTS}.get(n, 0), f"pass {n}"
        assert outcome.failed == 0
    async with engine.connect() as conn:
        query = sa.select(incidents.c.host, incidents.c.status).where(
            incidents.c.type == "predicted_failure"
        )
        found = {(h, s) for h, s in await conn.execute(query)}
    opened = {h for h, t in trackers.items() if t.open}
    assert opened, "no host warned: the test shows nothing"
    assert {h for h, s in found if s == "open"} == opened
    resolved = {h for h, t in trackers.items() if t.open is False}
    assert {h for h, s in found if s == "resolved"} <= resolved


async def _refresh(engine: AsyncEngine) -> ActiveModelHolder[FailureModel]:
    holder: ActiveModelHolder[FailureModel] = ActiveModelHolder(MODEL_NAME, artifact.load)
    async with engine.connect() as conn:
        await holder.refresh(conn)
    return holder


def _loaded(holder: ActiveModelHolder[FailureModel]) -> FailureModel:
    active = holder.get(host=None)
    assert active is not None
    return active.model


async def test_a_host_whose_write_fails_loses_no_other_hosts_predictions_or_incident(
    settings: Settings, engine: AsyncEngine
) -> None:
    await install(engine, None)
    holder = await _refresh(engine)
    active = holder.get(host=None)
    assert active is not None
    # a version deleted while the pass ran: its predictions cannot reference it
    gone = ActiveModel(active.model, active.record.model_copy(update={"id": 10**9}))
    thresholds = {h.horizon_min: h.threshold for h in active.model.horizons}
    now = utcnow().replace(microsecond=0)

    def rows(warning: bool) -> list[ScoredRow]:
        p = {h: 0.99 if warning else 0.01 for h in thresholds}
        return [
            ScoredRow(now + timedelta(minutes=k), p, thresholds, warning, False, [])
            for k in range(3)
        ]

    notified: list[IncidentOut] = []
    notifier = Notifier(settings)
    notifier.listeners.append(notified.append)
    writer = PredictionWriter(settings, engine, notifier)
    batch = [
        HostScores("a-ok", active, rows(True)),
        HostScores("b-gone", gone, rows(True)),
        HostScores("c-ok", active, rows(False)),
    ]
    written, told, failed = await writer.write(batch)
    assert [w.host for w in written] == ["a-ok", "c-ok"]
    assert set(failed) == {"b-gone"}
    stored = await stored_since(engine, 0)
    assert {k[0] for k in stored} == {"a-ok", "c-ok"} and len(stored) == 2 * 3 * 3
    # the warning host's incident committed with its predictions and was told after
    assert (
        [(i.host, i.status) for i in told]
        == [("a-ok", "open")]
        == [(i.host, i.status) for i in notified]
    )
    # the failed host's warnings were not counted: tried again, they open its incident
    assert "b-gone" not in writer.trackers
    written, told, failed = await writer.write([HostScores("b-gone", active, rows(True))])
    assert not failed and [(i.host, i.status) for i in told] == [("b-gone", "open")]

"""The latest-state prediction from each host's window in memory, and its database fallback.

Real SQLite and PostgreSQL, the real trainer app with its scoring loops; samples through
store_frame. The answer from a window must equal the one a trainer without windows (only the
database read) gives for the same stored samples.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app
from services.trainer.failure import repository as repo
from services.trainer.failure.scoring import LOOKBACK_ROWS
from services.trainer.failure.service import FailureService
from services.trainer.failure.window import LOOKBACK_S, HostWindow, LatestWindows
from shared.settings import Settings
from tests.conftest import app_client
from tests.trainer.failure.test_failure_service import install, leak_replay, store

HOST = "win-1"


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    # The anomaly loop every 0.2 s: a window goes stale 0.6 s after its last catch-up.
    return settings.model_copy(update={"failure_scoring_interval": 3600, "scoring_interval": 0.2})


@pytest.fixture
async def trainer(
    fast_settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(fast_settings, engine=engine)
    async with app_client(app) as client:
        yield app, client


async def until(check: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def from_database(settings: Settings, engine: AsyncEngine) -> dict[str, Any]:
    """The answer of a trainer that has no window (a restart, another process)."""
    app = create_app(settings, engine=engine)
    async with app_client(app) as client:
        answer = await client.post("/predict/failure", json={"host": HOST})
        assert answer.status_code == 200, answer.text
        failure: FailureService = app.state.failure
        assert failure.windows.reads == 1 and failure.windows.hits == 0
        body: dict[str, Any] = answer.json()
        return body


def newest(app: FastAPI) -> float | None:
    window = app.state.failure.windows.windows.get(HOST)
    return None if window is None else float(window.times[-1])


def epoch(frame: pd.DataFrame, i: int) -> float:
    return float(frame["timestamp"].iloc[i].timestamp())


async def test_a_warm_window_answers_without_reading_and_equals_the_database(
    trainer: tuple[FastAPI, httpx.AsyncClient], fast_settings: Settings, engine: AsyncEngine
) -> None:
    app, client = trainer
    windows = app.state.failure.windows
    await install(engine, None)
    frame, _leak, restart = leak_replay()
    await store(engine, frame.iloc[: restart - 30], HOST)
    await until(windows.fresh)
    await until(lambda: windows.passes > 1)
    first = await client.post("/predict/failure", json={"host": HOST})
    assert first.status_code == 200, first.text
    assert windows.reads == 1 and newest(app) == epoch(frame, restart - 31)  # seeded by it
    # five new samples: the scoring loop reads them and extends the window
    await store(engine, frame.iloc[restart - 30 : restart - 25], HOST)
    await until(lambda: newest(app) == epoch(frame, restart - 26))
    answer = await client.post("/predict/failure", json={"host": HOST})
    again = await client.post("/predict/failure", json={"host": HOST})
    assert answer.status_code == 200, answer.text
    assert windows.reads == 1 and windows.hits == 2  # no database read for either
    assert answer.content == again.content  # the second is the answer kept for this sample
    body = answer.json()
    assert body["timestamp"].startswith(
        frame["timestamp"].iloc[restart - 26].strftime("%Y-%m-%dT%H:%M")
    )
    assert body != first.json()
    assert body == await from_database(fast_settings, engine)
    # fewer contributions asked for: computed again from the same window, still no read
    short = await client.post("/predict/failure", json={"host": HOST, "explain": 1})
    assert len(short.json()["contributions"]) <= 1 and windows.reads == 1


async def test_a_stale_window_reads_the_database(
    trainer: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    app, client = trainer
    windows = app.state.failure.windows
    await install(engine, None)
    frame, _leak, restart = leak_replay()
    await store(engine, frame.iloc[: restart - 30], HOST)
    await until(lambda: windows.passes > 1)
    await client.post("/predict/failure", json={"host": HOST})
    assert newest(app) is not None
    # the loop stops (a stuck pass, an outage): a new sample is stored that it never reads
    await app.state.anomaly.scoring.loop.stop()
    await store(engine, frame.iloc[restart - 30 : restart - 29], HOST)
    await until(lambda: not windows.fresh())
    answer = await client.post("/predict/failure", json={"host": HOST})
    assert answer.status_code == 200, answer.text
    assert windows.reads == 2
    assert answer.json()["timestamp"].startswith(
        frame["timestamp"].iloc[restart - 30].strftime("%Y-%m-%dT%H:%M")
    )


async def test_a_late_sample_drops_the_window_and_the_next_answer_has_it(
    trainer: tuple[FastAPI, httpx.AsyncClient], fast_settings: Settings, engine: AsyncEngine
) -> None:
    app, client = trainer
    windows = app.state.failure.windows
    await install(engine, None)
    frame, _leak, restart = leak_replay()
    await store(engine, frame.iloc[: restart - 30], HOST)
    await until(lambda: windows.passes > 1)
    before = (await client.post("/predict/failure", json={"host": HOST})).json()
    assert newest(app) is not None
    # a sample 30 s after one ten minutes back arrives late: it belongs inside the window
    late = frame.iloc[restart - 41 : restart - 40].copy()
    late["timestamp"] = late["timestamp"] + timedelta(seconds=30)
    passes = windows.passes
    await store(engine, late, HOST)
    await until(lambda: windows.passes > passes + 1)
    assert HOST not in windows.windows
    answer = await client.post("/predict/failure", json={"host": HOST})
    assert windows.reads == 2
    assert answer.json()["samples_used"] == before["samples_used"] + 1
    assert answer.json() == await from_database(fast_settings, engine)


async def test_a_read_is_kept_only_when_no_pass_brought_the_hosts_rows_during_it(
    engine: AsyncEngine,
) -> None:
    frame, _leak, restart = leak_replay()
    await store(engine, frame.iloc[: restart - 30], HOST)
    await store(engine, frame.iloc[: restart - 30], "other")
    await store(engine, frame.iloc[restart - 30 : restart - 29], HOST)
    async with engine.connect() as conn:
        rows = await repo.window_rows(conn, host=HOST, seconds=LOOKBACK_S, limit=LOOKBACK_ROWS)
        other = await repo.window_rows(conn, host="other", seconds=LOOKBACK_S, limit=720)
    head, last = rows[:-1], rows[-1:]
    windows = LatestWindows(stale_after=60.0)
    # before the loop's first pass its cursor is unknown: nothing is kept
    assert windows.seed(HOST, head, ticket=windows.ticket()) is None
    windows.observe({}, True)
    ticket = windows.ticket()
    windows.observe({HOST: last}, True)  # a pass brought the host's rows during the read
    assert windows.seed(HOST, head, ticket=ticket) is None
    assert windows.seed("other", other, ticket=ticket) is not None  # not that host's
    window = windows.seed(HOST, head, ticket=windows.ticket())
    assert window is not None and windows.get(HOST) is window
    # the next pass appends the newer row; a row the read saw again changes nothing
    windows.observe({HOST: [head[-1], *last]}, True)
    assert window.ids.tolist() == [int(r[0]) for r in rows]
    whole = HostWindow.from_rows(rows)  # as if read after that pass
    assert window.times.tolist() == whole.times.tolist()
    assert window.values.tobytes() == whole.values.tobytes()
    # a row older than the newest held cannot be appended: the window goes
    windows.observe({HOST: [(10**9, *rows[-2][1:])]}, True)
    assert windows.get(HOST) is None and HOST not in windows.windows

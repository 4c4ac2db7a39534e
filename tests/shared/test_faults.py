"""The small pieces of fault handling: which driver errors mean a full database, the restart
backoff, and the per-key locks that forget idle keys."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
from sqlalchemy.exc import OperationalError

from shared.keyed_locks import KeyedLocks
from shared.storage import StorageState, storage_full
from shared.supervisor import Backoff


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (sqlite3.OperationalError("database or disk is full"), True),
        (asyncpg.exceptions.DiskFullError("could not extend file"), True),
        (
            OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full")),
            True,
        ),
        (sqlite3.OperationalError("database is locked"), False),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), False),
        (ConnectionRefusedError(111, "Connect call failed"), False),
    ],
)
def test_a_full_database_is_told_apart_from_an_outage(error: BaseException, full: bool) -> None:
    assert storage_full(error) is full


def test_a_full_database_is_reported_for_a_while_then_forgotten() -> None:
    state = StorageState()
    assert state.problem() is None
    state.record(sqlite3.OperationalError("database or disk is full"))
    problem = state.problem()
    assert problem is not None and "database or disk is full" in problem
    assert state.problem(within=-1.0) is None


def test_restarts_back_off_doubling_up_to_the_cap() -> None:
    backoff = Backoff(first=0.5, cap=30.0)
    assert [backoff.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30


async def test_keyed_locks_serialise_one_key_and_forget_it_when_idle() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def work(key: str, name: str, pause: float) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(pause)
            order.append(f"{name} out")

    await asyncio.gather(work("a", "first", 0.05), work("a", "second", 0), work("b", "other", 0))
    assert order.index("first out") < order.index("second in")
    assert order.index("other in") < order.index("first out")  # another key does not wait
    assert len(locks) == 0

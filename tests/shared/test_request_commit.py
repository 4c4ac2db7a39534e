"""A write answered 2xx is stored: a request's transaction (``ConnDep``) commits before the
answer is sent, so a commit that fails is an error answer, not a 2xx and a lost write.

FastAPI ends a dependency with ``yield`` after the response by default: a client then got
its 201 before the commit (a read right after it could miss the row, as a parallel run of
the suite once saw). A foreign key checked only at commit makes the commit fail on purpose;
the app is served by uvicorn on a loopback port (real SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.web import ConnDep, install_error_handlers
from tests.conftest import served

PARENT = "commit_probe_parent"
CHILD = "commit_probe"


@pytest.fixture
async def probe_tables(engine: AsyncEngine) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {PARENT} (id INTEGER PRIMARY KEY)"))
        await conn.execute(
            sa.text(
                f"CREATE TABLE {CHILD} (parent INTEGER "
                f"REFERENCES {PARENT} (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
        await conn.execute(sa.text(f"INSERT INTO {PARENT} (id) VALUES (1)"))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {CHILD}"))
            await conn.execute(sa.text(f"DROP TABLE {PARENT}"))


def probe_app(engine: AsyncEngine) -> FastAPI:
    app = FastAPI()
    app.state.engine = engine
    install_error_handlers(app)

    @app.post("/probe/{parent}", status_code=201)
    async def probe(parent: int, conn: ConnDep) -> dict[str, int]:
        # the foreign key is checked at commit, after this function has returned
        await conn.execute(sa.text(f"INSERT INTO {CHILD} (parent) VALUES (:p)"), {"p": parent})
        return {"parent": parent}

    return app


async def stored(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text(f"SELECT parent FROM {CHILD} ORDER BY parent"))
        return [int(r[0]) for r in rows]


@pytest.mark.usefixtures("probe_tables")
async def test_a_failed_commit_is_an_error_answer_and_a_2xx_is_stored(engine: AsyncEngine) -> None:
    async with served(probe_app(engine)) as base, httpx.AsyncClient(base_url=base) as client:
        refused = await client.post("/probe/999")  # no such parent: the commit fails
        assert refused.status_code == 409, refused.text
        assert await stored(engine) == []
        accepted = await client.post("/probe/1")
        assert accepted.status_code == 201
        assert await stored(engine) == [1]  # read at once after the answer: there

"""Shared fixtures: a real PostgreSQL and a real SQLite database, apps served over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine
from shared.migrate import upgrade
from shared.settings import Settings
from shared.tables import metadata

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _can_connect(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _throwaway_cluster(tmp: Path) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Start a private PostgreSQL from the installed binaries; '' if there are none."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        return "", None
    bindir = bins[-1]
    data = tmp / "pgdata"
    port = free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(tmp, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(data)],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *prefix,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(tmp),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", proc


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server: TEST_DATABASE_URL, else 127.0.0.1:5432, else a throwaway cluster."""
    candidates = [os.environ.get("TEST_DATABASE_URL", "")]
    candidates += [
        "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        "postgresql+asyncpg://root@127.0.0.1:5432/test",
    ]
    for url in filter(None, candidates):
        if not url.startswith("postgresql+asyncpg"):
            url = "postgresql+asyncpg" + url[url.index(":") :]
        if asyncio.run(_can_connect(url)):
            yield url
            return
    tmp = Path(tempfile.mkdtemp(prefix="autofix-pg-"))
    url, proc = "", None
    with contextlib.suppress(subprocess.CalledProcessError, OSError):
        url, proc = _throwaway_cluster(tmp)
    if proc is not None:
        for _ in range(50):
            if asyncio.run(_can_connect(url)):
                break
            subprocess.run(["sleep", "0.2"], check=False)
        else:
            url = ""
    if not url:
        if IN_CI:
            pytest.fail("CI=true and no PostgreSQL is reachable (set TEST_DATABASE_URL)")
        pytest.skip("no PostgreSQL reachable")
    try:
        yield url
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A database of this test run on the PostgreSQL server, migrated; dropped at the end."""
    name = f"autofix_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_admin_url, f'CREATE DATABASE "{name}"'))
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "autofix-test.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs twice: on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


async def truncate_all(engine: AsyncEngine) -> None:
    # SQLite: a service's last write (a scoring pass finishing at shutdown on a loaded
    # machine) can hold the file's lock past sqlite's 5 s wait; wait longer, then fail.
    for attempt in range(60):
        try:
            async with engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    await conn.execute(sa.delete(table))
            return
        except sa.exc.OperationalError as exc:
            if "database is locked" not in str(exc) or attempt == 59:
                raise
            await asyncio.sleep(0.5)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated, empty database; emptied again afterwards."""
    eng = create_engine(database_url)
    await truncate_all(eng)
    try:
        yield eng
    finally:
        await truncate_all(eng)
        await eng.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        ml_enabled=False,
        hostname="test-host",
        scrape_url="http://127.0.0.1:9/metrics",
        http_timeout=3.0,
        health_cache_seconds=0.0,
        # Each test's trainer would start and import a training process it mostly never uses.
        training_prewarm=False,
    )


@contextlib.asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, through httpx's ASGI transport."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """The app served by uvicorn on a loopback port in this event loop; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def settle_sqlite_workers() -> AsyncIterator[None]:
    """Wait for aiosqlite worker threads started by the test to finish.

    A failed aiosqlite connect raises at once but its worker thread stops a moment later and
    then calls into the event loop; if that loop has closed meanwhile (the last test of a run),
    the thread's error fails the run.
    """
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        if "_connection_worker_thread" in thread.name:
            await asyncio.to_thread(thread.join, 10)

"""Benchmark: generate 30 days of synthetic data and store it in SQLite and, if reachable, PostgreSQL.

Run: `python -m bench.bench_generate` (BENCH_POSTGRES_URL overrides the PostgreSQL server).
Targets: generation <= 0.1 s; storing >= 50,000 rows/s on SQLite, >= 200,000 rows/s on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pandas as pd
from sqlalchemy.engine import make_url

from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.repository import store_frame
from shared.db import create_engine
from shared.migrate import upgrade

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/")
START = datetime(2024, 1, 1, tzinfo=UTC)
GENERATE_RUNS = 9
STORE_RUNS = 3


def bench_generation() -> pd.DataFrame:
    generator = SyntheticDataGenerator(seed=42)
    generator.generate_full_training_set(30, start=START)  # warm-up: imports, caches
    timings = []
    for _ in range(GENERATE_RUNS):
        began = time.perf_counter()
        df = generator.generate_full_training_set(30, start=START)
        timings.append(time.perf_counter() - began)
    median = statistics.median(timings)
    print(
        f"generate 30 days: {len(df):,} rows x {df.shape[1]} columns, median of {GENERATE_RUNS} "
        f"{median * 1000:.1f} ms ({len(df) / median:,.0f} rows/s; target <= 100 ms)"
    )
    return df


async def bench_store(url: str, df: pd.DataFrame, *, name: str, target: int) -> None:
    """Time store_frame including its commit: the first run fills an empty table, later runs
    replace the same window (delete + insert)."""
    engine = create_engine(url)
    timings = []
    try:
        for _ in range(STORE_RUNS):
            began = time.perf_counter()
            async with engine.begin() as conn:
                stored = await store_frame(conn, df, host="bench")
            timings.append(time.perf_counter() - began)
    finally:
        await engine.dispose()
    first, replace = timings[0], statistics.median(timings[1:])
    print(
        f"store into {name}: {stored:,} rows, into an empty table {first:.3f} s "
        f"({stored / first:,.0f} rows/s), replacing {replace:.3f} s "
        f"({stored / replace:,.0f} rows/s; target >= {target:,} rows/s)"
    )


async def _postgres_admin(statement: str) -> None:
    url = make_url(POSTGRES_URL)
    conn = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database="postgres",
        timeout=3,
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def bench_postgres(df: pd.DataFrame) -> None:
    database = f"bench_gen_{os.getpid()}"
    try:
        asyncio.run(_postgres_admin(f'CREATE DATABASE "{database}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL at {POSTGRES_URL} not usable ({type(exc).__name__}): skipped")
        return
    try:
        url = make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
        upgrade(url)
        asyncio.run(bench_store(url, df, name="PostgreSQL (COPY)", target=200_000))
    finally:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{database}"'))


def main() -> None:
    df = bench_generation()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url)
        asyncio.run(bench_store(url, df, name="SQLite (executemany)", target=50_000))
    bench_postgres(df)


if __name__ == "__main__":
    main()

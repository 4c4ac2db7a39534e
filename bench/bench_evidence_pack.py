"""The evidence pack from PostgreSQL with 30 days of data, on one kept database, so two versions
of the code can be timed on the same data in the same run (issue 13's "pack <= 50 ms").

Fill once (the data of ``bench.bench_analysis``), keep the database::

    python -m bench.bench_evidence_pack fill --hosts 4 --days 30      # prints the URL

Time ``read_pack`` (and dump every pack as JSON, to compare two versions)::

    python bench/bench_evidence_pack.py read URL [--reads 400] [--dump packs.json]

Run as a script with ``PYTHONPATH=/other/checkout`` and this file times that checkout's
``read_pack`` (it imports only ``services`` and ``shared``). ``drop URL`` drops the database.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import statistics
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from services.trainer.analysis import repository as repo
from shared.clock import utcnow
from shared.db import create_engine

POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


CODE = str(Path(repo.__file__).resolve().parents[3])  # the checkout whose read_pack is timed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _ids(url: str) -> list[int]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT id FROM incidents WHERE type = 'ML_ANOMALY' ORDER BY id")
        )
        ids = [int(r[0]) for r in rows]
    await engine.dispose()
    return ids


async def read(url: str, *, reads: int, seed: int, dump: str | None, profile: str | None) -> None:
    ids = await _ids(url)
    engine = create_engine(url)
    now = utcnow()
    if dump:
        packs = {}
        for incident_id in ids:
            pack = await repo.read_pack(engine, incident_id, now=now)
            packs[str(incident_id)] = pack.to_json()
        text = json.dumps(packs, sort_keys=True, default=str)
        await asyncio.to_thread(Path(dump).write_text, text)
    rng = random.Random(seed)
    order = [rng.choice(ids) for _ in range(reads + 10)]
    times: list[float] = []
    cpu: list[float] = []
    sizes: list[int] = []
    profiler = cProfile.Profile() if profile else None
    for k, incident_id in enumerate(order):
        if profiler and k == 10:
            profiler.enable()
        started, on_cpu = time.perf_counter(), time.process_time()
        pack = await repo.read_pack(engine, incident_id, now=now)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - on_cpu) * 1000)
        sizes.append(len(pack.items))
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    await engine.dispose()
    times, cpu = times[10:], cpu[10:]
    print(
        json.dumps(
            {
                "code": CODE,
                "reads": len(times),
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(_pct(times, 0.95), 1),
                "max_ms": round(max(times), 1),
                "cpu_p50_ms": round(statistics.median(cpu), 2),
                "cpu_p95_ms": round(_pct(cpu, 0.95), 2),
                "items": round(statistics.mean(sizes), 1),
                "load": round(os.getloadavg()[0], 2),
            }
        )
    )


def fill(hosts: int, days: int) -> str:
    from bench.bench_analysis import fill as fill_data
    from bench.harness import _admin
    from shared.migrate import upgrade

    name = f"autofix_bench_pack_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    started = time.perf_counter()
    ids = asyncio.run(fill_data(url, hosts=hosts, days=days))
    print(f"filled {len(ids)} incidents in {time.perf_counter() - started:.0f} s")
    return url


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--hosts", type=int, default=4)
    f.add_argument("--days", type=int, default=30)
    r = sub.add_parser("read")
    r.add_argument("url")
    r.add_argument("--reads", type=int, default=400)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--dump")
    r.add_argument("--profile")
    d = sub.add_parser("drop")
    d.add_argument("url")
    args = parser.parse_args()
    if args.cmd == "fill":
        print(fill(args.hosts, args.days))
    elif args.cmd == "read":
        asyncio.run(
            read(args.url, reads=args.reads, seed=args.seed, dump=args.dump, profile=args.profile)
        )
    else:
        from bench.harness import _admin

        name = make_url(args.url).database
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()

"""What the database-kept ML_ANOMALY state costs a scoring pass, next to storing its scores.

Usage: ``python -m bench.bench_incident_pass --db postgresql --hosts 10000 --passes 5``.
Each pass has one sample per host; ``--episode`` of the hosts are flagged (they open, then
refresh incidents), the rest are normal. Printed per pass: the time to store the pass's
scores (``insert_scores``, the baseline) and the time of ``IncidentKeeper.apply``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import timedelta

from bench.harness import database
from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.alerting import IncidentKeeper, Observation
from services.trainer.anomaly.tracker import ScoringModel
from shared.clock import utcnow
from shared.db import create_engine
from shared.settings import Settings


async def run(url: str, *, hosts: int, passes: int, episode: float) -> None:
    engine = create_engine(url)
    settings = Settings(database_url=url)
    keeper = IncidentKeeper(settings)
    model = ScoringModel(model_id=None, version=None, threshold=0.999)
    flagged = int(hosts * episode)
    start = utcnow() - timedelta(minutes=passes + 1)
    store_s, apply_s = [], []
    try:
        for p in range(passes):
            ts = start + timedelta(minutes=p)
            by_host = {
                f"h{i}": [
                    Observation(
                        ts,
                        0.9999 if i < flagged else 0.5,
                        i < flagged,
                        "high" if i < flagged else "low",
                        [],
                    )
                ]
                for i in range(hosts)
            }
            records = [
                repo.score_record(
                    metrics_id=None,
                    model_id=None,
                    timestamp=ts,
                    host=h,
                    score=o[0].score,
                    threshold=0.999,
                    is_anomaly=o[0].flag,
                    severity=o[0].severity,
                    contributions=[],
                )
                for h, o in by_host.items()
            ]
            t0 = time.perf_counter()
            async with engine.begin() as conn:
                await repo.insert_scores(conn, records)
            t1 = time.perf_counter()
            async with engine.begin() as conn:
                await keeper.apply(conn, by_host, model=model, live_after=0.0)
            t2 = time.perf_counter()
            store_s.append(t1 - t0)
            apply_s.append(t2 - t1)
            print(f"pass {p}: store {t1 - t0:.3f} s, incidents {t2 - t1:.3f} s")
    finally:
        await engine.dispose()
    print(
        f"median over {passes} passes of {hosts} hosts ({flagged} flagged): "
        f"store scores {statistics.median(store_s):.3f} s, "
        f"incident state {statistics.median(apply_s):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--episode", type=float, default=0.01)
    args = parser.parse_args()
    with database(args.db) as url:
        asyncio.run(run(url, hosts=args.hosts, passes=args.passes, episode=args.episode))


if __name__ == "__main__":
    main()

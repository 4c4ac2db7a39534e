"""The failure-prediction loop over a fleet: how many hosts one pass keeps up with.

    python -m bench.bench_failure_loop --db sqlite --baseline-code /work/main
    python -m bench.bench_failure_loop --db postgresql --hosts 10000 --passes 3

Setup (once per database): `--hosts` hosts (default 10,000), each with `--minutes` (70) of
one-minute samples ending a minute ago, stored through the collector's ingest path
(``insert_samples``, the engine's bulk path): each host a different stretch of a synthetic
month (seed 7), so some hosts are in a leak, a spike or a storm and warn. The fleet failure
model is trained as the service trains it (a synthetic month, seed 42, default parameters,
three horizons) and activated for every host.

Each checkout measured (`--baseline-code` first, e.g. main's, then this one, `--rounds`
times alternated) runs in a process of its own from that checkout, on the same database:
stored predictions and predicted_failure incidents are cleared; a new ``FailureScorer``
runs its first pass (every host's newest sample); then `--passes` times one new sample per
host is stored (one ingest transaction) and a steady-state pass is timed, wall and CPU
seconds of the scoring process (the database server's own CPU is not in it). Reported:
hosts/s of the steady pass, and the hosts a 60 s interval keeps up with at that rate.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


# -- the worker: runs in a process whose PYTHONPATH is the checkout measured ------------------


async def worker(url: str, hosts: int, passes: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from services.collector.samples import repository as ingest
    from services.trainer.failure import artifact
    from services.trainer.failure.scoring import FailureScorer
    from services.trainer.failure.training import MODEL_NAME
    from shared.active_model import ActiveModelHolder
    from shared.catalogue import METRIC_NAMES
    from shared.clock import utc
    from shared.db import create_engine
    from shared.incidents.notifier import Notifier
    from shared.settings import Settings
    from shared.tables import failure_predictions, incidents, metrics_history

    engine = create_engine(url)
    settings = Settings(database_url=url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.delete(failure_predictions))
            await conn.execute(sa.delete(incidents).where(incidents.c.type == "predicted_failure"))
            newest_ts = sa.select(sa.func.max(metrics_history.c.timestamp))
            stored_until = (await conn.execute(newest_ts)).scalar_one()
        notifier = Notifier(settings, engine)
        scorer = FailureScorer(
            settings, engine, notifier, ActiveModelHolder(MODEL_NAME, artifact.load)
        )
        out: dict[str, Any] = {"code": os.environ.get("PYTHONPATH", "")}
        w0, c0 = time.perf_counter(), time.process_time()
        first = await scorer.run_pass()
        out["first"] = {
            "wall": time.perf_counter() - w0,
            "cpu": time.process_time() - c0,
            "hosts": first.hosts,
            "predictions": first.predictions,
            "opened": len(first.opened),
            "parts": getattr(first, "seconds", {}),
        }
        steady = []
        for _ in range(passes):
            # one new sample per host: the host's newest, a minute later, memory up a little
            async with engine.connect() as conn:
                query = sa.select(metrics_history).where(
                    metrics_history.c.id.in_(
                        sa.select(sa.func.max(metrics_history.c.id)).group_by(
                            metrics_history.c.host
                        )
                    )
                )
                newest = [dict(r._mapping) for r in await conn.execute(query)]
            samples = []
            for r in newest:
                sample = {m: r[m] for m in METRIC_NAMES}
                sample.update(
                    timestamp=utc(r["timestamp"]) + timedelta(minutes=1),
                    host=r["host"],
                    label="normal",
                )
                if sample["memory_usage_percent"] is not None:
                    sample["memory_usage_percent"] = min(99.0, sample["memory_usage_percent"] + 0.3)
                samples.append(sample)
            async with engine.begin() as conn:
                await ingest.insert_samples(conn, samples)
            w0, c0 = time.perf_counter(), time.process_time()
            done = await scorer.run_pass()
            steady.append(
                {
                    "wall": time.perf_counter() - w0,
                    "cpu": time.process_time() - c0,
                    "hosts": done.hosts,
                    "predictions": done.predictions,
                    "opened": len(done.opened),
                    "parts": getattr(done, "seconds", {}),
                }
            )
        out["steady"] = steady
        fp = failure_predictions
        async with engine.begin() as conn:
            query = sa.select(
                fp.c.host,
                fp.c.timestamp,
                fp.c.horizon_minutes,
                fp.c.failure_probability,
                fp.c.will_fail,
                fp.c.predicted_failure_type,
                fp.c.top_features,
            ).order_by(fp.c.host, fp.c.timestamp, fp.c.horizon_minutes)
            rows = [repr(tuple(r)) for r in await conn.execute(query)]
            out["stored_predictions"] = len(rows)
            out["predictions_sha256"] = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
            query = (
                sa.select(incidents.c.host, incidents.c.status, incidents.c.title)
                .where(incidents.c.type == "predicted_failure")
                .order_by(incidents.c.host, incidents.c.id)
            )
            found = [repr(tuple(r)) for r in await conn.execute(query)]
            out["incidents"] = len(found)
            out["incidents_sha256"] = hashlib.sha256("\n".join(found).encode()).hexdigest()[:16]
            # the samples this run added go: the next run scores the same data
            await conn.execute(
                sa.delete(metrics_history).where(metrics_history.c.timestamp > stored_until)
            )
        return out
    finally:
        await engine.dispose()


# -- the driver --------------------------------------------------------------------------


async def setup(url: str, hosts: int, minutes: int) -> dict[str, Any]:
    from services.collector.samples import repository as ingest
    from services.trainer.failure import artifact
    from services.trainer.failure.model import TrainParams, history_from_frame, train
    from services.trainer.failure.training import MODEL_NAME, MODEL_TYPE
    from services.trainer.synthetic.generator import SyntheticDataGenerator
    from shared import registry
    from shared.catalogue import METRIC_NAMES
    from shared.clock import utcnow
    from shared.db import create_engine

    t0 = time.perf_counter()
    month = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
    model = train([history_from_frame(month)], params=TrainParams())
    blob = artifact.dump(model)
    train_s = time.perf_counter() - t0
    trees = sum(h.booster.num_trees() for h in model.horizons)

    data = SyntheticDataGenerator(seed=7).generate_full_training_set(30)
    values = data[list(METRIC_NAMES)].to_numpy()
    labels = data["label"].astype(str).tolist()
    end = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=1)
    stamps = [end - timedelta(minutes=minutes - 1 - k) for k in range(minutes)]
    engine = create_engine(url)
    t0 = time.perf_counter()
    try:
        step = (len(data) - minutes) // hosts or 1
        batch: list[dict[str, Any]] = []
        for i in range(hosts):
            start = (i * step) % (len(data) - minutes)
            for k in range(minutes):
                row = values[start + k]
                sample: dict[str, Any] = {
                    m: float(v) for m, v in zip(METRIC_NAMES, row, strict=True)
                }
                sample.update(timestamp=stamps[k], host=f"host-{i:05d}", label=labels[start + k])
                batch.append(sample)
            if len(batch) >= 50_000 or i == hosts - 1:
                async with engine.begin() as conn:
                    await ingest.insert_samples(conn, batch)
                batch = []
        store_s = time.perf_counter() - t0
        now = utcnow()
        async with engine.begin() as conn:
            record = await registry.insert_model(
                conn,
                name=MODEL_NAME,
                model_type=MODEL_TYPE,
                artifact=blob,
                artifact_format=artifact.ARTIFACT_FORMAT,
                parameters={"host": None},
                metrics={},
                host=None,
                training_start=now - timedelta(days=30),
                training_end=now,
                sample_count=len(month),
            )
            await registry.activate(conn, record.id)
    finally:
        await engine.dispose()
    return {"train_s": train_s, "trees": trees, "store_s": store_s, "rows": hosts * minutes}


def run_worker(code: Path, url: str, hosts: int, passes: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFIX_", "ML_"))}
    env.update(PYTHONPATH=str(code), PYTHONWARNINGS="ignore", AUTOFIX_LOG_LEVEL="warning")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", url]
    command += ["--hosts", str(hosts), "--passes", str(passes)]
    done = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker from {code} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def parts(p: dict[str, float]) -> str:
    return "; " + ", ".join(f"{k} {v:.2f}" for k, v in p.items()) if p else ""


def report(label: str, r: dict[str, Any], hosts: int) -> None:
    f = r["first"]
    print(
        f"  {label}: first pass {f['wall']:.2f} s wall, {f['cpu']:.2f} s CPU "
        f"({f['hosts']} hosts, {f['predictions']} rows, {f['opened']} incidents opened"
        f"{parts(f.get('parts', {}))})"
    )
    walls = [s["wall"] for s in r["steady"]]
    for s in r["steady"]:
        print(
            f"    steady pass {s['wall']:.2f} s wall, {s['cpu']:.2f} s CPU "
            f"({s['hosts']} hosts, {s['predictions']} rows, {s['opened']} opened"
            f"{parts(s.get('parts', {}))})"
        )
    median = statistics.median(walls)
    rate = hosts / median
    print(
        f"    median steady pass {median:.2f} s: {rate:,.0f} hosts/s, "
        f"a 60 s interval keeps up with {rate * 60:,.0f} hosts; "
        f"stored {r['stored_predictions']} predictions (sha256 {r['predictions_sha256']}), "
        f"{r['incidents']} incidents ({r['incidents_sha256']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="sqlite")
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=70)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline-code", help="another checkout (e.g. /work/main), run first")
    args = parser.parse_args()
    if args.worker:
        result = asyncio.run(worker(args.worker, args.hosts, args.passes))
        print(json.dumps(result))
        return
    sys.path.insert(0, str(HERE))
    from bench.harness import database

    print(f"load average at start: {os.getloadavg()}")
    with database(args.db) as url:
        made = asyncio.run(setup(url, args.hosts, args.minutes))
        print(
            f"{args.db}: {args.hosts} hosts x {args.minutes} one-minute samples "
            f"({made['rows']} rows) stored in {made['store_s']:.1f} s; fleet model trained on "
            f"a synthetic month in {made['train_s']:.1f} s ({made['trees']} trees, 3 horizons)"
        )
        codes = [Path(args.baseline_code)] if args.baseline_code else []
        codes.append(HERE)
        for r in range(args.rounds):
            for code in codes:
                result = run_worker(code, url, args.hosts, args.passes)
                label = f"round {r + 1}, {code}"
                report(label, result, args.hosts)
                print(f"    load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

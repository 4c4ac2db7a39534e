"""Incident analysis (issue 13): the rules analyst on labelled incidents, its speed, the
grounding check on generated answers, the evidence pack from PostgreSQL with 30 days of data,
opening incidents with and without analysis (its LLM stuck), and a stuck LLM's hold.

Run: ``python -m bench.bench_analysis [--hosts 4] [--days 30] [--db postgresql]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import time
from collections import Counter
from datetime import timedelta

import sqlalchemy as sa

from bench.analysis_cases import (
    TOP_METRICS,
    Case,
    correct_answer,
    inject,
    smd_cases,
    synthetic_cases,
)
from bench.bench_smd import MACHINES
from bench.harness import database, percentile
from services.trainer.analysis import grounding, rules
from services.trainer.analysis import repository as repo
from services.trainer.analysis.service import AnalysisService
from services.trainer.anomaly import repository as anomaly_repo
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.clock import utcnow
from shared.db import bulk_insert_samples, create_engine, frame_records
from shared.incidents import repository as incidents
from shared.incidents.notifier import Notifier
from shared.settings import Settings
from shared.tables import forecast_generations, metric_forecasts, ml_models

LABEL_METRIC = {"cpu_spike": "cpu_usage_percent", "memory_leak": "memory_usage_percent"}
LABEL_METRIC["error_storm"] = "error_rate"


def at_opening(case: Case, minutes: int = 15) -> Case:
    """The same incident as seen when it opens: only its first ``minutes`` are 'during'."""
    incident = dict(case.incident)
    end = incident["started_at"] + timedelta(minutes=minutes)
    incident["resolved_at"] = min(end, incident["resolved_at"])
    return Case(case.name, case.category, case.top, incident, case.samples)


def labelled(days: int) -> None:
    cases = list(synthetic_cases(days=days)) + [c for m in MACHINES for c in smd_cases(m)]
    for title, view in (("whole labelled run", lambda c: c), ("first 15 minutes", at_opening)):
        total: Counter[str] = Counter()
        right: Counter[str] = Counter()
        top: Counter[str] = Counter()
        grounded = 0
        times: list[float] = []
        cpu: list[float] = []
        for case in cases:
            pack = view(case).pack()
            started, on_cpu = time.perf_counter(), time.thread_time()
            answer = rules.analyze(pack)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - on_cpu) * 1000)
            key = case.category or "smd (unnamed metrics: expects unknown)"
            total[key] += 1
            right[key] += answer.cause.category == (case.category or "unknown")
            top[key] += answer.top_metric in case.top
            grounded += not grounding.check(answer, pack)
        print(f"\nRules analyst, {title} ({len(cases)} incidents; synthetic {days} days):")
        print("| category | incidents | right category | right top metric |")
        print("| --- | ---: | ---: | ---: |")
        for key in [*TOP_METRICS, "smd (unnamed metrics: expects unknown)"]:
            n = total[key]
            print(f"| {key} | {n} | {right[key] / n:.1%} | {top[key] / n:.1%} |")
        n = sum(total.values())
        print(f"| all | {n} | {sum(right.values()) / n:.1%} | {sum(top.values()) / n:.1%} |")
        print(
            f"rules analyst time per incident: p50 {statistics.median(times):.2f} ms, "
            f"p99 {percentile(times, 0.99):.2f} ms, max {max(times):.2f} ms (CPU time: p99 "
            f"{percentile(cpu, 0.99):.2f} ms, max {max(cpu):.2f} ms); "
            f"its answers grounded: {grounded}/{n}"
        )
    hits = total_smd = 0
    for machine in MACHINES:
        for case in smd_cases(machine, detector=True):
            total_smd += 1
            hits += rules.analyze(case.pack()).top_metric in case.top
    print(
        f"SMD with the streaming detector's scores in the pack (as the service has them): "
        f"right top metric {hits}/{total_smd} ({hits / total_smd:.1%})"
    )
    rng = random.Random(5)
    packs = [c.pack() for c in cases]
    accepted = rejected = total_answers = 0
    for pack in packs:
        facts = grounding.PackFacts(pack)
        for _ in range(20):
            good = correct_answer(pack, rng)
            accepted += not grounding.check(good, pack, facts)
            rejected += bool(grounding.check(inject(good, pack, rng), pack, facts))
            total_answers += 1
    print(
        f"\nGrounding on {total_answers} generated answers ({len(packs)} packs): correct "
        f"accepted {accepted / total_answers:.2%}, one false figure or metric rejected "
        f"{rejected / total_answers:.2%}"
    )


async def fill(url: str, *, hosts: int, days: int) -> list[int]:
    """``hosts`` hosts with ``days`` of 1-minute samples and their scores, an incident per
    labelled run (resolved), half of them analysed, forecasts and model versions."""
    engine = create_engine(url)
    now = utcnow().replace(second=0, microsecond=0)
    start = now - timedelta(days=days)
    ids: list[int] = []
    settings = Settings(database_url=url, analysis_auto=False)
    service = AnalysisService(settings, engine, Notifier(settings, engine))
    for h in range(hosts):
        host = f"web-{h}"
        frame = SyntheticDataGenerator(seed=h).generate_full_training_set(days=days, start=start)
        async with engine.begin() as conn:
            await bulk_insert_samples(
                conn, frame_records(frame, host=host, sqlite=False), prepared=True
            )
        labels = frame["label"].to_numpy()
        ts = frame["timestamp"].dt.to_pydatetime()
        flagged = labels != "normal"
        cpu = frame["cpu_usage_percent"].to_numpy()
        scores = [
            anomaly_repo.score_record(
                metrics_id=None,
                model_id=None,
                timestamp=ts[i],
                host=host,
                score=0.9999 if flagged[i] else 0.4,
                threshold=0.999,
                is_anomaly=bool(flagged[i]),
                severity="high" if flagged[i] else "low",
                contributions=[
                    {"metric": LABEL_METRIC.get(labels[i], "cpu_usage_percent"), "value": 1.0}
                    | {"likelihood": 0.9999, "expected": float(cpu[i])}
                ],
            )
            for i in range(len(frame))
        ]
        async with engine.begin() as conn:
            for k in range(0, len(scores), 20000):
                await anomaly_repo.insert_scores(conn, scores[k : k + 20000])
        edges = list(zip(labels[:-1], labels[1:], strict=True))
        runs = [i + 1 for i, (a, b) in enumerate(edges) if a == "normal" and b != "normal"]
        async with engine.begin() as conn:
            for first in runs:
                last = first
                while last + 1 < len(labels) and labels[last + 1] == labels[first]:
                    last += 1
                key = f"ML_ANOMALY:{host}"
                incident, _ = await incidents.raise_incident(
                    conn,
                    type="ML_ANOMALY",
                    host=host,
                    dedup_key=key,
                    severity="high",
                    title=f"Anomalous behaviour on {host}",
                    details={
                        "first_seen": ts[first].isoformat(),
                        "top_metrics": [{"metric": LABEL_METRIC[labels[first]]}],
                    },
                    cooldown_minutes=0,
                    now=ts[first] + timedelta(minutes=3),
                )
                await incidents.resolve_incident(
                    conn, incident_id=incident.id, reason="recovered", now=ts[last]
                )
                ids.append(incident.id)
            gen = now - timedelta(minutes=5)
            points = [
                {
                    "model_id": None,
                    "host": host,
                    "metric": m,
                    "generated_at": gen,
                    "target_timestamp": now + timedelta(hours=k),
                    "yhat": 50.0 + k,
                    "yhat_lower": 40.0 + k,
                    "yhat_upper": 60.0 + k,
                }
                for m in ("cpu_usage_percent", "memory_usage_percent", "disk_usage_percent")
                for k in range(1, 25)
            ]
            await conn.execute(sa.insert(metric_forecasts), points)
            await conn.execute(
                sa.insert(forecast_generations),
                [{"host": host, "metric": p["metric"], "generated_at": gen} for p in points[::24]],
            )
            await conn.execute(
                sa.insert(ml_models).values(
                    name="anomaly_detector",
                    model_type="isolation_forest",
                    version=1,
                    status="active",
                    host=host,
                    created_at=now - timedelta(days=2),
                    activated_at=now - timedelta(days=2),
                )
            )
    for incident_id in ids[::2]:
        await service.analyze(incident_id, provider="rules")
    await service.stop()
    await engine.dispose()
    return ids


async def pack_speed(url: str, ids: list[int], n: int = 400) -> None:
    engine = create_engine(url)
    rng = random.Random(1)
    times: list[float] = []
    cpu: list[float] = []
    sizes: list[int] = []
    for incident_id in [rng.choice(ids) for _ in range(n)]:
        started, on_cpu = time.perf_counter(), time.process_time()
        pack = await repo.read_pack(engine, incident_id, now=utcnow())
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - on_cpu) * 1000)
        sizes.append(len(pack.items))
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT count(*) FROM metrics_history"))).scalar()
    await engine.dispose()
    print(
        f"\nEvidence pack from PostgreSQL ({rows} samples, {len(ids)} incidents): "
        f"p50 {statistics.median(times[10:]):.1f} ms, p95 {percentile(times[10:], 0.95):.1f} ms, "
        f"max {max(times[10:]):.1f} ms over {n - 10} reads (first 10 warm-up); "
        f"{statistics.mean(sizes):.0f} items a pack; this process's CPU time p50 "
        f"{statistics.median(cpu[10:]):.1f} ms; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )


async def _stuck_llm() -> tuple[asyncio.Server, str]:
    """An 'LLM' that takes the connection and never answers."""

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def opening(url: str, *, limit: float = 2.0, blocks: int = 4, per_block: int = 25) -> None:
    """Time to open an incident (its transaction and notify()) without analysis, then with
    analysis on and its LLM stuck, in alternating blocks (the machine's load drifts); then how
    long a stuck LLM holds one analysis."""
    server, llm_url = await _stuck_llm()
    engine = create_engine(url)
    base = Settings(database_url=url, analysis_timeout=limit, ollama_url=llm_url)
    results: dict[str, list[float]] = {"analysis off": [], "analysis on, LLM stuck": []}
    notify_us: list[float] = []
    k = 0
    for _block in range(blocks):
        for label, auto in (("analysis off", False), ("analysis on, LLM stuck", True)):
            settings = base.model_copy(update={"analysis_auto": auto})
            notifier = Notifier(settings, engine)
            service = AnalysisService(settings, engine, notifier)
            service.start()
            for _ in range(per_block):
                k += 1
                started = time.perf_counter()
                async with engine.begin() as conn:
                    incident, _ = await incidents.raise_incident(
                        conn,
                        type="ML_ANOMALY",
                        host=f"open-{k}",
                        dedup_key=f"bench:open:{k}",
                        severity="high",
                        title="bench",
                    )
                before_notify = time.perf_counter()
                notifier.notify(incident)
                done = time.perf_counter()
                results[label].append((done - started) * 1000)
                if auto:
                    notify_us.append((done - before_notify) * 1e6)
                await asyncio.sleep(0.01)  # the worker gets the loop as between scoring passes
            await service.stop()
    for label, times in results.items():
        print(
            f"open an incident, {label}: p50 {statistics.median(times):.2f} ms, "
            f"p99 {percentile(times, 0.99):.2f} ms ({len(times)} incidents)"
        )
    print(
        f"notify() with the analysis listener: p50 {statistics.median(notify_us):.1f} us, "
        f"max {max(notify_us):.1f} us"
    )
    settings = base.model_copy(update={"analysis_auto": False})
    service = AnalysisService(settings, engine, Notifier(settings, engine))
    async with engine.connect() as conn:
        some = (await conn.execute(sa.text("SELECT id FROM incidents LIMIT 1"))).scalar_one()
    holds: list[float] = []
    for _ in range(3):
        started = time.perf_counter()
        stored = await service.analyze(int(some), provider="ollama")
        holds.append(time.perf_counter() - started)
        assert stored.fallback and "timeout" in (stored.rejected_reason or "")
    await service.stop()
    print(
        f"stuck LLM, limit {limit:g} s: analysis answered (rules, marked fallback) after "
        f"{', '.join(f'{h:.2f}' for h in holds)} s"
    )
    server.close()
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--db", default="postgresql")
    parser.add_argument("--skip-labelled", action="store_true")
    args = parser.parse_args()
    if not args.skip_labelled:
        labelled(args.days)
    with database(args.db) as url:
        started = time.perf_counter()
        ids = asyncio.run(fill(url, hosts=args.hosts, days=args.days))
        print(f"\n(filled in {time.perf_counter() - started:.0f} s)")
        asyncio.run(pack_speed(url, ids))
        asyncio.run(opening(url))


if __name__ == "__main__":
    main()

"""Benchmark: how long `activate` and `feedback` take on the trainer while other clients
generate data, train and predict (the fuzzing load of issue 11), on SQLite and PostgreSQL.

Run: `python -m bench.bench_activate_under_load [sqlite|postgresql]`. Prints the latency
of each call under load, and how many went over the gateway's 10 s.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import timedelta

import httpx

from bench.harness import database
from services.trainer.app import create_app
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import save_frame
from shared.clock import utcnow
from shared.settings import Settings
from tests.conftest import served

GATEWAY_TIMEOUT = 10.0
LOAD_SECONDS = 40.0


def main(kind: str) -> None:
    with database(kind) as url:
        asyncio.run(run(kind, url))


async def run(kind: str, url: str) -> None:
    if True:
        start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(days=5)
        frame = SyntheticDataGenerator(seed=1).generate_full_training_set(4, start=start)
        await save_frame(url, frame, host="load-host")
        settings = Settings(
            database_url=url, ml_enabled=False, scoring_interval=1.0, hostname="bench"
        )
        async with served(create_app(settings)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                body = {"host": "load-host", "n_estimators": 30, "contamination": 0.05}
                first = (await client.post("/train/anomaly-detector", json=body)).json()
                model_id = first["model"]["id"]
                await client.post("/predict/anomaly", json={"host": "load-host"})
                scores = (await client.get("/anomaly-scores?limit=1")).json()["scores"]
                score_id = scores[0]["id"] if scores else 1
                stop = time.monotonic() + LOAD_SECONDS
                timings: dict[str, list[float]] = {"activate": [], "feedback": [], "models": []}
                failures: dict[str, int] = {}

                async def generate(n: int) -> None:
                    while time.monotonic() < stop:
                        await client.post(
                            "/train/generate-synthetic", json={"host": f"gen-{n}", "days": 30}
                        )

                async def predict() -> None:
                    while time.monotonic() < stop:
                        await client.post(
                            "/predict/anomaly", json={"host": "load-host", "cpu_usage_percent": 50}
                        )

                async def train() -> None:
                    while time.monotonic() < stop:
                        await client.post("/train/anomaly-detector", json=body)

                async def probe(name: str, method: str, path: str, payload: object) -> None:
                    while time.monotonic() < stop:
                        t = time.perf_counter()
                        answer = await client.request(method, path, json=payload)
                        timings[name].append(time.perf_counter() - t)
                        if answer.status_code >= 500:
                            failures[name] = failures.get(name, 0) + 1
                        await asyncio.sleep(0.5)

                await asyncio.gather(
                    *(generate(n) for n in range(3)),
                    *(predict() for _ in range(4)),
                    train(),
                    probe("activate", "POST", f"/models/{model_id}/activate", None),
                    probe("models", "GET", "/models", None),
                    probe(
                        "feedback",
                        "POST",
                        f"/anomaly-scores/{score_id}/feedback",
                        {"feedback": "false_positive"},
                    ),
                )
        for name, values in timings.items():
            over = sum(v > GATEWAY_TIMEOUT for v in values)
            print(
                f"{kind} {name}: {len(values)} calls under load, median "
                f"{statistics.median(values):.2f} s, max {max(values):.2f} s, "
                f"over {GATEWAY_TIMEOUT:.0f} s: {over}, 5xx: {failures.get(name, 0)}"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite")

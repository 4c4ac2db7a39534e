"""Where the trainer's event loop stalls during a training run: the slowest /health probes.

Usage: `python -m bench.bench_training_stalls` prints, for one training of 30 synthetic days on
SQLite through the gateway, the six slowest trainer /health answers and when they came (seconds
after the training request), so a p99 can be traced to the moments that make it.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from bench.bench_anomaly_service import caught_up
from bench.harness import database, services
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import save_frame


def probe(url: str, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get(f"{url}/health").raise_for_status()
            out.append((started, time.perf_counter() - started))
            time.sleep(0.01)


def main() -> None:
    with database("sqlite") as url:
        frame = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
        asyncio.run(save_frame(url, frame, host="bench"))
        with services(url) as svc, httpx.Client(base_url=svc.gateway, timeout=600) as client:
            # The first scoring pass over the stored month scores in threads and would share
            # the loop with the training: waited for, as bench_anomaly_service does.
            print(f"first scoring pass: {caught_up(svc.urls['trainer']):.1f} s")
            answers: list[tuple[float, float]] = []
            stop = threading.Event()
            thread = threading.Thread(target=probe, args=(svc.urls["trainer"], stop, answers))
            thread.start()
            t0 = time.perf_counter()
            client.post(
                "/api/ml/train/anomaly-detector", json={"n_estimators": 100, "host": "bench"}
            ).raise_for_status()
            seconds = time.perf_counter() - t0
            stop.set()
            thread.join()
    slowest = sorted(((d, s - t0) for s, d in answers), reverse=True)[:6]
    print(
        f"training {seconds:.2f} s, {len(answers)} probes; slowest (ms at s): "
        + " ".join(f"{d * 1e3:.0f}@{at:.2f}" for d, at in slowest)
    )


if __name__ == "__main__":
    main()

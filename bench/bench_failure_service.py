"""Failure prediction through the gateway, services as real processes on loopback.

Run: ``python -m bench.bench_failure_service [--db sqlite postgresql] [--wrk-seconds 10]``.

Per database: 30 days of synthetic samples stored for host ``bench``;
``POST /api/ml/train/failure-predictor`` on them (three horizons) end to end, with the
trainer's ``/health`` p99 during it next to idle (target <= 20 ms);
``POST /api/ml/predict/failure`` (the host's latest state, 3 contributions) over one
kept-alive connection, p50/p99 (target p99 <= 5 ms); throughput at 50 connections by ``wrk``
(target >= 1,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.bench_anomaly_service import caught_up, health_series, ms
from bench.harness import database, services, wrk
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import save_frame

BODY = {"host": "bench"}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""


def run(kind: str, *, requests: int, wrk_seconds: int) -> None:
    print(f"== {kind}")
    with database(kind) as url:
        frame = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
        asyncio.run(save_frame(url, frame, host="bench"))
        with services(url) as svc:
            trainer, api = svc.urls["trainer"], svc.gateway
            # the anomaly loop's first pass over the stored month would share the CPU
            print(f"anomaly scoring caught up first: {caught_up(trainer):.1f} s")
            with httpx.Client(base_url=api, timeout=900) as client:
                idle: list[float] = []
                stop = threading.Event()
                probe = threading.Thread(target=health_series, args=(trainer, stop, idle))
                probe.start()
                time.sleep(3)
                stop.set()
                probe.join()
                busy: list[float] = []
                stop = threading.Event()
                probe = threading.Thread(target=health_series, args=(trainer, stop, busy))
                probe.start()
                t0 = time.perf_counter()
                trained = client.post("/api/ml/train/failure-predictor", json={"host": "bench"})
                train_s = time.perf_counter() - t0
                stop.set()
                probe.join()
                trained.raise_for_status()
                body = trained.json()
                model = body["model"]
                thresholds = body["evaluation"]["thresholds"]
                print(
                    f"train 30 days ({model['sample_count']} samples trained on, 3 horizons, "
                    f"held-out evaluation with baselines) through the gateway: {train_s:.2f} s; "
                    f"thresholds {thresholds}; held-out precision "
                    f"{body['evaluation']['model']['precision']}"
                )
                print(f"  in the training process: {body['evaluation'].get('seconds')}")
                print(f"trainer /health idle:           {ms(idle)} (n={len(idle)})")
                print(f"trainer /health while training: {ms(busy)} (n={len(busy)})")
                for _ in range(200):
                    client.post("/api/ml/predict/failure", json=BODY).raise_for_status()
                lat = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    r = client.post("/api/ml/predict/failure", json=BODY)
                    lat.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                print(f"predict (latest state) through the gateway, one client: {ms(lat)}")
                direct = []
                with httpx.Client(base_url=trainer, timeout=10) as tc:
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        tc.post("/predict/failure", json=BODY).raise_for_status()
                        direct.append(time.perf_counter() - t0)
                print(f"predict on the trainer directly (baseline):           {ms(direct)}")
            with tempfile.TemporaryDirectory() as tmp:
                script = Path(tmp) / "predict.lua"
                script.write_text(LUA.format(body=json.dumps(BODY)))
                result = wrk(
                    f"{api}/api/ml/predict/failure", seconds=wrk_seconds, script=str(script)
                )
            print(f"wrk -t2 -c50 -d{wrk_seconds}s predict: {result.line()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", nargs="+", default=["sqlite"])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    args = parser.parse_args()
    for kind in args.db:
        run(kind, requests=args.requests, wrk_seconds=args.wrk_seconds)


if __name__ == "__main__":
    main()

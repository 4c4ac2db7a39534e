"""Anomaly detection through the gateway, services as real processes on loopback.

Run: ``python -m bench.bench_anomaly_service [--db postgresql sqlite] [--wrk-seconds 10]``.

Per database (a throwaway PostgreSQL database, created and dropped; a temp SQLite file):

- 30 days of synthetic samples stored; the time the scoring loop takes to score them all
  (a fresh install's first pass), then ``POST /api/ml/train/anomaly-detector`` (100 trees)
  end to end;
- ``POST /api/ml/predict/anomaly`` with the spec's four metrics over one kept-alive
  connection: p50/p99 over ``--requests`` requests after a warm-up (target p99 <= 5 ms);
- throughput with 50 concurrent connections by ``wrk`` (target >= 500/s, no errors);
- the trainer's ``/health`` p99 while a training runs, next to idle (target <= 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.harness import database, percentile, services
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import save_frame

BODY = {
    "cpu_usage_percent": 45.0,
    "memory_usage_mb": 2900.0,
    "error_rate": 0.01,
    "response_time_p95": 180.0,
    "host": "bench",
}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""


def ms(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1e3:.2f} ms, p99 {percentile(values, 0.99) * 1e3:.2f} ms"
    )


def health_series(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get(f"{url}/health").raise_for_status()
            out.append(time.perf_counter() - t0)
            time.sleep(0.01)


def caught_up(url: str, timeout: float = 600.0) -> float:
    """Seconds until the trainer's scoring loop has scored every stored sample."""
    t0 = time.perf_counter()
    with httpx.Client(timeout=30) as client:
        while time.perf_counter() - t0 < timeout:
            scoring = client.get(f"{url}/health").json().get("scoring") or {}
            if scoring.get("lag_seconds") == 0:
                return time.perf_counter() - t0
            time.sleep(0.2)
    raise RuntimeError("scoring did not catch up")


def train(client: httpx.Client) -> tuple[httpx.Response, float]:
    """Train the host's forest, and the seconds it took. While the scheduled training of the
    same host runs (it starts a minute after the services when the first scoring pass is
    slow, on a loaded machine), wait for it and try again."""
    for _ in range(300):
        t0 = time.perf_counter()
        trained = client.post(
            "/api/ml/train/anomaly-detector", json={"n_estimators": 100, "host": "bench"}
        )
        if trained.status_code != 409 or "already training" not in trained.text:
            break
        time.sleep(1.0)
    return trained, time.perf_counter() - t0


def run(kind: str, *, requests: int, wrk_seconds: int) -> None:
    print(f"== {kind}")
    with database(kind) as url:
        frame = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
        asyncio.run(save_frame(url, frame, host="bench"))
        with services(url) as svc:
            trainer = svc.urls["trainer"]
            api = svc.gateway
            first = caught_up(trainer)
            print(f"first scoring pass over {len(frame)} stored samples: {first:.1f} s")
            with httpx.Client(base_url=api, timeout=600) as client:
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
                trained, train_s = train(client)
                stop.set()
                probe.join()
                trained.raise_for_status()
                model = trained.json()["model"]
                print(
                    f"train 30 days ({model['sample_count']} samples, 100 trees) through the "
                    f"gateway: {train_s:.2f} s (in-process fit {model['metrics']['fit_seconds']} s, "
                    f"with evaluation {model['metrics']['train_seconds']} s)"
                )
                print(f"trainer /health idle:           {ms(idle)} (n={len(idle)})")
                print(f"trainer /health while training: {ms(busy)} (n={len(busy)})")

                for _ in range(200):
                    client.post("/api/ml/predict/anomaly", json=BODY).raise_for_status()
                lat = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    r = client.post("/api/ml/predict/anomaly", json=BODY)
                    lat.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                print(
                    f"predict through the gateway, one kept-alive client: {ms(lat)} (n={requests})"
                )
                direct = []
                with httpx.Client(base_url=trainer, timeout=10) as tc:
                    for _ in range(requests):
                        t0 = time.perf_counter()
                        tc.post("/predict/anomaly", json=BODY).raise_for_status()
                        direct.append(time.perf_counter() - t0)
                print(f"predict on the trainer directly (baseline):         {ms(direct)}")

            with tempfile.TemporaryDirectory() as tmp:
                script = Path(tmp) / "predict.lua"
                script.write_text(LUA.format(body=json.dumps(BODY)))
                cmd = [
                    "wrk",
                    "-t2",
                    "-c50",
                    f"-d{wrk_seconds}s",
                    "--latency",
                    "-s",
                    str(script),
                    f"{api}/api/ml/predict/anomaly",
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
            errors = re.search(r"Socket errors:.*", out)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            p99 = re.search(r"99%\s+(\S+)", out)
            print(
                f"wrk -t2 -c50 -d{wrk_seconds}s predict: {rate.group(1) if rate else '?'} req/s, "
                f"p99 {p99.group(1) if p99 else '?'}, non-2xx {non2xx.group(1) if non2xx else 0}, "
                f"{errors.group(0) if errors else 'no socket errors'}"
            )
            time.sleep(1.0)  # let the batched writer store the predictions
            with httpx.Client(base_url=api, timeout=30) as client:
                stored = client.get(
                    "/api/ml/anomaly-scores", params={"host": "bench", "limit": 1}
                ).json()
            print(f"predictions stored in anomaly_scores (latest id {stored['scores'][0]['id']})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", nargs="*", default=["postgresql", "sqlite"])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    args = ap.parse_args()
    for kind in args.db:
        run(kind, requests=args.requests, wrk_seconds=args.wrk_seconds)


if __name__ == "__main__":
    main()

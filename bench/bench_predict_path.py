"""``AnomalyService.predict`` in process: the trainer's own cost of one prediction, no HTTP.

Run: ``python -m bench.bench_predict_path [--db sqlite postgresql] [--requests 3000]``.

Per database: 30 days of synthetic samples of the host ``bench`` stored, the trainer app's
lifespan run in process (its loops too), the scoring loop caught up, a 100-tree forest
trained for the host; then the bench body of ``bench_anomaly_service`` (four metrics, the
rest filled from the host's newest sample while it is fresh) predicted ``--requests`` times
after 200 warm-up calls, one at a time: p50 / p99 of the call (its database read included).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from bench.harness import database
from services.trainer.app import create_app
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import save_frame
from shared.schemas.anomaly import TrainAnomalyRequest
from shared.settings import Settings

BODY = {
    "cpu_usage_percent": 45.0,
    "memory_usage_mb": 2900.0,
    "error_rate": 0.01,
    "response_time_p95": 180.0,
}


async def measure(url: str, requests: int) -> list[float]:
    app = create_app(Settings(database_url=url, ml_enabled=False))
    async with app.router.lifespan_context(app):
        svc = app.state.anomaly
        for _ in range(1200):
            if (await svc.scoring_health()).lag_seconds == 0:
                break
            await asyncio.sleep(0.5)
        await svc.train(TrainAnomalyRequest(host="bench", n_estimators=100))
        for _ in range(200):
            await svc.predict(BODY, host="bench", timestamp=None)
        out = []
        for _ in range(requests):
            t0 = time.perf_counter()
            await svc.predict(BODY, host="bench", timestamp=None)
            out.append(time.perf_counter() - t0)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", nargs="*", default=["sqlite", "postgresql"])
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    for kind in args.db:
        with database(kind) as url:
            frame = SyntheticDataGenerator(seed=42).generate_full_training_set(30)
            asyncio.run(save_frame(url, frame, host="bench"))
            ms = np.asarray(asyncio.run(measure(url, args.requests))) * 1e3
        print(
            f"{kind}: predict in process p50 {np.percentile(ms, 50):.3f} ms, "
            f"p99 {np.percentile(ms, 99):.3f} ms (n={args.requests})"
        )


if __name__ == "__main__":
    main()

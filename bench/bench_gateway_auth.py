"""Issue 11: what access control costs the gateway, with and without it in the same run.

Run: ``python -m bench.bench_gateway_auth [--db sqlite] [--seconds 10] [--rounds 2]``.

The four services as ``autofix-ml serve`` processes, alternately
- "off": ``AUTOFIX_AUTH=off``, no internal token, no rate limit (``AUTOFIX_RATE_PREDICT=0``):
  the gateway as before issue 11, but for the path and body checks, which always run;
- "on": ``AUTOFIX_AUTH=on``, one operator key sent as ``Authorization: Bearer``, the internal
  token between gateway and services, predict's rate limit set out of reach (the bucket is
  still taken per request);
and ``wrk -t2 -c50`` on ``GET /api/ml/health`` and ``POST /api/ml/predict/anomaly``.
Target: "on" >= 90 % of "off" for both, 0 errors.

First, the access middleware alone: its own time per request around an app that does nothing,
a keyed predict (key lookup, role, rate bucket, body checks) and a health request (not in the
table). Then, less at the mercy of a shared machine: the gateway's own CPU time per request, the app
called in process (httpx's ASGI transport) against a trivial backend in another process,
"off" and "on" alternated, median of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from starlette.types import Message, Receive, Scope, Send

from bench.harness import database, free_port, services, wrk
from services.api.access.middleware import AccessMiddleware, Policies
from services.api.access.service import KeyStore
from services.api.app import create_app
from services.api.proxy.table import ROUTES
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import save_frame
from shared.apikeys import create_key
from shared.db import create_engine
from shared.settings import Settings

BODY = {"cpu_usage_percent": 45.0, "memory_usage_mb": 2900.0, "error_rate": 0.01, "host": "bench"}
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
"""


async def _make_key(url: str) -> str:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            key, _ = await create_key(conn, role="operator", name="bench")
        return key
    finally:
        await engine.dispose()


TRIVIAL_BACKEND = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok": true}'})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


async def _cpu_per_request(settings: Settings, headers: dict[str, str], n: int) -> dict[str, float]:
    """Microseconds of this process's CPU per request, for health and predict."""
    app = create_app(settings)
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            for what, call in (
                ("health", lambda: client.get("/api/ml/health")),
                (
                    "predict",
                    lambda: client.post("/api/ml/predict/anomaly", json=BODY, headers=headers),
                ),
            ):
                for _ in range(50):
                    (await call()).raise_for_status()
                started = time.process_time()
                for _ in range(n):
                    await call()
                out[what] = (time.process_time() - started) / n * 1e6
    return out


async def _middleware_alone(url: str, key: str, n: int) -> None:
    settings = Settings(
        database_url=url, auth="on", rate_predict=1e9, rate_predict_burst=1e9, internal_token="t"
    )
    store = KeyStore(settings)
    await store.start()

    async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    guard = AccessMiddleware(
        nothing, policies=Policies.of(ROUTES, settings), keys=store, settings=settings
    )
    body = json.dumps(BODY).encode()

    def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
        return {"type": "http", "method": method, "path": path, "headers": headers}

    predict = scope(
        "POST",
        "/api/ml/predict/anomaly",
        [
            (b"host", b"127.0.0.1:5000"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    )
    health = scope("GET", "/api/ml/health", [(b"host", b"127.0.0.1:5000")])

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError(f"the middleware answered: {message}")

    for name, request in (("keyed predict", predict), ("health", health)):
        for app in (nothing, guard):
            await app(request, receive, send)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n):
                await guard(request, receive, send)
            middle = time.perf_counter()
            for _ in range(n):
                await nothing(request, receive, send)
            timings.append(((middle - started) - (time.perf_counter() - middle)) / n * 1e6)
        print(f"access middleware alone, {name}: {statistics.median(timings):.1f} us per request")
    await store.stop()


def in_process(url: str, key: str, *, rounds: int, n: int) -> None:
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-c", TRIVIAL_BACKEND, str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(base)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        common = {
            "database_url": url,
            "collector_url": base,
            "trainer_url": base,
            "forecaster_url": base,
            "health_cache_seconds": 1.0,
        }
        modes = {
            "off": (Settings(**common, auth="off", rate_predict=0), {}),
            "on": (
                Settings(
                    **common,
                    auth="on",
                    internal_token="t" * 43,
                    rate_predict=1e9,
                    rate_predict_burst=1e9,
                ),
                {"Authorization": f"Bearer {key}"},
            ),
        }
        cpu: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for mode, (settings, headers) in modes.items():
                for what, us in asyncio.run(_cpu_per_request(settings, headers, n)).items():
                    cpu.setdefault((mode, what), []).append(us)
        for what in ("health", "predict"):
            off = statistics.median(cpu[("off", what)])
            on = statistics.median(cpu[("on", what)])
            print(
                f"in process, CPU per request, {what}: off {off:.0f} us, on {on:.0f} us "
                f"(+{on - off:.0f} us); throughput bound on/off {off / on:.1%}"
            )
    finally:
        backend.terminate()
        backend.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpu-rounds", type=int, default=6)
    ap.add_argument("--cpu-requests", type=int, default=2000)
    ap.add_argument("--only-cpu", action="store_true", help="Skip the wrk part.")
    args = ap.parse_args()
    with database(args.db) as url, tempfile.TemporaryDirectory() as tmp:
        frame = SyntheticDataGenerator(seed=42).generate_full_training_set(2)
        asyncio.run(save_frame(url, frame, host="bench"))
        key = asyncio.run(_make_key(url))
        script = Path(tmp) / "predict.lua"
        script.write_text(LUA.format(body=json.dumps(BODY)))
        modes = {
            "off": ({"AUTOFIX_AUTH": "off", "AUTOFIX_RATE_PREDICT": "0"}, {}),
            "on": (
                {
                    "AUTOFIX_AUTH": "on",
                    "AUTOFIX_INTERNAL_TOKEN": secrets.token_urlsafe(32),
                    "AUTOFIX_RATE_PREDICT": "1000000000",
                    "AUTOFIX_RATE_PREDICT_BURST": "1000000000",
                },
                {"Authorization": f"Bearer {key}"},
            ),
        }
        asyncio.run(_middleware_alone(url, key, 20_000))
        if args.cpu_rounds:
            in_process(url, key, rounds=args.cpu_rounds, n=args.cpu_requests)
        if args.only_cpu:
            return
        figures: dict[tuple[str, str], list[float]] = {}
        for round_ in range(1, args.rounds + 1):
            for mode, (env, headers) in modes.items():
                with services(url, **env) as s:
                    for what, path, lua in (
                        ("health", "/api/ml/health", None),
                        ("predict", "/api/ml/predict/anomaly", str(script)),
                    ):
                        wrk(f"{s.gateway}{path}", seconds=2, script=lua, headers=headers)  # warm
                        result = wrk(
                            f"{s.gateway}{path}", seconds=args.seconds, script=lua, headers=headers
                        )
                        figures.setdefault((mode, what), []).append(result.requests_per_second)
                        print(f"round {round_} auth {mode:<3} {what:<7}: {result.line()}")
        for what in ("health", "predict"):
            off = statistics.mean(figures[("off", what)])
            on = statistics.mean(figures[("on", what)])
            print(f"{what}: off {off:,.0f} req/s, on {on:,.0f} req/s, on/off {on / off:.1%}")


if __name__ == "__main__":
    main()

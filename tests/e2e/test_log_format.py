"""AUTOFIX_LOG_FORMAT=json: a service started by the CLI writes one JSON object per log line,
uvicorn's own lines included."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import CLI, service_env

pytestmark = pytest.mark.e2e


def test_json_log_format_makes_every_line_a_json_object(tmp_path: Path) -> None:
    env = service_env(
        f"sqlite+aiosqlite:///{tmp_path / 'logs.db'}",
        AUTOFIX_LOG_FORMAT="json",
        AUTOFIX_LOG_LEVEL="info",
        ML_ENABLED="false",
    )
    port = env["AUTOFIX_COLLECTOR_PORT"]
    proc = subprocess.Popen(
        [*CLI, "serve", "collector", "--migrate"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the collector did not answer within 60 s")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any plain line
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    messages = [r["message"] for r in records]
    assert any("Application startup complete" in m for m in messages), messages
    assert any(r["logger"] == "autofix_ml.collector" for r in records), messages

"""Incidents pushed to a real Alertmanager (Debian's prometheus-alertmanager, started here on a
free port): firing while open, resolved when the incident resolves, silenced by its silences,
re-sent while open; failures counted, never in the way of opening an incident.

With CI=true a missing binary fails these tests (`.ci/run` installs the package); elsewhere they
skip.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.app import create_app as create_trainer
from shared.clock import utcnow
from shared.incidents import repository as incidents
from shared.incidents.notifier import Notifier
from shared.settings import Settings
from tests.conftest import IN_CI, app_client, free_port
from tests.shared.incidents.conftest import open_incident

BINARY = "prometheus-alertmanager"
CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1h
receivers:
  - name: blackhole
"""
T = TypeVar("T")


def alertmanager_binary() -> str:
    path = shutil.which(BINARY) or (
        "/usr/bin/prometheus-alertmanager"
        if Path("/usr/bin/prometheus-alertmanager").exists()
        else None
    )
    if path is None:
        message = f"{BINARY} not installed (Debian package prometheus-alertmanager)"
        if IN_CI:
            pytest.fail(f"CI=true and {message}; .ci/run installs it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager on loopback, clustering off, its own storage; yields its base URL."""
    binary = alertmanager_binary()
    home = tmp_path_factory.mktemp("alertmanager")
    (home / "alertmanager.yml").write_text(CONFIG)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={home / 'alertmanager.yml'}",
            f"--storage.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"alertmanager did not start: {proc.stderr.read()!r}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def until(check: Callable[[], Awaitable[T | None]], what: str, seconds: float = 15) -> T:
    for _ in range(int(seconds / 0.05)):
        found = await check()
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def alerts_of(url: str, host: str) -> list[dict[str, Any]]:
    """Alertmanager's current alerts (active, silenced, inhibited) of one host."""
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(f"{url}/api/v2/alerts")
    assert answer.status_code == 200, answer.text
    return [a for a in answer.json() if a["labels"].get("host") == host]


def pushing(settings: Settings, url: str, **update: Any) -> Settings:
    return settings.model_copy(
        update={"alertmanager_url": url, "public_url": "https://autofix.example.com", **update}
    )


async def test_an_incident_fires_then_resolves_in_alertmanager(
    engine: AsyncEngine, settings: Settings, alertmanager: str
) -> None:
    host = f"am-{uuid.uuid4().hex[:8]}"
    notifier = Notifier(pushing(settings, alertmanager), engine)
    notifier.start()
    try:
        incident, _ = await open_incident(
            engine, host=host, dedup_key=f"ML_ANOMALY:{host}", severity="high"
        )
        notifier.notify(incident)

        async def firing() -> dict[str, Any] | None:
            found = await alerts_of(alertmanager, host)
            return found[0] if found else None

        alert = await until(firing, "the firing alert")
        assert alert["labels"] == {
            "alertname": "ML_ANOMALY",
            "host": host,
            "severity": "high",
            "service": "autofix-ml",
        }
        assert alert["status"]["state"] == "active"
        notes = alert["annotations"]
        assert notes["summary"] == "anomaly on h1" and notes["incident_id"] == str(incident.id)
        assert notes["url"] == f"https://autofix.example.com/api/ml/incidents/{incident.id}"
        assert alert["generatorURL"] == f"https://autofix.example.com/#/host/{host}"

        async with engine.begin() as conn:
            resolved = await incidents.resolve_incident(conn, incident_id=incident.id)
        assert resolved is not None
        notifier.notify(resolved)

        async def gone() -> bool | None:
            return True if not await alerts_of(alertmanager, host) else None

        await until(gone, "the alert to resolve")
    finally:
        await notifier.stop()
    assert notifier.alertmanager.sent == 2 and notifier.alertmanager.failed == 0


async def test_a_silence_set_in_alertmanager_silences_the_incident(
    engine: AsyncEngine, settings: Settings, alertmanager: str
) -> None:
    host = f"am-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    silence = {
        "matchers": [
            {"name": "host", "value": host, "isRegex": False, "isEqual": True},
            {"name": "alertname", "value": "ML_ANOMALY", "isRegex": False, "isEqual": True},
        ],
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "test",
        "comment": "maintenance window",
    }
    async with httpx.AsyncClient(timeout=5) as client:
        made = await client.post(f"{alertmanager}/api/v2/silences", json=silence)
    assert made.status_code == 200, made.text
    silence_id = made.json()["silenceID"]
    notifier = Notifier(pushing(settings, alertmanager), engine)
    notifier.start()
    try:
        incident, _ = await open_incident(engine, host=host, dedup_key=f"ML_ANOMALY:{host}")
        notifier.notify(incident)

        async def suppressed() -> dict[str, Any] | None:
            found = await alerts_of(alertmanager, host)
            return found[0] if found and found[0]["status"]["state"] == "suppressed" else None

        alert = await until(suppressed, "the silenced alert")
    finally:
        await notifier.stop()
    assert alert["status"]["silencedBy"] == [silence_id]


async def test_open_incidents_are_re_sent_and_a_raised_severity_replaces_the_alert(
    engine: AsyncEngine, settings: Settings, alertmanager: str
) -> None:
    """The resending process finds open incidents in the table (none notified here) and keeps
    them firing; an incident whose severity rose is one alert under its new labels."""
    host = f"am-{uuid.uuid4().hex[:8]}"
    key = f"ML_ANOMALY:{host}"
    incident, _ = await open_incident(engine, host=host, dedup_key=key, severity="medium")
    notifier = Notifier(
        pushing(settings, alertmanager, alertmanager_resend_seconds=0.2),
        engine,
        resend_alerts=True,
    )
    notifier.start()
    try:

        async def firing() -> dict[str, Any] | None:
            found = await alerts_of(alertmanager, host)
            return found[0] if found else None

        first = await until(firing, "the re-sent alert")
        assert first["labels"]["severity"] == "medium"

        async def re_sent() -> dict[str, Any] | None:
            found = await firing()
            return found if found and found["updatedAt"] != first["updatedAt"] else None

        await until(re_sent, "a second push of the same alert")

        await open_incident(engine, host=host, dedup_key=key, severity="critical")

        async def escalated() -> list[dict[str, Any]] | None:
            found = await alerts_of(alertmanager, host)
            return found if [a["labels"]["severity"] for a in found] == ["critical"] else None

        [alert] = await until(escalated, "only the critical alert")
    finally:
        await notifier.stop()
    assert alert["annotations"]["incident_id"] == str(incident.id)
    assert notifier.alertmanager.resends >= 3 and notifier.alertmanager.failed == 0


async def test_an_unreachable_alertmanager_is_counted_and_never_blocks(
    engine: AsyncEngine, settings: Settings
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    notifier = Notifier(pushing(settings, closed, alertmanager_retries=1), engine, backoff=0.01)
    notifier.start()
    try:
        for n in range(3):
            host = f"down-{n}"
            incident, change = await open_incident(engine, host=host, dedup_key=host)
            assert change == "opened"
            notifier.notify(incident)  # returns at once; the loop posts and fails

        async def all_failed() -> bool | None:
            return True if notifier.alertmanager.failed == 3 else None

        await until(all_failed, "three failed alerts")
        samples = {
            (s.name, s.labels.get("outcome"), s.labels.get("queue")): s.value
            for s in await notifier.samples()
        }
    finally:
        await notifier.stop()
    assert samples[("autofix_alertmanager_alerts_total", "failed", None)] == 3.0
    assert samples[("autofix_alertmanager_alerts_total", "sent", None)] == 0.0
    assert ("autofix_queue_depth", None, "alertmanager") in samples
    assert notifier.alertmanager.sent == 0


async def test_the_trainer_re_sends_open_incidents_and_pushes_a_resolve_by_hand(
    engine: AsyncEngine, settings: Settings, alertmanager: str
) -> None:
    """Wired in the trainer's app: an incident opened elsewhere (the forecaster's) fires on
    the trainer's first re-send; resolving it through the API ends the alert."""
    host = f"am-{uuid.uuid4().hex[:8]}"
    incident, _ = await open_incident(
        engine,
        type="predicted_breach",
        host=host,
        dedup_key=f"predicted_breach:{host}:disk_usage_percent",
        metric="disk_usage_percent",
        severity="high",
        title="disk full within 3 h",
    )
    app = create_trainer(pushing(settings, alertmanager, analysis_auto=False), engine=engine)
    async with app_client(app) as client:

        async def firing() -> dict[str, Any] | None:
            found = await alerts_of(alertmanager, host)
            return found[0] if found else None

        alert = await until(firing, "the trainer's re-send")
        resolved = await client.post(f"/incidents/{incident.id}/resolve")
        assert resolved.status_code == 200, resolved.text

        async def gone() -> bool | None:
            return True if not await alerts_of(alertmanager, host) else None

        await until(gone, "the alert to resolve")
        health = await client.get("/health")
    assert alert["labels"] == {
        "alertname": "predicted_breach",
        "host": host,
        "severity": "high",
        "service": "autofix-ml",
        "metric": "disk_usage_percent",
    }
    assert "alertmanager" in {loop.name for loop in app.state.loops}
    assert health.status_code == 200

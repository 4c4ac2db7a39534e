"""Incidents pushed to Alertmanager's API (POST /api/v2/alerts) as firing and resolved alerts.

Usage: `pusher = AlertmanagerPusher(settings, engine, resend=True)` (the `Notifier` makes one),
`pusher.start()`, `pusher.notify(incident)` after the commit, `await pusher.stop()`.

One loop does all the posting, in order: the incidents queued by `notify()` (batched), and,
with ``resend``, every ML_ALERTMANAGER_RESEND_SECONDS every open incident again (Alertmanager
ends an alert that is not re-sent within its resolve_timeout) with those resolved since the
last pass (a resolve another process pushed while this pass read the table is resolved again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import utcnow
from shared.http import make_client
from shared.incidents.payloads import alertmanager_alert, analysis_annotations
from shared.incidents.repository import alerting_incidents
from shared.loops import BackgroundLoop
from shared.observability import Sample, notifier_samples
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings

log = logging.getLogger("autofix_ml.incidents")

Delivery = tuple[IncidentOut, dict[str, Any] | None]

MAX_BACKOFF_SECONDS = 30.0
MAX_BATCH = 500
# Remembered per open incident (labels last sent, analysis annotations); a safety bound.
MAX_REMEMBERED = 10_000
# The first re-send after a start also resolves what was resolved this long before it.
FIRST_RESOLVED_LOOKBACK = timedelta(minutes=10)
HELP = "Incident alerts pushed to Alertmanager: sent, failed after retries, dropped (queue full)."


class AlertmanagerPusher:
    """Posts incidents as alerts from a bounded queue; `notify()` never blocks."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine | None = None,
        *,
        resend: bool = False,
        backoff: float = 0.5,
        queue_size: int = 1000,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.resend = resend and engine is not None
        self.backoff = backoff
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.resends = 0
        self.loop = BackgroundLoop("alertmanager", self._step, interval=0.0, watched=False)
        self._client: httpx.AsyncClient | None = None
        self._next_resend = 0.0  # monotonic; 0: at once
        self._resolved_since: datetime | None = None
        self._labels: dict[int, dict[str, str]] = {}
        self._extra: dict[int, dict[str, str]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.settings.alertmanager_url)

    @property
    def url(self) -> str:
        return self.settings.alertmanager_url.rstrip("/") + "/api/v2/alerts"

    def start(self) -> None:
        if self.enabled and self._client is None:
            self._client = make_client(timeout=self.settings.alertmanager_timeout)
            self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def samples(self) -> list[Sample]:
        return notifier_samples(
            "alertmanager",
            sent=self.sent,
            failed=self.failed,
            dropped=self.dropped,
            queued=self.queue.qsize(),
            family="autofix_alertmanager_alerts_total",
            help=HELP,
        )

    def notify(self, incident: IncidentOut, *, analysis: dict[str, Any] | None = None) -> None:
        """Queue the incident's alert (with ``analysis``: its annotations from now on)."""
        if not self.enabled:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait((incident, analysis))

    def alerts(
        self, incident: IncidentOut, analysis: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The incident's alert; first, when its labels changed (its severity rose), the alert
        under the labels last sent, resolved, so that it does not linger until it expires."""
        if analysis is not None:
            self._extra[incident.id] = analysis_annotations(analysis)
        alert = alertmanager_alert(
            incident,
            base_url=self.settings.public_base_url(),
            extra=self._extra.get(incident.id),
        )
        out: list[dict[str, Any]] = []
        previous = self._labels.get(incident.id)
        if previous is not None and previous != alert["labels"]:
            out.append({**alert, "labels": previous, "endsAt": _now_iso()})
        if incident.status == "resolved":
            self._labels.pop(incident.id, None)
            self._extra.pop(incident.id, None)
        else:
            if len(self._labels) >= MAX_REMEMBERED:
                self._labels.clear()
                self._extra.clear()
            self._labels[incident.id] = alert["labels"]
        out.append(alert)
        return out

    async def _step(self) -> float:
        """One pass: a re-send when due, else the incidents queued (waiting for one)."""
        if self.resend:
            wait = self._next_resend - time.monotonic()
            if wait <= 0:
                await self._resend()
                self._next_resend = time.monotonic() + self.settings.alertmanager_resend_seconds
                return 0.0
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout=wait)
            except TimeoutError:
                return 0.0
        else:
            first = await self.queue.get()
        batch = [first]
        while not self.queue.empty() and len(batch) < MAX_BATCH:
            batch.append(self.queue.get_nowait())
        await self._post(
            [alert for incident, extra in batch for alert in self.alerts(incident, extra)]
        )
        return 0.0

    async def _resend(self) -> None:
        assert self.engine is not None
        read_at = utcnow()
        since = self._resolved_since or read_at - FIRST_RESOLVED_LOOKBACK
        try:
            async with self.engine.connect() as conn:
                found = await alerting_incidents(conn, resolved_since=since)
        except Exception as exc:  # noqa: BLE001 - the database away: the next pass tries again
            log.warning("alertmanager re-send could not read incidents: %s", type(exc).__name__)
            return
        self.resends += 1
        alerts = [alert for incident in found for alert in self.alerts(incident)]
        for start in range(0, len(alerts), MAX_BATCH):
            await self._post(alerts[start : start + MAX_BATCH])
        # The next pass resolves again what resolved during this one (another process's push
        # may have crossed this pass's read).
        self._resolved_since = read_at - timedelta(
            seconds=self.settings.alertmanager_resend_seconds
        )

    async def _post(self, alerts: list[dict[str, Any]]) -> bool:
        if not alerts:
            return True
        assert self._client is not None
        retries = self.settings.alertmanager_retries
        for attempt in range(retries + 1):
            try:
                response = await self._client.post(self.url, json=alerts)
                if response.status_code < 300:
                    self.sent += len(alerts)
                    return True
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    log.warning(
                        "alertmanager refused %d alerts: %s %s",
                        len(alerts),
                        response.status_code,
                        response.text[:200],
                    )
                    break
            except httpx.HTTPError as exc:
                log.warning("alertmanager attempt %d failed: %s", attempt + 1, type(exc).__name__)
            if attempt < retries:
                await asyncio.sleep(min(self.backoff * 2**attempt, MAX_BACKOFF_SECONDS))
        self.failed += len(alerts)
        return False


def _now_iso() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")

"""Delivery of incidents to AUTOFIX_WEBHOOK_URL from a background loop, retried with backoff,
and to Alertmanager (ML_ALERTMANAGER_URL, shared.incidents.alertmanager) beside it.

Usage: `notifier = Notifier(settings, engine)`, `notifier.start()` in the lifespan,
`notifier.notify(incident)` after the transaction commits, `await notifier.stop()` on the way out;
`notifier.loops` for health and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.http import make_client
from shared.incidents.alertmanager import AlertmanagerPusher
from shared.incidents.payloads import alertmanager_payload, json_payload
from shared.incidents.repository import record_notification
from shared.loops import BackgroundLoop
from shared.observability import Sample, notifier_samples
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings

log = logging.getLogger("autofix_ml.incidents")

# One delivery: the incident and, for the follow-up once it is analysed, its analysis.
Delivery = tuple[IncidentOut, dict[str, Any] | None]
Listener = Callable[[IncidentOut], None]

MAX_BACKOFF_SECONDS = 30.0


class Notifier:
    """Posts incidents from a bounded queue; `notify()` never blocks and drops the oldest when full."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine | None = None,
        *,
        backoff: float = 0.5,
        queue_size: int = 1000,
        resend_alerts: bool = False,
    ) -> None:
        """``resend_alerts``: this process re-sends every open incident to Alertmanager (one
        process of a deployment does: the trainer)."""
        self.settings = settings
        self.engine = engine
        self.backoff = backoff
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=queue_size)
        # Told of every incident passed to notify(), webhook or not (the incident analysis).
        self.listeners: list[Listener] = []
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        # Its step waits for the next incident: idle is not stalled.
        self.loop = BackgroundLoop("webhook", self._deliver_next, interval=0.0, watched=False)
        self._client: httpx.AsyncClient | None = None
        self.alertmanager = AlertmanagerPusher(
            settings, engine, resend=resend_alerts, backoff=backoff, queue_size=queue_size
        )

    @property
    def enabled(self) -> bool:
        """Whether the webhook is on."""
        return bool(self.settings.webhook_url)

    @property
    def delivers(self) -> bool:
        """Whether incidents go anywhere (the webhook or Alertmanager)."""
        return self.enabled or self.alertmanager.enabled

    @property
    def loops(self) -> list[BackgroundLoop]:
        """The webhook's loop, and Alertmanager's when it is configured."""
        return [self.loop, self.alertmanager.loop] if self.alertmanager.enabled else [self.loop]

    def start(self) -> None:
        self.alertmanager.start()
        if self.enabled and self._client is None:
            self._client = make_client(timeout=self.settings.webhook_timeout)
            self.loop.start()

    async def stop(self) -> None:
        await self.alertmanager.stop()
        await self.loop.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def samples(self) -> list[Sample]:
        """Deliveries sent / failed / dropped and the queues, for /metrics."""
        return (
            notifier_samples(
                "webhook",
                sent=self.sent,
                failed=self.failed,
                dropped=self.dropped,
                queued=self.queue.qsize(),
            )
            + await self.alertmanager.samples()
        )

    def notify(self, incident: IncidentOut, *, analysis: dict[str, Any] | None = None) -> None:
        """Queue the incident for the webhook and Alertmanager (with ``analysis``: its follow-up
        delivery)."""
        if analysis is None:
            for listener in self.listeners:
                try:
                    listener(incident)
                except Exception:  # noqa: BLE001 - a listener never stops a delivery
                    log.exception("incident listener failed")
        self.alertmanager.notify(incident, analysis=analysis)
        if not self.enabled:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait((incident, analysis))

    def payload(
        self, incident: IncidentOut, analysis: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if self.settings.webhook_format == "alertmanager":
            return alertmanager_payload(incident, analysis)
        return json_payload(incident, analysis)

    async def _deliver_next(self) -> float:
        """One loop step: wait for an incident, post it, record the outcome; run again at once."""
        incident, analysis = await self.queue.get()
        sent = await self._deliver(incident, analysis)
        if analysis is None:
            await self._record(incident, sent)
        return 0.0

    async def _deliver(self, incident: IncidentOut, analysis: dict[str, Any] | None = None) -> bool:
        assert self._client is not None
        body = self.payload(incident, analysis)
        for attempt in range(self.settings.webhook_retries + 1):
            try:
                response = await self._client.post(self.settings.webhook_url, json=body)
                if response.status_code < 300:
                    self.sent += 1
                    return True
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    log.warning(
                        "webhook refused incident %s: %s", incident.id, response.status_code
                    )
                    break
            except httpx.HTTPError as exc:
                log.warning("webhook attempt %d failed: %s", attempt + 1, type(exc).__name__)
            await asyncio.sleep(min(self.backoff * 2**attempt, MAX_BACKOFF_SECONDS))
        self.failed += 1
        return False

    async def _record(self, incident: IncidentOut, sent: bool) -> None:
        if self.engine is None:
            return
        try:
            async with self.engine.begin() as conn:
                await record_notification(conn, incident.id, sent=sent)
        except Exception as exc:  # noqa: BLE001 - bookkeeping only
            log.warning("could not record notification of incident %s: %s", incident.id, exc)

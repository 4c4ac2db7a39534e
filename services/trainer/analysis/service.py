"""Incident analysis as a service: the evidence pack, the analyst, the grounding check, the store.

Usage (lifespan): ``svc = AnalysisService(settings, engine, notifier)``, ``svc.start()``,
``await svc.stop()``; ``await svc.analyze(incident_id, provider="ollama")`` from a route.

An incident that opens reaches ``incident_noticed`` through the notifier (after its commit);
it is queued (bounded, never waited on) and analysed by ``ML_ANALYSIS_CONCURRENCY`` workers
(1: one LLM call at a time). Incidents opened by other services (the forecaster's) are found
by a sweep. The rules' answer is served whenever the LLM's cannot be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis import grounding, llm, rules
from services.trainer.analysis import repository as repo
from services.trainer.analysis.evidence import EvidencePack
from shared import events as observe
from shared.clock import utcnow
from shared.db import write_transaction
from shared.errors import Conflict
from shared.http import make_client
from shared.incidents.notifier import Notifier
from shared.incidents.repository import get_incident
from shared.loops import BackgroundLoop
from shared.schemas.analysis import Analysis, AnalysisOut
from shared.schemas.incidents import IncidentOut
from shared.settings import Settings

log = logging.getLogger("autofix_ml.analysis")

SWEEP_BATCH = 20


class AnalysisService:
    """Analyses incidents: by itself when they open, and on request."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.notifier = notifier
        self._own_client = client is None
        self.client = client or make_client(
            timeout=settings.analysis_timeout, connect_timeout=min(2.0, settings.analysis_timeout)
        )
        self.queue: asyncio.Queue[int] = asyncio.Queue(maxsize=settings.analysis_queue_size)
        self.pending: set[int] = set()
        self.llm_gate = asyncio.Semaphore(settings.analysis_concurrency)
        self.dropped = 0
        self.done = 0
        self.fallbacks = 0
        self.workers = [
            BackgroundLoop(f"incident-analysis-{n}", self._work_next, interval=0.0, watched=False)
            for n in range(settings.analysis_concurrency)
        ]
        self.sweeper = BackgroundLoop(
            "incident-analysis-sweep",
            self._sweep,
            interval=settings.analysis_sweep_seconds,
            first_delay=min(5.0, settings.analysis_sweep_seconds),
        )
        if settings.analysis_auto:
            notifier.listeners.append(self.incident_noticed)

    @property
    def loops(self) -> list[BackgroundLoop]:
        return [*self.workers, self.sweeper] if self.settings.analysis_auto else []

    def start(self) -> None:
        for loop in self.loops:
            loop.start()

    async def stop(self) -> None:
        for loop in self.loops:
            await loop.stop()
        if self._own_client:
            await self.client.aclose()

    # ------------------------------------------------------------------ the analysts

    def analyst(self, provider: str) -> llm.Analyst | None:
        """The LLM analyst of a provider, None for the rules; Conflict if not configured."""
        s = self.settings
        if provider == "rules":
            return None
        if provider == "ollama":
            if not s.ollama_url:
                raise Conflict("ollama is not configured: set OLLAMA_URL")
            return llm.OllamaAnalyst(
                self.client, s.ollama_url, model=s.analysis_model or s.ollama_model
            )
        if not s.openai_base_url or not s.analysis_model:
            raise Conflict("openai is not configured: set OPENAI_BASE_URL and ML_ANALYSIS_MODEL")
        return llm.OpenAIAnalyst(
            self.client, s.openai_base_url, model=s.analysis_model, api_key=s.openai_api_key
        )

    async def analyze(self, incident_id: int, *, provider: str | None = None) -> AnalysisOut:
        """Analyse an incident now and store the answer served (the LLM's, else the rules')."""
        provider = provider or self.settings.analysis_provider_in_force()
        analyst = self.analyst(provider)
        started = time.perf_counter()
        pack = await repo.read_pack(self.engine, incident_id, now=utcnow())
        fallback = rules.analyze(pack)
        values: dict[str, Any] = {"requested_provider": provider}
        served, reason = fallback, None
        if analyst is not None:
            answer, reason = await self._ask(analyst, pack)
            if answer is not None:
                served = answer.analysis
                values.update(
                    provider=analyst.provider,
                    model=answer.model,
                    prompt_tokens=answer.prompt_tokens,
                    completion_tokens=answer.completion_tokens,
                )
        if served is fallback:
            values.update(provider="rules", model=rules.VERSION)
        values.update(
            incident_id=incident_id,
            fallback=reason is not None,
            rejected_reason=reason,
            status="fallback" if reason is not None else "ok",
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
        stored = await self._store(served, pack, values)
        observe.analysis_stored(stored, host=pack.host)
        self.done += 1
        self.fallbacks += int(reason is not None)
        await self._tell_receivers(incident_id, stored)
        return stored

    async def _ask(
        self, analyst: llm.Analyst, pack: EvidencePack
    ) -> tuple[llm.LLMAnswer | None, str | None]:
        """The LLM's answer if it is valid and grounded, else the reason it is not."""
        timeout = self.settings.analysis_timeout
        try:
            async with self.llm_gate:
                answer = await analyst.ask(llm.messages(pack), timeout=timeout)
        except llm.LLMFailure as exc:
            log.warning("%s analysis failed: %s", analyst.provider, exc.reason)
            return None, f"{analyst.provider}: {exc.reason}"
        problems = grounding.check(answer.analysis, pack)
        if problems:
            shown = "; ".join(problems[:3])
            log.warning("%s analysis not grounded: %s", analyst.provider, shown)
            return None, f"{analyst.provider}: not grounded: {shown}"
        return answer, None

    async def _store(
        self, analysis: Analysis, pack: EvidencePack, values: dict[str, Any]
    ) -> AnalysisOut:
        body = analysis.model_dump(mode="json")
        row = {
            **values,
            "summary": analysis.summary,
            "root_cause": analysis.cause.text,
            "category": analysis.cause.category,
            "recommendations": body["actions"],
            "confidence": analysis.confidence,
            "analysis": body,
            "evidence": pack.to_json(),
        }
        async with write_transaction(self.engine) as conn:
            return await repo.insert_analysis(conn, row)

    async def _tell_receivers(self, incident_id: int, stored: AnalysisOut) -> None:
        if not self.notifier.delivers:
            return
        async with self.engine.connect() as conn:
            incident = await get_incident(conn, incident_id)
        self.notifier.notify(incident, analysis=webhook_analysis(stored))

    # ------------------------------------------------------------------ the queue

    def incident_noticed(self, incident: IncidentOut) -> None:
        """Queue a newly open incident for analysis; never waits (drops the oldest when full:
        the sweep finds it again)."""
        if incident.status != "open" or incident.id in self.pending:
            return
        if self.queue.full():
            self.pending.discard(self.queue.get_nowait())
            self.dropped += 1
        self.pending.add(incident.id)
        self.queue.put_nowait(incident.id)

    async def _work_next(self) -> float:
        incident_id = await self.queue.get()
        try:
            async with self.engine.connect() as conn:
                done = await repo.latest_analysis(conn, incident_id)
            if done is None:
                await self.analyze(incident_id)
        except Exception as exc:  # noqa: BLE001 - one incident never stops the worker
            log.error("analysis of incident %s failed: %s", incident_id, exc)
        finally:
            self.pending.discard(incident_id)
        return 0.0

    async def _sweep(self) -> None:
        async with self.engine.connect() as conn:
            found = await repo.unanalysed_open_incidents(conn, limit=SWEEP_BATCH)
        for incident_id in found:
            if incident_id not in self.pending and not self.queue.full():
                self.pending.add(incident_id)
                self.queue.put_nowait(incident_id)

    def state(self) -> dict[str, Any]:
        return {
            "provider": self.settings.analysis_provider_in_force(),
            "queued": self.queue.qsize(),
            "done": self.done,
            "fallbacks": self.fallbacks,
            "dropped": self.dropped,
        }


def webhook_analysis(stored: AnalysisOut) -> dict[str, Any]:
    """What the webhook's follow-up carries: summary, cause, actions, who wrote it."""
    return {
        "id": stored.id,
        "summary": stored.summary,
        "cause": stored.analysis.get("cause"),
        "actions": stored.recommendations,
        "confidence": stored.confidence,
        "provider": stored.provider,
        "fallback": stored.fallback,
    }

"""The Ollama and OpenAI-compatible clients against a real local server speaking each API:
valid answers, malformed JSON, schema-ignoring answers, invented figures, slow answers past the
limit, 500s, unknown models; and the service serving the rules' answer instead, marked."""

from __future__ import annotations

import logging
import os
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.analysis import grounding, llm
from services.trainer.analysis import repository as repo
from services.trainer.analysis.service import AnalysisService
from shared.clock import utcnow
from shared.http import make_client
from shared.incidents.notifier import Notifier
from shared.schemas.analysis import ANALYSIS_JSON_SCHEMA
from shared.settings import Settings
from tests.trainer.analysis.conftest import store_cpu_incident
from tests.trainer.analysis.fake_llm import FakeLLM

LIMIT = 1.0


def analyst(provider: str, url: str, model: str, client: object) -> llm.Analyst:
    if provider == "ollama":
        return llm.OllamaAnalyst(client, url, model=model)  # type: ignore[arg-type]
    return llm.OpenAIAnalyst(client, f"{url}/v1", model=model, api_key="sk-test")  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_each_answer_of_the_server_is_taken_or_refused_with_its_reason(
    engine: AsyncEngine, fake_llm: tuple[FakeLLM, str], provider: str
) -> None:
    server, url = fake_llm
    server.slow_seconds = 5.0
    incident = await store_cpu_incident(engine)
    pack = await repo.read_pack(engine, incident.id, now=utcnow())
    chat = llm.messages(pack)
    client = make_client(timeout=10.0)
    outcomes: dict[str, str] = {}
    try:
        good = await analyst(provider, url, "good", client).ask(chat, timeout=LIMIT)
        invented = await analyst(provider, url, "invented", client).ask(chat, timeout=LIMIT)
        for model in ("malformed", "schemaless", "boom", "no-such-model", "slow"):
            started = time.perf_counter()
            with pytest.raises(llm.LLMFailure) as failed:
                await analyst(provider, url, model, client).ask(chat, timeout=LIMIT)
            outcomes[model] = failed.value.reason
            if model == "slow":
                assert time.perf_counter() - started < LIMIT + 0.5
    finally:
        await client.aclose()
    assert grounding.check(good.analysis, pack) == []
    assert good.analysis.top_metric == "cpu_usage_percent"
    assert good.prompt_tokens and good.completion_tokens
    assert any("97.31" in p for p in grounding.check(invented.analysis, pack))
    assert outcomes["malformed"].startswith("invalid JSON")
    assert outcomes["schemaless"].startswith("schema:")
    assert outcomes["boom"].startswith("http 500")
    assert (
        outcomes["no-such-model"].startswith("unknown model")
        and "no-such-model" in outcomes["no-such-model"]
    )
    assert outcomes["slow"].startswith("timeout")
    sent = server.requests[0]
    if provider == "ollama":
        assert sent["stream"] is False and sent["format"] == ANALYSIS_JSON_SCHEMA
    else:
        fmt = sent["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == ANALYSIS_JSON_SCHEMA
        assert server.headers[0]["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("good", None),
        ("invented", "not grounded"),
        ("malformed", "invalid JSON"),
        ("slow", "timeout"),
        ("boom", "http 500"),
        ("missing", "unknown model"),
    ],
)
async def test_the_service_serves_the_rules_answer_when_the_llm_fails(
    engine: AsyncEngine,
    settings: Settings,
    fake_llm: tuple[FakeLLM, str],
    caplog: pytest.LogCaptureFixture,
    model: str,
    reason: str | None,
) -> None:
    caplog.set_level(logging.INFO, logger="autofix_ml.events")
    _server, url = fake_llm
    settings = settings.model_copy(
        update={"ollama_url": url, "analysis_model": model, "analysis_timeout": LIMIT}
    )
    incident = await store_cpu_incident(engine)
    service = AnalysisService(settings, engine, Notifier(settings, engine))
    try:
        started = time.perf_counter()
        stored = await service.analyze(incident.id)
        took = time.perf_counter() - started
    finally:
        await service.stop()
    assert stored.requested_provider == "ollama"
    assert took < LIMIT + 1.0  # a stuck LLM holds no longer than its limit
    if reason is None:
        assert stored.provider == "ollama" and not stored.fallback and stored.model == "good"
        assert stored.prompt_tokens == 812 and stored.completion_tokens == 154
    else:
        assert stored.provider == "rules" and stored.fallback and stored.status == "fallback"
        assert reason in (stored.rejected_reason or "")
        assert stored.category == "cpu_saturation"  # the rules' answer, served instead
    assert stored.evidence["host"] == "web-1" and stored.latency_ms is not None
    # ...and logged as the structured "analysis stored" event.
    [logged] = [r for r in caplog.records if getattr(r, "event", None) == "analysis_stored"]
    fields = logged.fields  # type: ignore[attr-defined]
    assert fields["analysis_id"] == stored.id and fields["incident_id"] == incident.id
    assert fields["host"] == "web-1" and fields["provider"] == stored.provider
    assert fields["model"] == stored.model and fields["fallback"] is (reason is not None)
    assert fields["requested_provider"] == "ollama" and fields["latency_ms"] > 0
    assert fields["rejected_reason"] == stored.rejected_reason
    assert f"incident {incident.id} on web-1" in logged.getMessage()


@pytest.mark.skipif(not os.environ.get("OLLAMA_URL"), reason="OLLAMA_URL not set")
async def test_a_real_ollama_at_ollama_url(engine: AsyncEngine, settings: Settings) -> None:
    """Opt-in, the cases a real server can be led into: its model's answer (served if valid and
    grounded, else the rules' with the reason), an unknown model, an answer past the limit."""
    url = os.environ["OLLAMA_URL"]
    model = os.environ.get("OLLAMA_MODEL", "llama3.2:3b")
    limit = float(os.environ.get("ML_ANALYSIS_TIMEOUT", "120"))
    settings = settings.model_copy(
        update={"ollama_url": url, "ollama_model": model, "analysis_timeout": limit}
    )
    incident = await store_cpu_incident(engine)
    pack = await repo.read_pack(engine, incident.id, now=utcnow())
    service = AnalysisService(settings, engine, Notifier(settings, engine))
    try:
        stored = await service.analyze(incident.id)
        with pytest.raises(llm.LLMFailure, match="unknown model"):
            await llm.OllamaAnalyst(service.client, url, model="no-such-model-x1").ask(
                llm.messages(pack), timeout=limit
            )
        started = time.perf_counter()
        with pytest.raises(llm.LLMFailure, match="timeout"):
            await llm.OllamaAnalyst(service.client, url, model=model).ask(
                llm.messages(pack), timeout=0.05
            )
        assert time.perf_counter() - started < 1.0
    finally:
        await service.stop()
    if stored.fallback:
        assert stored.rejected_reason and stored.provider == "rules"
    else:
        assert stored.provider == "ollama" and stored.completion_tokens

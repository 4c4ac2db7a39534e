"""LLM analysts: Ollama's /api/chat and any OpenAI-compatible /chat/completions, one interface.

Usage: ``answer = await OllamaAnalyst(client, url, model="llama3.2:3b").ask(messages,
timeout=20)``; ``answer.analysis`` is validated against the analysis schema, or ``LLMFailure``
is raised with the reason (unreachable, timeout, http 500, unknown model, invalid JSON, schema).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import ValidationError

from services.trainer.analysis.evidence import EvidencePack
from shared.schemas.analysis import (
    ACTION_NAMES,
    ANALYSIS_JSON_SCHEMA,
    CAUSE_CATEGORIES,
    REQUIRED_PARAMETERS,
    Analysis,
)

SYSTEM_PROMPT = f"""You analyse incidents of a monitored service for the engineer on call.
Answer with one JSON object that follows the given schema, nothing else.
Rules:
- Use only the evidence given. Every number, metric name, host and time you write must be
  copied exactly from the evidence (you may round a number, never invent one).
- Each claim cites the ids of the evidence items it rests on (the "id" fields).
- cause.category is one of: {", ".join(CAUSE_CATEGORIES)}.
- actions come from this catalogue only, with these parameters:
  {"; ".join(f"{a} ({', '.join(REQUIRED_PARAMETERS[a])})" for a in ACTION_NAMES)}.
  Unused parameters are null.
- model_change items are versions of the monitoring's own models (anomaly detector,
  forecaster, failure predictor), not changes to the monitored service: never a reason
  to roll it back.
- confidence is between 0 and 1; top_metric is the metric most at fault.
- Be brief: a summary of two sentences, at most five claims, at most three actions."""


def messages(pack: EvidencePack) -> list[dict[str, str]]:
    """The chat of one analysis: the rules, then the evidence pack as compact JSON."""
    evidence = json.dumps(pack.to_json(), separators=(",", ":"), default=str)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Evidence (JSON):\n{evidence}\n\nAnalyse this incident."},
    ]


class LLMFailure(Exception):
    """The LLM gave no usable answer; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LLMAnswer:
    analysis: Analysis
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    raw: str


class Analyst(Protocol):
    provider: str
    model: str

    async def ask(self, chat: list[dict[str, str]], *, timeout: float) -> LLMAnswer: ...


def parse_answer(content: str) -> Analysis:
    """The analysis in an LLM's text, or LLMFailure naming what is wrong with it."""
    text = content.strip()
    if text.startswith("```"):  # a fenced block despite the format
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LLMFailure(f"invalid JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(data, dict):
        raise LLMFailure("invalid answer: not a JSON object")
    try:
        return Analysis.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise LLMFailure(f"schema: {where}: {first['msg']}") from None


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout: float,
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout):
            response = await client.post(url, json=body, headers=headers, timeout=timeout)
    except TimeoutError:
        raise LLMFailure(f"timeout after {timeout:g} s") from None
    except httpx.TimeoutException:
        raise LLMFailure(f"timeout after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise LLMFailure(f"unreachable: {type(exc).__name__}") from None
    if response.status_code == 404:
        raise LLMFailure(f"unknown model or endpoint (404): {_error_text(response)}")
    if response.status_code >= 400:
        raise LLMFailure(f"http {response.status_code}: {_error_text(response)}")
    try:
        data = response.json()
    except ValueError:
        raise LLMFailure("invalid JSON envelope from the server") from None
    if not isinstance(data, dict):
        raise LLMFailure("invalid JSON envelope from the server")
    return data


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        err = err.get("message")
    return str(err or data)[:200]


class OllamaAnalyst:
    """Ollama's chat API: ``POST {url}/api/chat`` with ``stream: false`` and ``format`` = schema."""

    provider = "ollama"

    def __init__(self, client: httpx.AsyncClient, url: str, *, model: str) -> None:
        self.client = client
        self.url = url.rstrip("/") + "/api/chat"
        self.model = model

    async def ask(self, chat: list[dict[str, str]], *, timeout: float) -> LLMAnswer:
        body = {
            "model": self.model,
            "messages": chat,
            "stream": False,
            "format": ANALYSIS_JSON_SCHEMA,
            # Ollama's default context (2048 tokens) would cut the evidence short.
            "options": {"temperature": 0, "num_ctx": 8192},
        }
        data = await _post(self.client, self.url, body, {}, timeout)
        message = data.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise LLMFailure("invalid answer: no message content")
        return LLMAnswer(
            analysis=parse_answer(content),
            model=str(data.get("model") or self.model),
            prompt_tokens=_int(data.get("prompt_eval_count")),
            completion_tokens=_int(data.get("eval_count")),
            raw=content,
        )


class OpenAIAnalyst:
    """An OpenAI-compatible chat endpoint: ``POST {base_url}/chat/completions`` with a JSON-schema
    ``response_format`` (vLLM, the llama.cpp server, LM Studio, hosted ones)."""

    provider = "openai"

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, *, model: str, api_key: str = ""
    ) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def ask(self, chat: list[dict[str, str]], *, timeout: float) -> LLMAnswer:
        body = {
            "model": self.model,
            "messages": chat,
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "incident_analysis",
                    "strict": True,
                    "schema": ANALYSIS_JSON_SCHEMA,
                },
            },
        }
        data = await _post(self.client, self.url, body, self.headers, timeout)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMFailure("invalid answer: no choices[0].message.content") from None
        if not isinstance(content, str):
            raise LLMFailure("invalid answer: the message content is not text")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return LLMAnswer(
            analysis=parse_answer(content),
            model=str(data.get("model") or self.model),
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            raw=content,
        )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

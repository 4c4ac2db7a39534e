"""A local LLM server for the tests, speaking Ollama's /api/chat and OpenAI's
/v1/chat/completions as documented; the model name picks the behaviour.

- ``good``: a grounded answer, written from the evidence in the prompt;
- ``invented``: the same with a figure the evidence does not hold;
- ``malformed``: text that is not JSON; ``schemaless``: JSON that ignores the schema;
- ``slow``: the good answer after ``slow_seconds``; ``boom``: HTTP 500;
- any other name: 404, "model not found", as each server answers it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MODELS = ("good", "invented", "malformed", "schemaless", "slow", "boom")
CAUSES = {
    "cpu_usage_percent": "cpu_saturation",
    "memory_usage_percent": "memory_leak",
    "error_rate": "error_storm",
}


def grounded_answer(evidence: dict[str, Any], *, invent: bool = False) -> dict[str, Any]:
    """What a well-behaved model writes: figures copied (rounded) from the evidence."""
    metrics = [i for i in evidence["items"] if i["kind"] == "metric"]
    top = metrics[0]
    host = evidence["host"]
    peak = round(float(top["peak"]), 1)
    text = f"{top['metric']} rose from {top['before_mean']} to {peak} at {top['peak_at']}"
    summary = f"Host {host}: {text}."
    if invent:
        summary += " Swap use reached 97.31 %."
    return {
        "summary": summary,
        "cause": {"category": CAUSES.get(top["metric"], "unknown"), "text": text},
        "claims": [{"text": text, "evidence": [top["id"]]}],
        "actions": [
            {
                "action": "page_human",
                "parameters": {
                    "host": None,
                    "service": None,
                    "replicas": None,
                    "to_version": None,
                    "urgency": "low",
                },
                "reason": "a person should confirm",
            }
        ],
        "confidence": 0.7,
        "top_metric": top["metric"],
    }


class FakeLLM:
    """The server's app and what it was sent (``requests``)."""

    def __init__(self, *, slow_seconds: float = 5.0) -> None:
        self.slow_seconds = slow_seconds
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.app = FastAPI()

        @self.app.post("/api/chat")
        async def ollama(request: Request) -> JSONResponse:
            body = await self._seen(request)
            model = body["model"]
            if model not in MODELS:
                return JSONResponse(
                    {"error": f"model '{model}' not found, try pulling it first"}, 404
                )
            content = await self._content(model, body)
            if content is None:
                return JSONResponse({"error": "llama runner process has terminated"}, 500)
            return JSONResponse(
                {
                    "model": model,
                    "created_at": "2026-11-30T08:00:00Z",
                    "message": {"role": "assistant", "content": content},
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": 812,
                    "eval_count": 154,
                }
            )

        @self.app.post("/v1/chat/completions")
        async def openai(request: Request) -> JSONResponse:
            body = await self._seen(request)
            model = body["model"]
            if model not in MODELS:
                error = {
                    "message": f"The model `{model}` does not exist.",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
                return JSONResponse({"error": error}, 404)
            content = await self._content(model, body)
            if content is None:
                return JSONResponse({"error": {"message": "internal error"}}, 500)
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 901, "completion_tokens": 143, "total_tokens": 1044},
                }
            )

    async def _seen(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        return body

    async def _content(self, model: str, body: dict[str, Any]) -> str | None:
        prompt = body["messages"][-1]["content"]
        evidence = json.loads(prompt.split("Evidence (JSON):\n", 1)[1].split("\n\n")[0])
        if model == "boom":
            return None
        if model == "malformed":
            return '{"summary": "cpu is high", "cause": {'
        if model == "schemaless":
            return json.dumps({"answer": "the CPU is saturated", "fix": "add servers"})
        if model == "slow":
            await asyncio.sleep(self.slow_seconds)
        return json.dumps(grounded_answer(evidence, invent=model == "invented"))

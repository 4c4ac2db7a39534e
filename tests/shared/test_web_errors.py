"""Bad request bodies get a 422 that names the body and says why (real HTTP on loopback)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from shared.web import install_error_handlers
from tests.conftest import served


class Body(BaseModel):
    cpu_usage_percent: float


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/score")
    async def score(body: Body) -> dict[str, float]:
        return {"cpu": body.cpu_usage_percent}

    return app


async def test_a_body_that_is_not_json_is_named_with_the_reason_and_where() -> None:
    async with served(_app()) as url, httpx.AsyncClient(base_url=url) as client:
        headers = {"content-type": "application/json"}
        bad = await client.post("/score", content=b'{"cpu_usage_percent": 25,}', headers=headers)
        assert bad.status_code == 422
        (error,) = bad.json()["detail"]
        assert error["field"] == "body" and error["type"] == "json_invalid"
        assert error["msg"].startswith("the body is not valid JSON: ")
        assert "at character 25" in error["msg"], error
        # a well-formed body with a wrong type still names its field
        wrong = await client.post("/score", json={"cpu_usage_percent": "lots"})
        assert [e["field"] for e in wrong.json()["detail"]] == ["body.cpu_usage_percent"]
        ok = await client.post("/score", json={"cpu_usage_percent": 25})
        assert ok.json() == {"cpu": 25.0}

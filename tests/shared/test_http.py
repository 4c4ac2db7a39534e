"""HTTP clients: one factory for both transports, and the reason a call failed in a word."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from shared.http import failure_reason, make_client
from tests.conftest import free_port, served


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_both_transports_reach_a_real_server(transport: str) -> None:
    async with served(_echo_app()) as url:
        client = make_client(base_url=url, timeout=5.0, connect_timeout=1.0, transport=transport)  # type: ignore[arg-type]
        try:
            response = await client.get("/ping")
        finally:
            await client.aclose()
    assert response.status_code == 200 and response.json() == {"pong": "yes"}
    assert client.timeout.connect == 1.0 and client.timeout.read == 5.0
    assert not client._trust_env


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_a_closed_port_is_reported_unreachable(transport: str) -> None:
    client = make_client(
        base_url=f"http://127.0.0.1:{free_port()}",
        timeout=2.0,
        transport=transport,  # type: ignore[arg-type]
    )
    try:
        with pytest.raises(httpx.TransportError) as caught:
            await client.get("/ping")
    finally:
        await client.aclose()
    assert failure_reason(caught.value) == "unreachable"


def test_a_timeout_is_reported_as_such() -> None:
    assert failure_reason(httpx.ReadTimeout("slow")) == "timed out"

"""The docs and the dashboard come from the gateway's own files: no URL of another machine."""

from __future__ import annotations

import re

import pytest

from services.api.app import create_app
from shared.settings import Settings
from tests.conftest import app_client

PAGES = ("/", "/api/docs", "/api/redoc", "/api/docs/oauth2-redirect")


@pytest.mark.parametrize("page", PAGES)
async def test_pages_load_only_local_files(settings: Settings, page: str) -> None:
    async with app_client(create_app(settings)) as client:
        response = await client.get(page)
        assert response.status_code == 200
        html = response.text
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), "a remote URL"
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        local = re.findall(r"(?:src|href)=[\"']([^\"']+)[\"']", html)
        for url in local:
            if url.startswith(("data:", "#")):
                continue
            assert url.startswith("/"), url
            assert (await client.get(url)).status_code == 200, url


async def test_openapi_groups_operations_by_feature_and_carries_examples(
    settings: Settings,
) -> None:
    async with app_client(create_app(settings)) as client:
        spec = (await client.get("/api/openapi.json")).json()
    declared = [t["name"] for t in spec["tags"]]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert len(operation.get("tags", [])) == 1, f"{method} {path}"
            assert operation["tags"][0] in declared, f"{method} {path}"
    schemas = spec["components"]["schemas"]
    assert schemas["TrainAnomalyRequest"]["examples"][0] == {
        "contamination": 0.05,
        "n_estimators": 100,
    }
    assert schemas["GenerateSyntheticRequest"]["examples"] == [{"days": 30, "seed": 42}]
    assert schemas["PredictRequest"]["examples"][0]["cpu_usage_percent"] == 95.0


async def test_static_files_stay_inside_their_folder(settings: Settings) -> None:
    async with app_client(create_app(settings)) as client:
        assert (await client.get("/static/vendor/uplot/uPlot.esm.js")).status_code == 200
        assert (await client.get("/static/nope.js")).status_code == 404
        escaped = await client.get("/static/%2e%2e/endpoints.py")
        assert escaped.status_code == 404

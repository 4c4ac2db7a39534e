"""The API contract holds: each app's OpenAPI schema, documentation aside, is as recorded."""

from __future__ import annotations

import json

import pytest

from tests.openapi_snapshot import SNAPSHOT_DIR, apps, contract


@pytest.mark.parametrize("name", ["api", "collector", "trainer", "forecaster"])
def test_openapi_contract_is_unchanged(name: str) -> None:
    recorded = json.loads((SNAPSHOT_DIR / f"{name}.json").read_text())
    live = json.loads(json.dumps(contract(apps()[name].openapi())))
    assert live == recorded


def test_contract_keeps_a_field_named_description() -> None:
    spec = contract(apps()["api"].openapi())
    incident = spec["components"]["schemas"]["IncidentOut"]["properties"]
    assert "description" in incident
    assert all("description" not in p for p in incident.values())

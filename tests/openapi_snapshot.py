"""The OpenAPI schema of every app with its documentation stripped, for before/after comparison.

Usage: `python -m tests.openapi_snapshot` rewrites tests/data/openapi/*.json (only when an API
change is intended); `tests/test_openapi.py` compares the live schemas against those files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.api.app import create_app as api_app
from services.collector.app import create_app as collector_app
from services.forecaster.app import create_app as forecaster_app
from services.trainer.app import create_app as trainer_app
from shared.settings import Settings

SNAPSHOT_DIR = Path(__file__).resolve().parent / "data" / "openapi"
# Words for a person, not part of the contract: they may change without changing the API.
DOCUMENTATION_KEYS = frozenset({"description", "summary"})


def apps() -> dict[str, FastAPI]:
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:")
    return {
        "api": api_app(settings),
        "collector": collector_app(settings),
        "trainer": trainer_app(settings),
        "forecaster": forecaster_app(settings, refresh_loop=False),
    }


def contract(node: Any, parent: str = "") -> Any:
    """The schema without documentation, with order-free lists sorted."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            # Under "properties" the keys are field names (a field may be called description).
            if key in DOCUMENTATION_KEYS and parent != "properties":
                continue
            out[key] = contract(value, key)
        return out
    if isinstance(node, list):
        items = [contract(v, parent) for v in node]
        if parent == "parameters":
            return sorted(items, key=lambda p: (p.get("in", ""), p.get("name", "")))
        if parent == "required" and all(isinstance(i, str) for i in items):
            return sorted(items)
        return items
    return node


def current() -> dict[str, Any]:
    return {name: contract(app.openapi()) for name, app in apps().items()}


def main() -> None:
    SNAPSHOT_DIR.mkdir(parents=True, exist_ok=True)
    for name, spec in current().items():
        path = SNAPSHOT_DIR / f"{name}.json"
        path.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

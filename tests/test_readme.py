"""The README stays true: every setting and every public route is documented there."""

from __future__ import annotations

import re
from pathlib import Path

from services.api.app import create_app
from shared.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    names = {
        choice
        for field in Settings.model_fields.values()
        for choice in getattr(field.validation_alias, "choices", [])
        if isinstance(choice, str) and choice.isupper()
    }
    assert len(names) > 30
    assert sorted(n for n in names if f"`{n}`" not in README) == []


def test_every_public_route_has_a_curl_example() -> None:
    spec = create_app(Settings()).openapi()
    missing = []
    for path, operations in spec["paths"].items():
        # /api/ml/models/{model_id}/activate -> a regex that matches /api/ml/models/3/activate
        pattern = re.escape(path)
        pattern = re.sub(r"\\\{[^}]+\\\}", r"[^/?' ]+", pattern)
        for method in operations:
            curls = [line for line in README.splitlines() if "curl" in line]
            found = any(
                re.search(pattern + r"(?:[?' ]|$)", line)
                and (method == "get" or "POST" in line or "-d " in line)
                for line in curls
            )
            if not found:
                missing.append(f"{method.upper()} {path}")
    assert missing == []

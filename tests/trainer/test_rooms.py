"""The trainer's anomaly, registry and health rooms keep HTTP and SQL out of their domain modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINER = Path(__file__).resolve().parents[2] / "services" / "trainer"
ROOMS = ("anomaly", "registry", "health")
# Modules that may speak HTTP or SQL: routes, orchestration and the feature's SQL.
ORCHESTRATION = {"endpoints.py", "service.py", "repository.py", "scoring.py"}
FORBIDDEN = ("fastapi", "starlette", "sqlalchemy")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


DOMAIN = [
    path
    for room in ROOMS
    for path in sorted((TRAINER / room).glob("*.py"))
    if path.name not in ORCHESTRATION
]


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_domain_modules_import_neither_http_nor_sql(path: Path) -> None:
    bad = sorted(n for n in _imports(path) if n.split(".")[0] in FORBIDDEN)
    assert bad == []


def test_the_training_process_reaches_the_database_only_through_the_repository() -> None:
    imports = _imports(TRAINER / "anomaly" / "worker.py")
    assert not {n for n in imports if n.split(".")[0] in FORBIDDEN}
    assert "services.trainer.anomaly" in imports  # ``from ... import artifact, repository``

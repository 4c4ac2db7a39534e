"""The layout holds: rooms with fixed file names, domain modules free of web and database code,
no module past a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "shared")
MAX_LINES = 400
# Modules that wire a room to the web or the database; every other module of a room is domain
# code that a notebook, the CLI or a test can use without a server.
WIRING = frozenset({"app.py", "deps.py", "endpoints.py", "service.py", "repository.py"})
# Orchestration and plumbing beside service.py (a service split for size, the gateway's HTTP
# client and middleware), by path: each may use the web or the database, nothing else may.
ORCHESTRATION = frozenset(
    {
        "services/api/access/middleware.py",
        "services/api/metrics/middleware.py",
        "services/api/proxy/client.py",
        "services/api/proxy/failure_routes.py",
        "services/api/proxy/table.py",
        "services/collector/samples/series.py",
        "services/forecaster/forecasting/forecast_store.py",
        "services/forecaster/forecasting/reads.py",
        "services/forecaster/forecasting/training.py",
        "services/trainer/anomaly/alerting.py",
        "services/trainer/anomaly/feedback.py",
        "services/trainer/anomaly/forests.py",
        "services/trainer/anomaly/predict.py",
        "services/trainer/anomaly/repository_predict.py",
        "services/trainer/anomaly/scoring.py",
        "services/trainer/anomaly/worker.py",
        "services/trainer/analysis/repository_pg.py",
        "services/trainer/failure/scoring.py",
        "services/trainer/failure/window.py",
        "services/trainer/failure/writer.py",
        "services/trainer/failure/worker.py",
    }
)
FORBIDDEN = ("fastapi", "starlette", "sqlalchemy")


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """What a module imports when it is imported (a function's deferred import is not counted)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    nodes: list[ast.stmt] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.If | ast.Try):
            nodes.extend(node.body + node.orelse + getattr(node, "finalbody", []))
    return names


def _rooms() -> list[Path]:
    return sorted(
        d for d in (ROOT / "services").glob("*/*") if d.is_dir() and (d / "__init__.py").exists()
    )


def _domain_modules() -> list[Path]:
    return [
        p
        for room in _rooms()
        for p in sorted(room.glob("*.py"))
        if p.name not in WIRING
        and p.name != "__init__.py"
        and str(p.relative_to(ROOT)) not in ORCHESTRATION
    ]


def test_every_service_has_an_app_deps_and_rooms() -> None:
    for service in sorted((ROOT / "services").glob("*/")):
        if not (service / "__init__.py").exists():
            continue
        assert (service / "app.py").exists() and (service / "deps.py").exists(), service.name
        rooms = [r for r in _rooms() if r.parent == service]
        assert rooms, f"{service.name} has no feature packages"
        loose = {p.name for p in service.glob("*.py")} - {"__init__.py", "app.py", "deps.py"}
        assert loose == set(), f"{service.name}: modules outside a room: {sorted(loose)}"


def test_routes_live_only_in_endpoints_modules() -> None:
    for path in _modules("services"):
        if path.name == "endpoints.py" or path.name == "app.py":
            continue
        assert "APIRouter" not in path.read_text(), f"{path.relative_to(ROOT)} declares routes"


def _module_path(name: str) -> Path | None:
    """The file of a project module (`shared.db` -> shared/db.py), or None if not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _reachable_imports(path: Path) -> set[str]:
    """Every module imported by `path` and, through the project's own modules, by what it imports."""
    seen: set[Path] = set()
    found: set[str] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imports(current):
            found.add(name)
            parts = name.split(".")
            # `from pkg import module` imports pkg/__init__.py and maybe pkg/module.py
            for i in range(1, len(parts) + 1):
                target = _module_path(".".join(parts[:i]))
                if target is not None:
                    todo.append(target)
    return found


# Shared modules that domain code may use: they must stay free of HTTP and SQL too.
PURE_SHARED = ("catalogue", "clock", "errors", "severity", "schemas")


def _pure_shared_modules() -> list[Path]:
    return sorted(
        p
        for name in PURE_SHARED
        for p in [ROOT / "shared" / f"{name}.py", *(ROOT / "shared" / name).glob("*.py")]
        if p.exists()
    )


@pytest.mark.parametrize(
    "path", _domain_modules() + _pure_shared_modules(), ids=lambda p: str(p.relative_to(ROOT))
)
def test_domain_modules_know_nothing_of_http_or_sql(path: Path) -> None:
    """Not directly, nor through the project modules they import."""
    bad = sorted(n for n in _reachable_imports(path) if n.split(".")[0] in FORBIDDEN)
    assert bad == [], f"{path.relative_to(ROOT)} reaches {bad}"


def test_domain_modules_were_found() -> None:
    assert len(_domain_modules()) >= 25
    assert all((ROOT / path).exists() for path in ORCHESTRATION)


def test_the_training_process_reaches_the_database_only_through_the_repository() -> None:
    imports = _imports(ROOT / "services" / "trainer" / "anomaly" / "worker.py")
    assert not {n for n in imports if n.split(".")[0] in FORBIDDEN}
    assert "services.trainer.anomaly" in imports  # ``from ... import artifact, repository``


def test_no_module_is_past_a_readable_size() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules(*PACKAGES)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}

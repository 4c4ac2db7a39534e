"""The monitoring files of deploy/: alerting rules through promtool, the Grafana dashboard's
structure and metric names against a live scrape, and a real Prometheus scraping the services.

With CI=true a missing promtool or prometheus fails these tests (`.ci/run` installs Debian's
`prometheus` package); elsewhere they skip.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import Settings
from tests.conftest import IN_CI, free_port
from tests.monitoring import monitored_stack, scrape

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "autofix-ml.json"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
NAME = re.compile(r"\b(autofix_[a-zA-Z0-9_]+)\b")
# Grafana's variables, replaced by what Prometheus understands to check an expression.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
ON_POSTGRES = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package prometheus; .ci/run installs it)"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return path


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    done = subprocess.run(
        [binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def test_the_example_scrape_config_passes_promtool() -> None:
    promtool("check", "config", "prometheus.yml")


def test_the_alerts_cover_what_the_issue_asks() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    assert "autofix_loop_stalled" in exprs["AutofixScoringLoopStalled"]
    assert "autofix_webhook_deliveries_total" in exprs["AutofixWebhookFailing"]
    assert "autofix_alertmanager_alerts_total" in exprs["AutofixAlertmanagerPushFailing"]
    assert "autofix_samples_dropped_total" in exprs["AutofixCollectorDroppingSamples"]
    assert "up{" in exprs["AutofixServiceDown"]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_dashboard_has_grafanas_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert {"title", "uid", "panels", "schemaVersion", "templating", "time"} <= dashboard.keys()
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "row"}, panel["title"]
        assert panel["title"]
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(variable, value) for e in exprs]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in promtool(
        "check", "rules", "dashboard.yml", cwd=tmp_path
    )


def exported_names(texts: list[str]) -> set[str]:
    """Every series name the scrapes carry, histogram and counter suffixes included."""
    return {
        sample.name
        for text in texts
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    } | {family.name for text in texts for family in text_string_to_metric_families(text)}


@ON_POSTGRES
async def test_dashboard_and_alerts_use_only_metrics_the_services_export(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with monitored_stack(settings, engine) as stack, httpx.AsyncClient(timeout=30) as client:
        texts = [await scrape(client, url) for url in stack.urls.values()]
    names = exported_names(texts)
    # A counter or histogram with no sample yet is still declared by its HELP/TYPE lines.
    declared = set(re.findall(r"^# TYPE (\S+)", "\n".join(texts), re.M))
    known = names | declared | {f"{n}_bucket" for n in declared} | {f"{n}_sum" for n in declared}
    known |= {f"{n}_count" for n in declared}
    used = {
        name: source
        for source, exprs in (
            ("dashboard", dashboard_exprs(json.loads(DASHBOARD.read_text()))),
            (
                "alerts",
                [r["expr"] for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]],
            ),
        )
        for expr in exprs
        for name in NAME.findall(expr)
    }
    unknown = {name: source for name, source in used.items() if name not in known}
    assert not unknown, f"not exported by any service: {unknown}"
    assert len(used) >= 15  # the dashboard covers the figures, not a token panel


async def _until(check: Any, *, seconds: float, what: str) -> Any:
    last: Any = None
    for _ in range(int(seconds / 0.25)):
        last = await check()
        if last is not None:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@ON_POSTGRES
async def test_a_real_prometheus_scrapes_every_service_and_loads_the_rules(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    prometheus = binary("prometheus")
    async with monitored_stack(settings, engine) as stack, httpx.AsyncClient(timeout=10) as client:
        targets = {name: urlsplit(url).netloc for name, url in stack.urls.items()}
        shutil.copy(ALERTS, tmp_path / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": "autofix-ml", "static_configs": [{"targets": list(targets.values())}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Requests through the gateway reach every service's /health: counted everywhere.
        health_call = await client.get(
            stack.urls["api"] + "/api/ml/health", headers={"Authorization": f"Bearer {stack.key}"}
        )
        assert health_call.status_code == 200
        api = f"http://127.0.0.1:{port}/api/v1"
        try:

            async def all_up() -> dict[str, str] | None:
                try:
                    answer = (await client.get(f"{api}/targets")).json()
                except httpx.HTTPError:
                    return None
                health = {
                    t["labels"]["instance"]: t["health"] for t in answer["data"]["activeTargets"]
                }
                ok = len(health) == 4 and all(h == "up" for h in health.values())
                return health if ok else None

            health = await _until(all_up, seconds=60, what="every target up")
            assert set(health) == set(targets.values())

            async def query(expr: str) -> list[dict[str, Any]] | None:
                answer = (await client.get(f"{api}/query", params={"query": expr})).json()
                assert answer["status"] == "success", answer
                result: list[dict[str, Any]] = answer["data"]["result"]
                return result or None

            up = await _until(lambda: query("autofix_up"), seconds=30, what="autofix_up")
            assert {r["metric"]["service"] for r in up} == {
                "api",
                "collector",
                "trainer",
                "forecaster",
            }
            for expr, services in {
                "autofix_http_requests_total": {"api", "collector", "trainer", "forecaster"},
                "autofix_loop_running": {"collector", "trainer", "forecaster"},
                "autofix_webhook_deliveries_total": {"trainer", "forecaster"},
                "autofix_samples_dropped_total": {"collector"},
                "autofix_queue_depth": {"collector", "trainer", "forecaster"},
                "autofix_db_pool_checked_out": {"api", "collector", "trainer", "forecaster"},
                "autofix_incidents_opened_total": {"api", "collector", "trainer", "forecaster"},
                "autofix_training_duration_seconds_count": {
                    "api",
                    "collector",
                    "trainer",
                    "forecaster",
                },
            }.items():
                result = await _until(lambda e=expr: query(e), seconds=30, what=expr)
                assert {r["metric"]["service"] for r in result} >= services, expr

            rules = (await client.get(f"{api}/rules")).json()["data"]["groups"]
            loaded = [r for g in rules for r in g["rules"]]
            in_file = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
            assert len(loaded) == len(in_file) >= 8
            assert all(r["health"] in ("ok", "unknown") for r in loaded), loaded
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()

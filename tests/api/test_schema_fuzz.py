"""schemathesis against the gateway's OpenAPI schema: the real `autofix-ml up` on SQLite and on
PostgreSQL, an admin key, about 50 generated requests per operation (valid and invalid).

Targets: no server error other than the documented 503 and 507, every answer conforms to the
schema (status code, content type, headers, body). Three admin routes run long work per call
and are left out (see FUZZ_EXCLUDED); their inputs are fuzzed by the services' own tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.api.proxy.table import API_PREFIX, ROUTES
from shared.db import create_engine
from tests.conftest import truncate_all
from tests.e2e.test_cli import CLI, service_env, wait_for

pytestmark = pytest.mark.e2e

# Long admin work per call, left out of the fuzzing (each is one fit or a year of samples at
# the top of its range; 50 calls would take minutes to hours):
# - POST /train/anomaly-detector: an Isolation Forest fit (and 30 synthetic days with
#   use_synthetic), seconds each;
# - POST /train/forecaster: up to 14 Prophet fits, seconds to a minute each call;
# - POST /train/generate-synthetic: up to 365 days, 525,600 rows stored per call;
# - POST /train/failure-predictor: a LightGBM training with its held-out evaluation (and
#   synthetic weeks with use_synthetic), seconds each: 25-30 s of the suite per database.
FUZZ_EXCLUDED = (
    ("POST", "/api/ml/train/anomaly-detector"),
    ("POST", "/api/ml/train/failure-predictor"),
    ("POST", "/api/ml/train/forecaster"),
    ("POST", "/api/ml/train/generate-synthetic"),
)
EXAMPLES = int(
    os.environ.get("FUZZ_EXAMPLES", "25")
)  # per operation and mode (valid, invalid): 50 per operation


def documented_server_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 5xx is allowed only where the operation documents it (503, 507)."""
    status = response.status_code
    if status >= 500 and str(status) not in case.operation.definition.raw.get("responses", {}):
        raise AssertionError(f"{case.operation.label}: undocumented server error {status}")
    return None


# Rules on valid-looking input that a JSON Schema cannot state, since they depend on the
# clock or on two fields together; a request refused for one of these alone is not a schema
# that promises too much.
SEMANTIC_RULES = (
    "more than 5 minutes in the future",
    "older than the retention window",
    "start_date is after end_date",
    "start is after end",
    "start is not before end",
    "timestamp is before 1970-01-01",
    "end is before 1970-01-01",
)


def valid_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, less the refusals for SEMANTIC_RULES."""
    if (
        response.status_code in (400, 422)
        and "json" in response.headers.get("content-type", [""])[0]
    ):
        detail = response.json().get("detail")
        messages = [d["msg"] for d in detail] if isinstance(detail, list) else [str(detail)]
        if messages and all(any(r in m for r in SEMANTIC_RULES) for m in messages):
            return None
    return positive_data_acceptance(ctx, response, case)


class Fuzzed:
    """The running system: gateway URL, admin key and the process."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.env = service_env(
            database_url,
            ML_ENABLED="false",
            AUTOFIX_LOG_LEVEL="warning",  # a service's restart shows in a failure's output
            AUTOFIX_RATE_PREDICT="0",
            AUTOFIX_RATE_INGEST="0",
        )
        made = subprocess.run(
            [*CLI, "keys", "create", "--role", "admin", "--name", "fuzz"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.key = made.stdout.strip()
        self.url = f"http://127.0.0.1:{self.env['AUTOFIX_API_PORT']}"
        self.proc = subprocess.Popen([*CLI, "up"], env=self.env, cwd=tmp_path)
        try:
            # Four services importing numba, Prophet and the rest on a loaded 2-core machine.
            wait_for(f"{self.url}/api/ml/health", timeout=180)
        except AssertionError:
            self.stop()
            raise
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self._seed()

    def _seed(self) -> None:
        """Samples, a trained detector: reads and predictions reach real work, not 409s."""
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=300) as client:
            generated = client.post(
                "/api/ml/train/generate-synthetic", json={"days": 3, "host": "fuzz-seed"}
            )
            assert generated.status_code == 200, generated.text
            trained = client.post(
                "/api/ml/train/anomaly-detector", json={"host": "fuzz-seed", "n_estimators": 10}
            )
            assert trained.status_code == 200, trained.text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _system(database_url: str, tmp_path: Path) -> Iterator[Fuzzed]:
    """The system; afterwards the database is emptied, the admin key included (a key left
    behind would turn keys on for every later test on this database)."""
    system: Fuzzed | None = None
    try:
        system = Fuzzed(database_url, tmp_path)
        yield system
    finally:
        if system is not None:
            system.stop()
        engine = create_engine(database_url)

        async def empty() -> None:
            await truncate_all(engine)
            await engine.dispose()

        asyncio.run(empty())


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    """The system on each database, started once for all the operations."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    yield from _system(url, tmp_path_factory.mktemp(f"fuzz-{request.param}"))


@pytest.fixture(scope="module")
def schema(system: Fuzzed) -> Any:
    loaded = schemathesis.openapi.from_url(f"{system.url}/api/openapi.json")
    # The admin key is sent with every request (keys and roles: tests/api/test_access.py); a
    # generated key header beside it would be a request the key makes valid anyway.
    loaded.config.generation.update(with_security_parameters=False)
    return loaded


# (method, path, whether it takes input that can be invalid)
OPERATIONS = [
    (route.method, API_PREFIX + route.path, bool(route.query or route.body or route.path_params))
    for route in ROUTES
    if (route.method, API_PREFIX + route.path) not in FUZZ_EXCLUDED
] + [("GET", path, False) for path in (API_PREFIX + "/health", "/health", "/ready")]
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, has_input in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_input or mode is GenerationMode.POSITIVE
]


def test_the_fuzzed_operations_are_the_schema_less_the_excluded(schema: Any) -> None:
    """A route added to the schema is fuzzed unless excluded here by name."""
    found = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert found == {(m, p) for m, p, _ in OPERATIONS} | set(FUZZ_EXCLUDED)


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_gateway_conforms_to_its_schema(
    system: Fuzzed, schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    """Valid and invalid requests: no undocumented 5xx, every answer as the schema says."""
    api_operation = schema.find_operation_by_path(method, path)
    assert api_operation is not None, (method, path)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=os.environ.get("FUZZ_RANDOM", "") == "",
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=api_operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            base_url=system.url,
            headers=system.headers,
            timeout=60,
            excluded_checks=[not_a_server_error, positive_data_acceptance],
            additional_checks=[documented_server_errors, valid_data_accepted],
        )

    fuzz()

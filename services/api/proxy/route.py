"""One public route of the gateway and what it is made of: timeout, body and rate classes.

Use: `ProxyRoute(name=..., method="GET", path="/models", service="trainer", role="reader", ...)`
in proxy/table.py's ROUTES; `errors(not_found="No model with this id.")`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel

from shared.access import Role

API_PREFIX = "/api/ml"
Service = Literal["collector", "trainer", "forecaster"]
SERVICES: tuple[Service, ...] = get_args(Service)
# The gateway's own paths counted as traffic="admin" (its health and docs), besides long work.
GATEWAY_ADMIN_PATHS = frozenset(
    {API_PREFIX + "/health", "/", "/api/docs", "/api/docs/oauth2-redirect", "/api/redoc"}
    | {"/health", "/ready", "/api/openapi.json"}
)
TimeoutClass = Literal["read", "synthetic", "training", "refresh", "analysis"]
# Body size classes (settings: AUTOFIX_MAX_BODY_BYTES, AUTOFIX_INGEST_MAX_BODY_BYTES) and rate
# limit classes (AUTOFIX_RATE_PREDICT, AUTOFIX_RATE_INGEST), per API key.
BodyLimit = Literal["small", "ingest"]
RateClass = Literal["predict", "ingest"]
# The least each class waits, in seconds; settings.http_timeout raises every one of them.
TIMEOUT_FLOORS: Mapping[TimeoutClass, float] = {
    "read": 0.0,
    "synthetic": 120.0,  # a year of samples generated and stored
    "training": 600.0,  # a month of samples takes seconds; a slow database far longer
    "refresh": 120.0,  # every host's forecasts recomputed
    "analysis": 120.0,  # an LLM's answer, at most ML_ANALYSIS_TIMEOUT after the one before
}


def timeouts(http_timeout: float) -> dict[TimeoutClass, float]:
    """Seconds per timeout class: `timeouts(settings.http_timeout)["training"]`."""
    return {name: max(http_timeout, floor) for name, floor in TIMEOUT_FLOORS.items()}


STORAGE_FULL = "The database is full (SQLite or PostgreSQL out of space); nothing was stored."


def errors(
    *,
    bad_request: str | None = None,
    not_found: str | None = None,
    conflict: str | None = None,
    invalid: bool = True,
    storage_full: str | None = None,
) -> dict[int, str]:
    """A route's documented errors besides the 503: `errors(not_found="No model with this id.")`."""
    documented = {400: bad_request, 404: not_found, 409: conflict, 507: storage_full}
    out = {code: text for code, text in documented.items() if text is not None}
    if invalid:
        out[422] = "Invalid input: each field and the reason."
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyRoute:
    """One public route under /api/ml and the service endpoint that answers it."""

    name: str  # the route's name, and the start of its OpenAPI operationId
    method: Literal["GET", "POST"]
    path: str  # public path, relative to /api/ml
    service: Service
    role: Role  # the least role of the API key that may call it
    summary: str
    response: type[BaseModel] | None
    status_code: int = 200
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    path_params: Mapping[str, Any] = field(default_factory=dict)
    errors: Mapping[int, str] = field(default_factory=errors)
    timeout: TimeoutClass = "read"
    streamed: bool = False
    media_types: tuple[str, ...] = ()  # other media types of the success answer
    tags: tuple[str, ...] = ()
    service_path: str = ""  # default: the public path
    body_limit: BodyLimit = "small"
    rate: RateClass | None = None

    @property
    def admin(self) -> bool:
        """The service's own long work (training, generation, refresh, export), not the
        serving traffic whose latency and errors the collector records as the host's."""
        return self.timeout != "read" or self.streamed

    @property
    def target(self) -> str:
        """The service's path, with `{name}` placeholders for the path parameters."""
        return self.service_path or self.path

    def placeholders(self) -> set[str]:
        """The names between braces in the public path."""
        return set(re.findall(r"{(\w+)}", self.path))

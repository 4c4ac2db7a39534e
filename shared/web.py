"""What every service app shares: the app factory, error handlers, the connection dependency, caching."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Generic, TypeVar

import asyncpg
from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.access import is_loopback
from shared.errors import RETRY_AFTER_SECONDS, AppError
from shared.observability import CONTENT_TYPE, MetricsMiddleware, ServiceMetrics
from shared.readiness import readiness
from shared.settings import Settings
from shared.storage import FULL_DETAIL, StorageState, full_reason, storage_full

T = TypeVar("T")
log = logging.getLogger("autofix_ml.errors")


def new_app(
    *, title: str, description: str, lifespan: Any, settings: Settings, docs: bool = True
) -> FastAPI:
    """A service's app: error handlers, and the internal token checked on every call."""
    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
    )
    app.state.storage = StorageState()
    install_error_handlers(app)
    token = internal_token_required(settings, service=title)
    if token:
        app.add_middleware(InternalTokenMiddleware, token=token)
    install_metrics(app, service=title.split()[-1], settings=settings)
    return app


# Probes count as traffic="admin", like the gateway's.
PROBE_PATHS = frozenset({"/health", "/ready", "/docs", "/openapi.json"})


def install_metrics(app: FastAPI, *, service: str, settings: Settings) -> ServiceMetrics:
    """Request counting (outermost, so 401s count too) and GET /metrics, token-free.

    At scrape time /metrics reads `app.state.loops` and `app.state.engine`; a lifespan adds
    its own figures with `app.state.observability.add_source(...)`.
    """
    metrics = ServiceMetrics(
        service,
        stall_intervals=settings.loop_stall_intervals,
        stall_min_seconds=settings.loop_stall_min_seconds,
    )
    app.state.observability = metrics
    app.add_middleware(
        MetricsMiddleware,
        metrics=metrics.requests,
        exclude=frozenset({"/metrics"}),
        admin=PROBE_PATHS,
    )

    async def metrics_endpoint(request: Request) -> Response:
        state = request.app.state
        metrics.loops = getattr(state, "loops", ())
        metrics.engine = getattr(state, "engine", None)
        return Response(await metrics.render(), media_type=CONTENT_TYPE)

    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    return metrics


class ConfigurationError(RuntimeError):
    """A setting that makes a process refuse to start; the message says which and why."""


def internal_token_required(settings: Settings, *, service: str) -> str:
    """The token a service checks; '' (every call accepted) only on a loopback bind."""
    token = settings.internal_token
    if not token and not is_loopback(settings.bind_host):
        raise ConfigurationError(
            f"{service}: AUTOFIX_BIND_HOST={settings.bind_host} listens beyond loopback and "
            "AUTOFIX_INTERNAL_TOKEN is not set: set it to one random value on the gateway and "
            "every service (e.g. `openssl rand -hex 32`)."
        )
    if not token:
        log.info("%s: no AUTOFIX_INTERNAL_TOKEN; answering any caller on loopback", service)
    return token


# Paths a service answers without the internal token: probes and Prometheus.
TOKEN_FREE_PATHS = frozenset({"/health", "/ready", "/metrics"})
INTERNAL_TOKEN_HEADER = "X-Internal-Token"
_TOKEN_HEADER = INTERNAL_TOKEN_HEADER.lower().encode()


class InternalTokenMiddleware:
    """Pure ASGI: a call without the gateway's internal token is a 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in TOKEN_FREE_PATHS:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == _TOKEN_HEADER:
                if secrets.compare_digest(value, self.token):
                    await self.app(scope, receive, send)
                    return
                break
        response = JSONResponse(
            {
                "detail": f"missing or wrong {INTERNAL_TOKEN_HEADER}: this service answers the "
                "gateway only"
            },
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="autofix-ml services"'},
        )
        await response(scope, receive, send)


def database_unavailable() -> JSONResponse:
    """503 naming the database, with Retry-After: the write was not stored, send it again."""
    return JSONResponse(
        {"detail": "database unavailable; nothing was stored, retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def storage_full_response(request: Request, exc: BaseException) -> JSONResponse:
    """507 naming the full database; remembered for the service's health."""
    state = getattr(request.app.state, "storage", None)
    if isinstance(state, StorageState):
        state.record(exc)
    log.error("database storage full: %s", exc)
    return JSONResponse({"detail": FULL_DETAIL.format(reason=full_reason(exc))}, status_code=507)


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def db_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One connection and transaction per request: commits on success, rolls back on error.

    Used with ``scope="function"`` (``ConnDep``): the commit runs before the answer is sent,
    so a 2xx means the write is stored (and a failed commit is an error answer, not a 2xx
    followed by a lost write). FastAPI's default for a dependency with ``yield`` ends it after
    the response is sent: a client could read before the commit.
    """
    async with get_engine(request).begin() as conn:
        yield conn


# Row ids are 64-bit integers in both engines.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Row id.")]
# A metric named in a path (checked against the catalogue by the service, which lists the known).
MetricPath = Annotated[
    str,
    Path(max_length=100, pattern=r"^[^\x00-\x1f/]+$", description="A metric of the catalogue."),
]


def get_storage(request: Request) -> StorageState:
    storage: StorageState = request.app.state.storage
    return storage


ConnDep = Annotated[AsyncConnection, Depends(db_connection, scope="function")]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
StorageDep = Annotated[StorageState, Depends(get_storage)]


async def ready_answer(service: str, engine: AsyncEngine, storage: StorageState) -> JSONResponse:
    """GET /ready of a service: 200 while its database answers, else 503 naming it."""
    answer = await readiness(service, engine, storage)
    code = 503 if answer.status == "not_ready" else 200
    return JSONResponse(answer.model_dump(mode="json"), status_code=code)


class TTLCache(Generic[T]):
    """One value recomputed at most every `ttl` seconds; concurrent callers share one computation."""

    def __init__(self, ttl: float, compute: Callable[[], Awaitable[T]]) -> None:
        self.ttl = ttl
        self._compute = compute
        self._value: T | None = None
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._at = -float("inf")

    async def get(self) -> T:
        if self._value is not None and time.monotonic() - self._at < self.ttl:
            return self._value
        async with self._lock:
            if self._value is not None and time.monotonic() - self._at < self.ttl:
                return self._value
            value = await self._compute()
            self._value, self._at = value, time.monotonic()
            return value


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if err.get("type") == "json_invalid":  # loc: ["body", <character position>]
            why = (err.get("ctx") or {}).get("error", "not readable")
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            msg = f"the body is not valid JSON: {why}{at}"
            errors.append({"field": "body", "loc": ["body"], "msg": msg, "type": "json_invalid"})
            continue
        # Never echo the submitted value back: only where and why.
        errors.append(
            {"field": ".".join(loc), "loc": loc, "msg": err.get("msg", ""), "type": err.get("type")}
        )
    return errors


def _unreadable_body(cause: BaseException) -> dict[str, Any]:
    why = "not UTF-8 text" if isinstance(cause, UnicodeDecodeError) else "not readable JSON"
    return {"field": "body", "loc": ["body"], "msg": f"the body is {why}", "type": "json_invalid"}


# Driver errors that mean the connection went away mid-statement (the server restarted).
_LOST = ("connection was closed", "connectiondoesnotexist", "connection is closed", "terminat")


def _connection_lost(exc: DBAPIError) -> bool:
    text = f"{type(exc.orig).__name__} {exc.orig}".lower()
    return any(marker in text for marker in _LOST)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _field_errors(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's 400 for a body it cannot read (not UTF-8, say): a 422 naming the body,
            # like a body that is not JSON.
            return JSONResponse({"detail": [_unreadable_body(exc.__cause__)]}, status_code=422)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error: %s", exc.orig)
        return JSONResponse({"detail": "conflict with stored data"}, status_code=409)

    @app.exception_handler(OperationalError)
    async def _operational(request: Request, exc: OperationalError) -> JSONResponse:
        if storage_full(exc):
            return storage_full_response(request, exc)
        log.error("database unavailable: %s", exc.orig)
        return database_unavailable()

    @app.exception_handler(DBAPIError)
    async def _dbapi(request: Request, exc: DBAPIError) -> JSONResponse:
        if storage_full(exc):
            return storage_full_response(request, exc)
        if exc.connection_invalidated or _connection_lost(exc):
            log.error("database connection lost: %s", exc.orig)
            return database_unavailable()
        log.exception("database error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    # The bulk paths use the driver directly (COPY, executemany): its own errors arrive unwrapped.
    @app.exception_handler(sqlite3.Error)
    async def _sqlite(request: Request, exc: sqlite3.Error) -> JSONResponse:
        if storage_full(exc):
            return storage_full_response(request, exc)
        if isinstance(exc, sqlite3.OperationalError):
            log.error("database unavailable: %s", exc)
            return database_unavailable()
        log.exception("database error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(asyncpg.PostgresError)
    async def _postgres(request: Request, exc: asyncpg.PostgresError) -> JSONResponse:
        if storage_full(exc):
            return storage_full_response(request, exc)
        if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError):
            log.error("database unavailable: %s", exc)
            return database_unavailable()
        log.exception("database error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(asyncpg.InterfaceError)
    async def _postgres_interface(_request: Request, exc: asyncpg.InterfaceError) -> JSONResponse:
        # "connection is closed" and the like: the server went away mid-request.
        log.error("database connection lost: %s", exc)
        return database_unavailable()

    @app.exception_handler(OSError)
    async def _os_error(_request: Request, exc: OSError) -> JSONResponse:
        # asyncpg raises plain OSError / ConnectionRefusedError (or TimeoutError, a subclass,
        # on connect) when the server is away.
        log.error("I/O error: %s", exc)
        return database_unavailable()

    @app.exception_handler(Exception)
    async def _unhandled(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

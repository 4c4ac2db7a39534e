"""What every service app shares: the app factory scaffold, the connection dependency, caching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.errors import install_error_handlers

T = TypeVar("T")


def new_app(*, title: str, description: str, lifespan: Any, docs: bool = True) -> FastAPI:
    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
    )
    install_error_handlers(app)
    return app


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def db_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One connection and transaction per request: commits on success, rolls back on error."""
    async with get_engine(request).begin() as conn:
        yield conn


ConnDep = Annotated[AsyncConnection, Depends(db_connection)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]


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

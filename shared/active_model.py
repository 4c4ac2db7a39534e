"""The active versions of a model family, held in memory, for any family (detector, forecaster, ...).

Usage: `holder = ActiveModelHolder("anomaly_detector", AnomalyDetector.from_bytes)`;
`await holder.refresh(conn)` at start-up and now and then (another process may have activated a
version), `holder.put(await holder.load(conn, record))` after activating one here, and
`holder.require(hint)` where a model is needed. Each version's artifact is read and its sha256
checked once, when it is loaded; decoding runs in a thread. A training run stores its version with
`await store_version(engine, holder, outcome, model_type=..., artifact_format=..., host=h,
activate=True, reason=r, started=t0, previous=active_record)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import events, registry
from shared.db import write_transaction
from shared.errors import AppError, Conflict
from shared.loops import BackgroundLoop
from shared.schemas.models import ModelSummary

log = logging.getLogger("autofix_ml.models")

M = TypeVar("M")
Scope = tuple[str | None, str | None]  # (host, metric)


@dataclass(frozen=True, slots=True)
class ActiveModel(Generic[M]):
    """A loaded model and its registry record."""

    model: M
    record: ModelSummary

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def scope(self) -> Scope:
        return (self.record.host, self.record.metric)


class ActiveModelHolder(Generic[M]):
    """One loaded model per (host, metric) scope of a family; swapped when a new one is active."""

    def __init__(
        self,
        name: str,
        decode: Callable[[bytes, str], M],
        *,
        on_change: Callable[[Scope], None] | None = None,
    ) -> None:
        self.name = name
        self._decode = decode
        self._on_change = on_change
        self._models: dict[Scope, ActiveModel[M]] = {}
        # Scopes whose active version could not be loaded, and why.
        self.failures: dict[Scope, str] = {}

    def get(self, *, host: str | None = None, metric: str | None = None) -> ActiveModel[M] | None:
        return self._models.get((host, metric))

    def require(
        self, hint: str, *, host: str | None = None, metric: str | None = None
    ) -> ActiveModel[M]:
        """The active model of a scope, or a 409 whose detail is `hint`."""
        active = self.get(host=host, metric=metric)
        if active is None:
            raise Conflict(hint)
        return active

    def all(self) -> list[ActiveModel[M]]:
        return list(self._models.values())

    async def load(self, conn: AsyncConnection, record: ModelSummary) -> ActiveModel[M]:
        """A stored version, its checksum verified; a 409 naming it if it cannot be used."""
        try:
            artifact, _fmt, sha256 = await registry.load_artifact(conn, record.id)
            model = await asyncio.to_thread(self._decode, artifact, sha256)
        except (AppError, ValueError, KeyError) as exc:
            detail = exc.detail if isinstance(exc, AppError) else str(exc)
            raise Conflict(f"model {record.id} refused: {detail}") from exc
        return ActiveModel(model, record)

    def put(self, active: ActiveModel[M]) -> None:
        """Hold `active` for its scope (after this process activated or reloaded it)."""
        previous = self._models.get(active.scope)
        self._models[active.scope] = active
        self.failures.pop(active.scope, None)
        if self._on_change is not None and (previous is None or previous.id != active.id):
            self._on_change(active.scope)

    def drop(self, scope: Scope) -> None:
        if self._models.pop(scope, None) is not None and self._on_change is not None:
            self._on_change(scope)

    async def refresh(self, conn: AsyncConnection) -> bool:
        """Load what became active since the last look and drop what is no longer; True if
        anything changed. A version that fails to load is logged and kept in `failures`."""
        records = await registry.active_models(conn, name=self.name)
        wanted = {(r.host, r.metric): r for r in records}
        changed = False
        for scope in [s for s in self._models if s not in wanted]:
            self.drop(scope)
            changed = True
        for scope, record in wanted.items():
            held = self._models.get(scope)
            if held is not None and held.id == record.id:
                if held.record != record:  # same version, new figures (e.g. a moved threshold)
                    self._models[scope] = ActiveModel(held.model, record)
                continue
            try:
                self.put(await self.load(conn, record))
                changed = True
            except Conflict as exc:
                if self.failures.get(scope) != exc.detail:
                    log.error("%s: %s", self.name, exc.detail)
                self.failures[scope] = str(exc.detail)
                if held is not None:
                    self.drop(scope)
                    changed = True
        return changed


class TrainedVersion(Protocol):
    """What a training run hands back to be stored as a version (any family)."""

    @property
    def artifact(self) -> bytes: ...
    @property
    def parameters(self) -> dict[str, Any]: ...
    @property
    def metrics(self) -> dict[str, Any]: ...
    @property
    def training_start(self) -> datetime: ...
    @property
    def training_end(self) -> datetime: ...
    @property
    def sample_count(self) -> int: ...


async def store_version(
    engine: AsyncEngine,
    holder: ActiveModelHolder[M],
    trained: TrainedVersion,
    *,
    model_type: str,
    artifact_format: str,
    host: str | None,
    activate: bool,
    reason: str,
    started: float,
    previous: ModelSummary | None,
) -> ModelSummary:
    """Store a trained version of ``holder``'s family for ``host`` and, if ``activate``, make
    it the active one in the same transaction and hold it; log and count both events.
    ``started``: ``time.perf_counter()`` when the training began."""
    loaded: ActiveModel[M] | None = None
    async with write_transaction(engine) as conn:
        model = await registry.insert_model(
            conn,
            name=holder.name,
            model_type=model_type,
            artifact=trained.artifact,
            artifact_format=artifact_format,
            parameters={**trained.parameters, "host": host},
            metrics=trained.metrics,
            host=host,
            training_start=trained.training_start,
            training_end=trained.training_end,
            sample_count=trained.sample_count,
        )
        if activate:
            model = await registry.activate(conn, model.id)
            loaded = await holder.load(conn, model)
    if loaded is not None:
        holder.put(loaded)
    events.model_trained(
        family=holder.name, model_id=model.id, host=host, seconds=time.perf_counter() - started
    )
    if activate:
        events.model_activated(model, reason=reason, previous=previous)
    return model


async def load_then_start(
    engine: AsyncEngine, holder: ActiveModelHolder[Any], loops: Sequence[BackgroundLoop]
) -> None:
    """A service's start: load the active versions of ``holder``'s family (a database that
    does not answer is logged: the service runs without them until a loop reloads), then
    start ``loops``."""
    try:
        async with engine.connect() as conn:
            await holder.refresh(conn)
    except Exception as exc:  # noqa: BLE001 - the service runs without a model
        log.error("could not load the active %s versions: %s", holder.name, exc)
    for loop in loops:
        loop.start()


async def stop_loops(loops: Sequence[BackgroundLoop]) -> None:
    """Stop the loops together: each may let a step under way finish (``loop.stop``)."""
    await asyncio.gather(*(loop.stop() for loop in loops))

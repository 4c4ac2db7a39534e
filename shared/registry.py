"""The model registry: versions in ml_models, their artifacts and checksums, activation."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.clock import utcnow
from shared.db import row_dict
from shared.errors import AppError, NotFound
from shared.schemas.models import ModelSummary
from shared.tables import ml_models

SUMMARY_COLUMNS = [c for c in ml_models.c if c.name not in ("artifact", "artifact_format", "notes")]


class ArtifactIntegrityError(AppError):
    """A stored model whose bytes do not match their checksum: refuse to load it."""

    status_code = 500


def _record(mapping: Any) -> ModelSummary:
    return ModelSummary.model_validate(row_dict(mapping))


def _scope(query: Any, *, name: str, host: str | None, metric: str | None) -> Any:
    query = query.where(ml_models.c.name == name)
    query = query.where(ml_models.c.host.is_(None) if host is None else ml_models.c.host == host)
    return query.where(
        ml_models.c.metric.is_(None) if metric is None else ml_models.c.metric == metric
    )


async def list_models(
    conn: AsyncConnection,
    *,
    name: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[ModelSummary]:
    query = sa.select(*SUMMARY_COLUMNS).order_by(ml_models.c.id.desc()).limit(limit)
    if name is not None:
        query = query.where(ml_models.c.name == name)
    if status is not None:
        query = query.where(ml_models.c.status == status)
    return [_record(row._mapping) for row in await conn.execute(query)]


async def get_model(conn: AsyncConnection, model_id: int) -> ModelSummary:
    query = sa.select(*SUMMARY_COLUMNS).where(ml_models.c.id == model_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"model {model_id} not found")
    return _record(row._mapping)


async def count_active(conn: AsyncConnection) -> int:
    query = sa.select(sa.func.count()).select_from(ml_models).where(ml_models.c.status == "active")
    return int((await conn.execute(query)).scalar_one())


async def active_model(
    conn: AsyncConnection, *, name: str, host: str | None = None, metric: str | None = None
) -> ModelSummary | None:
    """The active version of a model family (summary columns), or None."""
    query = _scope(sa.select(*SUMMARY_COLUMNS), name=name, host=host, metric=metric)
    row = (await conn.execute(query.where(ml_models.c.status == "active"))).first()
    return _record(row._mapping) if row else None


async def insert_model(
    conn: AsyncConnection,
    *,
    name: str,
    model_type: str,
    artifact: bytes,
    artifact_format: str,
    parameters: dict[str, Any],
    metrics: dict[str, Any],
    host: str | None = None,
    metric: str | None = None,
    training_start: datetime | None = None,
    training_end: datetime | None = None,
    sample_count: int | None = None,
    status: str = "candidate",
    notes: str | None = None,
) -> ModelSummary:
    """Store a new version (the next number in its family) with its artifact's sha256."""
    latest = _scope(
        sa.select(sa.func.max(ml_models.c.version)), name=name, host=host, metric=metric
    )
    version = int((await conn.execute(latest)).scalar_one() or 0) + 1
    result = await conn.execute(
        sa.insert(ml_models)
        .values(
            name=name,
            model_type=model_type,
            version=version,
            status="candidate",
            host=host,
            metric=metric,
            parameters=parameters,
            metrics=metrics,
            training_start=training_start,
            training_end=training_end,
            sample_count=sample_count,
            artifact=artifact,
            artifact_format=artifact_format,
            artifact_sha256=hashlib.sha256(artifact).hexdigest(),
            notes=notes,
        )
        .returning(ml_models.c.id)
    )
    model_id = int(result.scalar_one())
    if status == "active":
        return await activate(conn, model_id)
    if status != "candidate":
        await conn.execute(
            sa.update(ml_models).where(ml_models.c.id == model_id).values(status=status)
        )
    return await get_model(conn, model_id)


async def activate(conn: AsyncConnection, model_id: int) -> ModelSummary:
    """Make this version the active one of its family; the previous active one is retired."""
    model = await get_model(conn, model_id)
    await conn.execute(
        _scope(sa.update(ml_models), name=model.name, host=model.host, metric=model.metric)
        .where(ml_models.c.status == "active", ml_models.c.id != model_id)
        .values(status="retired")
    )
    await conn.execute(
        sa.update(ml_models)
        .where(ml_models.c.id == model_id)
        .values(status="active", activated_at=utcnow())
    )
    return await get_model(conn, model_id)


async def active_models(conn: AsyncConnection, *, name: str) -> list[ModelSummary]:
    """Every active version of a model family (one per host and metric)."""
    query = sa.select(*SUMMARY_COLUMNS).where(
        ml_models.c.name == name, ml_models.c.status == "active"
    )
    return [_record(row._mapping) for row in await conn.execute(query.order_by(ml_models.c.id))]


async def update_metrics(conn: AsyncConnection, model_id: int, metrics: dict[str, Any]) -> None:
    await conn.execute(
        sa.update(ml_models).where(ml_models.c.id == model_id).values(metrics=metrics)
    )


async def load_artifact(conn: AsyncConnection, model_id: int) -> tuple[bytes, str, str]:
    """The model's bytes, format and checksum, verified: raises if the bytes were altered."""
    query = sa.select(
        ml_models.c.artifact, ml_models.c.artifact_format, ml_models.c.artifact_sha256
    )
    row = (await conn.execute(query.where(ml_models.c.id == model_id))).first()
    if row is None:
        raise NotFound(f"model {model_id} not found")
    artifact, fmt, sha = bytes(row[0] or b""), row[1] or "", row[2] or ""
    if hashlib.sha256(artifact).hexdigest() != sha:
        raise ArtifactIntegrityError(f"model {model_id}: stored artifact fails its sha256 check")
    return artifact, fmt, sha

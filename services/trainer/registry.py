"""The model registry: versions in ml_models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.errors import NotFound
from shared.tables import ml_models

SUMMARY_COLUMNS = [c for c in ml_models.c if c.name not in ("artifact", "artifact_format", "notes")]


async def list_models(
    conn: AsyncConnection,
    *,
    name: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    query = sa.select(*SUMMARY_COLUMNS).order_by(ml_models.c.id.desc()).limit(limit)
    if name is not None:
        query = query.where(ml_models.c.name == name)
    if status is not None:
        query = query.where(ml_models.c.status == status)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def get_model(conn: AsyncConnection, model_id: int) -> dict[str, Any]:
    row = (
        await conn.execute(sa.select(*SUMMARY_COLUMNS).where(ml_models.c.id == model_id))
    ).first()
    if row is None:
        raise NotFound(f"model {model_id} not found")
    return dict(row._mapping)


async def count_active(conn: AsyncConnection) -> int:
    query = sa.select(sa.func.count()).select_from(ml_models).where(ml_models.c.status == "active")
    return int((await conn.execute(query)).scalar_one())

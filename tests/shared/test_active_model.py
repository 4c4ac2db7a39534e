"""The active-model holder on a real database: load once, verify, swap, follow other processes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import registry
from shared.active_model import ActiveModelHolder, Scope
from shared.errors import Conflict
from shared.tables import ml_models

FAMILY = "toy_model"


class Decoder:
    """Decodes a JSON artifact and counts how often it was asked to."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, artifact: bytes, sha256: str) -> dict[str, Any]:
        self.calls += 1
        decoded: dict[str, Any] = json.loads(artifact)
        return decoded


async def _store(
    engine: AsyncEngine, weight: float, *, metric: str | None = None, status: str = "active"
) -> int:
    async with engine.begin() as conn:
        record = await registry.insert_model(
            conn,
            name=FAMILY,
            model_type="toy",
            artifact=json.dumps({"weight": weight}).encode(),
            artifact_format="json",
            parameters={},
            metrics={"threshold": 0.5},
            host="h1",
            metric=metric,
            status=status,
        )
    return record.id


async def test_refresh_loads_each_active_scope_once(engine: AsyncEngine) -> None:
    decode = Decoder()
    changed: list[Scope] = []
    holder = ActiveModelHolder(FAMILY, decode, on_change=changed.append)
    cpu = await _store(engine, 1.0, metric="cpu")
    mem = await _store(engine, 2.0, metric="mem")
    await _store(engine, 9.0, metric="disk", status="candidate")
    async with engine.connect() as conn:
        assert await holder.refresh(conn) is True
        assert await holder.refresh(conn) is False
    assert decode.calls == 2
    assert sorted(changed) == [("h1", "cpu"), ("h1", "mem")]
    active = holder.require("train first", host="h1", metric="cpu")
    assert active.id == cpu and active.model == {"weight": 1.0} and active.version == 1
    assert holder.get(host="h1", metric="mem") is not None
    assert {a.id for a in holder.all()} == {cpu, mem}
    with pytest.raises(Conflict, match="train first"):
        holder.require("train first", host="h1", metric="disk")


async def test_refresh_follows_an_activation_elsewhere_and_drops_retired(
    engine: AsyncEngine,
) -> None:
    decode = Decoder()
    holder = ActiveModelHolder(FAMILY, decode)
    first = await _store(engine, 1.0)
    async with engine.connect() as conn:
        await holder.refresh(conn)
    second = await _store(engine, 2.0, status="candidate")
    async with engine.begin() as conn:  # "another process" activates the second version
        await registry.activate(conn, second)
    async with engine.connect() as conn:
        assert await holder.refresh(conn) is True
    active = holder.require("none", host="h1")
    assert active.id == second and active.model == {"weight": 2.0} and active.version == 2
    async with engine.begin() as conn:
        await conn.execute(sa.update(ml_models).values(status="retired"))
    async with engine.connect() as conn:
        assert await holder.refresh(conn) is True
    assert holder.get(host="h1") is None and first != second


async def test_new_figures_of_the_same_version_need_no_reload(engine: AsyncEngine) -> None:
    decode = Decoder()
    holder = ActiveModelHolder(FAMILY, decode)
    model_id = await _store(engine, 1.0)
    async with engine.connect() as conn:
        await holder.refresh(conn)
    async with engine.begin() as conn:
        await registry.update_metrics(conn, model_id, {"threshold": 0.9})
    async with engine.connect() as conn:
        assert await holder.refresh(conn) is False
    assert decode.calls == 1
    assert holder.require("none", host="h1").record.metrics == {"threshold": 0.9}


async def test_a_tampered_artifact_is_refused_and_reported(engine: AsyncEngine) -> None:
    holder = ActiveModelHolder(FAMILY, Decoder())
    model_id = await _store(engine, 1.0)
    async with engine.begin() as conn:
        await conn.execute(
            sa.update(ml_models).where(ml_models.c.id == model_id).values(artifact=b'{"weight": 6}')
        )
    async with engine.connect() as conn:
        await holder.refresh(conn)
        record = await registry.get_model(conn, model_id)
        with pytest.raises(Conflict, match=f"model {model_id} refused: .*sha256"):
            await holder.load(conn, record)
    assert holder.get(host="h1") is None
    assert "sha256" in holder.failures[("h1", None)]

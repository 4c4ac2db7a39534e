"""The api_keys table: create (the key shown once), list, revoke, and the gateway's read.

Use: `key, record = await create_key(conn, role="operator", name="bot")`;
`await revoke_key(conn, key_id)`; `await active_keys(conn)` for the gateway's cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.access import ROLES, SHOWN_PREFIX, key_hash, new_key
from shared.clock import utc, utcnow
from shared.errors import NotFound, Unprocessable
from shared.tables import api_keys


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without the key itself."""

    id: int
    name: str
    role: str
    prefix: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None


def _record(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    revoked = m["revoked_at"]
    return ApiKey(
        id=int(m["id"]),
        name=str(m["name"]),
        role=str(m["role"]),
        prefix=str(m["prefix"]),
        key_hash=str(m["key_hash"]),
        created_at=utc(m["created_at"]),
        revoked_at=utc(revoked) if revoked is not None else None,
    )


async def create_key(conn: AsyncConnection, *, role: str, name: str = "") -> tuple[str, ApiKey]:
    """A new key of `role`; the key itself is returned here and never again."""
    if role not in ROLES:
        raise Unprocessable(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if len(name) > 100 or "\x00" in name:
        raise Unprocessable("name: at most 100 characters, no NUL")
    key = new_key()
    values = {
        "name": name,
        "role": role,
        "prefix": key[:SHOWN_PREFIX],
        "key_hash": key_hash(key),
        "created_at": utcnow(),
    }
    result = await conn.execute(sa.insert(api_keys).values(**values).returning(*api_keys.c))
    return key, _record(result.one())


async def list_keys(conn: AsyncConnection) -> list[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    result = await conn.execute(sa.select(api_keys).order_by(api_keys.c.id))
    return [_record(row) for row in result]


async def revoke_key(conn: AsyncConnection, key_id: int) -> ApiKey:
    """Revoke a key (kept, marked revoked); revoking twice keeps the first time."""
    result = await conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(*api_keys.c)
    )
    row = result.one_or_none()
    if row is not None:
        return _record(row)
    existing = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
    if existing is None:
        raise NotFound(f"no API key with id {key_id}")
    return _record(existing)


async def key_table(conn: AsyncConnection) -> tuple[dict[str, ApiKey], int]:
    """What the gateway caches: the active keys by hash, and how many keys were ever made."""
    keys = await list_keys(conn)
    return {k.key_hash: k for k in keys if k.revoked_at is None}, len(keys)

"""The one read of ``POST /predict/anomaly``: a host's newest fresh sample and its own threshold.

Usage: ``sample, own = await predict_reads(conn, host="web-1", not_before=t0, not_after=t1)``.

One prebuilt statement, one round trip. On SQLite it goes to the driver directly, compiled
once by SQLAlchemy with its own parameter and timestamp conversions: through the adapted
cursor a read costs five hops to aiosqlite's thread, here one (about 0.25 ms against 0.12 ms
on the 2-core machine, bench/RESULTS.md, issue 9).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from services.trainer.anomaly.repository import SAMPLE_COLUMNS, SampleRow
from shared.tables import anomaly_thresholds as thresholds
from shared.tables import metrics_history as mh

_LATEST = (
    sa.select(*SAMPLE_COLUMNS)
    .where(
        mh.c.host == sa.bindparam("host"),
        mh.c.timestamp >= sa.bindparam("not_before"),
        mh.c.timestamp <= sa.bindparam("not_after"),
    )
    .order_by(mh.c.timestamp.desc(), mh.c.id.desc())
    .limit(1)
    .subquery("latest")
)
_OWN = sa.select(thresholds.c.threshold).where(thresholds.c.host == sa.bindparam("host"))
_ONE = sa.select(sa.literal_column("1").label("one")).subquery("one")  # the row joined to
PREDICT_READ = sa.select(_OWN.scalar_subquery().label("own"), *_LATEST.c).select_from(
    _ONE.outerjoin(_LATEST, sa.true())
)
_TIMESTAMP_AT = 2  # the sample's timestamp in a row of PREDICT_READ (after own and id)
_TIMES = ("not_before", "not_after")


async def predict_reads(
    conn: AsyncConnection, *, host: str, not_before: datetime, not_after: datetime
) -> tuple[SampleRow | None, float | None]:
    """A host's newest sample stored between the two times, if any (``SAMPLE_COLUMNS``
    order), and its own threshold, if feedback set one."""
    params = {"host": host, "not_before": not_before, "not_after": not_after}
    row: Any
    if conn.dialect.name == "sqlite":
        row = await _sqlite_read(conn, params)
    else:
        row = (await conn.execute(PREDICT_READ, params)).one()
    own = None if row[0] is None else float(row[0])
    return (None if row[1] is None else tuple(row[1:])), own


_Compiled = tuple[
    str, list[str], dict[str, Any], Callable[..., Any] | None, Callable[..., Any] | None
]
_COMPILED: dict[tuple[str, str], _Compiled] = {}  # by dialect and driver: one entry each


def _compiled(dialect: Dialect) -> _Compiled:
    """The statement as SQLAlchemy renders it for ``dialect``: text, parameter order, fixed
    parameters (the limit), and the timestamp's bind and result conversions."""
    key = (dialect.name, dialect.driver)
    found = _COMPILED.get(key)
    if found is not None:
        return found
    compiled = PREDICT_READ.compile(dialect=dialect)
    fixed = dict(compiled.construct_params({"host": None, "not_before": None, "not_after": None}))
    timestamp = mh.c.timestamp.type.dialect_impl(dialect)
    bind: Callable[..., Any] | None = timestamp.bind_processor(dialect)
    result: Callable[..., Any] | None = timestamp.result_processor(dialect, None)
    found = _COMPILED[key] = (
        compiled.string,
        list(compiled.positiontup or ()),
        fixed,
        bind,
        result,
    )
    return found


async def _sqlite_read(conn: AsyncConnection, params: dict[str, Any]) -> list[Any]:
    sql, order, fixed, bind, result = _compiled(conn.dialect)
    values = {**fixed, **params}
    if bind is not None:
        for name in _TIMES:
            values[name] = bind(values[name])
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    row = list((await driver.execute_fetchall(sql, [values[n] for n in order]))[0])
    if result is not None and row[_TIMESTAMP_AT] is not None:
        row[_TIMESTAMP_AT] = result(row[_TIMESTAMP_AT])
    return row

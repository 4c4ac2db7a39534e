"""HTTP routes for incidents (every service writes them; the trainer serves them)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from shared import incidents
from shared.incidents import Notifier
from shared.schemas.common import RowId
from shared.schemas.incidents import IncidentList, IncidentOut, ResolveRequest
from shared.web import ConnDep

router = APIRouter()


@router.get("/incidents", response_model=IncidentList, summary="Incidents, newest first")
async def list_incidents(
    conn: ConnDep,
    status: Annotated[
        Literal["open", "resolved"] | None, Query(description="open or resolved")
    ] = None,
    type: Annotated[str | None, Query(description="ML_ANOMALY, predicted_breach, ...")] = None,
    host: Annotated[str | None, Query(max_length=255, description="Only this host.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> IncidentList:
    rows = await incidents.list_incidents(conn, status=status, type=type, host=host, limit=limit)
    return IncidentList(incidents=[IncidentOut.model_validate(r) for r in rows], count=len(rows))


@router.get("/incidents/{incident_id}", response_model=IncidentOut, summary="One incident")
async def get_incident(conn: ConnDep, incident_id: RowId) -> IncidentOut:
    return IncidentOut.model_validate(await incidents.get_incident(conn, incident_id))


@router.post(
    "/incidents/{incident_id}/resolve", response_model=IncidentOut, summary="Resolve an incident"
)
async def resolve_incident(
    conn: ConnDep,
    request: Request,
    incident_id: RowId,
    body: ResolveRequest | None = None,
) -> IncidentOut:
    row = await incidents.resolve_incident(
        conn, incident_id=incident_id, reason=body.reason if body else "resolved by a user"
    )
    assert row is not None
    notifier: Notifier = request.app.state.notifier
    notifier.notify(row)  # delivered from a background task, after this request commits
    return IncidentOut.model_validate(row)

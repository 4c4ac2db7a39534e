"""Routes of incidents: GET /incidents, GET /incidents/{id}, POST /incidents/{id}/resolve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.trainer.deps import NotifierDep
from shared.incidents import repository as incidents
from shared.schemas.incidents import IncidentList, IncidentListQuery, IncidentOut, ResolveRequest
from shared.web import ConnDep, RowId

router = APIRouter()


@router.get("/incidents", response_model=IncidentList, summary="Incidents, newest first")
async def list_incidents(
    conn: ConnDep, query: Annotated[IncidentListQuery, Query()]
) -> IncidentList:
    found = await incidents.list_incidents(
        conn, status=query.status, type=query.type, host=query.host, limit=query.limit
    )
    return IncidentList(incidents=found, count=len(found))


@router.get("/incidents/{incident_id}", response_model=IncidentOut, summary="One incident")
async def get_incident(conn: ConnDep, incident_id: RowId) -> IncidentOut:
    return await incidents.get_incident(conn, incident_id)


@router.post(
    "/incidents/{incident_id}/resolve", response_model=IncidentOut, summary="Resolve an incident"
)
async def resolve_incident(
    conn: ConnDep,
    notifier: NotifierDep,
    incident_id: RowId,
    body: ResolveRequest | None = None,
) -> IncidentOut:
    incident = await incidents.resolve_incident(
        conn, incident_id=incident_id, reason=body.reason if body else "resolved by a user"
    )
    assert incident is not None  # by id: absent or already resolved raise instead
    notifier.notify(incident)  # delivered from a background loop, after this request commits
    return incident

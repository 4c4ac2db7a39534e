"""Routes of incident analysis: analyse (again), an incident's latest analysis, the analyses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from services.trainer.analysis import repository as repo
from services.trainer.deps import AnalysisServiceDep
from shared.errors import NotFound
from shared.schemas.analysis import AnalysisList, AnalysisListQuery, AnalysisOut, AnalyzeRequest
from shared.web import ConnDep, RowId

router = APIRouter()


@router.post(
    "/incidents/{incident_id}/analyze",
    response_model=AnalysisOut,
    summary="Analyse an incident now (again), optionally by another provider",
)
async def analyze_incident(
    service: AnalysisServiceDep,
    incident_id: RowId,
    body: Annotated[AnalyzeRequest | None, Body()] = None,
) -> AnalysisOut:
    return await service.analyze(incident_id, provider=body.provider if body else None)


@router.get(
    "/incidents/{incident_id}/analysis",
    response_model=AnalysisOut,
    summary="The latest analysis of an incident",
)
async def incident_analysis(conn: ConnDep, incident_id: RowId) -> AnalysisOut:
    await repo.read_incident(conn, incident_id)  # 404 for an unknown incident
    found = await repo.latest_analysis(conn, incident_id)
    if found is None:
        raise NotFound(f"incident {incident_id} has no analysis yet")
    return found


@router.get("/analyses", response_model=AnalysisList, summary="Analyses, newest first")
async def list_analyses(
    conn: ConnDep, query: Annotated[AnalysisListQuery, Query()]
) -> AnalysisList:
    found = await repo.list_analyses(conn, query)
    return AnalysisList(analyses=found, count=len(found))

"""POST /metrics/collect: take one sample of this host now."""

from __future__ import annotations

from fastapi import APIRouter

from services.collector.deps import SamplingDep, StoredDataDep

router = APIRouter()


@router.post("/metrics/collect", summary="Take one sample of this host now and store it")
async def collect_now(sampling: SamplingDep, stored: StoredDataDep) -> dict[str, object]:
    sample = await sampling.collect_once()
    stored.invalidate()
    return {"sample": sample, "buffered_samples": len(sampling.buffer)}

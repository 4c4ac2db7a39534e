"""What the training process runs for failure prediction: read histories, train, evaluate.

Usage: ``outcome = await run_in(training_pool, train_in_worker, FailureTrainingJob(...))``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from services.trainer.anomaly import repository
from services.trainer.failure import artifact
from services.trainer.failure.model import TrainParams
from services.trainer.failure.training import FailureOutcome, train_predictor


@dataclass(frozen=True, slots=True)
class FailureTrainingJob:
    """One training request, as sent to the training process."""

    database_url: str
    hosts: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    horizons: tuple[int, ...]
    params: TrainParams
    active_artifact: tuple[bytes, str] | None  # the active version's bytes and sha256


async def _read(job: FailureTrainingJob) -> dict[str, pd.DataFrame]:
    return {
        host: await repository.read_history_frame(
            job.database_url, host=host, start=job.start, end=job.end
        )
        for host in job.hosts
    }


def train_in_worker(job: FailureTrainingJob) -> FailureOutcome:
    """Read each host's history and run ``train_predictor``, all in the training process."""
    frames = asyncio.run(_read(job))
    active = artifact.load(*job.active_artifact) if job.active_artifact else None
    return train_predictor(frames, horizons=job.horizons, params=job.params, active=active)

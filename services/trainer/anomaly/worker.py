"""What the training process runs: read a host's history from the database and train on it.

Usage: ``outcome = await run_in(training_pool, train_in_worker, TrainingJob(...))``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from services.trainer.anomaly import artifact, repository
from services.trainer.anomaly.training import TrainingOutcome, train_detector


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """One training request, as sent to the training process."""

    database_url: str
    host: str
    start: datetime | None
    end: datetime | None
    contamination: float
    n_estimators: int
    active_artifact: tuple[bytes, str] | None  # the active version's bytes and sha256
    synthetic_seed: int | None
    consecutive: int
    incident_budget: float | None = None  # the scheduled training's rule (``train_detector``)
    threshold: float = 0.999  # the host's threshold in force, for that rule


def train_in_worker(job: TrainingJob) -> TrainingOutcome:
    """Read the host's history and run ``train_detector``, all in the training process, so the
    service's event loop neither converts nor pickles the training rows. One thread: the
    service's process keeps the other core."""
    frame = asyncio.run(
        repository.read_history_frame(job.database_url, host=job.host, start=job.start, end=job.end)
    )
    active = artifact.load(*job.active_artifact) if job.active_artifact else None
    return train_detector(
        frame,
        contamination=job.contamination,
        n_estimators=job.n_estimators,
        active=active,
        synthetic_seed=job.synthetic_seed,
        consecutive=job.consecutive,
        incident_budget=job.incident_budget,
        threshold=job.threshold,
    )

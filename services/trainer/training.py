"""One training run of the anomaly detector: fit, evaluate on held-out labels, compare.

Usage: ``outcome = train_detector(rows, contamination=0.05, n_estimators=100, active=None)``.
Plain and blocking (the service runs it in its training executor).

Evaluation: when the training history carries labels other than ``normal``, its last
``HOLDOUT_SHARE`` is held out (the model is fitted on the rest and scores the held-out
stretch with the fitted part as its recent history); otherwise the model scores 30 days
of synthetic data of seed ``EVAL_SEED``, a different seed from the one used for training
data. Figures are per event (an anomaly window counts once if any of its samples is
flagged), per scenario, with no point-adjust (``evaluation.evaluate_labels``).

The active model, if any, is scored on the same stretch, so the activation rule compares
like with like: the new version is *worse* when its mean per-scenario event F1 is lower
than the active one's by more than ``WORSE_MARGIN``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from services.trainer.detector import AnomalyDetector
from services.trainer.evaluation import NORMAL, evaluate_labels
from services.trainer.repository import Row, rows_to_frame
from services.trainer.synthetic import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES

EVAL_SEED = 7
EVAL_DAYS = 30
HOLDOUT_SHARE = 0.2
WORSE_MARGIN = 0.02
MODEL_NAME = "anomaly_detector"
MODEL_TYPE = "isolation_forest"
ARTIFACT_FORMAT = "npz+skops"


@dataclass(slots=True)
class TrainingOutcome:
    artifact: bytes
    sha256: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]  # stored in ml_models.metrics
    evaluation: dict[str, Any]
    quality: float  # mean per-scenario event F1 of the new model
    active_quality: float | None  # the same figure of the active model on the same stretch
    sample_count: int
    training_start: datetime
    training_end: datetime


def mean_event_f1(evaluation: dict[str, Any]) -> float:
    """Mean per-event F1 over the scenarios of an evaluation (0 if it has none)."""
    scenarios = evaluation.get("scenarios", {})
    if not scenarios:
        return 0.0
    return float(np.mean([s["event_f1"] for s in scenarios.values()]))


def evaluate(det: AnomalyDetector, frame: pd.DataFrame, start_row: int) -> dict[str, Any]:
    """Per-scenario figures of ``det`` on ``frame[start_row:]`` (earlier rows: history)."""
    scored = det.score_frame(frame)
    labels = frame["label"].astype(str).to_numpy()[start_row:]
    return evaluate_labels(labels, scored.is_anomaly[start_row:])


def train_detector(
    rows: Sequence[Row] | pd.DataFrame,
    *,
    contamination: float,
    n_estimators: int,
    active: AnomalyDetector | None = None,
    synthetic_seed: int | None = None,
) -> TrainingOutcome:
    """Fit a detector on a host's samples, evaluate it and (if given) the active one.

    ``synthetic_seed``: the rows are synthetic data of that seed; they are all used for
    training and the evaluation month gets another seed.
    """
    started = time.perf_counter()
    frame = rows if isinstance(rows, pd.DataFrame) else rows_to_frame(rows)
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    metrics = [m for m in _metric_names(frame) if frame[m].notna().any()]
    if not metrics:
        raise ValueError("the training history has no metric values")
    labelled = "label" in frame and bool((frame["label"].astype(str) != NORMAL).any())
    if labelled and synthetic_seed is None:
        split = int(len(frame) * (1.0 - HOLDOUT_SHARE))
        train, eval_frame, eval_start = frame.iloc[:split], frame, split
        source = f"held-out last {HOLDOUT_SHARE:.0%} of the training history ({len(frame) - split} samples)"
    else:
        seed = EVAL_SEED if synthetic_seed != EVAL_SEED else EVAL_SEED + 1
        train = frame
        eval_frame = SyntheticDataGenerator(seed=seed).generate_full_training_set(EVAL_DAYS)
        eval_start = 0
        source = f"synthetic data, seed {seed}, {EVAL_DAYS} days"
    det = AnomalyDetector(contamination=contamination, n_estimators=n_estimators).fit(
        train, metrics
    )
    fitted = time.perf_counter()
    evaluation = evaluate(det, eval_frame, eval_start)
    quality = mean_event_f1(evaluation)
    active_quality = None
    if active is not None:
        active_quality = mean_event_f1(evaluate(active, eval_frame, eval_start))
    artifact = det.to_bytes()
    evaluation["source"] = source
    evaluation["mean_event_f1"] = round(quality, 4)
    stamps = pd.DatetimeIndex(train["timestamp"])
    parameters = {
        "contamination": contamination,
        "n_estimators": n_estimators,
        "max_samples": det.max_samples,
        "smoothing": det.smoothing,
        "random_state": det.random_state,
        "metrics": list(det.metrics),
        "feature_config": det.extractor.config.to_dict(),
    }
    stored_metrics = {
        "evaluation": evaluation,
        "mean_event_f1": round(quality, 4),
        "threshold": det.threshold,
        "initial_threshold": det.threshold,
        "threshold_history": [],
        "training_medians": det.training_medians,
        "fit_seconds": round(fitted - started, 3),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    return TrainingOutcome(
        artifact=artifact,
        sha256=AnomalyDetector.sha256(artifact),
        parameters=parameters,
        metrics=stored_metrics,
        evaluation=evaluation,
        quality=quality,
        active_quality=active_quality,
        sample_count=len(train),
        training_start=stamps[0].to_pydatetime(),
        training_end=stamps[-1].to_pydatetime(),
    )


def activation_decision(
    quality: float, active_quality: float | None, *, force: bool
) -> tuple[bool, str]:
    """Whether a new version becomes active, and why (see the module docstring)."""
    if active_quality is None:
        return True, "no active model to compare with"
    if force:
        return True, f"forced (mean event F1 {quality:.3f} vs active {active_quality:.3f})"
    if quality >= active_quality - WORSE_MARGIN:
        return True, (
            f"not worse: mean event F1 {quality:.3f} vs active {active_quality:.3f} "
            f"(worse means lower by more than {WORSE_MARGIN})"
        )
    return False, (
        f"worse: mean event F1 {quality:.3f} vs active {active_quality:.3f} "
        f"(lower by more than {WORSE_MARGIN}); kept as a candidate, pass force=true to activate"
    )


def _metric_names(frame: pd.DataFrame) -> list[str]:
    return [m for m in METRIC_NAMES if m in frame.columns]

"""One training run of the anomaly detector: fit, evaluate on synthetic and held-out labels, compare.

Usage: ``outcome = train_detector(frame, contamination=0.05, n_estimators=100, active=None)``
(blocking: the service runs it in its training process; docs/anomaly-detection.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from services.trainer.anomaly import artifact
from services.trainer.anomaly.budget import BudgetChoice, choose_contamination, replay_stream
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import NORMAL, evaluate_labels, incident_rows
from services.trainer.anomaly.features import FeatureConfig, frame_times
from services.trainer.anomaly.forest import ScoringThreads
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES

EVAL_SEED = 7
EVAL_DAYS = 30
DEFAULT_CONSECUTIVE = 3  # the default of ML_ANOMALY_CONSECUTIVE
DEFAULT_THRESHOLD = 0.999  # the default of ML_ANOMALY_THRESHOLD
STREAM_METRICS = list(METRIC_NAMES)  # the per-metric layer's metrics (the scoring loop's)
HOLDOUT_SHARE = 0.2
WORSE_MARGIN = 0.02
# Threshold quantile floor once labelled anomalies are removed from a history: the remaining
# rows are presumed normal, so flag only the rarest 0.1 % of them. Chosen on synthetic data
# (our development set; 0.01 / 0.005 / 0.002 / 0.001 gave event precision 0.70 / 0.73 /
# 0.81 / 0.90 on another seed's month, recall 1.0 throughout), never on SMD.
MIN_CONTAMINATION = 0.001
MODEL_NAME = "anomaly_detector"
MODEL_TYPE = "isolation_forest"


@dataclass(slots=True)
class TrainingOutcome:
    artifact: bytes
    sha256: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]  # stored in ml_models.metrics
    evaluation: dict[str, Any]
    quality: float  # synthetic-month event F1 of the new model (see ``quality``)
    active_quality: float | None  # the same figure of the active model on the same stretch
    sample_count: int
    training_start: datetime
    training_end: datetime


def _clean_normal(labels: npt.NDArray[Any], lookback: int) -> npt.NDArray[np.bool_]:
    """Rows labelled normal whose features do not reach back into a labelled anomaly
    (a row's rolling and lag features span ``lookback`` rows before it)."""
    anomalous = labels != NORMAL
    reach = np.convolve(anomalous.astype(np.int64), np.ones(lookback + 1, dtype=np.int64))
    clean: npt.NDArray[np.bool_] = ~anomalous & (reach[: len(labels)] == 0)
    return clean


def _fit(
    train: pd.DataFrame,
    metrics: list[str],
    contamination: float,
    effective: float,
    labelled: bool,
    n_estimators: int,
    threads: ScoringThreads | None,
) -> AnomalyDetector:
    """The detector fitted on ``train``; a labelled one on its normal rows, its threshold at
    what remains of the expected contamination once the labelled anomalies are removed."""
    normal = None
    if labelled:
        normal = _clean_normal(train["label"].astype(str).to_numpy(), FeatureConfig().lookback)
        effective = max(contamination - float(1.0 - normal.mean()), MIN_CONTAMINATION)
    return AnomalyDetector(contamination=effective, n_estimators=n_estimators, threads=threads).fit(
        train, metrics, normal=normal
    )


def quality(evaluation: dict[str, Any]) -> float:
    """Event F1 of the overall event precision and the mean per-scenario event recall."""
    scenarios = evaluation.get("scenarios", {})
    if not scenarios:
        return 0.0
    recall = float(np.mean([s["event_recall"] for s in scenarios.values()]))
    precision = float(evaluation["overall"]["event_precision"])
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def evaluate(
    det: AnomalyDetector, frame: pd.DataFrame, start_row: int, *, consecutive: int
) -> dict[str, Any]:
    """Figures of ``det`` at its fitted threshold on ``frame[start_row:]`` (earlier rows:
    history), detections counted as the service's incidents (``incident_rows``)."""
    scored = det.score_frame(frame)
    labels = frame["label"].astype(str).to_numpy()[start_row:]
    result = evaluate_labels(labels, incident_rows(scored.is_anomaly[start_row:], consecutive))
    result["consecutive"] = consecutive
    return result


def train_detector(
    history: pd.DataFrame,
    *,
    contamination: float,
    n_estimators: int,
    active: AnomalyDetector | None = None,
    synthetic_seed: int | None = None,
    consecutive: int = DEFAULT_CONSECUTIVE,
    threads: ScoringThreads | None = None,
    incident_budget: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> TrainingOutcome:
    """Fit a detector on a host's samples, evaluate it and (if given) the active one.

    ``synthetic_seed``: the rows are synthetic data of that seed; they are all used for
    training and the evaluation month gets another seed. ``consecutive``: the service's
    ``ML_ANOMALY_CONSECUTIVE``, the confirmation rule detections are counted with.
    ``threads``: for the evaluations' batch scoring (the training process passes none).
    ``incident_budget``: on an unlabelled history, ``contamination`` is replaced by the
    largest of ``budget.GRID`` at which the host's two layers (the per-metric layer at the
    host's ``threshold`` and the forest) opened at most this many incidents a day on the
    history's last third (``budget.choose_contamination``; the scheduled training's rule).
    """
    started = time.perf_counter()
    frame = history.sort_values("timestamp", kind="stable").reset_index(drop=True)
    metrics = [m for m in _metric_names(frame) if frame[m].notna().any()]
    if not metrics:
        raise ValueError("the training history has no metric values")
    labelled = "label" in frame and bool((frame["label"].astype(str) != NORMAL).any())
    held_out = labelled and synthetic_seed is None
    split = int(len(frame) * (1.0 - HOLDOUT_SHARE)) if held_out else len(frame)
    train = frame.iloc[:split]
    effective = contamination
    choice: BudgetChoice | None = None
    if incident_budget is not None and not labelled and synthetic_seed is None:
        stream = replay_stream(
            frame_times(frame),
            frame.reindex(columns=STREAM_METRICS).to_numpy(float),
            STREAM_METRICS,
        )
        choice = choose_contamination(
            frame,
            metrics,
            stream,
            threshold=threshold,
            consecutive=consecutive,
            budget=incident_budget,
            n_estimators=n_estimators,
        )
        effective = choice.contamination
    det = _fit(train, metrics, contamination, effective, labelled, n_estimators, threads)
    stretch: dict[str, Any] | None = None
    if held_out:
        stretch = evaluate(det, frame, split, consecutive=consecutive)
        stretch["source"] = (
            f"held-out last {HOLDOUT_SHARE:.0%} of the training history "
            f"({len(frame) - split} samples), scored by the same settings fitted on the rest; "
            "the model put in service is then fitted on every row"
        )
        # The newest stretch is the most like what comes next: a model that never saw it
        # would find the host's latest normal new, for hours (the quick start's web-1).
        train = frame
        det = _fit(train, metrics, contamination, effective, labelled, n_estimators, threads)
    fitted = time.perf_counter()
    seed = EVAL_SEED if synthetic_seed != EVAL_SEED else EVAL_SEED + 1
    month = SyntheticDataGenerator(seed=seed).generate_full_training_set(EVAL_DAYS)
    synthetic = evaluate(det, month, 0, consecutive=consecutive)
    synthetic["source"] = f"synthetic data, seed {seed}, {EVAL_DAYS} days"
    new_quality = quality(synthetic)
    synthetic["quality"] = round(new_quality, 4)
    evaluation: dict[str, Any] = {"synthetic": synthetic, "consecutive": consecutive}
    if stretch is not None:
        evaluation["held_out"] = stretch
    active_quality = None
    if active is not None:
        active_quality = quality(evaluate(active, month, 0, consecutive=consecutive))
    evaluated = time.perf_counter()
    blob = artifact.dump(det)
    stamps = pd.DatetimeIndex(train["timestamp"])
    parameters = {
        "contamination": contamination,
        "effective_contamination": det.contamination,
        "trained_on": "normal-labelled rows" if labelled else "all rows",
        "incident_budget": None
        if choice is None
        else {"per_day": incident_budget, "threshold": threshold, **choice.summary()},
        "n_estimators": n_estimators,
        "max_samples": det.max_samples,
        "smoothing": det.smoothing,
        "random_state": det.random_state,
        "metrics": list(det.metrics),
        "feature_config": artifact.feature_config_dict(det.extractor.config),
    }
    stored_metrics = {
        "evaluation": evaluation,
        "quality": round(new_quality, 4),
        # The threshold in force, moved by feedback (the one place it is kept), and where it began.
        "threshold": det.fitted_threshold,
        "initial_threshold": det.fitted_threshold,
        "threshold_history": [],
        "training_medians": det.training_medians,
        "fit_seconds": round(fitted - started, 3),
        "evaluation_seconds": round(evaluated - fitted, 3),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    return TrainingOutcome(
        artifact=blob,
        sha256=artifact.sha256(blob),
        parameters=parameters,
        metrics=stored_metrics,
        evaluation=evaluation,
        quality=new_quality,
        active_quality=active_quality,
        sample_count=len(train),
        training_start=stamps[0].to_pydatetime(),
        training_end=stamps[-1].to_pydatetime(),
    )


def activation_decision(
    quality: float, active_quality: float | None, *, force: bool
) -> tuple[bool, str]:
    """Whether a new version becomes active, and why: not when its quality is lower than the
    active version's by more than ``WORSE_MARGIN``, unless forced."""
    if active_quality is None:
        return True, "no active model to compare with"
    if force:
        return True, f"forced (synthetic event F1 {quality:.3f} vs active {active_quality:.3f})"
    if quality >= active_quality - WORSE_MARGIN:
        return True, (
            f"not worse: synthetic event F1 {quality:.3f} vs active {active_quality:.3f} "
            f"(worse means lower by more than {WORSE_MARGIN})"
        )
    return False, (
        f"worse: synthetic event F1 {quality:.3f} vs active {active_quality:.3f} "
        f"(lower by more than {WORSE_MARGIN}); kept as a candidate, pass force=true to activate"
    )


def _metric_names(frame: pd.DataFrame) -> list[str]:
    return [m for m in METRIC_NAMES if m in frame.columns]

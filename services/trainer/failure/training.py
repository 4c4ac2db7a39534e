"""One training run of the failure predictor: train, evaluate on held-out stretches, compare.

Usage: ``outcome = train_predictor(frames, horizons=(15, 30, 60), params=TrainParams(),
active=None)`` (blocking: the service runs it in its training process).

Each host's history is split by time: the last ``HOLDOUT_SHARE`` is held out for the
evaluation stored with the model (``report.evaluate``); the rest is what ``model.train``
sees (it splits its own validation period from that for early stopping and thresholds). The
active version, if any, is evaluated on the same held-out stretches: the new version is
activated unless its quality is lower by more than ``WORSE_MARGIN`` (the anomaly models' rule).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from services.trainer.anomaly.training import WORSE_MARGIN
from services.trainer.failure import artifact
from services.trainer.failure.definition import FailureDefinition
from services.trainer.failure.model import (
    FailureModel,
    HostHistory,
    TrainParams,
    history_from_frame,
    train,
)
from services.trainer.failure.report import ScoredHistory, evaluate
from shared.catalogue import METRIC_NAMES

MODEL_NAME = "failure_predictor"
MODEL_TYPE = "lightgbm"
HOLDOUT_SHARE = 0.2
LEAD_TARGETS = {"memory_leak": 30.0, "cpu_spike": 10.0, "failure": 10.0}


@dataclass(slots=True)
class FailureOutcome:
    artifact: bytes
    sha256: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]  # stored in ml_models.metrics
    evaluation: dict[str, Any]
    quality: float
    active_quality: float | None
    sample_count: int
    training_start: datetime
    training_end: datetime


def quality(evaluation: Mapping[str, Any]) -> float:
    """F1 of the model's warning precision and the share of failures it warned (any lead).

    No warnings or no failures in the held-out stretches: 0 (nothing shown either way).
    """
    figures = evaluation["model"]
    precision = figures["precision"]
    events = figures["events"]
    if precision is None or events == 0:
        return 0.0
    warned = sum(k["warned"] * k["events"] for k in figures["per_kind"].values()) / events
    if precision + warned == 0:
        return 0.0
    return float(2 * precision * warned / (precision + warned))


def split(frame: pd.DataFrame, host: str) -> tuple[HostHistory, ScoredHistory, int]:
    """The training part and the held-out part of a host's history (by time), labels kept."""
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    cutoff = ts.iloc[0] + (ts.iloc[-1] - ts.iloc[0]) * (1.0 - HOLDOUT_SHARE)
    n_train = int((ts < cutoff).sum())
    head, tail = frame.iloc[:n_train], frame.iloc[n_train:]
    labels = None
    if "label" in tail.columns and tail["label"].notna().any():
        labels = tail["label"].fillna("normal").astype(str).tolist()
    history = history_from_frame(head, METRIC_NAMES, host=host)
    held_out = ScoredHistory(history_from_frame(tail, METRIC_NAMES, host=host), labels=labels)
    return history, held_out, n_train


def train_predictor(
    frames: Mapping[str, pd.DataFrame],
    *,
    horizons: Sequence[int],
    params: TrainParams,
    active: FailureModel | None,
) -> FailureOutcome:
    """Train on every host's history but its held-out stretch; evaluate; compare with active."""
    if not frames:
        raise ValueError("no history to train on")
    histories, held_out = [], []
    count, first, last = 0, None, None
    for host, frame in frames.items():
        history, tail, n_train = split(frame, host)
        if n_train == 0 or len(tail.history.times) == 0:
            continue
        histories.append(history)
        held_out.append(tail)
        count += n_train
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        first = min(first, stamps.min()) if first is not None else stamps.min()
        last = max(last, stamps.iloc[n_train - 1]) if last is not None else stamps.iloc[n_train - 1]
    if not histories:
        raise ValueError("the histories are too short to hold a stretch out")
    definition = FailureDefinition(horizons_min=tuple(horizons))
    clock = time.perf_counter()
    model = train(histories, definition=definition, params=params)
    seconds = {"train": time.perf_counter() - clock}
    consecutive = params.consecutive
    clock = time.perf_counter()
    evaluation = evaluate(model, held_out, consecutive=consecutive, lead_targets=LEAD_TARGETS)
    seconds["evaluate"] = time.perf_counter() - clock
    evaluation["held_out_share"] = HOLDOUT_SHARE
    evaluation["validation"] = {str(h.horizon_min): h.validation for h in model.horizons}
    new_quality = quality(evaluation)
    active_quality = None
    if active is not None and _comparable(active, model):
        clock = time.perf_counter()
        active_eval = evaluate(active, held_out, consecutive=consecutive, with_anomaly=False)
        active_quality = quality(active_eval)
        seconds["evaluate_active"] = time.perf_counter() - clock
    # Where a run's time goes (features and fit; held-out evaluation with the baselines).
    evaluation["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    blob = artifact.dump(model)
    evaluation["quality"] = new_quality
    evaluation["active_quality"] = active_quality
    parameters = {
        "horizons": list(definition.horizons_min),
        "hosts": [h.host for h in histories],
        "train_params": asdict(params),
        "features": len(model.spec.names),
        "trees": {str(h.horizon_min): h.booster.num_trees() for h in model.horizons},
    }
    assert first is not None and last is not None
    return FailureOutcome(
        artifact=blob,
        sha256=artifact.sha256(blob),
        parameters=parameters,
        metrics={"evaluation": evaluation, "quality": new_quality},
        evaluation=evaluation,
        quality=new_quality,
        active_quality=active_quality,
        sample_count=count,
        training_start=first.to_pydatetime(),
        training_end=last.to_pydatetime(),
    )


def _comparable(active: FailureModel, new: FailureModel) -> bool:
    """The active version reads the same metrics (it can score the held-out stretches)."""
    return set(active.spec.metrics) <= set(new.spec.metrics)


def activation_decision(
    quality: float, active_quality: float | None, *, force: bool
) -> tuple[bool, str]:
    """Activated unless worse than the active version by more than ``WORSE_MARGIN``."""
    if active_quality is None:
        return True, "no active model to compare with"
    figures = f"held-out warning F1 {quality:.3f} vs active {active_quality:.3f}"
    if force:
        return True, f"forced ({figures})"
    if quality >= active_quality - WORSE_MARGIN:
        return True, f"not worse: {figures} (worse means lower by more than {WORSE_MARGIN})"
    return False, (
        f"worse: {figures} (lower by more than {WORSE_MARGIN}); kept as a candidate, "
        "pass force=true to activate"
    )

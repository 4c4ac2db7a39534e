"""A model's evaluation on held-out histories, next to the three baselines, in one run.

Usage::

    ev = evaluate(model, [ScoredHistory(history, labels=df["label"].to_numpy())], consecutive=2)
    ev["model"]["per_kind"]["memory_leak"]["median_lead_min"], ev["baselines"]["persistence"]

What is stored with every model: the definition in words, PR-AUC per horizon, the warnings
of the model (any horizon over its threshold) and of each horizon alone, and the baselines'
warnings counted by the same rule (``evaluation``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from services.trainer.failure import baselines
from services.trainer.failure.definition import failure_onsets, horizon_labels
from services.trainer.failure.evaluation import (
    SignalReport,
    kinds_at,
    score_signal,
    summarise,
    warning_signal,
)
from services.trainer.failure.features import batch_features
from services.trainer.failure.model import FailureModel, HostHistory
from shared.arrays import BoolArray, FloatArray

DEFAULT_CONSECUTIVE = 3


@dataclass(frozen=True, slots=True)
class _Scene:
    times: FloatArray
    state: BoolArray
    onsets: FloatArray
    kinds: list[str]


@dataclass(slots=True)
class ScoredHistory:
    """A held-out history, its scenario labels per row if known, anomaly flags if precomputed."""

    history: HostHistory
    labels: Sequence[str] | None = None
    anomaly_over: BoolArray | None = None
    lines: Mapping[str, float] | None = None  # failure lines of the baselines (default: ours)


def evaluate(
    model: FailureModel,
    held_out: Sequence[ScoredHistory],
    *,
    consecutive: int = DEFAULT_CONSECUTIVE,
    lead_targets: Mapping[str, float] | None = None,
    with_anomaly: bool = True,
) -> dict[str, Any]:
    """Figures of the model and the baselines on held-out histories."""
    spec, definition = model.spec, model.definition
    longest = max(definition.horizons_min)
    horizon_s = longest * 60.0
    signals: dict[str, SignalReport] = {}
    per_horizon: dict[int, SignalReport] = {}
    y_all: dict[int, list[BoolArray]] = {h: [] for h in definition.horizons_min}
    p_all: dict[int, list[Any]] = {h: [] for h in definition.horizons_min}

    def add(name: str, report: SignalReport) -> None:
        signals[name] = signals[name] + report if name in signals else report

    for item in held_out:
        hist = item.history
        t = hist.times
        idx = [hist.metrics.index(m) for m in spec.metrics]
        values = hist.values[:, idx]
        state = hist.state
        if state is None:
            state = definition.state(t, hist.values, hist.metrics)
        onsets = failure_onsets(t, state)
        kinds = kinds_at(t, onsets, item.labels)
        x = batch_features(spec, t, values)
        probs = model.predict_features(x)
        over = np.zeros(len(t), dtype=bool)
        for h in model.horizons:
            above = probs[h.horizon_min] >= h.threshold
            over |= above
            rows = warning_signal(above, state, k=consecutive)
            rep = score_signal(t, state, onsets, kinds, rows, horizon_s=h.horizon_min * 60.0)
            prev = per_horizon.get(h.horizon_min)
            per_horizon[h.horizon_min] = prev + rep if prev is not None else rep
            y, keep = horizon_labels(t, onsets, state, horizon_s=h.horizon_min * 60.0)
            y_all[h.horizon_min].append(y[keep])
            p_all[h.horizon_min].append(probs[h.horizon_min][keep])

        def scored(above: BoolArray, scene: _Scene) -> SignalReport:
            rows = warning_signal(above, scene.state, k=consecutive)
            return score_signal(
                scene.times, scene.state, scene.onsets, scene.kinds, rows, horizon_s=horizon_s
            )

        scene = _Scene(t, state, onsets, kinds)
        add("model", scored(over, scene))
        lines = dict(item.lines) if item.lines is not None else None
        trend_lines = lines or baselines.catalogue_lines(spec.metrics)
        add(
            "trend_breach",
            scored(
                baselines.trend_breach(spec, x, values, trend_lines, horizon_min=longest), scene
            ),
        )
        flags = item.anomaly_over
        if flags is None and with_anomaly:
            flags = baselines.anomaly_over(t, values, spec.metrics)
        if flags is not None:
            add("anomaly", scored(flags, scene))
        fail_lines = lines or baselines.definition_lines(definition)
        add(
            "persistence",
            scored(baselines.persistence(values, spec.metrics, fail_lines), scene),
        )

    targets = dict(lead_targets or {})
    pr_auc = {}
    for minutes in definition.horizons_min:
        y = np.concatenate(y_all[minutes])
        p = np.concatenate(p_all[minutes])
        pr_auc[str(minutes)] = {
            "pr_auc": float(average_precision_score(y, p)) if y.any() else None,
            "base_rate": float(y.mean()) if len(y) else None,
        }
    return {
        "definition": definition.describe(),
        "rule": (
            f"a warning opens after {consecutive} rows in a row over the threshold (any horizon "
            f"for the model), closes after {consecutive} under; true if an onset follows its opening within "
            f"{longest} min of it"
        ),
        "thresholds": {str(h.horizon_min): h.threshold for h in model.horizons},
        "pr_auc": pr_auc,
        "model": summarise(signals["model"], lead_targets=targets),
        "per_horizon": {
            str(h): summarise(r, lead_targets=targets) for h, r in sorted(per_horizon.items())
        },
        "baselines": {
            name: summarise(r, lead_targets=targets)
            for name, r in signals.items()
            if name != "model"
        },
    }

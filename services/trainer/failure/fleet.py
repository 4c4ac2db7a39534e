"""Many hosts' new samples scored at once: the features of the new rows only, one booster
call per model and horizon, the explanations of a model's rows in one call per horizon.

Usage: ``out = score_hosts([HostInput(host, model, times, values, after)], limit=360)``;
``out[host]`` is the host's list of ``ScoredRow`` (one per new sample), or the exception its
scoring raised. Row for row the numbers are those of scoring each host alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services.trainer.failure.features import features_at
from services.trainer.failure.model import Contribution, FailureModel
from shared.arrays import BoolArray, FloatArray, IntArray

EXPLAIN = 3  # contributions kept per explained prediction


@dataclass(frozen=True, slots=True)
class ScoredRow:
    """One scored sample of a host."""

    ts: datetime
    probabilities: dict[int, float]
    thresholds: dict[int, float]
    warning: bool
    in_failure: bool
    contributions: list[Contribution]

    @property
    def warned_horizons(self) -> list[int]:
        return [h for h, p in self.probabilities.items() if p >= self.thresholds[h]]


@dataclass(frozen=True, slots=True)
class HostInput:
    """A host's recent samples (epoch seconds ascending; values in ``model.spec.metrics``
    order) and its newest scored sample (epoch seconds; None: score the newest only)."""

    host: str
    model: FailureModel
    times: FloatArray
    values: FloatArray
    after: float | None


def new_rows(times: FloatArray, after: float | None, *, limit: int) -> IntArray:
    """Rows after ``after`` (the newest ``limit`` of them); None: the newest row."""
    if len(times) == 0:
        return np.array([], dtype=np.int64)
    if after is None:
        return np.array([len(times) - 1], dtype=np.int64)
    return np.flatnonzero(times > after)[-limit:]


@dataclass(slots=True)
class _Part:
    item: HostInput
    x: FloatArray
    state: BoolArray
    times: FloatArray


def score_hosts(
    inputs: Sequence[HostInput], *, limit: int
) -> dict[str, list[ScoredRow] | Exception]:
    """Score each host's new samples; a host (or a model's hosts) that fails gets its error."""
    out: dict[str, list[ScoredRow] | Exception] = {}
    groups: dict[int, list[_Part]] = {}
    for item in inputs:
        try:
            new = new_rows(item.times, item.after, limit=limit)
            if len(new) == 0:
                out[item.host] = []
                continue
            model = item.model
            x = features_at(model.spec, item.times, item.values, new)
            state = model.definition.state(item.times, item.values, model.spec.metrics)[new]
            groups.setdefault(id(model), []).append(_Part(item, x, state, item.times[new]))
        except Exception as exc:  # noqa: BLE001 - one host never stops the others
            out[item.host] = exc
    for parts in groups.values():
        try:
            out.update(_score_model(parts))
        except Exception as exc:  # noqa: BLE001 - the model's hosts fail, others go on
            out.update((p.item.host, exc) for p in parts)
    return out


def _score_model(parts: list[_Part]) -> dict[str, list[ScoredRow] | Exception]:
    """The rows of one model's hosts, stacked: probabilities, warnings, explanations."""
    model = parts[0].item.model
    x = np.vstack([p.x for p in parts])
    probs = model.predict_features(x)
    state = np.concatenate([p.state for p in parts])
    thresholds = {h.horizon_min: h.threshold for h in model.horizons}
    p_rows: list[dict[int, float]] = [
        dict(zip(thresholds, values, strict=True))
        for values in zip(*(probs[h].tolist() for h in thresholds), strict=True)
    ]
    warnings = [
        any(p[h] >= thresholds[h] for h in thresholds) and not bool(s)
        for p, s in zip(p_rows, state.tolist(), strict=True)
    ]
    # Explained: every warning and each host's newest row, by the horizon nearest its line.
    explained: dict[int, list[int]] = {}
    end = 0
    for part in parts:
        start, end = end, end + len(part.x)
        for i in range(start, end):
            if warnings[i] or i == end - 1:
                p = p_rows[i]
                lead = max(thresholds, key=lambda h: p[h] / thresholds[h])  # noqa: B023
                explained.setdefault(lead, []).append(i)
    contributions: dict[int, list[Contribution]] = {}
    for horizon, rows in explained.items():
        found = model.explain_rows(x[rows], horizon, top=EXPLAIN)
        contributions.update(zip(rows, found, strict=True))
    out: dict[str, list[ScoredRow] | Exception] = {}
    end = 0
    for part in parts:
        start, end = end, end + len(part.x)
        out[part.item.host] = [
            ScoredRow(
                datetime.fromtimestamp(float(part.times[i - start]), tz=UTC),
                p_rows[i],
                thresholds,
                warnings[i],
                bool(state[i]),
                contributions.get(i, []),
            )
            for i in range(start, end)
        ]
    return out


def contribution_dicts(contributions: Sequence[Contribution]) -> list[dict[str, Any]]:
    return [
        {
            "feature": c.feature,
            "value": c.value if np.isfinite(c.value) else None,
            "contribution": c.contribution,
            "text": c.text,
        }
        for c in contributions
    ]

"""Warnings counted as the service raises them, scored against failure onsets.

Usage::

    runs = warning_signal(above, state, k=2)
    report = score_signal(times, state, onsets, kinds, runs, horizon_s=3600)
    summary = summarise([report_host_1, report_host_2])

A warning opens on the k-th row in a row over the threshold (outside a failure state) and
closes on the k-th row in a row under it (``anomaly.evaluation.incident_rows``). A warning
says "a failure within the horizon": it is true when an onset follows its opening within the
horizon, however long it stays open (a warning always open is not a warning of everything).
An event is warned when a warning opened in the horizon before its onset; its lead time is
from the earliest such opening to the onset. False warnings are counted per host-day of
normal stretches: outside failure states and outside the horizon before an onset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.trainer.anomaly.evaluation import incident_rows
from shared.arrays import BoolArray, FloatArray


@dataclass(frozen=True, slots=True)
class EventOutcome:
    onset: float
    kind: str
    warned: bool
    lead_min: float | None


@dataclass(slots=True)
class SignalReport:
    """One signal on one or more hosts: outcomes per event, warnings, normal time."""

    events: list[EventOutcome] = field(default_factory=list)
    warnings: int = 0
    true_warnings: int = 0
    false_on_normal: int = 0
    normal_days: float = 0.0

    def __add__(self, other: SignalReport) -> SignalReport:
        return SignalReport(
            self.events + other.events,
            self.warnings + other.warnings,
            self.true_warnings + other.true_warnings,
            self.false_on_normal + other.false_on_normal,
            self.normal_days + other.normal_days,
        )


def warning_signal(above: BoolArray, state: BoolArray, *, k: int) -> BoolArray:
    """Rows with a warning open, as the service raises them (none inside a failure state)."""
    rows: BoolArray = incident_rows(np.asarray(above, dtype=bool) & ~state, k) & ~state
    return rows


def _runs(rows: BoolArray) -> list[tuple[int, int]]:
    """(first, last) row of each run of True."""
    r = np.asarray(rows, dtype=np.int8)
    edges = np.diff(np.concatenate(([0], r, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def score_signal(
    times: FloatArray,
    state: BoolArray,
    onsets: FloatArray,
    kinds: Sequence[str],
    warning_rows: BoolArray,
    *,
    horizon_s: float,
) -> SignalReport:
    """Score one host's warnings (``warning_signal``) against its failure onsets."""
    t = np.asarray(times, dtype=np.float64)
    runs = _runs(warning_rows)
    run_start = np.array([t[a] for a, _ in runs])
    events = []
    for onset, kind in zip(onsets.tolist(), kinds, strict=True):
        hit = (run_start < onset) & (run_start >= onset - horizon_s)
        if hit.any():
            lead = (onset - float(run_start[hit].min())) / 60.0
            events.append(EventOutcome(onset, kind, True, lead))
        else:
            events.append(EventOutcome(onset, kind, False, None))
    true = 0
    false_normal = 0
    before_onset = _before_onsets(t, onsets, horizon_s)
    normal = ~state & ~before_onset
    for (a, _), start in zip(runs, run_start.tolist(), strict=True):
        nxt = np.searchsorted(onsets, start, side="right")
        if nxt < len(onsets) and onsets[nxt] <= start + horizon_s:
            true += 1
        elif normal[a]:
            false_normal += 1
    steps = np.diff(t)
    normal_s = float(np.sum(np.where(normal[1:], np.minimum(steps, 600.0), 0.0)))
    return SignalReport(events, len(runs), true, false_normal, normal_s / 86400.0)


def _before_onsets(t: FloatArray, onsets: FloatArray, horizon_s: float) -> BoolArray:
    """Rows in the horizon before an onset (not a normal stretch: a warning there is right)."""
    nxt = np.searchsorted(onsets, t, side="right")
    has = nxt < len(onsets)
    following = np.where(has, onsets[np.minimum(nxt, max(len(onsets) - 1, 0))], np.inf)
    out: BoolArray = following <= t + horizon_s
    return out


def summarise(
    report: SignalReport, *, lead_targets: dict[str, float] | None = None
) -> dict[str, Any]:
    """Figures of a signal: per kind of event and overall."""
    lead_targets = lead_targets or {}
    kinds = sorted({e.kind for e in report.events})
    per_kind = {}
    for kind in kinds:
        evs = [e for e in report.events if e.kind == kind]
        leads = [e.lead_min for e in evs if e.lead_min is not None]
        target = lead_targets.get(kind, 0.0)
        per_kind[kind] = {
            "events": len(evs),
            "warned": sum(e.warned for e in evs) / len(evs),
            "lead_target_min": target,
            "warned_by_target": sum(1 for v in leads if v >= target) / len(evs),
            "median_lead_min": float(np.median(leads)) if leads else None,
            "lead_p10_p90_min": (
                [float(np.percentile(leads, 10)), float(np.percentile(leads, 90))]
                if leads
                else None
            ),
        }
    precision = report.true_warnings / report.warnings if report.warnings else None
    per_day = report.false_on_normal / report.normal_days if report.normal_days else None
    return {
        "per_kind": per_kind,
        "events": len(report.events),
        "warnings": report.warnings,
        "precision": precision,
        "false_per_host_day": per_day,
        "normal_host_days": report.normal_days,
    }


def kinds_at(times: FloatArray, onsets: FloatArray, labels: Sequence[str] | None) -> list[str]:
    """The kind of each onset: the row label at it (the generator's scenario), else 'failure'."""
    if labels is None:
        return ["failure"] * len(onsets)
    idx = np.searchsorted(times, onsets)
    return [str(labels[i]) for i in idx.tolist()]

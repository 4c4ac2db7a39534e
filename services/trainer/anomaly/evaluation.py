"""Point-wise and per-event detection figures (no point-adjust), incident rows, attribution hits.

Usage: ``evaluate_labels(labels, incident_rows(flags, 3))``; definitions in docs/anomaly-detection.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import comb
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.arrays import BoolArray

NORMAL = "normal"


@dataclass(frozen=True, slots=True)
class Event:
    start: int  # first row
    end: int  # last row, inclusive
    label: str


@dataclass(frozen=True, slots=True)
class DetectionCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    events: int = 0
    events_detected: int = 0
    flagged_runs: int = 0
    flagged_runs_on_event: int = 0

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(
            *(a + b for a, b in zip(_astuple(self), _astuple(other), strict=True))
        )

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _f1(self.precision, self.recall)

    @property
    def event_recall(self) -> float:
        return _ratio(self.events_detected, self.events)

    @property
    def event_precision(self) -> float:
        return _ratio(self.flagged_runs_on_event, self.flagged_runs)

    @property
    def event_f1(self) -> float:
        return _f1(self.event_precision, self.event_recall)

    def summary(self) -> dict[str, float | int]:
        out: dict[str, float | int] = dict(asdict(self))
        out.update(
            precision=round(self.precision, 4),
            recall=round(self.recall, 4),
            f1=round(self.f1, 4),
            event_precision=round(self.event_precision, 4),
            event_recall=round(self.event_recall, 4),
            event_f1=round(self.event_f1, 4),
        )
        return out


def _astuple(c: DetectionCounts) -> tuple[int, ...]:
    return (
        c.tp,
        c.fp,
        c.fn,
        c.events,
        c.events_detected,
        c.flagged_runs,
        c.flagged_runs_on_event,
    )


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def runs(mask: Sequence[bool] | BoolArray) -> list[tuple[int, int]]:
    """Maximal runs of True as (start, end) with ``end`` inclusive."""
    b = np.asarray(mask, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], b, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def confirm(above: Sequence[bool] | BoolArray, k: int) -> BoolArray:
    """Causal k-consecutive confirmation: row i is flagged when rows i-k+1..i are all above.

    The same rule as the service's incidents (``ML_ANOMALY_CONSECUTIVE``): the k-th sample
    in a row above the threshold opens the run, which lasts while the score stays above.
    Rows before the first one count as not above (a run cannot start before row k-1).
    """
    a = np.asarray(above, dtype=bool)
    if k <= 1:
        return a.copy()
    below = np.flatnonzero(~a)
    # Index of the last row not above, at or before each row (-1: none since the start).
    last_below = np.full(len(a), -1, dtype=np.int64)
    if len(below):
        pos = np.searchsorted(below, np.arange(len(a)), side="right") - 1
        last_below = np.where(pos >= 0, below[np.maximum(pos, 0)], -1)
    streak = np.arange(len(a)) - last_below
    out: BoolArray = streak >= k
    return out


def incident_rows(above: Sequence[bool] | BoolArray, k: int) -> BoolArray:
    """Rows during which the service has an incident open (causal).

    The service's rule (``tracker.HostTracker.observe``): the k-th sample in a row above the
    threshold opens an incident; once open, it is resolved by the k-th sample in a row
    below, which is the first row no longer flagged. With k = 1 this is ``above`` itself.
    """
    a = np.asarray(above, dtype=bool)
    if k <= 1:
        return a.copy()
    return open_until_closed(confirm(a, k), confirm(~a, k))


def open_until_closed(opening: BoolArray, closing: BoolArray) -> BoolArray:
    """Rows with an incident open: each opens at an ``opening`` row while none is open and
    stays open until the next ``closing`` row after it (that row excluded)."""
    n = len(opening)
    out = np.zeros(n, dtype=bool)
    # Walk the change points only: open at the first opening row, close at the next closing.
    i = 0
    open_rows = np.flatnonzero(opening)
    close_rows = np.flatnonzero(closing)
    while i < n:
        j = np.searchsorted(open_rows, i)
        if j == len(open_rows):
            break
        start = int(open_rows[j])
        c = np.searchsorted(close_rows, start + 1)
        end = int(close_rows[c]) if c < len(close_rows) else n
        out[start:end] = True
        i = end + 1
    return out


def events_from_labels(labels: Sequence[Any] | npt.NDArray[Any]) -> list[Event]:
    """Events of a label sequence: runs of one non-normal label (0/False/'normal' = normal)."""
    lab = np.asarray([_label_name(v) for v in labels], dtype=object)
    out: list[Event] = []
    n = len(lab)
    i = 0
    while i < n:
        if lab[i] == NORMAL:
            i += 1
            continue
        j = i
        while j + 1 < n and lab[j + 1] == lab[i]:
            j += 1
        out.append(Event(i, j, str(lab[i])))
        i = j + 1
    return out


def _label_name(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_) or isinstance(v, int | np.integer | float | np.floating):
        return NORMAL if not v else "anomaly"
    return str(v)


def detection_counts(
    events: Sequence[Event],
    flags: Sequence[bool] | BoolArray,
    *,
    n_rows: int | None = None,
    tolerance: int = 0,
) -> DetectionCounts:
    """Point-wise and per-event counts of ``flags`` against ``events``."""
    flag = np.asarray(flags, dtype=bool)
    n = len(flag) if n_rows is None else n_rows
    truth = np.zeros(n, dtype=bool)
    near = np.zeros(n, dtype=bool)  # event rows plus the tolerance after each event
    for ev in events:
        truth[ev.start : ev.end + 1] = True
        near[ev.start : min(ev.end + 1 + tolerance, n)] = True
    detected = sum(bool(flag[ev.start : min(ev.end + 1 + tolerance, n)].any()) for ev in events)
    flagged = runs(flag)
    on_event = sum(bool(near[s : e + 1].any()) for s, e in flagged)
    return DetectionCounts(
        tp=int((truth & flag).sum()),
        fp=int((~truth & flag).sum()),
        fn=int((truth & ~flag).sum()),
        events=len(events),
        events_detected=detected,
        flagged_runs=len(flagged),
        flagged_runs_on_event=on_event,
    )


def evaluate_labels(
    labels: Sequence[Any] | npt.NDArray[Any],
    flags: Sequence[bool] | BoolArray,
    *,
    tolerance: int = 0,
) -> dict[str, Any]:
    """Overall figures and per-scenario recall for labelled rows (e.g. synthetic scenarios).

    ``overall`` has point-wise and per-event precision, recall and F1. Per scenario only
    recall is meaningful (events of that scenario detected, rows of it flagged): a flagged
    run that overlaps no event is not a false detection *of* any one scenario, so the
    precision figure is the overall per-event precision.
    """
    events = events_from_labels(labels)
    flag = np.asarray(flags, dtype=bool)
    overall = detection_counts(events, flag, tolerance=tolerance)
    result: dict[str, Any] = {"overall": overall.summary(), "scenarios": {}, "tolerance": tolerance}
    for name in sorted({ev.label for ev in events}):
        c = detection_counts([ev for ev in events if ev.label == name], flag, tolerance=tolerance)
        result["scenarios"][name] = {
            "events": c.events,
            "events_detected": c.events_detected,
            "event_recall": round(c.event_recall, 4),
            "tp": c.tp,
            "fn": c.fn,
            "recall": round(c.recall, 4),
        }
    return result


def hit_chance(n_metrics: int, n_labelled: int, k: int) -> float:
    """Chance that k metrics drawn at random out of ``n_metrics`` include a labelled one."""
    k = min(k, n_metrics)
    return 1.0 - comb(n_metrics - n_labelled, k) / comb(n_metrics, k)


@dataclass(frozen=True, slots=True)
class AttributionResult:
    events: int  # detected events with labelled metrics
    hits: int
    chance: float  # mean chance level over those events

    @property
    def hit_rate(self) -> float:
        return _ratio(self.hits, self.events)


def attribution_hits(
    top_metrics: Sequence[Sequence[str]],
    labelled: Sequence[Sequence[str]],
    *,
    n_metrics: int,
    k: int = 3,
) -> AttributionResult:
    """hit@k over events: ``top_metrics[i]`` ranked for event i, ``labelled[i]`` its truth."""
    hits = 0
    chance = 0.0
    for top, truth in zip(top_metrics, labelled, strict=True):
        hits += bool(set(top[:k]) & set(truth))
        chance += hit_chance(n_metrics, len(set(truth)), k)
    n = len(top_metrics)
    return AttributionResult(events=n, hits=hits, chance=chance / n if n else 0.0)

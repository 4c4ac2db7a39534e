"""Per-event and point-wise metrics on hand-built label and flag arrays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from math import comb

import numpy as np
import pytest

from services.trainer.anomaly.evaluation import (
    Event,
    attribution_hits,
    confirm,
    detection_counts,
    evaluate_labels,
    events_from_labels,
    hit_chance,
    runs,
)

N = "normal"


def test_runs_and_events() -> None:
    assert runs([0, 1, 1, 0, 1]) == [(1, 2), (4, 4)]
    labels = [N, "cpu_spike", "cpu_spike", "memory_leak", N, 1, 1, 0]
    assert events_from_labels(labels) == [
        Event(1, 2, "cpu_spike"),
        Event(3, 3, "memory_leak"),
        Event(5, 6, "anomaly"),
    ]


def test_point_and_event_figures() -> None:
    events = [Event(2, 4, "a"), Event(8, 9, "a"), Event(14, 15, "a")]
    flags = [0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    c = detection_counts(events, [bool(f) for f in flags])
    assert (c.tp, c.fp, c.fn) == (2, 3, 5)
    assert c.precision == pytest.approx(2 / 5)
    assert c.recall == pytest.approx(2 / 7)
    assert c.events_detected == 2 and c.event_recall == pytest.approx(2 / 3)
    # flagged runs: [3], [6,7], [11], [15]; two of them overlap events.
    assert c.flagged_runs == 4 and c.event_precision == pytest.approx(0.5)
    assert c.f1 == pytest.approx(2 * 0.4 * (2 / 7) / (0.4 + 2 / 7))


def test_tolerance_after_event_end() -> None:
    events = [Event(2, 3, "a")]
    flags = [False] * 5 + [True] + [False] * 4
    assert detection_counts(events, flags).event_recall == 0.0
    assert detection_counts(events, flags, tolerance=2).event_recall == 1.0
    assert detection_counts(events, flags, tolerance=2).event_precision == 1.0


def test_per_scenario_breakdown() -> None:
    labels = [N, "cpu_spike", "cpu_spike", N, "memory_leak", "memory_leak", N, N, N]
    flags = [False, True, False, False, False, False, False, True, False]
    r = evaluate_labels(labels, flags)
    assert r["scenarios"]["cpu_spike"]["event_recall"] == 1.0
    assert r["scenarios"]["memory_leak"]["event_recall"] == 0.0
    assert r["overall"]["event_precision"] == 0.5  # one run on an event, one on none
    # A false run belongs to no scenario: per scenario there is recall, no precision.
    assert "event_precision" not in r["scenarios"]["cpu_spike"]


def test_confirm_is_the_k_consecutive_rule() -> None:
    above = [1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    assert confirm([bool(a) for a in above], 3).astype(int).tolist() == [
        0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1
    ]  # fmt: skip
    assert confirm([True, False], 1).tolist() == [True, False]
    assert confirm([], 3).tolist() == []
    # Causal: a prefix gives the same flags as the whole sequence cut to that prefix.
    full = confirm([bool(a) for a in above], 2)
    for n in range(len(above)):
        assert confirm([bool(a) for a in above[:n]], 2).tolist() == full[:n].tolist()


def test_empty_inputs_give_zeros() -> None:
    c = detection_counts([], [False, False])
    assert c.precision == 0.0 and c.event_recall == 0.0 and c.f1 == 0.0


def test_hit_chance_matches_the_formula() -> None:
    assert hit_chance(38, 1, 3) == pytest.approx(3 / 38)
    assert hit_chance(38, 5, 3) == pytest.approx(1 - comb(33, 3) / comb(38, 3))
    assert hit_chance(38, 38, 3) == 1.0


def test_attribution_hits() -> None:
    r = attribution_hits(
        [["m1", "m2", "m3"], ["m4", "m5", "m6"]], [["m3"], ["m9", "m10"]], n_metrics=38, k=3
    )
    assert (r.events, r.hits, r.hit_rate) == (2, 1, 0.5)
    assert r.chance == pytest.approx((hit_chance(38, 1, 3) + hit_chance(38, 2, 3)) / 2)


def _tracked(above: list[bool], k: int) -> list[bool]:
    """Open incident per row as the trainer's scoring loop tracks it (the service's code)."""
    from services.trainer.anomaly.tracker import HostTracker, ScoringModel

    tracker, now = HostTracker("h", k, k), datetime(2024, 1, 1, tzinfo=UTC)
    model = ScoringModel(model_id=1, version=1, threshold=0.95)
    state, out = False, []
    for i, flag in enumerate(above):
        action = tracker.observe(
            ts=now + timedelta(minutes=i),
            score=0.9,
            flag=flag,
            severity="high",
            top=[],
            model=model,
            live=True,
        )
        if action is not None and action.kind == "raise":
            state = True
        elif action is not None and action.kind == "resolve":
            state = False
        out.append(state)
    return out


def test_incident_rows_follow_the_service_lifecycle() -> None:
    from services.trainer.anomaly.evaluation import incident_rows

    above = [bool(a) for a in [0, 1, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0]]
    want = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0]
    assert incident_rows(above, 3).astype(int).tolist() == want
    assert _tracked(above, 3) == [bool(w) for w in want]
    assert incident_rows(above, 1).tolist() == above
    rng = np.random.default_rng(4)
    for k in (2, 3, 5):
        noisy = (rng.random(400) < 0.6).tolist()
        assert incident_rows(noisy, k).tolist() == _tracked(noisy, k)
        # Open rows are a superset of the k-consecutive confirmation.
        assert not (confirm(noisy, k) & ~incident_rows(noisy, k)).any()

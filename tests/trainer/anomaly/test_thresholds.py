"""Per-host thresholds: severity that follows them, and feedback that moves one host's
threshold by bounded steps, one verdict per score. Pure functions, then the trainer over HTTP
on SQLite and PostgreSQL with scores stored through the repository."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.threshold import (
    ThresholdRange,
    feedback_step,
    host_severity,
    learned_range,
    precision,
    surprise,
)
from services.trainer.app import create_app
from shared.clock import utcnow
from shared.settings import Settings
from tests.conftest import app_client

DEFAULT = 0.999
BOUNDS = learned_range([], default=DEFAULT, hard_min=0.99, hard_max=0.999999)


# -- severity -------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.9, 0.99, 0.999, 0.9999, 0.99999])
def test_a_flagged_score_is_never_low_and_an_unflagged_one_always(threshold: float) -> None:
    scores = np.concatenate([np.linspace(0.0, 1.0, 2001), [threshold, np.nextafter(threshold, 0)]])
    for score in scores:
        level = host_severity(float(score), threshold)
        assert (level == "low") == (score < threshold), (score, threshold, level)


def test_severity_tiers_follow_the_threshold() -> None:
    assert [host_severity(s, 0.999) for s in (0.998, 0.999, 0.9999, 0.99999)] == [
        "low",
        "medium",
        "high",
        "critical",
    ]
    # The same score is high for a host at 0.99 and only medium for a host at 0.999.
    assert host_severity(0.9995, 0.99) == "high"
    assert host_severity(0.9995, 0.999) == "medium"
    assert host_severity(0.9999, 0.99) == "critical"
    assert host_severity(0.99995, 0.9999) == "medium"
    assert host_severity(0.9999, 0.999, step=2.0) == "medium"


# -- feedback steps -------------------------------------------------------------------------


def test_two_true_positives_do_not_drag_the_threshold_down() -> None:
    t = DEFAULT
    for _ in range(2):
        t = feedback_step(t, "true_positive", 0.6, bounds=BOUNDS)
    assert BOUNDS.lower < t < DEFAULT
    assert t >= 0.99  # one decade below the default at most, nowhere near 0.5
    assert surprise(DEFAULT) - surprise(t) <= 1.0


def test_false_positives_never_pin_the_threshold_at_the_cap() -> None:
    t = DEFAULT
    for _ in range(4):
        t = feedback_step(t, "false_positive", 0.99999999, bounds=BOUNDS)
    assert DEFAULT < t < BOUNDS.upper
    for _ in range(50):
        t = feedback_step(t, "false_positive", 0.99999999, bounds=BOUNDS)
    assert t < BOUNDS.upper


def test_a_step_is_bounded_and_agreeing_feedback_moves_nothing() -> None:
    up = feedback_step(DEFAULT, "false_positive", 0.9999999999, bounds=BOUNDS)
    assert surprise(up) - surprise(DEFAULT) <= 0.5 + 1e-9
    assert feedback_step(DEFAULT, "false_positive", 0.5, bounds=BOUNDS) == DEFAULT
    assert feedback_step(DEFAULT, "true_positive", 0.9999, bounds=BOUNDS) == DEFAULT
    with pytest.raises(ValueError, match="feedback"):
        feedback_step(DEFAULT, "maybe", 0.9, bounds=BOUNDS)  # type: ignore[arg-type]


def test_the_range_is_learned_from_the_scores_and_holds_the_default() -> None:
    rng = np.random.default_rng(0)
    quiet = list(rng.uniform(0.0, 0.9, 5000))  # a host whose scores stay low
    noisy = list(1.0 - 10.0 ** -rng.uniform(0.0, 5.0, 5000))  # many scores above 0.999
    r_quiet = learned_range(quiet, default=DEFAULT, hard_min=0.99, hard_max=0.999999)
    r_noisy = learned_range(noisy, default=DEFAULT, hard_min=0.99, hard_max=0.999999)
    assert r_quiet == ThresholdRange(pytest.approx(0.99), pytest.approx(0.9999))  # type: ignore[arg-type]
    assert r_noisy.lower == pytest.approx(DEFAULT) and r_noisy.upper > 0.9999
    assert precision([(0.9995, "true_positive"), (0.9991, "false_positive")], 0.999) == 0.5
    assert precision([(0.9995, "true_positive")], 0.9999) is None


# -- over HTTP ------------------------------------------------------------------------------


async def store_scores(engine: AsyncEngine, host: str, scores: list[float]) -> list[int]:
    """Scores of a host stored as the scoring loop stores them; their ids, in order."""
    now = utcnow()
    records = [
        repo.score_record(
            metrics_id=None,
            model_id=None,
            timestamp=now - timedelta(seconds=len(scores) - i),
            host=host,
            score=s,
            threshold=DEFAULT,
            is_anomaly=s >= DEFAULT,
            severity=host_severity(s, DEFAULT),
            contributions=[],
        )
        for i, s in enumerate(scores)
    ]
    async with engine.begin() as conn:
        await repo.insert_scores(conn, records)
    async with engine.connect() as conn:
        rows = await repo.list_scores(conn, repo.AnomalyScoreQuery(host=host, limit=10_000))
    return [r.id for r in sorted(rows, key=lambda r: r.timestamp)]


async def feedback(client: httpx.AsyncClient, score_id: int, kind: str) -> dict[str, Any]:
    response = await client.post(f"/anomaly-scores/{score_id}/feedback", json={"feedback": kind})
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


async def test_feedback_moves_only_its_hosts_threshold_once_per_score(
    settings: Settings, engine: AsyncEngine
) -> None:
    rng = np.random.default_rng(1)
    background = list(1.0 - 10.0 ** -rng.uniform(0.0, 2.5, 300))  # 0.99 quantile: 0.9966
    ids = await store_scores(engine, "a", [*background, 0.9995, 0.9993, 0.6])
    await store_scores(engine, "b", background)
    flagged, flagged2, low = ids[-3], ids[-2], ids[-1]
    async with app_client(create_app(settings, engine=engine)) as client:
        up = await feedback(client, flagged, "false_positive")
        assert up["host"] == "a" and up["replaced"] is None
        assert up["threshold_before"] == pytest.approx(DEFAULT)
        assert up["threshold_lower"] <= DEFAULT < up["threshold_after"] < up["threshold_upper"]
        assert up["verdicts"] == 1
        assert up["precision_before"] == 0.0 and up["precision_after"] is None
        # The same verdict again does not stack.
        again = await feedback(client, flagged, "false_positive")
        assert again["replaced"] == "false_positive" and again["verdicts"] == 1
        assert again["threshold_after"] == pytest.approx(up["threshold_after"])
        # A contradicting verdict replaces it: its move is undone, the new one agrees (flagged
        # at the default), so the threshold is back where it started.
        back = await feedback(client, flagged, "true_positive")
        assert back["replaced"] == "false_positive"
        assert back["threshold_after"] == pytest.approx(DEFAULT)
        assert back["precision_after"] == 1.0 and back["verdicts"] == 1
        await feedback(client, flagged2, "true_positive")
        down = await feedback(client, low, "true_positive")  # missed: moves down, bounded
        assert down["threshold_lower"] <= down["threshold_after"] < DEFAULT
        assert down["threshold_lower"] > 0.996  # learned: would flag under 1 % of its scores
        assert down["verdicts"] == 3
        listed = (await client.get("/anomaly-thresholds")).json()
        missing = await client.post(
            "/anomaly-scores/999999/feedback", json={"feedback": "true_positive"}
        )
        bad = await client.post(f"/anomaly-scores/{low}/feedback", json={"feedback": "meh"})
    assert listed["default_threshold"] == settings.anomaly_threshold
    assert [t["host"] for t in listed["thresholds"]] == ["a"]  # host b keeps the default
    (a,) = listed["thresholds"]
    assert a["threshold"] == pytest.approx(down["threshold_after"]) and a["verdicts"] == 3
    assert missing.status_code == 404
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body.feedback"
    async with app_client(create_app(settings, engine=engine)) as client:  # a restart
        one = (await client.get("/anomaly-thresholds", params={"host": "a"})).json()
        scores = (await client.get("/anomaly-scores", params={"host": "a", "limit": 3})).json()
    assert one["thresholds"][0]["threshold"] == pytest.approx(down["threshold_after"])
    assert [s["feedback"] for s in scores["scores"]] == ["true_positive"] * 3


async def test_repeated_feedback_stays_inside_the_learned_range(
    settings: Settings, engine: AsyncEngine
) -> None:
    rng = np.random.default_rng(2)
    high = list(1.0 - 10.0 ** -rng.uniform(3.0, 7.0, 200))  # scores all above the default
    ids = await store_scores(engine, "c", high)
    lows = await store_scores(engine, "d", [0.6] * 150)
    async with app_client(create_app(settings, engine=engine)) as client:
        ups = [await feedback(client, i, "false_positive") for i in ids[-4:]]
        downs = [await feedback(client, i, "true_positive") for i in lows[-2:]]
    assert ups[-1]["threshold_after"] < ups[-1]["threshold_upper"]  # not pinned at the cap
    assert all(u["threshold_after"] >= u["threshold_before"] for u in ups)
    assert downs[-1]["threshold_after"] >= 0.99  # two true positives: nowhere near 0.5
    assert downs[-1]["threshold_after"] >= downs[-1]["threshold_lower"]

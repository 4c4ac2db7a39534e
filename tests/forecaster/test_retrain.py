"""Which hosts the training schedule refits, and when it looks again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.forecaster.forecasting.retrain import due_hosts

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def span(days: float) -> tuple[datetime, datetime]:
    return NOW - timedelta(days=days), NOW


def test_hosts_with_a_day_of_history_and_no_recent_model_are_due_oldest_first() -> None:
    plan = due_hosts(
        {"new": span(2), "stale": span(30), "fresh": span(30), "short": span(0.5)},
        {"stale": NOW - timedelta(hours=30), "fresh": NOW - timedelta(hours=6)},
        now=NOW,
        every=DAY,
    )
    assert plan.due == ["new", "stale"]  # never trained comes first
    assert plan.short == ["short"]
    assert plan.wait == timedelta(hours=18).total_seconds()  # when "fresh" falls due


def test_a_failed_attempt_waits_a_full_period() -> None:
    plan = due_hosts(
        {"broken": span(3)},
        {},
        now=NOW,
        every=DAY,
        skip={"broken": NOW - timedelta(hours=1)},
    )
    assert plan.due == [] and plan.wait == timedelta(hours=23).total_seconds()


def test_nothing_to_train_means_no_wait_to_report() -> None:
    plan = due_hosts({"short": span(0.1)}, {}, now=NOW, every=DAY)
    assert plan.due == [] and plan.wait is None and plan.short == ["short"]

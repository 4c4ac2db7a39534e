"""One severity scale, ordered; rows to dicts with aware UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.db import row_dict
from shared.severity import SEVERITIES, severity_rank, worst


def test_scale_is_ordered_and_unknown_ranks_lowest() -> None:
    assert SEVERITIES == ("low", "medium", "high", "critical")
    assert [severity_rank(s) for s in SEVERITIES] == [0, 1, 2, 3]
    assert severity_rank("bogus") == 0
    assert worst("medium", "critical", "low") == "critical"
    assert worst("low") == "low"


def test_row_dict_makes_every_timestamp_aware_utc() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    plus_two = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    row = row_dict({"id": 3, "started_at": naive, "updated_at": plus_two, "note": None})
    assert row == {
        "id": 3,
        "started_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "note": None,
    }
    assert row["updated_at"].tzinfo is UTC

"""The one severity scale of scores, alerts and incidents: low < medium < high < critical."""

from __future__ import annotations

from typing import Literal, get_args

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)


def severity_rank(severity: str) -> int:
    """Position on the scale (unknown text ranks lowest): `severity_rank("high") == 2`."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def worst(*severities: str) -> Severity:
    """The most severe of the given ones: `worst("low", "high") == "high"`."""
    return SEVERITIES[max(severity_rank(s) for s in severities)]

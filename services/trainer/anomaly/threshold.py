"""What a calibrated score means: its severity, and how operator feedback moves the threshold.

Usage: ``severity(0.995) == "high"``; ``new = adjusted_threshold(0.95, "false_positive", 0.97)``.
"""

from __future__ import annotations

from typing import Literal

from shared.severity import Severity

Feedback = Literal["false_positive", "true_positive"]
SEVERITY_CUTOFFS: tuple[tuple[float, Severity], ...] = (
    (0.999, "critical"),
    (0.99, "high"),
    (0.95, "medium"),
)


def severity(score: float) -> Severity:
    """Severity of a calibrated score: critical >= 0.999, high >= 0.99, medium >= 0.95."""
    for cut, name in SEVERITY_CUTOFFS:
        if score >= cut:
            return name
    return "low"


def adjusted_threshold(
    threshold: float, feedback: Feedback, score: float, *, rate: float = 0.5
) -> float:
    """The threshold after operator feedback on a sample that scored ``score``.

    A false positive pulls it towards just above that score, a missed true positive towards
    just below; it stays in [0.5, 0.9999], and feedback that agrees with it changes nothing.
    """
    if not 0.0 <= score <= 1.0:
        raise ValueError("score must lie in [0, 1]")
    margin = 0.1 * (1.0 - score)
    after = threshold
    if feedback == "false_positive":
        target = score + margin
        if target > threshold:
            after = threshold + rate * (target - threshold)
    elif feedback == "true_positive":
        target = score - margin
        if target < threshold:
            after = threshold - rate * (threshold - target)
    else:
        raise ValueError("feedback must be 'false_positive' or 'true_positive'")
    return float(min(max(after, 0.5), 0.9999))

"""What a calibrated score means: its severity, and how operator feedback moves the threshold.

Usage: ``severity(0.995) == "high"``; ``new = adjusted_threshold(0.95, "false_positive", 0.97)``.
Per host (the streaming likelihood): ``host_severity(0.9999, 0.999) == "high"``;
``feedback_step(0.999, "false_positive", 0.9995, bounds=learned_range(scores, ...))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

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


# -- per-host thresholds on the host's likelihood -------------------------------------------

# Surprise is -log10(1 - score): 3 for 0.999, 4 for 0.9999. Likelihoods closer to 1 than
# this are treated as this close (float64 keeps ~16 digits; 1 - 1e-12 is still exact enough).
MAX_SURPRISE = 12.0
FEEDBACK_RATE = 1.0  # a verdict moves all the way to just beyond the score judged ...
MAX_STEP = 0.5  # ... by at most half a decade of surprise ...
BOUND_SHARE = 0.5  # ... and by at most half the distance left to the range's bound.
MIN_MOVE = 0.005  # smaller moves are dropped: the threshold stops short of a bound
MARGIN = 0.1  # the target sits this many decades beyond the score judged
MIN_RANGE_SCORES = 100  # fewer scores of a host: the range is the default +- one decade
RANGE_QUANTILES = (0.99, 0.9999)


def surprise(score: float) -> float:
    """-log10(1 - score), capped: ``surprise(0.999) == 3.0`` (approximately)."""
    return min(-math.log10(max(1.0 - score, 10.0**-MAX_SURPRISE)), MAX_SURPRISE)


def from_surprise(value: float) -> float:
    """The likelihood of a surprise: ``from_surprise(3.0) == 0.999``."""
    return float(1.0 - 10.0**-value)


def host_severity(score: float, threshold: float, *, step: float = 1.0) -> Severity:
    """Severity of a host's likelihood against its threshold: ``low`` below it; at or above it
    ``medium``, ``high`` from ``step`` decades of surprise above it, ``critical`` from two.

    Usage: ``host_severity(0.9999, 0.999) == "high"``; a flagged score is never ``low``.
    """
    if score < threshold:
        return "low"
    above = surprise(score) - surprise(threshold) + 1e-9  # 1 - 0.9999 is not exactly 1e-4
    if above >= 2 * step:
        return "critical"
    if above >= step:
        return "high"
    return "medium"


@dataclass(frozen=True, slots=True)
class ThresholdRange:
    """Where feedback may move a host's threshold (likelihoods)."""

    lower: float
    upper: float


def learned_range(
    scores: Sequence[float], *, default: float, hard_min: float, hard_max: float
) -> ThresholdRange:
    """The range a host's threshold may move in, from its recent scores.

    Never below the 0.99 quantile of its scores (a lower threshold would flag over 1 % of its
    samples), never more than a decade above their 0.9999 quantile (silencing what the host
    never came near), always holding the default +- one decade where the data allows, and
    within [hard_min, hard_max]. Few scores: the default +- one decade.
    """
    d = surprise(default)
    if len(scores) < MIN_RANGE_SCORES:
        lo, hi = d - 1.0, d + 1.0
    else:
        q_lo, q_hi = np.quantile(np.asarray(scores, dtype=np.float64), RANGE_QUANTILES)
        lo, hi = min(surprise(float(q_lo)), d), max(surprise(float(q_hi)), d) + 1.0
    lo = max(lo, surprise(hard_min))
    hi = min(hi, surprise(hard_max))
    return ThresholdRange(from_surprise(min(lo, d)), from_surprise(max(hi, d)))


def feedback_step(
    threshold: float, feedback: Feedback, score: float, *, bounds: ThresholdRange
) -> float:
    """The threshold after one verdict on a score, moved by a bounded step inside ``bounds``.

    A false positive on a flagged score moves it up towards just above that score, a true
    positive on a missed score down towards just below it; a verdict that agrees with the
    threshold moves nothing. Each step is at most half a decade of surprise and half the way
    left to the bound, so no run of verdicts pins the threshold at either end.
    """
    if not 0.0 <= score <= 1.0:
        raise ValueError("score must lie in [0, 1]")
    t, s = surprise(threshold), surprise(score)
    if feedback == "false_positive":
        if score < threshold:
            return threshold
        room = surprise(bounds.upper) - t
        move = min(FEEDBACK_RATE * (s + MARGIN - t), MAX_STEP, BOUND_SHARE * room)
        return from_surprise(t + move) if move >= MIN_MOVE else threshold
    if feedback == "true_positive":
        if score >= threshold:
            return threshold
        room = t - surprise(bounds.lower)
        move = min(FEEDBACK_RATE * (t - (s - MARGIN)), MAX_STEP, BOUND_SHARE * room)
        return from_surprise(t - move) if move >= MIN_MOVE else threshold
    raise ValueError("feedback must be 'false_positive' or 'true_positive'")


def precision(verdicts: Sequence[tuple[float, str]], threshold: float) -> float | None:
    """Of the judged scores a threshold flags, the share judged true positives (None: none)."""
    flagged = [kind for score, kind in verdicts if score >= threshold]
    if not flagged:
        return None
    return sum(kind == "true_positive" for kind in flagged) / len(flagged)

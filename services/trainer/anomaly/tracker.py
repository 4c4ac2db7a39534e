"""Per-host incident tracking: consecutive samples above or below the threshold open or resolve one.

Usage: ``action = tracker.observe(ts=ts, score=s, flag=s >= t, severity=sev, top=top, model=m,
live=True)``; a ``raise`` or ``resolve`` action is then applied to the incidents table.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shared.severity import Severity, severity_rank, worst

INCIDENT_SCORE_HISTORY = 20  # latest scores of a host shown in its incident's details


@dataclass(frozen=True, slots=True)
class ScoringModel:
    """The model version and threshold that scored the samples."""

    model_id: int | None  # the host's forest, if it has one
    version: int | None
    threshold: float


@dataclass(frozen=True, slots=True)
class IncidentAction:
    kind: Literal["raise", "resolve"]
    host: str
    severity: Severity = "low"
    details: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    description: str = ""


@dataclass(slots=True)
class HostTracker:
    """One host's run of anomalous or normal samples (``consecutive`` open or resolve)."""

    host: str
    consecutive: int
    above: int = 0
    below: int = 0
    worst: Severity = "low"
    raised: Severity | None = None  # severity last sent while open
    recent: deque[tuple[str, float]] = field(
        default_factory=lambda: deque(maxlen=INCIDENT_SCORE_HISTORY)
    )

    def observe(
        self,
        *,
        ts: datetime,
        score: float,
        flag: bool,
        severity: Severity,
        top: list[dict[str, Any]],
        model: ScoringModel,
        live: bool,
    ) -> IncidentAction | None:
        """Count one scored sample; the incident to raise (or update) or resolve, if any.

        A stale sample (``live`` false: a backfill) is counted but raises nothing.
        """
        n = self.consecutive
        self.recent.append((ts.isoformat(), round(score, 6)))
        if not flag:
            self.below += 1
            if self.above:
                self.above = 0
                self.worst = "low"
            if self.below == n and live:
                self.raised = None
                return IncidentAction(kind="resolve", host=self.host)
            return None
        self.above += 1
        self.below = 0
        self.worst = worst(self.worst, severity)
        opening = self.above == n
        worse = self.raised is not None and severity_rank(self.worst) > severity_rank(self.raised)
        if not (live and self.above >= n and (opening or worse)):
            return None
        self.raised = self.worst
        names = ", ".join(c["metric"] for c in top)
        return IncidentAction(
            kind="raise",
            host=self.host,
            severity=self.worst,
            title=f"Anomalous behaviour on {self.host} ({names})",
            description=(
                f"{self.above} consecutive samples above the anomaly threshold "
                f"{model.threshold:.4f}; latest score {score:.4f}."
            ),
            details={
                "model_id": model.model_id,
                "model_version": model.version,
                "threshold": model.threshold,
                "score": score,
                "consecutive": self.above,
                "top_metrics": top,
                "scores": [{"timestamp": t, "score": s} for t, s in self.recent],
            },
        )

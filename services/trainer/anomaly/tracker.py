"""Per-host ML_ANOMALY state machine: open after ``consecutive`` flagged samples, refresh while
open, resolve after ``resolve_after`` normal ones; a manual resolve silences the host until the
condition clears, then it re-arms. The state is plain data, persisted between passes.

Usage: ``t = HostTracker.from_state(host, state, consecutive=3, resolve_after=3)``;
``actions = t.observe(ts=ts, score=s, flag=s >= th, severity=sev, top=top, model=m, live=True)``;
``state = t.to_state()`` (stored unless ``t.neutral``).
"""

from __future__ import annotations

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
    """``raise`` opens the host's incident, ``refresh`` updates the open one's details (``notify``
    when its severity got worse), ``resolve`` closes it."""

    kind: Literal["raise", "refresh", "resolve"]
    host: str
    severity: Severity = "low"
    details: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    description: str = ""
    notify: bool = True


@dataclass(slots=True)
class HostTracker:
    """One host's run of flagged or normal samples and what its incident is doing."""

    host: str
    consecutive: int
    resolve_after: int
    above: int = 0
    below: int = 0
    worst: Severity = "low"
    open: bool = False  # an incident raised by this state machine is open
    incident_id: int | None = None
    raised: Severity | None = None  # severity last sent while open
    silenced: bool = False  # resolved by hand while the condition lasted
    peak: float = 0.0
    peak_at: str | None = None
    first_seen: str | None = None  # first flagged sample of the current run
    last_seen: str | None = None  # latest flagged sample
    top: list[dict[str, Any]] = field(default_factory=list)
    recent: list[list[Any]] = field(default_factory=list)  # [timestamp, score], newest last

    @property
    def neutral(self) -> bool:
        """Nothing to remember: no run of flagged samples, no incident, no silence."""
        return self.above == 0 and not self.open and not self.silenced

    def resolved_by_hand(self) -> None:
        """Its open incident was resolved by someone else: quiet until the condition clears."""
        self.open, self.incident_id, self.raised = False, None, None
        self.silenced = True

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
        """Count one scored sample (in time order); the incident action it calls for, if any.

        A stale sample (``live`` false: a backfill) is counted but raises and resolves nothing.
        """
        stamp = ts.isoformat()
        self.recent = [*self.recent[-(INCIDENT_SCORE_HISTORY - 1) :], [stamp, round(score, 6)]]
        if not flag:
            self.below += 1
            if self.above:
                self.above, self.worst, self.first_seen = 0, "low", None
            if self.below < self.resolve_after:
                return None
            if self.silenced:
                self.silenced = False  # the condition cleared: re-armed
            if not self.open:
                self.peak, self.peak_at = 0.0, None
                return None
            if live:
                self.open, self.incident_id, self.raised = False, None, None
                self.peak, self.peak_at = 0.0, None
                return IncidentAction(kind="resolve", host=self.host)
            return None
        self.above += 1
        self.below = 0
        self.worst = worst(self.worst, severity)
        self.first_seen = self.first_seen or stamp
        self.last_seen, self.top = stamp, top
        if score >= self.peak or self.peak_at is None:
            self.peak, self.peak_at = score, stamp
        if self.silenced or not live or self.above < self.consecutive:
            return None
        if not self.open:
            self.open, self.raised = True, self.worst
            return self._action("raise", score, model, notify=True)
        worse = self.raised is not None and severity_rank(self.worst) > severity_rank(self.raised)
        if worse:
            self.raised = self.worst
        return self._action("refresh", score, model, notify=worse)

    def _action(
        self,
        kind: Literal["raise", "refresh"],
        score: float,
        model: ScoringModel,
        *,
        notify: bool,
    ) -> IncidentAction:
        names = ", ".join(c["metric"] for c in self.top)
        return IncidentAction(
            kind=kind,
            host=self.host,
            severity=worst(self.worst, self.raised or "low"),  # never below what was sent
            notify=notify,
            title=f"Anomalous behaviour on {self.host} ({names})",
            description=(
                f"{self.above} consecutive samples above the anomaly threshold "
                f"{model.threshold:.6g}; latest score {score:.6g}, peak {self.peak:.6g}."
            ),
            details={
                "model_id": model.model_id,
                "model_version": model.version,
                "threshold": model.threshold,
                "score": score,
                "peak_score": self.peak,
                "peak_at": self.peak_at,
                "first_seen": self.first_seen,
                "last_seen": self.last_seen,
                "consecutive": self.above,
                "top_metrics": self.top,
                "scores": [{"timestamp": t, "score": s} for t, s in self.recent],
            },
        )

    def to_state(self) -> dict[str, Any]:
        """What is stored between passes (and across restarts)."""
        return {
            "above": self.above,
            "below": self.below,
            "worst": self.worst,
            "open": self.open,
            "incident_id": self.incident_id,
            "raised": self.raised,
            "silenced": self.silenced,
            "peak": self.peak,
            "peak_at": self.peak_at,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "top": self.top,
            "recent": self.recent,
        }

    @classmethod
    def from_state(
        cls, host: str, state: dict[str, Any], *, consecutive: int, resolve_after: int
    ) -> HostTracker:
        known = {k: v for k, v in state.items() if k in STATE_FIELDS}
        return cls(host, consecutive, resolve_after, **known)


STATE_FIELDS = frozenset(HostTracker(host="", consecutive=1, resolve_after=1).to_state())

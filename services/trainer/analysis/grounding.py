"""The grounding check: every number, metric name, host and time an answer writes is in the pack.

Usage: ``problems = check(analysis, pack)``; an empty list means grounded, else each entry
says what was not found (``"number 97.2 is not in the evidence"``).

A number matches a pack figure within its own rounding (``85.4`` matches 85.43, ``85`` matches
85.43, ``90`` does not); a percentage also matches a 0..1 figure times 100. A claim's figures
must be those of the items it cites (or the incident's); the other texts' may be any in the
pack. A time matches a pack time within a minute. Claims must cite ids the pack has.
"""

from __future__ import annotations

import bisect
import copy
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from services.trainer.analysis.evidence import EvidencePack
from shared.catalogue import METRIC_NAMES
from shared.schemas.analysis import ACTION_NAMES, CAUSE_CATEGORIES, PARAMETER_NAMES, Analysis

_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_CLOCK = re.compile(r"\b(\d{1,2}):(\d{2})(?::\d{2})?\b")
_EVIDENCE_ID = re.compile(r"\b[a-z_]+:[A-Za-z0-9_.-]+")
_SNAKE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9]*(?:_[a-zA-Z0-9]+)+\b")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_WORD_DIGITS = re.compile(r"\b[A-Za-z]+\d+[A-Za-z0-9]*\b")  # p95, m07, llama3: names, not figures
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(%?)")
_HOST = re.compile(r"\bhosts?\s+[`'\"]?([A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9])", re.IGNORECASE)
KNOWN_WORDS = frozenset(CAUSE_CATEGORIES) | frozenset(ACTION_NAMES) | frozenset(PARAMETER_NAMES)


def _walk(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def _figures(value: Any) -> list[float]:
    """The numbers of an item, each 0..1 one also times 100 (a share written as a percentage)."""
    out: list[float] = []
    for v in _walk(value):
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
            if abs(v) <= 1:
                out.append(float(v) * 100.0)
    return out


def _parse_time(text: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class PackFacts:
    """The numbers, names, hosts and times of a pack, ready to match text against."""

    def __init__(self, pack: EvidencePack) -> None:
        self.ids = pack.ids
        self.hosts = {h.lower() for h in pack.hosts()}
        self.times: list[datetime] = []
        self.words: set[str] = set(KNOWN_WORDS)
        self.by_item = {i.id: _figures(i.to_json()) for i in pack.items}
        self.incident_id = pack.items[0].id if pack.items else ""
        for value in _walk(pack.to_json()):
            if isinstance(value, str):
                ts = _parse_time(value) if _ISO.fullmatch(value) else None
                if ts is not None:
                    self.times.append(ts)
                else:
                    self.words |= set(_SNAKE.findall(value))
                    if _NAME.fullmatch(value):
                        self.words.add(value)
                    if value in METRIC_NAMES:
                        self.words.add(value)
        self.numbers = sorted({n for figures in self.by_item.values() for n in figures})

    def scoped(self, ids: list[str]) -> PackFacts:
        """The same facts with only the figures of the items ``ids`` (and the incident's):
        a claim's figures must come from the evidence it cites."""
        out = copy.copy(self)
        out.numbers = sorted({n for i in [*ids, self.incident_id] for n in self.by_item.get(i, [])})
        return out

    def has_number(self, text: str, percent: bool) -> bool:
        mantissa, _, exponent = text.replace(",", "").lstrip("+").lower().partition("e")
        x = float(mantissa) * 10.0 ** int(exponent or 0)
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        tol = 0.5 * 10.0 ** (int(exponent or 0) - decimals) * (1 + 1e-9)
        if self._near(x, tol):
            return True
        return percent and bool(self._near(x / 100.0, tol / 100.0))

    def _near(self, x: float, tol: float) -> list[float]:
        lo = bisect.bisect_left(self.numbers, x - tol - 1e-9)
        hi = bisect.bisect_right(self.numbers, x + tol + 1e-9)
        return self.numbers[lo:hi]

    def has_time(self, ts: datetime, *, date_only: bool) -> bool:
        if date_only:
            return any(t.date() == ts.date() for t in self.times)
        return any(abs((t - ts).total_seconds()) <= 60 for t in self.times)

    def has_clock(self, hour: int, minute: int) -> bool:
        at = hour * 60 + minute
        return any(abs((t.hour * 60 + t.minute) - at) % 1440 in (0, 1, 1439) for t in self.times)


def texts(analysis: Analysis) -> Iterator[tuple[str, str]]:
    """Every free text of an answer, with where it is (``claims[2].text``)."""
    yield "summary", analysis.summary
    yield "cause.text", analysis.cause.text
    for i, c in enumerate(analysis.claims):
        yield f"claims[{i}].text", c.text
    for i, a in enumerate(analysis.actions):
        yield f"actions[{i}].reason", a.reason


def check_text(text: str, facts: PackFacts) -> list[str]:
    problems: list[str] = []
    rest = text
    for m in _ISO.finditer(text):
        ts = _parse_time(m.group(0))
        if ts is None or not facts.has_time(ts, date_only=len(m.group(0)) == 10):
            problems.append(f"time {m.group(0)} is not in the evidence")
    rest = _ISO.sub(" ", rest)
    for m in _CLOCK.finditer(rest):
        if not facts.has_clock(int(m.group(1)), int(m.group(2))):
            problems.append(f"time {m.group(0)} is not in the evidence")
    rest = _CLOCK.sub(" ", rest)
    for m in _EVIDENCE_ID.finditer(rest):
        if m.group(0) not in facts.ids:
            problems.append(f"evidence id {m.group(0)} is not in the evidence")
    rest = _EVIDENCE_ID.sub(" ", rest)
    for m in _HOST.finditer(rest):
        if m.group(1).lower() not in facts.hosts:
            problems.append(f"host {m.group(1)} is not in the evidence")
    for m in _SNAKE.finditer(rest):
        if m.group(0) not in facts.words:
            problems.append(f"name {m.group(0)} is not in the evidence")
    rest = _SNAKE.sub(" ", rest)
    for host in facts.hosts:  # host names hold digits that are no figures
        rest = re.sub(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", " ", rest, flags=re.IGNORECASE)
    rest = _WORD_DIGITS.sub(" ", rest)
    for m in _NUMBER.finditer(rest):
        raw = m.group(0).rstrip("%")
        if not facts.has_number(raw, percent=bool(m.group(1))):
            problems.append(f"number {m.group(0)} is not in the evidence")
    return problems


def check(analysis: Analysis, pack: EvidencePack, facts: PackFacts | None = None) -> list[str]:
    """What the answer says that the pack does not hold; empty when it is grounded."""
    facts = facts or PackFacts(pack)
    problems: list[str] = []
    for where, text in texts(analysis):
        if where.startswith("claims["):
            cited = analysis.claims[int(where[7 : where.index("]")])].evidence
            problems += [f"{where}: {p}" for p in check_text(text, facts.scoped(cited))]
        else:
            problems += [f"{where}: {p}" for p in check_text(text, facts)]
    for i, claim in enumerate(analysis.claims):
        unknown = [e for e in claim.evidence if e not in facts.ids]
        if unknown:
            problems.append(f"claims[{i}] cites unknown evidence {', '.join(unknown)}")
    if analysis.top_metric is not None and analysis.top_metric not in facts.words:
        problems.append(f"top_metric {analysis.top_metric} is not in the evidence")
    for i, action in enumerate(analysis.actions):
        host = action.parameters.host
        if host is not None and host.lower() not in facts.hosts:
            problems.append(f"actions[{i}] acts on host {host}, not in the evidence")
    return problems

"""Labelled incidents for the rules analyst: synthetic scenarios and SMD's labelled events.

Usage: ``for case in synthetic_cases(days=14): pack = case.pack()``; ``smd_cases("machine-2-5")``.

- The generator's three scenarios as it labels them (cpu_spike: cpu_saturation,
  memory_leak: memory_leak, error_storm: error_storm), each labelled run one incident.
- Three more causes the generator has no scenario for, injected here into quiet stretches of the
  same data (seeded): disk filling (disk usage climbing 0.1-0.4 points a minute), latency
  regression (p50/p95/p99 times 2-4 with load and errors as usual), traffic surge (requests
  times 2-4, CPU up 3-10 points).
- SMD's labelled events: its 38 metrics are unnamed, so no cause category can be right or
  wrong; these cases check the top metric only (a hit when it is one the event names) and
  expect the category ``unknown``.

An incident's window is its labelled run: before is the hour before it, during is the run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from services.trainer.analysis import grounding
from services.trainer.analysis.evidence import EvidencePack, Samples, build_pack
from services.trainer.synthetic.generator import SyntheticDataGenerator
from shared.catalogue import METRIC_NAMES
from shared.schemas.analysis import Analysis

SCENARIO_CAUSES = {
    "cpu_spike": "cpu_saturation",
    "memory_leak": "memory_leak",
    "error_storm": "error_storm",
}
TOP_METRICS = {
    "cpu_saturation": {"cpu_usage_percent"},
    "memory_leak": {"memory_usage_percent", "memory_usage_mb"},
    "error_storm": {"error_rate"},
    "disk_filling": {"disk_usage_percent"},
    "latency_regression": {"response_time_p50", "response_time_p95", "response_time_p99"},
    "traffic_surge": {"active_requests"},
}
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Case:
    name: str
    category: str | None  # None: no category to check (SMD)
    top: set[str]
    incident: dict[str, Any]
    samples: Samples
    scores: list[dict[str, Any]] = field(default_factory=list)

    def pack(self) -> EvidencePack:
        return build_pack(
            self.incident,
            samples=self.samples,
            scores=self.scores,
            now=self.incident["resolved_at"],
        )


def _incident(n: int, host: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "id": n,
        "type": "ML_ANOMALY",
        "severity": "medium",
        "status": "resolved",
        "host": host,
        "metric": None,
        "title": f"Anomalous behaviour on {host}",
        "details": {},
        "started_at": start,
        "resolved_at": end,
    }


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _samples(frame: pd.DataFrame, metrics: list[str]) -> Samples:
    times = frame["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    return Samples(
        times.astype(np.float64),
        {m: frame[m].to_numpy(dtype=np.float64) for m in metrics},
    )


def _slice(frame: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    return frame.iloc[max(0, first - 60) : last + 61]


def _inject(frame: pd.DataFrame, kind: str, a: int, b: int, rng: np.random.Generator) -> None:
    idx = frame.index[a : b + 1]
    n = len(idx)
    if kind == "disk_filling":
        rate = rng.uniform(0.1, 0.4)
        frame.loc[idx, "disk_usage_percent"] += rate * np.arange(1, n + 1)
    elif kind == "latency_regression":
        factor = rng.uniform(2.0, 4.0)
        for m in ("response_time_p50", "response_time_p95", "response_time_p99"):
            frame.loc[idx, m] *= factor
    elif kind == "traffic_surge":
        factor = rng.uniform(2.0, 4.0)
        frame.loc[idx, "active_requests"] = np.round(frame.loc[idx, "active_requests"] * factor)
        frame.loc[idx, "cpu_usage_percent"] += rng.uniform(3.0, 10.0)


def synthetic_cases(*, days: int = 14, seed: int = 7, injected: int = 15) -> Iterator[Case]:
    """The generator's labelled runs, then ``injected`` cases of each cause it lacks."""
    frame = SyntheticDataGenerator(seed=seed).generate_full_training_set(days=days, start=START)
    labels = frame["label"].to_numpy()
    n = 0
    for label, cause in SCENARIO_CAUSES.items():
        for first, last in _runs(labels == label):
            if first < 60:
                continue
            n += 1
            part = _slice(frame, first, last)
            start, end = frame["timestamp"].iloc[first], frame["timestamp"].iloc[last]
            yield Case(
                f"{label}@{first}",
                cause,
                TOP_METRICS[cause],
                _incident(n, "synthetic-host", start.to_pydatetime(), end.to_pydatetime()),
                _samples(part, list(METRIC_NAMES)),
            )
    rng = np.random.default_rng(seed)
    busy = np.convolve((labels != "normal").astype(np.int8), np.ones(241), mode="same") > 0
    quiet = np.flatnonzero(~busy)
    for kind in ("disk_filling", "latency_regression", "traffic_surge"):
        for _ in range(injected):
            first = int(rng.choice(quiet[(quiet > 120) & (quiet < len(frame) - 200)]))
            last = first + int(rng.integers(20, 60))
            part = _slice(frame, first, last).copy()
            _inject(part, kind, first - part.index[0], last - part.index[0], rng)
            n += 1
            start, end = frame["timestamp"].iloc[first], frame["timestamp"].iloc[last]
            yield Case(
                f"{kind}@{first}",
                kind,
                TOP_METRICS[kind],
                _incident(n, "synthetic-host", start.to_pydatetime(), end.to_pydatetime()),
                _samples(part, list(METRIC_NAMES)),
            )


def stream_scores(
    train: pd.DataFrame, test: pd.DataFrame, metrics: list[str]
) -> list[dict[str, Any]]:
    """The test half's anomaly_scores rows as the service stores them: the streaming detector
    learns the train half then scores the test half causally (defaults, threshold 0.999)."""
    from services.trainer.anomaly.hostscore import reading_dicts
    from services.trainer.anomaly.streaming import HostStream

    stream = HostStream(tuple(metrics))
    out: list[dict[str, Any]] = []
    for k, frame in enumerate((train, test)):
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        times = stamps.astype("int64").to_numpy() / 1e9
        values = frame[metrics].to_numpy(dtype=float)
        for i in range(len(frame)):
            r = stream.update(float(times[i]), dict(zip(metrics, values[i].tolist(), strict=True)))
            if k == 1:
                out.append(
                    {
                        "timestamp": stamps.iloc[i].to_pydatetime(),
                        "score": r.score,
                        "threshold": 0.999,
                        "is_anomaly": r.score >= 0.999,
                        "contributions": reading_dicts(r.metrics),
                    }
                )
    return out


def smd_cases(machine: str, *, detector: bool = False) -> Iterator[Case]:
    """One case per labelled event of an SMD machine's test half; ``detector``: with the
    streaming detector's scores and per-metric attribution, as the service would have them."""
    from bench.bench_smd import METRICS, load

    train, test, events = load(machine)
    scores = stream_scores(train, test, list(METRICS)) if detector else []
    test["timestamp"] = pd.to_datetime(test["timestamp"], utc=True)
    for k, ev in enumerate(events):
        first, last = int(ev["start"]), int(ev["end"])
        if first < 60:
            continue
        part = _slice(test, first, last)
        start = test["timestamp"].iloc[first].to_pydatetime()
        end = test["timestamp"].iloc[last].to_pydatetime() + timedelta(seconds=0)
        yield Case(
            f"{machine}#{k}",
            None,
            set(ev["metrics"]),
            _incident(10_000 + k, machine, start, end),
            _samples(part, list(METRICS)),
            scores[max(0, first - 60) : last + 1],
        )


# Generated answers for the grounding check: correct ones, and with one false fact.
INVENTED_METRICS = (
    "swap_usage_percent",
    "gc_pause_ms",
    "network_rx_mb",
    "cpu_steal_percent",
    "thread_count",
    "queue_depth",
    "inode_usage_percent",
    "db_connections",
)
FIELDS = ("before_mean", "during_mean", "during_max", "peak", "last", "change", "ratio")


def _rounded(value: float, rng: random.Random) -> str:
    """A pack figure as a writer might put it: fewer decimals, or as a percentage."""
    if 0 < abs(value) <= 1 and rng.random() < 0.3:
        return f"{value * 100:.{rng.randint(0, 1)}f}%"
    decimals = rng.randint(0, 3)
    return f"{value:.{decimals}f}"


def _sentence(item: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    """One claim about a metric item, and the figure it quotes."""
    field = rng.choice([f for f in FIELDS if isinstance(item.get(f), int | float)])
    shown = _rounded(float(item[field]), rng)
    when = item["peak_at"] if rng.random() < 0.5 else item["peak_at"][11:16] + " UTC"
    text = rng.choice(
        [
            f"{item['metric']} was {shown} ({field.replace('_', ' ')}), peaking at {when}",
            f"At {when} {item['metric']} stood out: {shown}",
            f"{shown} for {item['metric']}, its {field.replace('_', ' ')}",
        ]
    )
    return text, shown


def correct_answer(pack: EvidencePack, rng: random.Random) -> Analysis:
    items = [i.to_json() for i in pack.items if i.kind == "metric"]
    chosen = rng.sample(items, k=min(3, len(items)))
    claims = [{"text": _sentence(i, rng)[0], "evidence": [i["id"]]} for i in chosen]
    top = chosen[0]
    incident = pack.items[0].to_json()
    summary = (
        f"On host {pack.host} {top['metric']} moved most; the window ran "
        f"{incident['duration_minutes']} minutes from {incident['window_start']}."
    )
    return Analysis.model_validate(
        {
            "summary": summary,
            "cause": {"category": "unknown", "text": claims[0]["text"]},
            "claims": claims,
            "actions": [
                {
                    "action": "page_human",
                    "parameters": {"urgency": "low"},
                    "reason": f"{top['metric']} needs a look",
                }
            ],
            "confidence": 0.5,
            "top_metric": top["metric"],
        }
    )


def _false_figure(pack: EvidencePack, rng: random.Random) -> str:
    numbers = [abs(n) for n in grounding.PackFacts(pack).numbers if abs(n) >= 1]
    value = rng.choice(numbers) * rng.choice([rng.uniform(1.2, 2.5), rng.uniform(0.4, 0.83)])
    digits = max(0, 2 - int(math.floor(math.log10(value))))
    return f"{value:.{digits}f}"


def inject(answer: Analysis, pack: EvidencePack, rng: random.Random) -> Analysis:
    """The answer with one false figure or one metric the pack does not hold."""
    data = answer.model_dump()
    claim = rng.randrange(len(data["claims"]))
    if rng.random() < 0.5:
        data["claims"][claim]["text"] += f", and it reached {_false_figure(pack, rng)}"
    else:
        absent = [m for m in METRIC_NAMES if m not in pack.metrics and pack.metrics]
        name = rng.choice([*INVENTED_METRICS, *absent])
        data["claims"][claim]["text"] += f" while {name} climbed too"
    return Analysis.model_validate(data)

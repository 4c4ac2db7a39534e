"""The grounding check on generated answers: correct ones (figures, metrics, hosts and times
copied from the pack, rounded as a writer would) are accepted, and the same answers with one
injected false figure or metric are rejected, each at least 99 % of the time."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from bench.analysis_cases import smd_cases, synthetic_cases
from services.trainer.analysis import grounding
from services.trainer.analysis.evidence import EvidencePack
from shared.catalogue import METRIC_NAMES
from shared.schemas.analysis import Analysis

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
PER_PACK = 6


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


@pytest.fixture(scope="module")
def packs() -> list[EvidencePack]:
    cases = list(synthetic_cases(days=7, injected=5)) + list(smd_cases("machine-2-5"))
    return [c.pack() for c in cases]


def test_correct_answers_pass_and_answers_with_one_false_fact_fail(
    packs: list[EvidencePack],
) -> None:
    rng = random.Random(13)
    accepted = rejected = total = 0
    misses: list[str] = []
    for pack in packs:
        facts = grounding.PackFacts(pack)
        for _ in range(PER_PACK):
            good = correct_answer(pack, rng)
            problems = grounding.check(good, pack, facts)
            accepted += not problems
            if problems:
                misses.append(f"refused: {problems[0]}")
            bad = inject(good, pack, rng)
            caught = grounding.check(bad, pack, facts)
            rejected += bool(caught)
            if not caught:
                misses.append(f"let through: {bad.claims}")
            total += 1
    assert total >= 300
    assert accepted / total >= 0.99, misses[:5]
    assert rejected / total >= 0.99, misses[:5]


def test_what_a_refusal_names() -> None:
    case = next(iter(synthetic_cases(days=2, injected=1)))
    pack = case.pack()
    answer = correct_answer(pack, random.Random(1))
    data = answer.model_dump()
    data["summary"] += " It happened on host db-42 at 2031-05-05T10:00:00Z, 77777.7 times."
    data["claims"][0]["evidence"] = ["metric:nothing"]
    problems = " | ".join(grounding.check(Analysis.model_validate(data), pack))
    assert "host db-42" in problems and "time 2031-05-05T10:00:00Z" in problems
    assert "number 77777.7" in problems and "unknown evidence metric:nothing" in problems

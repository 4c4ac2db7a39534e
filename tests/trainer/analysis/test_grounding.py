"""The grounding check on generated answers: correct ones (figures, metrics, hosts and times
copied from the pack, rounded as a writer would) are accepted, and the same answers with one
injected false figure or metric are rejected, each at least 99 % of the time."""

from __future__ import annotations

import random

import pytest

from bench.analysis_cases import correct_answer, inject, smd_cases, synthetic_cases
from services.trainer.analysis import grounding
from services.trainer.analysis.evidence import EvidencePack
from shared.schemas.analysis import Analysis

PER_PACK = 6


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

"""The rules analyst on labelled incidents (bench/analysis_cases.py): the synthetic scenarios
and the injected causes get the right category and top metric, SMD's events the right top
metric (their metrics are unnamed: category unknown), and every answer passes grounding.
The full set and per-category figures: ``python -m bench.bench_analysis``."""

from __future__ import annotations

from collections import Counter

from bench.analysis_cases import smd_cases, synthetic_cases
from services.trainer.analysis import grounding, rules


def test_rules_name_the_cause_and_top_metric_of_labelled_incidents() -> None:
    cases = list(synthetic_cases(days=7, injected=6)) + list(smd_cases("machine-2-5"))
    total: Counter[str] = Counter()
    category: Counter[str] = Counter()
    top: Counter[str] = Counter()
    for case in cases:
        pack = case.pack()
        answer = rules.analyze(pack)
        key = case.category or "smd"
        total[key] += 1
        category[key] += answer.cause.category == (case.category or "unknown")
        top[key] += answer.top_metric in case.top
        assert grounding.check(answer, pack) == [], case.name
        assert all(c.evidence for c in answer.claims)
    assert set(total) == {
        "cpu_saturation",
        "memory_leak",
        "error_storm",
        "disk_filling",
        "latency_regression",
        "traffic_surge",
        "smd",
    }
    for key, n in total.items():
        assert category[key] / n >= 0.9, (key, category[key], n)
        assert top[key] / n >= 0.9, (key, top[key], n)


def test_a_quiet_pack_is_unknown_and_pages_a_person() -> None:
    case = next(c for c in synthetic_cases(days=2, injected=1) if c.category == "traffic_surge")
    quiet = case.pack()
    for s in list(quiet.metrics.values()):
        quiet.metrics[s.metric] = type(s)(**{**_fields(s), "z": 0.0, "peak": s.before_mean})
    answer = rules.analyze(quiet)
    assert answer.cause.category == "unknown"
    assert [a.action for a in answer.actions] == ["page_human"]


def _fields(s: object) -> dict[str, object]:
    return {k: getattr(s, k) for k in s.__slots__}  # type: ignore[attr-defined]

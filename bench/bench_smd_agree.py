"""Multi-metric agreement and persistence beside the host's ``max`` (issue 9's SMD recall),
designed on the train halves, the synthetic month and injected anomalies, not the test halves.

Run: ``python -m bench.smd_recall_cache --out C``, ``python -m bench.smd_inject_cache --out I
--profile shift|broad``, then ``python -m bench.bench_smd_agree --cache C --inject I1 I2
[--rules ...] [--test]``.

Every rule flags a row when the service's rule does (``max``: the per-metric likelihood or the
forest at the host's budget contamination, chosen per host as ``bench_smd_budget`` does) or
when its own extra condition holds; incidents are ``--consecutive`` in a row. Extra conditions
(``s``: the metrics' surprises, -log10 p, of one row, sorted high to low, m metrics):

- ``order:K=k``: for some j in 2..k, j * s_(j) - log10 C(m, j) >= -log10(1 - threshold): the
  j-th most surprising metric's p, under independence, Bonferroni'd over the choices of j
  metrics (for j = 1 this is the per-metric layer's own score);
- ``count:k=..:s=..``: at least k metrics at surprise >= s;
- ``topsum:k=..:S=..``: the k largest surprises sum to at least S;
- ``persist:L=..:j=..:n=..``: the per-metric layer's host surprise >= L in at least j of the
  last n rows;
- ``fpersist:c=..:j=..:n=..``: the forest's calibrated score >= 1 - c in j of the last n rows;
- ``both:L=..:c=..``: the host surprise >= L and the forest >= 1 - c on the same row;
- ``fisher:a=..[:cap=..]``: the two layers' p (1 - likelihood, 1 - forest score) multiply to at
  most a (Fisher's method at the host's threshold 0.999 is a = 9.77e-5);
- ``fisherm:a=..``: as ``fisher``, the forest's p taken after its mapping onto the host's scale
  (its own threshold at the host's);
- ``instant:H=..``: a row whose host surprise is >= H opens an incident by itself;
- ``:T=..`` on the first part: the per-metric layer's own threshold in the base rule;
  parts joined by ``+`` all apply.

Figures: false incidents per host-day on the clean second half of each train half; injected
event recall on each inject cache (same rows, events injected); synthetic event precision
and per-scenario recall; with ``--test``, the SMD test halves pooled (reported only).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from bench.bench_smd import MACHINES, METRICS
from bench.bench_smd import load as load_smd
from bench.bench_smd_recall import load
from services.trainer.anomaly.budget import GRID, choose_contamination
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    detection_counts,
    evaluate_labels,
    incident_rows,
    runs,
)
from services.trainer.anomaly.hostscore import forest_on_stream_scale


def params(rule: str) -> dict[str, float]:
    out = {}
    for part in rule.split(":")[1:]:
        k, v = part.split("=")
        out[k] = float(v)
    return out


def window_count(hit: np.ndarray, n: int) -> np.ndarray:
    return np.convolve(hit.astype(int), np.ones(n, dtype=int))[: len(hit)]


def extra(
    rule: str, stream: np.ndarray, per: np.ndarray, forest: np.ndarray, thr: float
) -> np.ndarray:
    out = np.zeros(len(stream), dtype=bool)
    for part in rule.split("+"):
        out |= extra_one(part, stream, per, forest, thr)
    return out


def extra_one(
    rule: str, stream: np.ndarray, per: np.ndarray, forest: np.ndarray, thr: float
) -> np.ndarray:
    name = rule.split(":")[0]
    p = params(rule)
    host = -np.log10(np.maximum(1.0 - stream, 1e-30))
    if name == "max":
        return np.zeros(len(stream), dtype=bool)
    if name == "fpersist":  # the forest above 1 - c in j of the last n rows
        return window_count(forest >= 1.0 - p["c"], int(p["n"])) >= int(p["j"])
    if name == "fisher":  # the two layers' p joined: q = p_s p_f <= a, each p <= cap
        ps, pf = 10.0**-host, np.maximum(1.0 - forest, 0.0)
        cap = p.get("cap", 1.0)
        return (ps * pf <= p["a"]) & (ps <= cap) & (pf <= cap)
    if name == "both":  # both layers at a lower level at once
        return (host >= p["L"]) & (forest >= 1.0 - p["c"])
    s = -np.sort(-per.astype(float), axis=1)
    m = per.shape[1]
    target = -math.log10(1.0 - thr)
    if name == "order":
        out = np.zeros(len(stream), dtype=bool)
        for j in range(2, int(p["K"]) + 1):
            out |= j * s[:, j - 1] - math.log10(math.comb(m, j)) >= target
        return out
    if name == "count":
        return (per >= p["s"]).sum(axis=1) >= int(p["k"])
    if name == "topsum":
        return s[:, : int(p["k"])].sum(axis=1) >= p["S"]
    if name == "persist":
        return window_count(host >= p["L"], int(p["n"])) >= int(p["j"])
    raise SystemExit(f"unknown rule {rule}")


def flags(rule, stream, per, forest, f_thr, thr, k):
    t = params(rule.split("+")[0]).get("T", thr)  # the per-metric layer's own threshold
    base = (stream >= t) | (forest >= f_thr)
    if rule.startswith("fisherm"):  # the forest's p as mapped onto the host's scale
        m = np.array([forest_on_stream_scale(float(f), f_thr, thr) for f in forest])
        rule = rule[len("fisherm") :]
        return incident_rows(base | extra("fisher" + rule, stream, per, m, thr), k)
    parts = rule.split("+")
    instant = [params(x)["H"] for x in parts if x.startswith("instant")]
    rest = "+".join(x for x in parts if not x.startswith("instant"))
    out = incident_rows(base | extra(rest, stream, per, forest, thr), k)
    if instant:  # a row this surprising opens an incident at once
        host = -np.log10(np.maximum(1.0 - stream, 1e-30))
        out = out | (host >= instant[0])
    return out


def held_out_forest(history, stream: np.ndarray):
    """As ``budget.choose_contamination``: a forest on the first two thirds scores the rest."""
    cut = 2 * len(history) // 3
    det = AnomalyDetector(contamination=min(GRID)).fit(history.iloc[:cut], METRICS)
    return cut, det.score_frame(history).score


def rechoose(rule, history, stream, per, thr, k, budget=1.0) -> float:
    """``budget.choose_contamination``'s rule with ``rule``'s flags instead of the service's."""
    cut, forest = held_out_forest(history, stream)
    days = (len(history) - cut) / 1440.0
    best = min(GRID)
    for c in sorted(GRID):
        f_thr = float(np.quantile(forest[:cut], 1.0 - c))
        fl = flags(rule, stream[cut:], per[cut:], forest[cut:], f_thr, thr, k)
        if len(runs(fl)) / days <= budget:
            best = c
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--inject", type=Path, nargs="*", default=[])
    ap.add_argument("--threshold", type=float, default=0.999)
    ap.add_argument("--consecutive", type=int, default=3)
    ap.add_argument("--contamination", type=float, default=0.0, help="one for all (0: budget)")
    ap.add_argument("--rules", nargs="*", default=["max"])
    ap.add_argument("--test", action="store_true")
    ap.add_argument(
        "--rechoose", action="store_true", help="each rule spends the budget itself (per host)"
    )
    args = ap.parse_args()
    thr, k = args.threshold, args.consecutive
    data = {m: load(args.cache, m) for m in MACHINES}
    inj = {(i, m): load(i, m) for i in args.inject for m in MACHINES}
    choice = {}
    for m in MACHINES:
        d = data[m]
        train, _t, _r = load_smd(m)
        n, half = int(d["n_train"]), int(d["half"])
        if args.contamination:
            choice[m] = (args.contamination, args.contamination)
        else:
            design = choose_contamination(
                train.iloc[:half], METRICS, d["stream"][:half], threshold=thr, consecutive=k,
                budget=1.0,
            ).contamination  # fmt: skip
            test = None
            if args.test:
                test = choose_contamination(
                    train, METRICS, d["stream"][:n], threshold=thr, consecutive=k, budget=1.0
                ).contamination
            choice[m] = (design, test)
    print(f"threshold {thr}, {k} in a row, contamination per machine {choice}")
    syn = load(args.cache, "synthetic")
    for rule in args.rules:
        if args.rechoose:
            for m in MACHINES:
                d = data[m]
                train, _t, _r = load_smd(m)
                n, half = int(d["n_train"]), int(d["half"])
                design = rechoose(
                    rule, train.iloc[:half], d["stream"][:half], d["metric_surprise"][:half], thr, k
                )
                test = None
                if args.test:
                    test = rechoose(rule, train, d["stream"][:n], d["metric_surprise"][:n], thr, k)
                choice[m] = (design, test)
            print(f"  {rule}: contamination per machine {choice}")
        fi, days = 0, 0.0
        per_machine = []
        found = dict.fromkeys(args.inject, 0)
        n_events = dict.fromkeys(args.inject, 0)
        for m in MACHINES:
            d = data[m]
            n, half = int(d["n_train"]), int(d["half"])
            c = choice[m][0]
            f_thr = float(np.quantile(d["design_forest"][:half], 1.0 - c))
            fl = flags(
                rule, d["stream"][half:n], d["metric_surprise"][half:n], d["design_forest"][half:],
                f_thr, thr, k,
            )  # fmt: skip
            fi += len(runs(fl))
            per_machine.append(len(runs(fl)))
            days += (n - half) / 1440.0
            for i in args.inject:
                e = inj[(i, m)]
                fl = flags(rule, e["stream"], e["metric_surprise"], e["forest"], f_thr, thr, k)
                events = [
                    Event(int(a), int(b), "x")
                    for a, b in zip(e["event_start"], e["event_end"], strict=True)
                ]
                found[i] += detection_counts(events, fl).events_detected
                n_events[i] += len(events)
        r = evaluate_labels(
            syn["labels"],
            flags(
                rule,
                syn["stream"],
                syn["metric_surprise"],
                syn["forest"],
                float(syn["threshold"]),
                thr,
                k,
            ),  # fmt: skip
        )
        rec = " ".join(f"{v['event_recall']:.2f}" for v in r["scenarios"].values())
        inj_s = " ".join(f"{found[i] / n_events[i]:.2f}" for i in args.inject)
        line = (
            f"{rule:28s} train FI/host-day {fi / days:.3f} {per_machine} | injected R {inj_s} | "
            f"synth P {r['overall']['event_precision']:.3f} R {rec}"
        )
        if args.test:
            total = DetectionCounts()
            for m in MACHINES:
                d = data[m]
                n = int(d["n_train"])
                f_thr = float(np.quantile(d["test_forest_train"], 1.0 - choice[m][1]))
                fl = flags(
                    rule, d["stream"][n:], d["metric_surprise"][n:], d["test_forest"], f_thr,
                    thr, k,
                )  # fmt: skip
                events = [
                    Event(int(a), int(b), "anomaly")
                    for a, b in zip(d["event_start"], d["event_end"], strict=True)
                ]
                total = total + detection_counts(events, fl)
            line += (
                f" | TEST F1 {total.f1:.3f} P {total.event_precision:.3f} "
                f"R {total.event_recall:.3f} ({total.events_detected}/{total.events}, "
                f"{total.flagged_runs} runs)"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()

"""The incident rule and the per-host budget beside the service's (issue 9's SMD recall),
designed on the train halves, the synthetic month and injected anomalies, not the test halves.

Run: ``python -m bench.smd_recall_cache --out C``, ``python -m bench.smd_inject_cache --out I
--profile shift|broad`` (both with the same ``--n-estimators``/``--max-samples`` as here, when
given), then ``python -m bench.bench_smd_incident_rules --cache C --inject I1 I2 [--test]``
with one of:

- ``--open K/N``: an incident opens at the K-th of the last N samples above the threshold
  (the service: 3/3), and resolves after ``--resolve-after`` samples in a row below (3);
- ``--joints a1,a2,...``: each host's joint cut-off (the two layers' p multiplied, at most
  a; the host's threshold 0.999 is a = 9.77e-5) chosen by the budget beside its forest's
  contamination: first the loosest a that fits at the smallest contamination, then the
  largest contamination that fits with it (``--order c`` the other way round);
- ``--fast E[/K]``: K rows in a row at evidence >= E also open (evidence = -log10(1 - the
  service's combined score), at most 12);
- ``--window W:L[:cap[:fisher]]``: the last W rows' mean evidence (each capped, 4 unless
  given) >= L opens and counts as above; ``fisher``: -log10 of Fisher's p of the W rows;
- ``--cusum k:h[:cap]``: S = max(0, S + min(evidence, cap) - k) >= h opens and counts as
  above (cap 4 unless given); ``--evidence forest|stream``: one layer's evidence instead,
  ``joint``: min(the stream's p, Fisher's p of the two layers), without the forest's mapping
  (which moves with the host's contamination);
- ``--pin``: each host's contamination chosen with the service's rule, not the variant's.

Figures: false incidents per host-day on the clean second halves; per inject cache, event
recall, event precision of the flagged runs, and recall on events of at most 5 rows; the
synthetic month of the cache (its fixed forest threshold); with ``--test``, the test halves
pooled and hit@3 (the per-metric layer's top 3 at an event's first flagged row).

The base rule is the service's: the per-metric likelihood, the forest at the host's budget
contamination or the two joined (``hostscore.combine``), each host's contamination chosen
by the budget rule with this bench's incident rule (``bench_smd_agree``'s ``--rechoose``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from bench import bench_smd_agree as agree
from bench.bench_smd import MACHINES, METRICS
from bench.bench_smd import load as load_smd
from bench.bench_smd_budget import attribute
from bench.bench_smd_recall import load
from services.trainer.anomaly.budget import GRID
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.evaluation import (
    DetectionCounts,
    Event,
    attribution_hits,
    confirm,
    detection_counts,
    evaluate_labels,
    open_until_closed,
    runs,
)

Array = np.ndarray
THRESHOLD = 0.999
# The product q of the two layers' p at which Fisher's combined p, q (1 - ln q), is 1 - 0.999:
# hostscore.joint_likelihood's cut-off (9.77e-5; 1.03e-4, used before, counted one run more).
FISHER_AT_THRESHOLD = float(
    brentq(lambda q: q * (1.0 - np.log(q)) - (1.0 - THRESHOLD), 1e-12, 1e-3)
)


@dataclass(frozen=True)
class Rule:
    open_k: int = 3
    open_n: int = 3
    resolve_after: int = 3
    fast: float = 0.0  # evidence (-log10 p of the combined score) at which fast_k rows open
    fast_k: int = 1
    window: int = 0  # W rows: their mean evidence (each capped) >= window_level opens
    window_level: float = 0.0
    window_cap: float = 4.0
    window_sum: str = "mean"  # or "fisher": -log10 of Fisher's combined p over the W rows
    cusum_k: float = 0.0  # CUSUM of the evidence (each capped at window_cap) less k a row
    cusum_h: float = 0.0  # opens (and counts as above) while the CUSUM is >= h
    evidence_of: str = "combined"  # whose evidence: combined, forest (its p) or stream
    echo_hold: float = 0.0  # a flagged row's own metrics at surprise >= this keep its run going
    echo_watch: float = 4.0  # the metrics of a flagged row watched: those at surprise >= this
    echo_top: int = 3  # at most this many of them, the most surprising
    echo_resolve: bool = False  # the held rows also keep an open incident open
    multi_k: int = 0  # a row with at least multi_k metrics at surprise >= multi_s opens
    multi_s: float = 0.0

    def incidents(
        self, above: np.ndarray, evidence: np.ndarray | None = None, per: Array | None = None
    ) -> np.ndarray:
        """Rows with an incident open: opened at the K-th of N above (or by the fast or
        windowed evidence), resolved by the ``resolve_after``-th in a row below."""
        a = np.asarray(above, dtype=bool)
        if self.multi_k > 0 and per is not None:
            wide = (per >= self.multi_s).sum(axis=1) >= self.multi_k
            count = np.convolve(a.astype(int), np.ones(self.open_n, dtype=int))[: len(a)]
            opening = ((count >= self.open_k) & a) | wide
            return open_until_closed(opening, confirm(~(a | wide), self.resolve_after))
        if self.echo_hold > 0 and per is not None:
            held = echo(a, per, self.echo_watch, self.echo_hold, self.echo_top)
            if not self.echo_resolve:
                return self._echo_incidents(a, held)
            a = held
        count = np.convolve(a.astype(int), np.ones(self.open_n, dtype=int))[: len(a)]
        opening = (count >= self.open_k) & a
        if evidence is not None and self.fast > 0:
            opening |= confirm(evidence >= self.fast, self.fast_k)
        if evidence is not None and self.window > 0:
            w = windowed(evidence, self.window, self.window_cap, self.window_sum)
            hot = w >= self.window_level
            opening |= hot
            a = a | hot
        if evidence is not None and self.cusum_h > 0:
            hot = cusum(np.minimum(evidence, self.window_cap), self.cusum_k) >= self.cusum_h
            opening |= hot
            a = a | hot
        return open_until_closed(opening, confirm(~a, self.resolve_after))

    def _echo_incidents(self, a: Array, held: Array) -> Array:
        count = np.convolve(held.astype(int), np.ones(self.open_n, dtype=int))[: len(a)]
        opening = (count >= self.open_k) & held
        return open_until_closed(opening, confirm(~a, self.resolve_after))


def echo(a: Array, per: Array, watch: float, hold: float, top: int) -> Array:
    """Rows that count as above: flagged ones, and unflagged ones right after them while one of
    the metrics watched (at most ``top`` of the flagged row's metrics at surprise >= ``watch``,
    the most surprising) stays at surprise >= ``hold``. A flagged row renews the watch list."""
    out = a.copy()
    watched: np.ndarray | None = None
    for i in range(len(a)):
        if a[i]:
            row = per[i]
            order = np.argsort(-row, kind="stable")[:top]
            w = order[row[order] >= watch]
            watched = w if len(w) else None
        elif watched is not None and bool((per[i, watched] >= hold).any()):
            out[i] = True
        else:
            watched = None
    return out


def cusum(e: Array, k: float) -> Array:
    """S_t = max(0, S_(t-1) + e_t - k): evidence accumulated beyond k a row."""
    out = np.zeros(len(e))
    s = 0.0
    for i, x in enumerate(e.tolist()):
        s = max(0.0, s + x - k)
        out[i] = s
    return out


def windowed(evidence: Array, w: int, cap: float, how: str) -> Array:
    """Per row, the last ``w`` rows' evidence joined: the mean of each capped at ``cap``, or
    (``fisher``) -log10 of Fisher's p of the ``w`` p-values (chi-square, 2w degrees)."""
    e = np.minimum(evidence, cap)
    total = np.convolve(e, np.ones(w))[: len(e)]
    if how == "mean":
        return total / w
    from scipy.stats import chi2

    return -np.log10(np.maximum(chi2.sf(2.0 * np.log(10.0) * total, 2 * w), 1e-300))


def combined(stream: Array, forest: Array, f_thr: float, a: float) -> Array:
    """``hostscore.combine`` over rows, vectorised (the joint's own cut-off ``a`` kept as the
    bench's: at 9.77e-5 a row's combined score is above the threshold exactly when the
    service's is, whatever ``a``); returned as evidence, -log10(1 - score), at most 12."""
    f = np.clip(forest, 0.0, 1.0)
    if f_thr >= 1.0:
        mapped = np.where(f >= 1.0, 1.0, f * THRESHOLD)
    else:
        mapped = np.where(
            f < f_thr,
            f * THRESHOLD / max(f_thr, 1e-12),
            THRESHOLD + (f - f_thr) * (1.0 - THRESHOLD) / (1.0 - f_thr),
        )
    q = np.maximum(1.0 - stream, 0.0) * (1.0 - f)
    qq = np.maximum(q, 1e-300)
    joint = np.where(q <= 0.0, 1.0, np.maximum(1.0 - qq * (1.0 - np.log(qq)), 0.0))
    score = np.maximum(np.maximum(stream, mapped), joint)
    return -np.log10(np.maximum(1.0 - score, 1e-12))


def flags(rule: Rule, a: float, stream: Array, per: Array, forest: Array, f_thr: float) -> Array:
    base = (stream >= THRESHOLD) | (forest >= f_thr)
    joint = agree.extra(f"fisher:a={a}", stream, per, forest, THRESHOLD)
    evidence = None
    if rule.fast > 0 or rule.window > 0 or rule.cusum_h > 0:
        evidence = combined(stream, forest, f_thr, a)
        if rule.evidence_of == "forest":
            evidence = -np.log10(np.maximum(1.0 - np.clip(forest, 0.0, 1.0), 1e-12))
        elif rule.evidence_of == "joint":  # calibrated p's only: no mapping, no contamination
            ps = np.maximum(1.0 - stream, 0.0)
            q = np.maximum(ps * np.maximum(1.0 - np.clip(forest, 0.0, 1.0), 0.0), 1e-300)
            evidence = -np.log10(np.clip(np.minimum(ps, q * (1.0 - np.log(q))), 1e-12, 1.0))
        elif rule.evidence_of == "stream":
            evidence = -np.log10(np.maximum(1.0 - stream, 1e-12))
    return rule.incidents(base | joint, evidence, per)


def choose(
    rule: Rule,
    joints: list[float],
    order: str,
    history: pd.DataFrame,
    stream: Array,
    per: Array,
    kw: dict[str, int],
    grid: tuple[float, ...] = GRID,
) -> tuple[float, float]:
    """The host's (joint cut-off, contamination) from its held-out third, as the service's
    budget rule does for the contamination alone."""
    cut = 2 * len(history) // 3
    det = AnomalyDetector(contamination=min(grid), **kw).fit(history.iloc[:cut], METRICS)
    forest = det.score_frame(history).score
    days = (len(history) - cut) / 1440.0

    def fits(a: float, c: float) -> bool:
        f_thr = float(np.quantile(forest[:cut], 1.0 - c))
        fl = flags(rule, a, stream[cut:], per[cut:], forest[cut:], f_thr)
        return len(runs(fl)) / days <= 1.0

    def loosest(options: list[float], ok: Callable[[float], bool]) -> float:
        best = options[0]
        for x in options:
            if ok(x):
                best = x
        return best

    if order == "a":
        a = loosest(joints, lambda x: fits(x, grid[0]))
        return a, loosest(list(grid), lambda c: fits(a, c))
    c = loosest(list(grid), lambda y: fits(joints[0], y))
    return loosest(joints, lambda x: fits(x, c)), c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--inject", type=Path, nargs="*", default=[])
    ap.add_argument("--open", default="3/3", help="K/N: the K-th of the last N above opens")
    ap.add_argument("--resolve-after", type=int, default=3)
    ap.add_argument("--joints", default=str(FISHER_AT_THRESHOLD), help="a1,a2,... loosest last")
    ap.add_argument("--order", choices=("a", "c"), default="a")
    ap.add_argument("--n-estimators", type=int, default=100)
    ap.add_argument("--max-samples", type=int, default=256)
    ap.add_argument("--grid", default=",".join(str(c) for c in GRID), help="contaminations")
    ap.add_argument("--fast", default="", help="E[/K]: K rows in a row at evidence >= E open")
    ap.add_argument("--window", default="", help="W:L[:cap[:fisher]]: windowed evidence opens")
    ap.add_argument("--cusum", default="", help="k:h[:cap]: the evidence's CUSUM >= h opens")
    ap.add_argument(
        "--pin", action="store_true", help="contamination chosen with the service's rule"
    )
    ap.add_argument(
        "--evidence", choices=("combined", "joint", "forest", "stream"), default="combined"
    )
    ap.add_argument(
        "--echo", default="", help="hold[:watch[:top[:resolve]]]: a flagged row's metrics hold"
    )
    ap.add_argument("--multi", default="", help="k:s: k metrics at surprise >= s open")
    ap.add_argument("--test", action="store_true")
    args = ap.parse_args()
    grid = tuple(float(x) for x in args.grid.split(","))
    k, n = (int(x) for x in args.open.split("/"))
    extra: dict[str, float | int | str] = {}
    if args.fast:
        e, _, fk = args.fast.partition("/")
        extra.update(fast=float(e), fast_k=int(fk or 1))
    if args.window:
        parts = args.window.split(":")
        extra.update(window=int(parts[0]), window_level=float(parts[1]))
        if len(parts) > 2:
            extra["window_cap"] = float(parts[2])
        if len(parts) > 3:
            extra["window_sum"] = parts[3]
    if args.cusum:
        parts = args.cusum.split(":")
        extra.update(cusum_k=float(parts[0]), cusum_h=float(parts[1]))
        if len(parts) > 2:
            extra["window_cap"] = float(parts[2])
    extra["evidence_of"] = args.evidence
    if args.multi:
        mk, ms = args.multi.split(":")
        extra.update(multi_k=int(mk), multi_s=float(ms))
    if args.echo:
        parts = args.echo.split(":")
        extra["echo_hold"] = float(parts[0])
        if len(parts) > 1:
            extra["echo_watch"] = float(parts[1])
        if len(parts) > 2:
            extra["echo_top"] = int(parts[2])
        if len(parts) > 3:
            extra["echo_resolve"] = parts[3] == "resolve"
    rule = Rule(open_k=k, open_n=n, resolve_after=args.resolve_after, **extra)  # type: ignore[arg-type]
    joints = [float(x) for x in args.joints.split(",")]
    kw = {"n_estimators": args.n_estimators, "max_samples": args.max_samples}
    fi, days, per_machine, choices = 0, 0.0, [], []
    found = dict.fromkeys(args.inject, 0)
    n_events = dict.fromkeys(args.inject, 0)
    short = {i: [0, 0] for i in args.inject}
    on_event = {
        i: [0, 0] for i in args.inject
    }  # injected halves: runs on an event, all  # events of at most 5 rows: found, all
    total = DetectionCounts()
    tops: list[list[str]] = []
    truths: list[list[str]] = []
    for m in MACHINES:
        d = load(args.cache, m)
        train, _test, raw = load_smd(m)
        n_train, half = int(d["n_train"]), int(d["half"])
        s, per = d["stream"], d["metric_surprise"]
        chooser = Rule() if args.pin else rule
        a, c = choose(
            chooser, joints, args.order, train.iloc[:half], s[:half], per[:half], kw, grid
        )
        f_thr = float(np.quantile(d["design_forest"][:half], 1.0 - c))
        fl = flags(rule, a, s[half:n_train], per[half:n_train], d["design_forest"][half:], f_thr)
        fi += len(runs(fl))
        per_machine.append(len(runs(fl)))
        days += (n_train - half) / 1440.0
        for i in args.inject:
            e = load(i, m)
            fl = flags(rule, a, e["stream"], e["metric_surprise"], e["forest"], f_thr)
            events = [
                Event(int(x), int(y), "x")
                for x, y in zip(e["event_start"], e["event_end"], strict=True)
            ]
            counts = detection_counts(events, fl)
            on_event[i][0] += counts.flagged_runs_on_event
            on_event[i][1] += counts.flagged_runs
            found[i] += counts.events_detected
            n_events[i] += len(events)
            brief = [ev for ev in events if ev.end - ev.start < 5]
            short[i][0] += detection_counts(brief, fl).events_detected
            short[i][1] += len(brief)
        chosen = [(a, c)]
        if args.test:
            at, ct = choose(
                chooser, joints, args.order, train, s[:n_train], per[:n_train], kw, grid
            )
            chosen.append((at, ct))
            f_thr = float(np.quantile(d["test_forest_train"], 1.0 - ct))
            fl = flags(rule, at, s[n_train:], per[n_train:], d["test_forest"], f_thr)
            events = [
                Event(int(x), int(y), "anomaly")
                for x, y in zip(d["event_start"], d["event_end"], strict=True)
            ]
            total = total + detection_counts(events, fl)
            attribute(raw, fl, per[n_train:], tops, truths)
        choices.append((m, chosen))
    inj = " ".join(f"{found[i] / n_events[i]:.2f}" for i in args.inject)
    inj += " P " + " ".join(f"{on_event[i][0] / on_event[i][1]:.2f}" for i in args.inject)
    inj += " (<= 5 rows: " + " ".join(f"{short[i][0]}/{short[i][1]}" for i in args.inject) + ")"
    syn = load(args.cache, "synthetic")
    syn_flags = flags(
        rule,
        joints[0],
        syn["stream"],
        syn["metric_surprise"],
        syn["forest"],
        float(syn["threshold"]),
    )
    r = evaluate_labels(syn["labels"], syn_flags)
    inj += f" | synth P {r['overall']['event_precision']:.3f} R " + " ".join(
        f"{v['event_recall']:.2f}" for v in r["scenarios"].values()
    )
    print(f"{rule}, joints {joints} order {args.order}, forest {kw}")
    print(f"  (joint cut-off, contamination) per machine, design[, test]: {choices}")
    print(f"  train FI/host-day {fi / days:.3f} {per_machine} | injected R {inj}")
    if args.test:
        print(
            f"  TEST point F1 {total.f1:.3f} event P {total.event_precision:.3f} "
            f"R {total.event_recall:.3f} ({total.events_detected}/{total.events}, "
            f"{total.flagged_runs} runs) hit@3 "
            f"{attribution_hits(tops, truths, n_metrics=len(METRICS), k=3).hit_rate:.3f}"
        )


if __name__ == "__main__":
    main()

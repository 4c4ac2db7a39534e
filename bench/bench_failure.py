"""Failure prediction: trained on one synthetic month, scored on another seed's month; SMD.

Run: ``python -m bench.bench_failure [--skip-smd] [--smd-only] [--consecutive 3]
[--features breach,previous]``.

``--features``: the feature sets to train and score in the same run, in order: ``breach``
(the default spec: look-back features and the breach features) and ``previous`` (the spec
before the breach features: ``FeatureSpec.for_metrics(..., breach=())``).

Synthetic: trained on ``SyntheticDataGenerator(seed=42)`` 30 days, scored on seed 7's 30 days
(the month after). Warnings are counted as the service raises them (``evaluation``): open
after ``--consecutive`` rows in a row over the threshold (any horizon), closed after as many
under. The three baselines run in the same pass with the same rule: the trend breach (a
linear 15-minute trend reaching the catalogue alert line within 60 minutes, standing in for
the forecaster), the streaming anomaly detector (likelihood >= 0.999, warmed on the training
month) and persistence (a condition's metric over 80 % of its line).

SMD: per machine, trained on the train half (taken as normal) and the first half of the
labelled test half, scored on the second half; the labelled anomalies are the failure
states. Baseline lines: each metric's maximum over the train half.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import lightgbm as lgb
import numpy as np
import pandas as pd

from bench.bench_smd import MACHINES, METRICS, data_dir, load
from services.trainer.failure.baselines import anomaly_over
from services.trainer.failure.definition import FailureDefinition, state_from_events
from services.trainer.failure.features import FeatureSpec
from services.trainer.failure.model import HostHistory, TrainParams, history_from_frame, train
from services.trainer.failure.report import ScoredHistory, evaluate
from services.trainer.synthetic.generator import SyntheticDataGenerator

TARGETS = {"memory_leak": 30.0, "cpu_spike": 10.0, "error_storm": 2.5}
START = datetime(2026, 1, 1, tzinfo=UTC)


def line(name: str, s: dict) -> str:
    kinds = " | ".join(
        f"{k} (n={v['events']}) {v['warned_by_target']:.2f} (any {v['warned']:.2f}) med "
        + (f"{v['median_lead_min']:.0f}" if v["median_lead_min"] is not None else "-")
        for k, v in s["per_kind"].items()
    )
    precision = "-" if s["precision"] is None else f"{s['precision']:.3f}"
    per_day = "-" if s["false_per_host_day"] is None else f"{s['false_per_host_day']:.2f}"
    return (
        f"  {name:14s} P {precision} false/host-day {per_day} warnings {s['warnings']:4d} | {kinds}"
    )


def show(ev: dict) -> None:
    print(
        "  PR-AUC "
        + ", ".join(
            f"{h} min {v['pr_auc']:.3f} (base rate {v['base_rate']:.3f})"
            for h, v in ev["pr_auc"].items()
        )
    )
    print(line("model (any h)", ev["model"]))
    for h, s in ev["per_horizon"].items():
        print(line(f"  {h} min only", s))
    for name, s in ev["baselines"].items():
        print(line(name, s))


def feature_spec(variant: str, metrics, conditions, **kw) -> FeatureSpec:
    if variant == "previous":
        return FeatureSpec.for_metrics(metrics, conditions, breach=(), **kw)
    if variant == "breach":
        return FeatureSpec.for_metrics(metrics, conditions, **kw)
    raise SystemExit(f"unknown feature set {variant!r} (breach, previous)")


def synthetic(consecutive: int, variants: list[str]) -> None:
    train_df = SyntheticDataGenerator(seed=42).generate_full_training_set(30, start=START)
    test_df = SyntheticDataGenerator(seed=7).generate_full_training_set(
        30, start=START + timedelta(days=30)
    )
    hist, test = history_from_frame(train_df, host="s42"), history_from_frame(test_df, host="s7")
    params = TrainParams(consecutive=consecutive)
    # the anomaly baseline, warmed on the training month as a running service would be
    t0 = time.perf_counter()
    both_t = np.concatenate([hist.times, test.times])
    both_x = np.vstack([hist.values, test.values])
    flags = anomaly_over(both_t, both_x, hist.metrics)[len(hist.times) :]
    anomaly_s = time.perf_counter() - t0
    for variant in variants:
        print(f"== features: {variant}")
        spec = feature_spec(variant, hist.metrics, FailureDefinition().conditions)
        synthetic_one(hist, test, test_df, spec, params, flags, anomaly_s, variant)


def synthetic_one(hist, test, test_df, spec, params, flags, anomaly_s, variant) -> None:
    consecutive = params.consecutive
    train([hist], spec=spec, params=params)  # compiles and caches the feature kernel
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        model = train([hist], spec=spec, params=params)
        times.append(time.perf_counter() - t0)
    print(
        f"training, 30 days of one host ({len(hist.times):,} samples, 3 horizons, "
        f"{len(spec.names)} features included): {min(times):.2f} s best / "
        f"{np.median(times):.2f} s median of 3"
    )
    for h in model.horizons:
        v = h.validation
        print(
            f"  {h.horizon_min} min: threshold {h.threshold:.3f}, {h.booster.num_trees()} trees, "
            f"validation warnings precision {v['precision']:.3f} (lower bound "
            f"{v['precision_lower_bound']:.3f}), events warned {v['event_recall']:.2f}"
        )
    speed(model, test)
    ev = evaluate(
        model,
        [ScoredHistory(test, labels=test_df["label"].to_numpy(), anomaly_over=flags)],
        consecutive=consecutive,
        lead_targets=TARGETS,
    )
    print(f"scored on seed 7's month (anomaly baseline streamed in {anomaly_s:.0f} s)")
    print(f"  rule: {ev['rule']}")
    print("  per kind: share warned by its target lead (memory_leak 30 min, cpu_spike 10 min,")
    print(
        "  error_storm 2.5 min = before the storm's first sample over the line), any lead, median"
    )
    show(ev)
    with open(f"/tmp/bench_failure_synthetic_{variant}.json", "w") as f:
        json.dump(ev, f, indent=1)


def speed(model, test: HostHistory) -> None:
    """One prediction from the host's last hour: features + three boosters (+ explanations)."""
    for explain, n in ((0, 5000), (3, 1000)):
        wall, cpu = [], []
        for i in range(2000, 2000 + n):
            t, x = test.times[i - 61 : i + 1], test.values[i - 61 : i + 1]
            t0, c0 = time.perf_counter(), time.thread_time()
            model.predict_window(t, x, explain=explain)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        w, c = np.array(wall) * 1e6, np.array(cpu) * 1e6
        print(
            f"one prediction in process (features + 3 boosters"
            f"{', 3 contributions' if explain else ''}), {n} rows: wall p50 "
            f"{np.percentile(w, 50):.0f} us, p99 {np.percentile(w, 99):.0f} us; thread CPU "
            f"time p50 {np.percentile(c, 50):.0f} us, p99 {np.percentile(c, 99):.0f} us"
        )


def smd(consecutive: int, absolute: bool, variant: str) -> None:
    definition = FailureDefinition(conditions=())
    absolute_metrics = METRICS if absolute else None
    print(
        f"SMD, levels {'absolute' if absolute else 'relative to the 60-min mean'}, "
        f"features: {variant} (breach: to the baselines' lines, each metric's train maximum)"
    )
    for machine in MACHINES:
        try:
            data_dir(machine)
        except FileNotFoundError:
            print(f"{machine}: no data")
            continue
        train_half, test_half, raw = load(machine)
        events = [(e["start"], e["end"]) for e in raw]
        state = state_from_events(len(test_half), events)
        cut = len(test_half) // 2

        def history(frame: pd.DataFrame, labels: np.ndarray, host: str) -> HostHistory:
            h = history_from_frame(frame, METRICS, host=host)
            h.state = labels
            return h

        maxima = train_half[METRICS].max()
        minima = train_half[METRICS].min()
        lines = {m: float(maxima[m]) for m in METRICS if maxima[m] > minima[m]}
        # no failure conditions on SMD: the breach lines are the baselines' lines
        breach = [] if variant == "previous" else list(lines.items())
        spec = feature_spec("breach", METRICS, (), absolute=absolute_metrics, breach=breach)
        fit_frame = pd.concat([train_half, test_half.iloc[:cut]], ignore_index=True)
        fit_state = np.concatenate([np.zeros(len(train_half), dtype=bool), state[:cut]])
        fit = history(fit_frame, fit_state, machine)
        scored = history(test_half.iloc[cut:], state[cut:], machine)
        t0 = time.perf_counter()
        model = train(
            [fit],
            definition=definition,
            spec=spec,
            params=TrainParams(consecutive=consecutive, validation_share=0.2),
        )
        fit_s = time.perf_counter() - t0
        both = pd.concat([train_half, test_half], ignore_index=True)
        whole = history_from_frame(both, METRICS)
        flags = anomaly_over(whole.times, whole.values, METRICS)[len(train_half) + cut :]
        ev = evaluate(
            model,
            [ScoredHistory(scored, anomaly_over=flags, lines=lines)],
            consecutive=consecutive,
        )
        n_fit = int(np.sum(np.diff(fit_state.astype(int)) == 1))
        print(
            f"{machine}: {len(spec.names)} features, trained on {len(fit.times):,} rows "
            f"({n_fit} labelled events) in "
            f"{fit_s:.1f} s; thresholds "
            + ", ".join(
                f"{h.horizon_min} min {h.threshold:.3f}"
                f"{'' if h.validation['target_reached'] else ' (target not reached: no warnings)'}"
                for h in model.horizons
            )
        )
        show(ev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--consecutive", type=int, default=3)
    ap.add_argument("--skip-smd", action="store_true")
    ap.add_argument("--smd-only", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="train once, time predictions")
    ap.add_argument("--smd-absolute", action="store_true", help="SMD levels as they are")
    ap.add_argument("--features", default="breach,previous", help="feature sets, in order")
    args = ap.parse_args()
    variants = [v.strip() for v in args.features.split(",") if v.strip()]
    print(f"lightgbm {lgb.__version__}, numpy {np.__version__}")
    if args.speed_only:
        df = SyntheticDataGenerator(seed=42).generate_full_training_set(30, start=START)
        hist = history_from_frame(df)
        speed(train([hist], params=TrainParams(consecutive=args.consecutive)), hist)
        return
    if not args.smd_only:
        synthetic(args.consecutive, variants)
    if not args.skip_smd:
        for variant in variants:
            smd(args.consecutive, args.smd_absolute, variant)


if __name__ == "__main__":
    main()

"""One LightGBM booster per horizon: trained on a time split, warning thresholds for a precision.

Usage::

    model = train([history_from_frame(df)], definition=FailureDefinition())
    p = model.predict_window(recent_times, recent_values, explain=3)
    p.horizons[0].probability, p.horizons[0].warning, p.contributions[0].text

Training splits each host's history by time (never at random): the last
``validation_share`` is validation; training rows stop one horizon before it, so no training
label looks into the validation period. Each horizon's threshold is the lowest whose
precision on validation reaches ``precision_target``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from services.trainer.failure.definition import FailureDefinition, failure_onsets, horizon_labels
from services.trainer.failure.evaluation import SignalReport, score_signal, warning_signal
from services.trainer.failure.fastrow import RowPredictor
from services.trainer.failure.features import FeatureSpec, batch_features, describe, window_features
from shared.arrays import BoolArray, FloatArray
from shared.catalogue import METRIC_NAMES

NEVER = 2.0  # a threshold above every probability: the model warns of nothing
DATASET_PARAMS = {"verbose": -1, "max_bin": 63, "bin_construct_sample_cnt": 10_000}


@dataclass(frozen=True, slots=True)
class TrainParams:
    num_boost_round: int = 200
    early_stopping: int = 20  # rounds without a better validation log-loss
    learning_rate: float = 0.15
    num_leaves: int = 15
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.5
    lambda_l2: float = 10.0
    validation_share: float = 0.25
    precision_target: float = 0.8  # of warnings on validation, raised as the service raises them
    consecutive: int = 3  # rows in a row over the threshold before a warning
    confidence_z: float = 1.0  # the precision's Wilson lower bound (z) must reach the target
    seed: int = 0
    num_threads: int = 1  # OpenMP threads; on a shared, loaded machine more is slower


@dataclass(slots=True)
class HostHistory:
    """A host's samples: epoch seconds, (n, len(metrics)) values; ``state`` from labels if known."""

    times: FloatArray
    values: FloatArray
    metrics: tuple[str, ...]
    state: BoolArray | None = None
    host: str = ""


def history_from_frame(
    df: pd.DataFrame, metrics: Sequence[str] = METRIC_NAMES, *, host: str = ""
) -> HostHistory:
    """A history from a frame with a UTC 'timestamp' column and one column per metric."""
    ts = pd.to_datetime(df["timestamp"], utc=True)
    times = ts.astype("datetime64[ns, UTC]").astype("int64").to_numpy() / 1e9
    values = df[list(metrics)].to_numpy(dtype=np.float64)
    return HostHistory(times, values, tuple(metrics), host=host)


@dataclass(slots=True)
class HorizonModel:
    horizon_min: int
    booster: lgb.Booster
    threshold: float
    validation: dict[str, Any] = field(default_factory=dict)
    row: RowPredictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.row = RowPredictor(self.booster, self.booster.num_feature())


@dataclass(frozen=True, slots=True)
class Contribution:
    feature: str
    value: float
    contribution: float  # log-odds pushed towards failure by this feature
    text: str


@dataclass(frozen=True, slots=True)
class HorizonPrediction:
    horizon_min: int
    probability: float
    threshold: float
    warning: bool


@dataclass(frozen=True, slots=True)
class FailurePrediction:
    horizons: list[HorizonPrediction]
    contributions: list[Contribution]


@dataclass(slots=True)
class FailureModel:
    definition: FailureDefinition
    spec: FeatureSpec
    horizons: list[HorizonModel]
    summary: dict[str, Any] = field(default_factory=dict)

    def predict_row(self, row: FloatArray, *, explain: int = 0) -> FailurePrediction:
        """Probabilities of one feature row (``FeatureSpec.names`` order).

        Each booster's single-row entry point (``fastrow``), one thread: the same numbers as
        ``Booster.predict`` without its per-call setup.
        """
        x = np.ascontiguousarray(row, dtype=np.float64).reshape(1, -1)
        out = []
        for h in self.horizons:
            p = h.row(x[0])
            out.append(HorizonPrediction(h.horizon_min, p, h.threshold, p >= h.threshold))
        contributions: list[Contribution] = []
        if explain > 0:
            lead = max(range(len(out)), key=lambda i: out[i].probability / out[i].threshold)
            contributions = self.explain(x[0], self.horizons[lead].horizon_min, top=explain)
        return FailurePrediction(out, contributions)

    def predict_window(
        self, times: FloatArray, values: FloatArray, *, explain: int = 0
    ) -> FailurePrediction:
        """Probabilities for the last sample of a host's recent samples (its last hour or more)."""
        return self.predict_row(window_features(self.spec, times, values), explain=explain)

    def predict_features(self, features: FloatArray) -> dict[int, FloatArray]:
        """Probabilities of many feature rows, per horizon (minutes)."""
        return {h.horizon_min: np.asarray(h.booster.predict(features)) for h in self.horizons}

    def explain(self, row: FloatArray, horizon_min: int, *, top: int = 3) -> list[Contribution]:
        """The features that pushed this row's probability up most (LightGBM's pred_contrib)."""
        return self.explain_rows(row.reshape(1, -1), horizon_min, top=top)[0]

    def explain_rows(
        self, rows: FloatArray, horizon_min: int, *, top: int = 3
    ) -> list[list[Contribution]]:
        """``explain`` of each row of a matrix, in one pred_contrib call (the same numbers)."""
        h = next(h for h in self.horizons if h.horizon_min == horizon_min)
        contribs = np.asarray(h.booster.predict(rows, pred_contrib=True, num_threads=1))[:, :-1]
        return [self._top(row, c, top) for row, c in zip(rows, contribs, strict=True)]

    def _top(self, row: FloatArray, contrib: FloatArray, top: int) -> list[Contribution]:
        spec, order = self.spec, np.argsort(-contrib)[:top].tolist()
        return [
            Contribution(spec.names[j], float(row[j]), float(contrib[j]), describe(spec, j, row))
            for j in order
            if contrib[j] > 0
        ]


def lgb_names(spec: FeatureSpec) -> list[str]:
    """Feature names as LightGBM stores them (it refuses JSON punctuation such as ':')."""
    return [n.replace(":", "__") for n in spec.names]


@dataclass(slots=True)
class _Segment:
    """The validation period of one host: rows [lo, hi) of the stacked features."""

    lo: int
    hi: int
    times: FloatArray
    state: BoolArray
    onsets: FloatArray


@dataclass(slots=True)
class _Prepared:
    x: FloatArray
    y: dict[int, BoolArray]
    keep: dict[int, BoolArray]
    is_valid: BoolArray
    train_ok: dict[int, BoolArray]
    segments: list[_Segment]
    rows: int
    onsets: int


def prepare(
    histories: Sequence[HostHistory],
    definition: FailureDefinition,
    spec: FeatureSpec,
    validation_share: float,
) -> _Prepared:
    """Features, labels and the time split of every host's history."""
    xs, valids, onsets_total, offset = [], [], 0, 0
    segments: list[_Segment] = []
    ys: dict[int, list[BoolArray]] = {h: [] for h in definition.horizons_min}
    keeps: dict[int, list[BoolArray]] = {h: [] for h in definition.horizons_min}
    oks: dict[int, list[BoolArray]] = {h: [] for h in definition.horizons_min}
    for hist in histories:
        idx = [hist.metrics.index(m) for m in spec.metrics]
        values = hist.values[:, idx]
        t = hist.times
        state = hist.state
        if state is None:
            state = definition.state(t, hist.values, hist.metrics)
        onsets = failure_onsets(t, state)
        onsets_total += len(onsets)
        xs.append(batch_features(spec, t, values))
        cutoff = t[0] + (t[-1] - t[0]) * (1.0 - validation_share)
        valid = t >= cutoff
        valids.append(valid)
        lo = int(np.argmax(valid)) if valid.any() else len(t)
        in_period = onsets[onsets >= t[lo]] if lo < len(t) else onsets[:0]
        segments.append(_Segment(offset + lo, offset + len(t), t[lo:], state[lo:], in_period))
        offset += len(t)
        for h in definition.horizons_min:
            y, keep = horizon_labels(t, onsets, state, horizon_s=h * 60.0)
            ys[h].append(y)
            keeps[h].append(keep)
            oks[h].append(t + h * 60.0 < cutoff)
    cat = np.concatenate
    return _Prepared(
        x=np.vstack(xs),
        y={h: cat(v) for h, v in ys.items()},
        keep={h: cat(v) for h, v in keeps.items()},
        is_valid=cat(valids),
        train_ok={h: cat(v) for h, v in oks.items()},
        segments=segments,
        rows=sum(len(h.times) for h in histories),
        onsets=onsets_total,
    )


def train(
    histories: Sequence[HostHistory],
    *,
    definition: FailureDefinition | None = None,
    spec: FeatureSpec | None = None,
    params: TrainParams | None = None,
) -> FailureModel:
    """Train one booster per horizon of ``definition`` on the histories (time split per host)."""
    definition = definition or FailureDefinition()
    params = params or TrainParams()
    if not histories:
        raise ValueError("no history to train on")
    if spec is None:
        spec = FeatureSpec.for_metrics(histories[0].metrics, definition.conditions)
    for hist in histories:
        missing = [m for m in spec.metrics if m not in hist.metrics]
        if missing:
            raise ValueError(f"history of host {hist.host!r} lacks metrics {missing}")
    data = prepare(histories, definition, spec, params.validation_share)
    lgb_params = {
        "objective": "binary",
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "lambda_l2": params.lambda_l2,
        "seed": params.seed,
        "deterministic": True,
        "num_threads": params.num_threads,
        "verbose": -1,
    }
    # One binned dataset for every horizon: the rows every horizon may train on.
    train_rows = ~data.is_valid
    for h in definition.horizons_min:
        train_rows &= data.keep[h] & data.train_ok[h]
    if not train_rows.any():
        raise ValueError("no training rows: the histories are too short for the horizons")
    dataset = lgb.Dataset(
        data.x[train_rows],
        label=data.y[definition.horizons_min[0]][train_rows].astype(np.float64),
        feature_name=lgb_names(spec),
        params=DATASET_PARAMS,
        free_raw_data=False,
    ).construct()
    # and one validation set: the rows every horizon may be checked on
    check = data.is_valid.copy()
    for h in definition.horizons_min:
        check &= data.keep[h]
    valid_set = lgb.Dataset(
        data.x[check],
        label=data.y[definition.horizons_min[0]][check].astype(np.float64),
        reference=dataset,
        params=DATASET_PARAMS,
        free_raw_data=False,
    ).construct()
    models = []
    for h in definition.horizons_min:
        dataset.set_label(data.y[h][train_rows].astype(np.float64))
        valid_set.set_label(data.y[h][check].astype(np.float64))
        booster = lgb.train(
            lgb_params,
            dataset,
            num_boost_round=params.num_boost_round,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(params.early_stopping, verbose=False)],
        )
        p = np.asarray(booster.predict(data.x[data.is_valid]))
        p_all = np.full(len(data.x), np.nan)
        p_all[data.is_valid] = p
        threshold, report = choose_threshold(data, h, p_all, params)
        report["train_rows"] = int(train_rows.sum())
        report["train_positives"] = int(data.y[h][train_rows].sum())
        models.append(HorizonModel(h, booster, threshold, report))
    summary = {
        "rows": data.rows,
        "hosts": len(histories),
        "onsets": data.onsets,
        "validation_share": params.validation_share,
        "params": asdict(params),
        "definition": definition.describe(),
    }
    return FailureModel(definition, spec, models, summary)


def choose_threshold(
    data: _Prepared, horizon_min: int, p: FloatArray, params: TrainParams
) -> tuple[float, dict[str, Any]]:
    """The lowest threshold whose warnings on validation reach the precision target (the
    Wilson lower bound of their precision at ``params.confidence_z``).

    Warnings are counted as the service raises them (``evaluation.warning_signal``); without
    a threshold reaching the target (or without positives), ``NEVER``: no warnings.
    """
    valid = data.is_valid & data.keep[horizon_min]
    y, pv = data.y[horizon_min][valid], p[valid]
    report: dict[str, Any] = {
        "precision_target": params.precision_target,
        "validation_rows": int(valid.sum()),
        "validation_positives": int(y.sum()),
    }
    if not y.any() or y.all():
        report.update(threshold=NEVER, target_reached=False, event_recall=None)
        return NEVER, report
    candidates = np.unique(np.quantile(pv, 1.0 - np.geomspace(1e-4, 0.5, 50)))[::-1]
    # (precision's lower bound, threshold, event recall, precision)
    best: tuple[float, float, float, float] | None = None
    chosen: tuple[float, float, float, float] | None = None
    for thr in candidates.tolist():
        total = SignalReport()
        for seg in data.segments:
            rows = warning_signal(p[seg.lo : seg.hi] >= thr, seg.state, k=params.consecutive)
            kinds = ["failure"] * len(seg.onsets)
            total = total + score_signal(
                seg.times, seg.state, seg.onsets, kinds, rows, horizon_s=horizon_min * 60.0
            )
        if total.warnings == 0:
            continue
        precision = total.true_warnings / total.warnings
        # the target must hold with some confidence: few warnings prove little
        sure = wilson_lower(total.true_warnings, total.warnings, params.confidence_z)
        events = total.events
        recall = sum(e.warned for e in events) / len(events) if events else 0.0
        if best is None or sure > best[0]:
            best = (sure, thr, recall, precision)
        if sure >= params.precision_target:
            chosen = (sure, thr, recall, precision)
    if chosen is None:
        # A model that cannot warn at the stated precision warns of nothing (it still gives
        # probabilities); what the best threshold would have done is reported.
        report.update(threshold=NEVER, target_reached=False, event_recall=None)
        if best is not None:
            report.update(best_threshold=best[1], best_precision_lower_bound=best[0])
        return NEVER, report
    sure, threshold, recall, precision = chosen
    flagged = pv >= threshold
    report.update(
        threshold=threshold,
        target_reached=True,
        precision=precision,
        precision_lower_bound=sure,
        event_recall=recall,
        row_precision=float(y[flagged].mean()) if flagged.any() else None,
        row_recall=float(flagged[y].mean()),
        pr_auc=float(average_precision_score(y, pv)),
    )
    return threshold, report


def wilson_lower(hits: int, n: int, z: float) -> float:
    """The Wilson score interval's lower end of a proportion hits / n."""
    if n == 0:
        return 0.0
    p = hits / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - margin) / (1 + z * z / n))

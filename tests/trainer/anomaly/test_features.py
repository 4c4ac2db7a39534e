"""Behaviour of the causal feature extractor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.trainer.anomaly.features import (
    FeatureConfig,
    FeatureExtractor,
    epoch_seconds,
    frame_times,
)
from services.trainer.anomaly.history import RecentHistory

METRICS = ["cpu", "mem", "errors"]


def _frame(n: int = 600, seed: int = 0, start: str = "2024-03-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq="1min", tz="UTC")
    return pd.DataFrame(
        {
            "timestamp": ts,
            "cpu": 40 + 5 * rng.standard_normal(n),
            "mem": 2000 + np.cumsum(rng.standard_normal(n)),
            "errors": rng.poisson(0.2, n).astype(float),
            "label": "normal",
        }
    )


def _online(fx: FeatureExtractor, tail: pd.DataFrame, sample: dict[str, float], ts) -> np.ndarray:
    """Features of one new sample after ``tail``, as the service computes them (RecentHistory)."""
    hist = RecentHistory(fx, capacity=max(len(tail) + 1, 2))
    if len(tail):
        values = tail.reindex(columns=list(fx.metrics)).to_numpy(dtype=np.float64)
        hist.extend(frame_times(tail), values)
    hist.append(sample, ts)
    return hist.features(rows=1).matrix[-1]


def test_fit_learns_metric_columns_and_medians() -> None:
    fx = FeatureExtractor().fit(_frame())
    assert fx.metrics == tuple(METRICS)
    assert fx.training_medians["cpu"] == pytest.approx(40, abs=1.0)


def test_online_features_equal_batch_features() -> None:
    df = _frame(400)
    # Gaps and missing values make the comparison meaningful.
    df = df.drop(index=range(100, 130)).reset_index(drop=True)
    df.loc[200:210, "mem"] = np.nan
    fx = FeatureExtractor(FeatureConfig(min_windows=(15,), max_windows=(60,))).fit(df)
    batch = fx.transform(df).matrix
    for row in (0, 1, 5, 99, 100, 101, 205, 250, len(df) - 1):
        tail = df.iloc[max(0, row - 100) : row]
        sample = {m: float(v) for m, v in df.loc[row, METRICS].items() if pd.notna(v)}
        online = _online(fx, tail, sample, df.loc[row, "timestamp"])
        np.testing.assert_allclose(online, batch[row], rtol=0, atol=1e-9)


def test_recent_history_matches_batch_over_a_long_stream() -> None:
    df = _frame(1500)
    fx = FeatureExtractor().fit(df)
    batch = fx.transform(df).matrix
    hist = RecentHistory(fx)
    times = df["timestamp"]
    for i in range(len(df)):
        hist.append({m: float(df.at[i, m]) for m in METRICS}, times[i])
        if i % 97 == 0 or i == len(df) - 1:
            np.testing.assert_allclose(hist.features().matrix[-1], batch[i], atol=1e-9, rtol=0)


def test_features_are_causal() -> None:
    df = _frame(300)
    fx = FeatureExtractor().fit(df)
    before = fx.transform(df.iloc[:200]).matrix
    changed = df.copy()
    changed.loc[200:, METRICS] = 1e6
    after = fx.transform(changed).matrix[:200]
    np.testing.assert_array_equal(before, after)


def test_no_nan_with_gaps_missing_values_and_missing_columns() -> None:
    train = _frame(500)
    fx = FeatureExtractor().fit(train)
    test = _frame(300, seed=1).drop(columns=["errors"])
    test = test.drop(index=range(50, 250)).reset_index(drop=True)  # a 200-minute gap
    test.loc[0:5, "cpu"] = np.nan
    test.loc[60:70, "mem"] = np.inf
    feats = fx.transform(test)
    assert np.isfinite(feats.matrix).all()
    # A metric absent from the frame takes its training median; leading gaps too.
    assert feats.values[0, 0] == pytest.approx(fx.training_medians["cpu"])
    assert np.allclose(feats.values[:, 2], fx.training_medians["errors"])


def test_a_gap_longer_than_the_look_back_starts_afresh() -> None:
    # A host back after a day away is judged on what it sends now, not against the last
    # values it sent a day ago (at another time of day): the rows after a long gap have the
    # features of the same rows alone, in a batch and online; a short gap carries over.
    df = _frame(700)
    fx = FeatureExtractor(FeatureConfig(min_windows=(15,), max_windows=(60,))).fit(df)
    before, after = df.iloc[:300].copy(), df.iloc[300:].copy()
    after["timestamp"] = after["timestamp"] + pd.Timedelta(hours=22)
    before[METRICS] = before[METRICS] * 3.0  # another level before the gap
    joined = pd.concat([before, after], ignore_index=True)
    alone = fx.transform(after.reset_index(drop=True)).matrix
    batch = fx.transform(joined).matrix
    np.testing.assert_array_equal(batch[300:], alone)
    np.testing.assert_array_equal(batch[:300], fx.transform(before).matrix)
    row = 310  # online: the buffered rows before the gap change nothing
    sample = {m: float(v) for m, v in joined.loc[row, METRICS].items()}
    online = _online(fx, joined.iloc[row - 100 : row], sample, joined.loc[row, "timestamp"])
    np.testing.assert_allclose(online, alone[row - 300], rtol=0, atol=1e-9)
    # A gap within the look-back: the rows after it still see the rows before it.
    short = joined.copy()
    short.loc[300:, "timestamp"] = (
        after["timestamp"].to_numpy() - pd.Timedelta(hours=22) + (pd.Timedelta(minutes=30))
    )
    assert not np.array_equal(fx.transform(short).matrix[300:], alone)


def test_single_series_and_arbitrary_names() -> None:
    df = _frame(200)[["timestamp", "cpu"]].rename(columns={"cpu": "m01"})
    fx = FeatureExtractor().fit(df)
    feats = fx.transform(df)
    assert fx.metrics == ("m01",)
    assert feats.matrix.shape == (200, len(fx.feature_names))


def test_constant_training_metric_contributes_zero() -> None:
    df = _frame(200)
    df["flat"] = 3.0
    fx = FeatureExtractor().fit(df)
    assert [m for m, s in zip(fx.metrics, fx.scales, strict=True) if np.isinf(s)] == ["flat"]
    test = df.copy()
    test["flat"] = 50.0
    assert np.all(fx.transform(test).z[:, fx.metrics.index("flat")] == 0)


def test_rolling_statistics_match_pandas() -> None:
    df = _frame(300)
    cfg = FeatureConfig(
        mean_windows=(5, 15), std_windows=(15,), min_windows=(60,), max_windows=(60,), lags=(5,)
    )
    fx = FeatureExtractor(cfg).fit(df)
    feats = fx.transform(df)
    names = fx.feature_names
    z = pd.Series(feats.z[:, 0])

    def col(name: str) -> np.ndarray:
        return feats.matrix[:, names.index(name)]

    tol = 2e-3  # values are quantised to 1/1024 of a scale unit
    np.testing.assert_allclose(col("cpu:mean_15"), z.rolling(15, min_periods=1).mean(), atol=tol)
    np.testing.assert_allclose(
        col("cpu:std_15"), z.rolling(15, min_periods=1).std(ddof=0), atol=tol
    )
    np.testing.assert_allclose(col("cpu:min_60"), z.rolling(60, min_periods=1).min(), atol=tol)
    np.testing.assert_allclose(col("cpu:max_60"), z.rolling(60, min_periods=1).max(), atol=tol)
    lag = z.shift(5).fillna(z.iloc[0])
    np.testing.assert_allclose(col("cpu:diff_5"), z - lag, atol=tol)


def test_time_features_are_cyclical() -> None:
    df = _frame(1440 * 2)
    fx = FeatureExtractor().fit(df)
    m = fx.transform(df).matrix
    names = fx.feature_names
    hs, hc = m[:, names.index("hour_sin")], m[:, names.index("hour_cos")]
    np.testing.assert_allclose(hs**2 + hc**2, 1.0)
    np.testing.assert_allclose(hs[:1440], hs[1440:], atol=1e-12)


def test_unsorted_input_is_handled_in_input_order() -> None:
    df = _frame(300)
    fx = FeatureExtractor().fit(df)
    shuffled = df.sample(frac=1.0, random_state=1)
    np.testing.assert_array_equal(
        fx.transform(shuffled).matrix, fx.transform(df).matrix[shuffled.index.to_numpy()]
    )


def _spiked(n: int = 400, start: int = 150, length: int = 10) -> pd.DataFrame:
    df = _frame(n)
    df.loc[start : start + length - 1, "cpu"] += 250.0  # about +50 robust scale units
    return df


def test_online_features_equal_batch_features_over_several_rows() -> None:
    df = _spiked(500)
    df = df.drop(index=range(100, 130)).reset_index(drop=True)  # a 30-minute gap
    df.loc[200:210, "mem"] = np.nan
    fx = FeatureExtractor().fit(df)
    batch = fx.transform(df)
    assert np.isfinite(batch.matrix).all()
    for row in (0, 1, 5, 59, 60, 61, 99, 100, 101, 130, 205, 250, len(df) - 1):
        tail = df.iloc[max(0, row - 100) : row]
        sample = {m: float(v) for m, v in df.loc[row, METRICS].items() if pd.notna(v)}
        online = _online(fx, tail, sample, df.loc[row, "timestamp"])
        np.testing.assert_allclose(online, batch.matrix[row], rtol=0, atol=1e-9)
    hist = RecentHistory(fx)
    for i in range(len(df)):
        hist.append({m: float(df.at[i, m]) for m in METRICS}, df.at[i, "timestamp"])
        if i % 37 == 0 or i == len(df) - 1:
            got = hist.features(rows=5)
            np.testing.assert_allclose(
                got.matrix, batch.matrix[max(0, i - 4) : i + 1], atol=1e-9, rtol=0
            )


def test_the_last_row_fast_path_equals_the_full_computation_bit_for_bit() -> None:
    rng = np.random.default_rng(12)
    n = 200
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-05-01", periods=n, freq="1min", tz="UTC"),
            "a": rng.normal(50, 10, n),
            "b": rng.exponential(2.0, n),
            "c": np.full(n, 3.0),  # constant in training
        }
    )
    configs = [
        FeatureConfig(),
        FeatureConfig(mean_windows=(3, 10), min_windows=(5,), max_windows=(7,), lags=(1, 60)),
        FeatureConfig(mean_windows=(), std_windows=(4,), time_features=False),
    ]
    times = epoch_seconds(frame["timestamp"])
    values = frame[["a", "b", "c"]].to_numpy()
    for cfg in configs:
        fx = FeatureExtractor(cfg).fit(frame)
        for end in (1, 2, 5, 61, 150, 200):  # from a lone sample to a full look-back
            fast = fx.compute(times[:end], values[:end].copy(), tail=1)
            full = fx.compute(times[:end], values[:end].copy())
            for name in ("matrix", "z", "deviation", "baseline", "values", "hour"):
                np.testing.assert_array_equal(getattr(fast, name), getattr(full, name)[-1:])
    # A gap or a missing value takes the general path, with the same answer.
    gappy = times.copy()
    gappy[150:] += 600.0
    holes = values.copy()
    holes[149, 0] = np.nan
    fx = FeatureExtractor().fit(frame)
    for t, v in ((gappy, values), (times, holes)):
        fast = fx.compute(t[:151], v[:151].copy(), tail=1)
        full = fx.compute(t[:151], v[:151].copy())
        np.testing.assert_array_equal(fast.matrix, full.matrix[-1:])

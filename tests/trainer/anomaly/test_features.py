"""Behaviour of the causal feature extractor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.trainer.features import FeatureConfig, FeatureExtractor, RecentHistory, epoch_seconds

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
        online = fx.extract_one(tail, sample, df.loc[row, "timestamp"])
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
    assert fx.constant_metrics == ("flat",)
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


MEDIAN = FeatureConfig(baseline_stat="median")


def _spiked(n: int = 400, start: int = 150, length: int = 10) -> pd.DataFrame:
    df = _frame(n)
    df.loc[start : start + length - 1, "cpu"] += 250.0  # about +50 robust scale units
    return df


def test_median_baseline_ignores_a_short_spike_no_echo() -> None:
    train = _frame(600, seed=3)
    df = _spiked(start=150, length=10)
    end = 159  # last spiked row
    after = slice(end + 6, end + 90)  # the short mean has left the spike
    cpu = 0
    mean_fx = FeatureExtractor().fit(train)
    median_fx = FeatureExtractor(MEDIAN).fit(train)
    mean_dev = mean_fx.transform(df).deviation[after, cpu]
    feats = median_fx.transform(df)
    median_dev = feats.deviation[after, cpu]
    # The mean baseline carries the spike for an hour: normal rows look like a drop, and
    # the deviation climbs back when the spike leaves the window (the echo).
    assert mean_dev.min() < -5.0
    assert mean_dev[-1] > -2.0
    # The median baseline of the previous 60 slots does not move with a 10-slot spike.
    clean = median_fx.transform(_frame(400)).baseline[after, cpu]
    assert np.abs(feats.baseline[after, cpu] - clean).max() < 0.5
    assert np.abs(median_dev).max() < 2.0
    # The spike itself is still a level shift.
    assert feats.deviation[end, cpu] > 20.0


def test_median_baseline_matches_pandas_rolling_median() -> None:
    df = _spiked(300)
    fx = FeatureExtractor(MEDIAN).fit(df)
    feats = fx.transform(df)
    assert fx.feature_names[-5] == "errors:dev_median_60"
    z = pd.Series(feats.z[:, 0])
    expected = z.rolling(60, min_periods=1).median().shift(1).fillna(z.iloc[0])
    np.testing.assert_allclose(feats.baseline[:, 0], expected, atol=2e-3)


def test_online_features_equal_batch_features_with_median_baseline() -> None:
    df = _spiked(500)
    df = df.drop(index=range(100, 130)).reset_index(drop=True)  # a 30-minute gap
    df.loc[200:210, "mem"] = np.nan
    fx = FeatureExtractor(MEDIAN).fit(df)
    batch = fx.transform(df)
    assert np.isfinite(batch.matrix).all()
    for row in (0, 1, 5, 59, 60, 61, 99, 100, 101, 130, 205, 250, len(df) - 1):
        tail = df.iloc[max(0, row - 100) : row]
        sample = {m: float(v) for m, v in df.loc[row, METRICS].items() if pd.notna(v)}
        online = fx.extract_one(tail, sample, df.loc[row, "timestamp"])
        np.testing.assert_allclose(online, batch.matrix[row], rtol=0, atol=1e-9)
    hist = RecentHistory(fx)
    for i in range(len(df)):
        hist.append({m: float(df.at[i, m]) for m in METRICS}, df.at[i, "timestamp"])
        if i % 37 == 0 or i == len(df) - 1:
            got = hist.features(rows=5)
            np.testing.assert_allclose(
                got.matrix, batch.matrix[max(0, i - 4) : i + 1], atol=1e-9, rtol=0
            )


def test_baseline_stat_is_serialised_and_defaults_to_mean() -> None:
    assert FeatureConfig.from_dict(MEDIAN.to_dict()) == MEDIAN
    old = FeatureConfig().to_dict()
    del old["baseline_stat"]  # configurations stored before the option existed
    assert FeatureConfig.from_dict(old).baseline_stat == "mean"
    with pytest.raises(ValueError, match="baseline_stat"):
        FeatureConfig(baseline_stat="mode").validate()  # type: ignore[arg-type]


def test_the_last_row_fast_path_equals_the_full_computation_bit_for_bit() -> None:
    from services.trainer.features import FeatureConfig, FeatureExtractor

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
            fast = fx._compute(times[:end], values[:end].copy(), tail=1)
            full = fx._compute(times[:end], values[:end].copy())
            for name in ("matrix", "z", "deviation", "baseline", "values", "hour"):
                np.testing.assert_array_equal(getattr(fast, name), getattr(full, name)[-1:])
    # A gap or a missing value takes the general path, with the same answer.
    gappy = times.copy()
    gappy[150:] += 600.0
    holes = values.copy()
    holes[149, 0] = np.nan
    fx = FeatureExtractor().fit(frame)
    for t, v in ((gappy, values), (times, holes)):
        fast = fx._compute(t[:151], v[:151].copy(), tail=1)
        full = fx._compute(t[:151], v[:151].copy())
        np.testing.assert_array_equal(fast.matrix, full.matrix[-1:])

"""The short paths of ``POST /predict/anomaly`` give the answers of the long ones: the numpy
forest equals scikit-learn's, a settled history scores as an unsettled one, and the one-read
of a host's newest sample and own threshold returns what they are (real SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from sklearn.ensemble import IsolationForest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as repo
from services.trainer.anomaly.detector import AnomalyDetector
from services.trainer.anomaly.features import FeatureConfig, FeatureExtractor, frame_times
from services.trainer.anomaly.forest import FlatForest
from services.trainer.anomaly.history import RecentHistory
from services.trainer.anomaly.peek import score_next
from services.trainer.anomaly.repository_predict import PREDICT_READ, PredictReader, predict_reads
from shared.catalogue import METRIC_NAMES
from shared.clock import utc, utcnow
from tests.trainer.anomaly.test_anomaly_service import samples, store
from tests.trainer.anomaly.test_detector import _arrays, _history, _trained
from tests.trainer.anomaly.test_host_scoring import fast_settings, running, wait_scored

__all__ = ["fast_settings", "running"]  # fixtures used here


# -- the numpy forest -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_numpy_forest_equals_scikit_learn_on_leaves_of_several_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2000, 7))
    x[:600] = np.round(x[:600])  # repeated rows: leaves that cannot split hold several
    x[600:900] = x[0]
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(x)
    several = sum(
        int((e.tree_.n_node_samples[e.tree_.children_left < 0] > 1).sum())
        for e in forest.estimators_
    )
    assert several > 500  # the path-length correction c(n) is exercised
    rows = np.vstack(
        [rng.normal(size=(3000, 7)) * 3, x[:1000], np.round(rng.normal(size=(500, 7)))]
    )
    flat = FlatForest.from_forest(forest)
    np.testing.assert_allclose(
        flat.score_samples(rows), forest.score_samples(rows), rtol=0, atol=1e-12
    )
    for row in rows[:200]:  # one row at a time, as predict scores it
        one = row[None, :]
        assert flat.score_samples(one)[0] == pytest.approx(
            forest.score_samples(one)[0], rel=0, abs=1e-12
        )


def test_the_numpy_forest_equals_scikit_learn_on_a_trained_detectors_features() -> None:
    det, df = _trained()
    assert det.forest is not None and det.flat is not None
    x = det.standardise(det.extractor.transform(df).matrix)
    for rows in (x, x[:50] * 40.0):
        np.testing.assert_allclose(
            det.flat.score_samples(rows), det.forest.score_samples(rows), rtol=0, atol=1e-12
        )


# -- features of the last row ------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        FeatureConfig(mean_windows=(3, 10), min_windows=(5,), max_windows=(7,), lags=(1, 60)),
        FeatureConfig(mean_windows=(), std_windows=(4,), time_features=False, interval_s=5.0),
    ],
)
def test_the_last_row_on_an_irregular_grid_equals_the_full_computation_bit_for_bit(
    config: FeatureConfig,
) -> None:
    rng = np.random.default_rng(21)
    n = 400
    # steps of 0 to 3 slots, some longer than the look-back, some samples in the same slot
    steps = rng.choice([0.4, 1.0, 1.0, 2.0, 3.0, 1.7], size=n) * config.interval_s
    steps[[120, 300]] = (config.lookback + 5) * config.interval_s
    times = 1.7e9 + np.cumsum(steps)
    values = np.column_stack([rng.normal(50, 10, n), rng.exponential(2.0, n), np.full(n, 3.0)])
    values[rng.random((n, 3)) < 0.05] = np.nan  # missing values, forward filled
    values[250, 1] = np.inf
    frame = pd.DataFrame({"a": values[:, 0], "b": values[:, 1], "c": values[:, 2]})
    fx = FeatureExtractor(config).fit(frame.iloc[:200].fillna(1.0))
    for end in (1, 2, 3, 30, 62, 121, 122, 150, 299, 301, 302, 399, 400):
        fast = fx.compute(times[:end], values[:end].copy(), tail=1)
        full = fx.compute(times[:end], values[:end].copy())
        for name in ("matrix", "z", "deviation", "baseline", "values", "hour", "run_index"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(full, name)[-1:])


# -- settling a host's history --------------------------------------------------------


def _extended(det: AnomalyDetector, df: pd.DataFrame, until: int, more: int) -> RecentHistory:
    """A history seeded up to row ``until``, then extended by ``more`` rows as the scoring
    loop extends a predict history: appended, not folded, not scored."""
    hist = _history(det, df.iloc[:until])
    hist.extend(*_arrays(det, df.iloc[until : until + more]))
    assert hist.unfolded == min(more, hist.capacity)
    assert bool(np.isnan(hist.scores()[-1])) == (more > 0)
    return hist


@pytest.mark.parametrize("more", [0, 1, 7, 45, 150])
def test_a_settled_history_scores_the_next_sample_exactly_as_an_unsettled_one(more: int) -> None:
    det, df = _trained()
    metrics = list(det.metrics)
    until = 2700
    times = frame_times(df)
    for i, gap in ((until + more, 0.0), (until + more, 3600.0), (until + more + 1, 0.0)):
        sample = {m: float(df.at[i, m]) * 1.5 for m in metrics}
        at = float(times[i]) + gap  # the next minute, or an hour later (another hour)
        plain = det.score_sample(
            sample, timestamp=at, history=_extended(det, df, until, more).copy(), threshold=0.9
        )
        settled_hist = _extended(det, df, until, more)
        det.settle(settled_hist, at=at)
        det.settle(settled_hist, at=at)  # a second settle changes nothing
        assert settled_hist.unfolded == 0
        assert not np.isnan(settled_hist.scores()[-det.smoothing :]).any()
        settled = det.score_sample(sample, timestamp=at, history=settled_hist.copy(), threshold=0.9)
        assert _same(settled.score, plain.score)
        assert np.isnan(settled.score) == (gap > 120.0)  # after a gap the forest abstains
        assert settled.contributions == plain.contributions


@pytest.mark.parametrize("more", [0, 1, 45, 150])
def test_the_next_samples_score_without_a_copy_equals_score_sample_on_a_copy(more: int) -> None:
    det, df = _trained()
    metrics = list(det.metrics)
    until = 2700
    times = frame_times(df)
    rng = np.random.default_rng(more)
    cases = [(0.0, 1.0), (30.0, 1.0), (60.0, 1.5), (300.0, 1.0), (3600.0, 1.5), (7 * 60.0, 4.0)]
    gaps, factors = rng.uniform(0, 9000, 6), rng.uniform(0, 3, 6)
    cases += [(float(g), float(f)) for g, f in zip(gaps, factors, strict=True)]
    i = until + more - 1
    for gap, factor in cases:
        sample = {m: float(df.at[i + 1, m]) * factor for m in metrics}
        at = float(times[i]) + gap  # the same second, a later minute or hour, past a gap
        hist = _extended(det, df, until, more)
        det.settle(hist, at=at)
        kept = (hist.arrays()[0].copy(), hist.arrays()[1].copy(), hist.scores().copy())
        expected = det.score_sample(sample, timestamp=at, history=hist.copy(), threshold=0.9)
        row = np.array([sample[m] for m in metrics])
        assert _same(score_next(det, hist, row, at), expected.score), (gap, factor)
        # The history is as it was.
        np.testing.assert_array_equal(hist.arrays()[0], kept[0])
        np.testing.assert_array_equal(hist.arrays()[1], kept[1])
        np.testing.assert_array_equal(hist.scores(), kept[2])
    # A full history (the append drops its oldest sample) and a one-sample history.
    for frame in (df.iloc[:-1], df.iloc[:1]):
        hist = _history(det, frame)
        at = float(frame_times(frame)[-1]) + 60.0
        det.settle(hist, at=at)
        sample = {m: float(df[m].iloc[-1]) for m in metrics}
        expected = det.score_sample(sample, timestamp=at, history=hist.copy(), threshold=0.9)
        assert _same(
            score_next(det, hist, np.array([sample[m] for m in metrics]), at), expected.score
        )
    # Samples 20 s apart: the whole buffer lies inside the look-back, so the sample the
    # append drops would have counted.
    _times, values = _arrays(det, df.iloc[:400])
    hist = det.new_history()
    start = 1.7e9 + 20.0  # 40 s into a minute: the oldest sample is alone in its minute
    hist.extend(start + 20.0 * np.arange(400), values * rng.uniform(0.5, 1.5, values.shape))
    at = start + 20.0 * 400
    det.settle(hist, at=at)
    expected = det.score_sample(sample, timestamp=at, history=hist.copy(), threshold=0.9)
    assert _same(score_next(det, hist, np.array([sample[m] for m in metrics]), at), expected.score)


def _same(a: float, b: float) -> bool:
    """Equal, or both NaN (the forest abstains on both paths)."""
    return a == b or (np.isnan(a) and np.isnan(b))


def test_the_next_sample_needs_a_settled_history_and_a_time_not_before_it() -> None:
    det, df = _trained()
    hist = _extended(det, df, 2700, 5)
    row = df.loc[2705, list(det.metrics)].to_numpy(dtype=float)
    newest = float(hist.arrays()[0][-1])
    with pytest.raises(ValueError, match="settle"):
        score_next(det, hist, row, newest + 60.0)
    det.settle(hist, at=newest + 60.0)
    with pytest.raises(ValueError, match="precede"):
        score_next(det, hist, row, newest - 1.0)


def test_settling_keeps_the_samples_and_the_online_scores() -> None:
    det, df = _trained()
    hist = _extended(det, df, 2800, 60)
    times, values = (a.copy() for a in hist.arrays())
    det.settle(hist, at=float(frame_times(df)[2860]))
    assert np.array_equal(hist.arrays()[0], times)
    assert np.array_equal(hist.arrays()[1], values, equal_nan=True)
    batch = det.score_frame(df)
    metrics = list(det.metrics)
    for i in range(2860, 2870):  # the settled history goes on scoring as the batch does
        res = det.score_sample(
            {m: float(df.at[i, m]) for m in metrics},
            timestamp=df.at[i, "timestamp"],
            history=hist,
            threshold=0.9,
        )
        assert res.score == pytest.approx(batch.score[i], abs=1e-9)


def test_settling_an_empty_history_does_nothing() -> None:
    det, _df = _trained()
    hist = det.new_history()
    det.settle(hist, at=1.7e9)
    assert len(hist) == 0 and hist.unfolded == 0


# -- one read: the newest fresh sample and the host's own threshold ----------------------


async def test_the_predict_read_gives_the_newest_sample_in_the_window_and_the_own_threshold(
    engine: AsyncEngine,
) -> None:
    start = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=30)
    frame = samples(start, 5)
    frame.loc[frame.index[-1], "error_rate"] = np.nan  # stored as NULL
    await store(engine, frame, "p")
    await store(engine, samples(start, 6), "q")  # another host's newer sample
    newest = frame["timestamp"].iloc[-1].to_pydatetime()
    async with engine.connect() as conn:
        row, own = await predict_reads(
            conn, host="p", not_before=newest - timedelta(minutes=3), not_after=newest
        )
        assert own is None
        assert row is not None and utc(row[repo.TIMESTAMP]) == newest
        assert row[repo.HOST] == "p"
        names = [c.name for c in repo.SAMPLE_COLUMNS]
        assert row[names.index("error_rate")] is None
        assert row[names.index("cpu_usage_percent")] == pytest.approx(
            frame["cpu_usage_percent"].iloc[-1]
        )
        # A window that ends before the newest sample: the one before it.
        row, _ = await predict_reads(
            conn,
            host="p",
            not_before=newest - timedelta(minutes=3),
            not_after=newest - timedelta(seconds=1),
        )
        assert row is not None and utc(row[repo.TIMESTAMP]) == newest - timedelta(minutes=1)
        # Nothing in the window: no sample, and still the threshold (none yet).
        row, own = await predict_reads(
            conn, host="p", not_before=newest + timedelta(seconds=1), not_after=utcnow()
        )
        assert row is None and own is None
    async with engine.begin() as conn:
        await repo.save_threshold(conn, _threshold_row("p", 0.99931))
    async with engine.connect() as conn:
        row, own = await predict_reads(
            conn, host="p", not_before=newest + timedelta(seconds=1), not_after=utcnow()
        )
        assert row is None and own == 0.99931
        _row, other = await predict_reads(
            conn, host="q", not_before=newest - timedelta(minutes=3), not_after=utcnow()
        )
        assert other is None


async def test_the_predict_read_returns_what_sqlalchemy_returns_for_the_statement(
    engine: AsyncEngine,
) -> None:
    # The read goes to the driver directly: the same row, converted the same way.
    start = utcnow().replace(second=0, microsecond=123456) - timedelta(minutes=30)
    frame = samples(start, 5)
    frame.loc[frame.index[-1], "active_requests"] = np.nan
    await store(engine, frame, "p")
    async with engine.begin() as conn:
        await repo.save_threshold(conn, _threshold_row("p", 0.9991))
    newest = frame["timestamp"].iloc[-1].to_pydatetime()
    for host, lo, hi in (
        ("p", newest - timedelta(minutes=3), newest),
        ("p", newest + timedelta(seconds=1), utcnow()),
        ("q", newest - timedelta(minutes=3), newest),
    ):
        params = {"host": host, "not_before": lo, "not_after": hi}
        async with engine.connect() as conn:
            expected = tuple((await conn.execute(PREDICT_READ, params)).one())
            sample, own = await predict_reads(conn, host=host, not_before=lo, not_after=hi)
        assert own == expected[0]
        assert (sample if sample is not None else (None,) * (len(expected) - 1)) == expected[1:]


async def test_the_kept_connection_sees_every_commit_and_survives_losing_its_connection(
    engine: AsyncEngine,
) -> None:
    start = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=30)
    frame = samples(start, 6)
    await store(engine, frame.iloc[:5], "k")
    times = [t.to_pydatetime() for t in frame["timestamp"]]
    reader = PredictReader(engine)
    try:
        window = {"host": "k", "not_before": start, "not_after": utcnow()}
        row, own = await reader.read(**window)
        assert row is not None and utc(row[repo.TIMESTAMP]) == times[4] and own is None
        # Written on other connections after the first read: the next read sees both.
        await store(engine, frame.iloc[5:], "k")
        async with engine.begin() as conn:
            await repo.save_threshold(conn, _threshold_row("k", 0.9993))
        row, own = await reader.read(**window)
        assert row is not None and utc(row[repo.TIMESTAMP]) == times[5] and own == 0.9993
        if engine.dialect.name == "postgresql":
            # The server drops every other connection (a restart, a failover): the read on the
            # kept one fails, and the next one reads on a new connection.
            async with engine.connect() as conn:
                killed = await conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                assert killed.scalar_one() >= 1
            with pytest.raises(Exception):  # noqa: B017, PT011 - the driver's own error
                await reader.read(**window)
            row, own = await reader.read(**window)
            assert row is not None and utc(row[repo.TIMESTAMP]) == times[5] and own == 0.9993
    finally:
        await reader.close()
    await reader.close()  # closing twice is harmless


async def test_when_the_loops_own_sqlite_read_cannot_open_the_file_the_pooled_way_reads(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("the read on the event loop is SQLite's")
    start = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=30)
    frame = samples(start, 3)
    await store(engine, frame, "b")  # leaves a pooled connection open on the file
    newest = frame["timestamp"].iloc[-1].to_pydatetime()
    reader = PredictReader(engine)
    path = str(engine.url.database)
    moved = str(tmp_path / "moved.db")
    os.replace(path, moved)  # open connections keep reading it; a new one cannot open it
    try:
        row, _own = await reader.read(host="b", not_before=start, not_after=utcnow())
        assert row is not None and utc(row[repo.TIMESTAMP]) == newest
        assert path not in {str(p) for p in Path(path).parent.iterdir()}  # none created
    finally:
        os.replace(moved, path)
        await reader.close()


async def test_predict_answers_with_the_hosts_own_threshold_and_fills_from_the_read(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    _app, client = running
    start = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=20)
    frame = samples(start, 10)
    frame.loc[frame.index[-1], "error_rate"] = np.nan
    await store(engine, frame, "own")
    async with engine.begin() as conn:
        await repo.save_threshold(conn, _threshold_row("own", 0.99931))
    newest = frame["timestamp"].iloc[-1]
    body = {"cpu_usage_percent": 25.0, "host": "own"}
    at = (newest + timedelta(seconds=30)).isoformat()
    answer = (await client.post("/predict/anomaly", json={**body, "timestamp": at})).json()
    assert answer["threshold"] == 0.99931
    assert pd.Timestamp(answer["filled_from"]) == newest
    assert set(answer["filled_metrics"]) == set(METRIC_NAMES) - {"cpu_usage_percent", "error_rate"}
    assert answer["missing_metrics"] == ["error_rate"]
    other = (await client.post("/predict/anomaly", json={**body, "host": "other"})).json()
    assert other["threshold"] == _app.state.settings.anomaly_threshold


async def test_predict_leaves_out_a_per_metric_state_still_learning_the_stored_samples(
    running: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    # A host whose stored samples the scoring loop has not learned yet (a history just
    # generated or imported): its per-metric state is from another time, and scored a normal
    # sample 1.0 while a generated month was being learned. Predict leaves it out until the
    # loop catches up.
    app, client = running
    start = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=60)
    await store(engine, samples(start, 20), "lagging")
    await wait_scored(engine, "lagging", 20)
    app.state.settings.scoring_interval = 3600.0  # no further pass during the test
    await asyncio.sleep(0.3)  # a pass already under way ends
    later = samples(start + timedelta(minutes=20), 40)
    await store(engine, later, "lagging")
    newest = later["timestamp"].iloc[-1]
    body = {"host": "lagging", "cpu_usage_percent": 25.0, "timestamp": newest.isoformat()}
    answer = (await client.post("/predict/anomaly", json=body)).json()
    assert answer["models"]["per_metric"] is False, answer
    assert answer["per_metric_score"] == 0.0 and answer["top_metrics"] == []
    assert answer["learning"] is True and answer["is_anomaly"] is False
    await app.state.anomaly.scoring.loop.run_once()  # caught up: it scores again
    await wait_scored(engine, "lagging", 60)
    answer = (await client.post("/predict/anomaly", json=body)).json()
    assert answer["models"]["per_metric"] is True and answer["top_metrics"]


def _threshold_row(host: str, threshold: float) -> dict[str, object]:
    return {
        "host": host,
        "threshold": threshold,
        "lower": None,
        "upper": None,
        "verdicts": 0,
        "precision_before": None,
        "precision_after": None,
        "history": [],
        "updated_at": utcnow(),
    }

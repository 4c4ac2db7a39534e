"""Failure prediction in the trainer: training runs, activation, predictions, the scoring loop.

Usage (lifespan): ``svc = FailureService(settings, engine, notifier, training_pool=pool)``;
``await svc.start()``; ``app.state.loops += svc.loops``; ...; ``await svc.stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from datetime import UTC, datetime

import numpy as np
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from services.trainer.anomaly import repository as samples
from services.trainer.anomaly.scoring import SYNTHETIC_HOST
from services.trainer.failure import artifact
from services.trainer.failure import repository as repo
from services.trainer.failure.model import FailureModel, FailurePrediction, TrainParams
from services.trainer.failure.scoring import LOOKBACK_ROWS, FailureScorer, contribution_dicts
from services.trainer.failure.training import (
    MODEL_NAME,
    MODEL_TYPE,
    FailureOutcome,
    activation_decision,
)
from services.trainer.failure.window import LOOKBACK_S, LatestWindows
from services.trainer.failure.worker import FailureTrainingJob, train_in_worker
from services.trainer.synthetic.generator import SyntheticDataGenerator
from services.trainer.synthetic.service import HOST_LOCKS, store
from shared import registry
from shared.active_model import (
    ActiveModel,
    ActiveModelHolder,
    load_then_start,
    stop_loops,
    store_version,
)
from shared.catalogue import METRIC_NAMES
from shared.clock import utcnow
from shared.errors import Conflict
from shared.incidents.notifier import Notifier
from shared.loops import BackgroundLoop
from shared.schemas.failure import (
    FailurePredictionList,
    FailurePredictionQuery,
    PredictFailureRequest,
    TrainFailureRequest,
    TrainFailureResponse,
)
from shared.settings import Settings
from shared.workers import TRAINING_SLACK, give_up_after, run_in

log = logging.getLogger("autofix_ml.failure")

MIN_HISTORY_SAMPLES = 7 * 1440  # a week at one a minute: enough failures to learn from
STALE_INTERVALS = 3  # a window is served while the anomaly loop caught up this recently
_JSON = orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY  # datetimes as pydantic writes them
NO_MODEL = "No failure predictor trained yet: POST /api/ml/train/failure-predictor first."
NO_MODEL_FOR = (
    "No failure predictor for host {host}: neither its own nor a fleet model is trained; "
    'POST /api/ml/train/failure-predictor with {{"host": "{host}"}} (a week of its samples) '
    "or with {{}} (a fleet model for every host)"
)


class FailureService:
    """The active failure predictors of the trainer and everything done with them."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        notifier: Notifier,
        *,
        training_pool: Executor,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.training_pool = training_pool
        self.training = False
        self.models: ActiveModelHolder[FailureModel] = ActiveModelHolder(MODEL_NAME, artifact.load)
        self.scorer = FailureScorer(settings, engine, notifier, self.models)
        # Each host's last hour, fed by the anomaly scoring loop (``ScoringLoop.observers``).
        self.windows = LatestWindows(stale_after=STALE_INTERVALS * settings.scoring_interval)
        self.loops: list[BackgroundLoop] = [self.scorer.loop]

    async def start(self) -> None:
        await load_then_start(self.engine, self.models, self.loops)

    async def stop(self) -> None:
        await stop_loops(self.loops)

    # -- training and activation ---------------------------------------------------

    async def train(self, body: TrainFailureRequest) -> TrainFailureResponse:
        if self.training:
            raise Conflict("a failure predictor is already training; try again when it is done")
        self.training = True
        try:
            # Bounded as a whole (the training process has its own timeout), so that a step
            # that never returns cannot leave "already training" for good.
            async with give_up_after(
                self.settings.training_timeout + TRAINING_SLACK, "the failure predictor training"
            ):
                return await self._train(body)
        finally:
            self.training = False

    async def _hosts(self, body: TrainFailureRequest) -> list[str]:
        async with self.engine.connect() as conn:
            if body.host is not None:
                count = await samples.count_samples(
                    conn, host=body.host, start=body.start, end=body.end
                )
                return [body.host] if count >= MIN_HISTORY_SAMPLES else []
            found = await samples.hosts_with_history(conn, min_samples=MIN_HISTORY_SAMPLES)
        # The fleet model is of real hosts: the synthetic host is trained on by itself.
        return [host for host, _n in found if host != SYNTHETIC_HOST]

    async def _train(self, body: TrainFailureRequest) -> TrainFailureResponse:
        started = time.perf_counter()
        if body.start and body.end and body.start > body.end:
            raise Conflict("start is after end")
        start, end = body.start, body.end
        hosts = await self._hosts(body)
        scope: str | None = body.host
        generated = 0
        if not hosts:
            if not body.use_synthetic:
                raise Conflict(
                    "history too short: "
                    + (f"host {body.host} has fewer than" if body.host else "no host has")
                    + f" {MIN_HISTORY_SAMPLES} samples (7 days at one a minute) in the range:"
                    " collect more. use_synthetic=true does not add to a host's samples: it "
                    f"trains the host {SYNTHETIC_HOST!r} instead, on its stored samples if it "
                    f"has 7 days of them, else on {body.synthetic_days} days generated first."
                )
            hosts, scope = [SYNTHETIC_HOST], SYNTHETIC_HOST
            async with self.engine.connect() as conn:
                stored = await samples.count_samples(
                    conn, host=SYNTHETIC_HOST, start=start, end=end
                )
            if stored < MIN_HISTORY_SAMPLES:  # else its stored samples are trained on again
                gen = SyntheticDataGenerator(seed=body.seed)
                frame = await asyncio.to_thread(gen.generate_full_training_set, body.synthetic_days)
                async with HOST_LOCKS.hold(SYNTHETIC_HOST):
                    generated = await store(self.engine, frame, host=SYNTHETIC_HOST)
                start, end = frame["timestamp"].iloc[0].to_pydatetime(), None
        active = self.models.get(host=scope)
        active_artifact: tuple[bytes, str] | None = None
        if active is not None:
            async with self.engine.connect() as conn:
                blob, _fmt, sha = await registry.load_artifact(conn, active.id)
            active_artifact = (blob, sha)
        params = TrainParams(
            num_boost_round=body.num_boost_round,
            precision_target=body.precision_target,
            consecutive=self.settings.failure_consecutive,
        )
        job = FailureTrainingJob(
            database_url=self.engine.url.render_as_string(hide_password=False),
            hosts=tuple(hosts),
            start=start,
            end=end,
            horizons=tuple(body.horizons),
            params=params,
            active_artifact=active_artifact,
        )
        try:
            outcome: FailureOutcome = await run_in(self.training_pool, train_in_worker, job)
        except ValueError as exc:
            raise Conflict(f"cannot train a failure predictor: {exc}") from None
        activate, reason = activation_decision(
            outcome.quality, outcome.active_quality, force=body.force
        )
        outcome.metrics["activation"] = {"activated": activate, "reason": reason}
        model = await store_version(
            self.engine,
            self.models,
            outcome,
            model_type=MODEL_TYPE,
            artifact_format=artifact.ARTIFACT_FORMAT,
            host=scope,
            activate=activate,
            reason=reason,
            started=started,
            previous=active.record if active else None,
        )
        return TrainFailureResponse(
            model=model,
            activated=activate,
            reason=reason,
            previous_model_id=active.id if active else None,
            hosts=list(outcome.parameters["hosts"]),
            evaluation=outcome.evaluation,
            synthetic_generated=generated,
            seconds=time.perf_counter() - started,
        )

    # -- predictions ------------------------------------------------------------------

    async def model_for(self, host: str) -> ActiveModel[FailureModel]:
        """The host's own model, else the fleet model (one activated elsewhere is looked up)."""
        active = self.models.get(host=host) or self.models.get(host=None)
        if active is None:
            async with self.engine.connect() as conn:
                await self.models.refresh(conn)
            active = self.models.get(host=host) or self.models.get(host=None)
        if active is None:
            raise Conflict(NO_MODEL_FOR.format(host=host) if self.models.all() else NO_MODEL)
        return active

    async def predict(self, body: PredictFailureRequest) -> bytes:
        """The answer (``PredictFailureResponse`` as JSON bytes) for a sample or the latest state."""
        active = await self.model_for(body.host)
        if body.sample is None:
            return await self._predict_latest(body, active)
        model = active.model
        metrics = model.spec.metrics
        sample = body.sample
        until = sample.timestamp or utcnow()
        async with self.engine.connect() as conn:
            rows = await repo.window_rows(
                conn, host=body.host, seconds=LOOKBACK_S, limit=LOOKBACK_ROWS, until=until
            )
        times, values = samples.sample_arrays(rows, metrics)
        keep = times < until.timestamp()
        times, values = times[keep], values[keep]
        given = sample.model_dump(exclude={"timestamp"})
        newest = values[-1] if len(values) else np.full(len(metrics), np.nan)
        row = [
            float(given[m]) if given.get(m) is not None else float(newest[j])
            for j, m in enumerate(metrics)
        ]
        times = np.append(times, until.timestamp())
        values = np.vstack([values, np.array(row, dtype=np.float64)])
        prediction = model.predict_window(times, values, explain=body.explain)
        return _answer(body.host, until, active, prediction, times)

    async def _predict_latest(
        self, body: PredictFailureRequest, active: ActiveModel[FailureModel]
    ) -> bytes:
        """From the host's window in memory when it is current (the answer itself when this
        model already gave it), else from a database read that seeds the window."""
        model = active.model
        columns = _columns(model)
        key = (active.id, body.explain)
        window = self.windows.get(body.host) if columns is not None else None
        if window is not None:
            self.windows.hits += 1
            cached = window.answers.get(key)
            if cached is not None:
                return cached
            assert columns is not None
            times, values = window.times, window.values[:, columns]
        else:
            self.windows.reads += 1
            ticket = self.windows.ticket()
            async with self.engine.connect() as conn:
                rows = await repo.window_rows(
                    conn, host=body.host, seconds=LOOKBACK_S, limit=LOOKBACK_ROWS
                )
            if columns is not None:
                window = self.windows.seed(body.host, rows, ticket=ticket)
            times, values = samples.sample_arrays(rows, model.spec.metrics)
        if len(times) == 0:
            raise Conflict(
                f"host {body.host} has no stored samples: send a sample, or its samples first"
            )
        prediction = model.predict_window(times, values, explain=body.explain)
        stamp = datetime.fromtimestamp(float(times[-1]), tz=UTC)
        answer = _answer(body.host, stamp, active, prediction, times)
        if window is not None:
            window.answers[key] = answer
        return answer

    async def list_predictions(self, query: FailurePredictionQuery) -> FailurePredictionList:
        async with self.engine.connect() as conn:
            found = await repo.list_predictions(conn, query)
        return FailurePredictionList(predictions=found, count=len(found))


def _columns(model: FailureModel) -> list[int] | None:
    """The model's metrics as columns of a window (None: one is not a catalogue metric)."""
    index = {m: j for j, m in enumerate(METRIC_NAMES)}
    if any(m not in index for m in model.spec.metrics):
        return None
    return [index[m] for m in model.spec.metrics]


def _answer(
    host: str,
    stamp: datetime,
    active: ActiveModel[FailureModel],
    prediction: FailurePrediction,
    times: np.ndarray,
) -> bytes:
    """``PredictFailureResponse`` as JSON, built from typed values (not validated again)."""
    used = int(np.count_nonzero(times >= times[-1] - 3600.0))  # what the features read
    doc = {
        "host": host,
        "timestamp": stamp,
        "model_id": active.id,
        "model_version": active.version,
        "warning": any(h.warning for h in prediction.horizons),
        "horizons": [
            {
                "horizon_minutes": h.horizon_min,
                "probability": float(h.probability),
                "threshold": float(h.threshold),
                "warning": bool(h.warning),
            }
            for h in prediction.horizons
        ],
        "contributions": contribution_dicts(prediction.contributions),
        "samples_used": used,
    }
    return orjson.dumps(doc, option=_JSON)

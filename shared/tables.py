"""All tables of autofix-ml under one MetaData; Alembic reads this metadata."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from shared.catalogue import METRICS

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# BIGINT identity on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def _metric_columns() -> list[sa.Column[float] | sa.Column[int]]:
    columns: list[sa.Column[float] | sa.Column[int]] = []
    for metric in METRICS:
        if metric.is_integer:
            columns.append(
                sa.Column(metric.name, sa.Integer, nullable=True, comment=metric.description)
            )
        else:
            columns.append(
                sa.Column(metric.name, sa.Float, nullable=True, comment=metric.description)
            )
    return columns


metrics_history = sa.Table(
    "metrics_history",
    metadata,
    _id(),
    sa.Column("timestamp", Timestamp, nullable=False, server_default=sa.func.now()),
    sa.Column("host", sa.String(255), nullable=False),
    *_metric_columns(),
    sa.Column("label", sa.String(50), nullable=False, server_default="normal"),
    sa.Index("idx_metrics_timestamp", "timestamp"),
    sa.Index("idx_metrics_label", "label"),
    # One sample per host and time: ingest and generation upsert on it (shared.db).
    sa.Index("idx_metrics_host_timestamp", "host", "timestamp", unique=True),
)

ml_models = sa.Table(
    "ml_models",
    metadata,
    _id(),
    sa.Column(
        "name", sa.String(100), nullable=False, comment="Model family, e.g. anomaly_detector"
    ),
    sa.Column(
        "model_type", sa.String(50), nullable=False, comment="isolation_forest, prophet, ..."
    ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="candidate"),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("metric", sa.String(100), nullable=True),
    sa.Column("parameters", Json, nullable=False, server_default=sa.text("'{}'")),
    sa.Column(
        "metrics",
        Json,
        nullable=False,
        server_default=sa.text("'{}'"),
        comment="Evaluation figures",
    ),
    sa.Column("training_start", Timestamp, nullable=True),
    sa.Column("training_end", Timestamp, nullable=True),
    sa.Column("sample_count", sa.Integer, nullable=True),
    sa.Column("artifact", sa.LargeBinary, nullable=True),
    sa.Column("artifact_format", sa.String(30), nullable=True, comment="skops, prophet_json, ..."),
    sa.Column("artifact_sha256", sa.String(64), nullable=True),
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
    sa.Column("activated_at", Timestamp, nullable=True),
    sa.Column("notes", sa.Text, nullable=True),
    sa.UniqueConstraint("name", "host", "metric", "version", name="uq_ml_models_name_version"),
    sa.CheckConstraint(
        "status IN ('training', 'candidate', 'active', 'retired', 'failed')", name="status"
    ),
    sa.Index("idx_ml_models_status", "status"),
    sa.Index("idx_ml_models_name", "name", "host", "metric"),
)

anomaly_scores = sa.Table(
    "anomaly_scores",
    metadata,
    _id(),
    sa.Column(
        "metrics_id",
        BigId,
        sa.ForeignKey("metrics_history.id", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("model_id", BigId, sa.ForeignKey("ml_models.id", ondelete="SET NULL"), nullable=True),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("score", sa.Float, nullable=False, comment="Calibrated anomaly score, 0..1"),
    sa.Column("raw_score", sa.Float, nullable=True),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("is_anomaly", sa.Boolean, nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("contributions", Json, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("feedback", sa.String(20), nullable=True),
    sa.Column("feedback_at", Timestamp, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
    sa.Index("idx_anomaly_scores_host_timestamp", "host", "timestamp"),
    sa.Index("idx_anomaly_scores_timestamp", "timestamp"),
    sa.Index("idx_anomaly_scores_severity", "severity"),
    # Every stored sample is scored now: deleting samples (retention) sets their scores'
    # metrics_id to null, a scan of anomaly_scores per sample without this index.
    sa.Index("idx_anomaly_scores_metrics_id", "metrics_id"),
)

# The per-metric streaming detectors of each host (services/trainer/anomaly/streaming.py),
# saved every scoring pass so a restart neither forgets nor re-learns.
anomaly_stream_state = sa.Table(
    "anomaly_stream_state",
    metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("state", sa.LargeBinary, nullable=False, comment="HostStream.to_bytes()"),
    sa.Column("last_ts", Timestamp, nullable=True, comment="Newest sample learned"),
    sa.Column("late", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# Where the scoring loop stands: the last metrics_history id it has seen.
anomaly_scoring_cursor = sa.Table(
    "anomaly_scoring_cursor",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

failure_predictions = sa.Table(
    "failure_predictions",
    metadata,
    _id(),
    sa.Column("model_id", BigId, sa.ForeignKey("ml_models.id", ondelete="SET NULL"), nullable=True),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("horizon_minutes", sa.Integer, nullable=False),
    sa.Column("failure_probability", sa.Float, nullable=False),
    sa.Column("predicted_failure_type", sa.String(50), nullable=True),
    sa.Column("will_fail", sa.Boolean, nullable=False),
    sa.Column("top_features", Json, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
    sa.Index("idx_failure_predictions_host_timestamp", "host", "timestamp"),
)

metric_forecasts = sa.Table(
    "metric_forecasts",
    metadata,
    _id(),
    sa.Column("model_id", BigId, sa.ForeignKey("ml_models.id", ondelete="CASCADE"), nullable=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("metric", sa.String(100), nullable=False),
    sa.Column("generated_at", Timestamp, nullable=False),
    sa.Column("target_timestamp", Timestamp, nullable=False),
    sa.Column("yhat", sa.Float, nullable=False),
    sa.Column("yhat_lower", sa.Float, nullable=False),
    sa.Column("yhat_upper", sa.Float, nullable=False),
    sa.Index("idx_metric_forecasts_lookup", "host", "metric", "generated_at", "target_timestamp"),
)

# The newest stored generation per host and metric: fleet-wide reads join it to
# metric_forecasts instead of grouping every stored point (written with the points).
forecast_generations = sa.Table(
    "forecast_generations",
    metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("metric", sa.String(100), primary_key=True),
    sa.Column("generated_at", Timestamp, nullable=False),
    sa.Index("idx_forecast_generations_metric", "metric"),
)

incidents = sa.Table(
    "incidents",
    metadata,
    _id(),
    sa.Column("type", sa.String(50), nullable=False, comment="ML_ANOMALY, predicted_breach, ..."),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="open"),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("metric", sa.String(100), nullable=True),
    sa.Column("dedup_key", sa.String(255), nullable=False),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("details", Json, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("resolved_at", Timestamp, nullable=True),
    sa.Column("notified_at", Timestamp, nullable=True),
    sa.Column("notification_status", sa.String(20), nullable=True),
    sa.CheckConstraint("status IN ('open', 'resolved')", name="status"),
    sa.Index("idx_incidents_status", "status", "started_at"),
    sa.Index("idx_incidents_host_type", "host", "type"),
    sa.Index(
        "uq_incidents_open_dedup_key",
        "dedup_key",
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    ),
)

llm_analyses = sa.Table(
    "llm_analyses",
    metadata,
    _id(),
    sa.Column(
        "incident_id", BigId, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=True
    ),
    sa.Column(
        "provider", sa.String(50), nullable=False, comment="Who wrote it: rules, ollama, openai"
    ),
    sa.Column("model", sa.String(100), nullable=True),
    sa.Column("prompt", sa.Text, nullable=True),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("root_cause", sa.Text, nullable=True),
    sa.Column("recommendations", Json, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("confidence", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False, server_default=sa.func.now()),
    # 0007: the structured analysis, its evidence, and why an LLM's answer was not served.
    sa.Column("requested_provider", sa.String(50), nullable=True, comment="Who was asked first"),
    sa.Column("status", sa.String(20), nullable=False, server_default="ok"),
    sa.Column("fallback", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rejected_reason", sa.Text, nullable=True),
    sa.Column("category", sa.String(30), nullable=True, comment="Cause category"),
    sa.Column("analysis", Json, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("evidence", Json, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("prompt_tokens", sa.Integer, nullable=True),
    sa.Column("completion_tokens", sa.Integer, nullable=True),
    sa.Index("idx_llm_analyses_incident", "incident_id"),
    sa.Index("idx_llm_analyses_created", "created_at"),
)

anomaly_thresholds = sa.Table(
    "anomaly_thresholds",
    metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("threshold", sa.Float, nullable=False, comment="Likelihood threshold, 0..1"),
    sa.Column("lower", sa.Float, nullable=True, comment="Range learned from the host's scores"),
    sa.Column("upper", sa.Float, nullable=True),
    sa.Column("verdicts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("precision_before", sa.Float, nullable=True, comment="Before the last feedback"),
    sa.Column("precision_after", sa.Float, nullable=True, comment="After the last feedback"),
    sa.Column(
        "history",
        Json,
        nullable=False,
        server_default=sa.text("'[]'"),
        comment="Moves, newest last",
    ),
    sa.Column("updated_at", Timestamp, nullable=False),
)

anomaly_incident_states = sa.Table(
    "anomaly_incident_states",
    metadata,
    sa.Column("dedup_key", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("state", Json, nullable=False, comment="Counters of the ML_ANOMALY state machine"),
    sa.Column("updated_at", Timestamp, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    sa.Column("name", sa.String(100), nullable=False, server_default=""),
    sa.Column("role", sa.String(20), nullable=False, comment="reader, operator or admin"),
    sa.Column("prefix", sa.String(16), nullable=False, comment="The key's first characters"),
    sa.Column("key_hash", sa.String(64), nullable=False, comment="sha256 of the key, hex"),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
)

synthetic_windows = sa.Table(
    "synthetic_windows",
    metadata,
    _id(),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("first", Timestamp, nullable=False, comment="First generated sample"),
    sa.Column("last", Timestamp, nullable=False, comment="Last generated sample"),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index("idx_synthetic_windows_host", "host", "first"),
    comment="Where synthetic rows were stored: a host's rows outside these are real samples.",
)

METRIC_COLUMNS = [metrics_history.c[m.name] for m in METRICS]

VIEW_NAMES = ("recent_metrics", "active_ml_models")

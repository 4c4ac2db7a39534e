"""initial schema: the seven tables, their indexes and the two views

Revision ID: 0001
Revises:
Create Date: 2026-11-26 09:04:20.519910
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


VIEWS = {
    "postgresql": {
        "recent_metrics": "CREATE VIEW recent_metrics AS SELECT * FROM metrics_history "
        "WHERE timestamp > NOW() - INTERVAL '24 hours'",
        "active_ml_models": "CREATE VIEW active_ml_models AS SELECT * FROM ml_models "
        "WHERE status = 'active'",
    },
    "sqlite": {
        # SQLite datetimes are stored as UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', which
        # compares correctly against datetime('now', ...).
        "recent_metrics": "CREATE VIEW recent_metrics AS SELECT * FROM metrics_history "
        "WHERE timestamp > datetime('now', '-24 hours')",
        "active_ml_models": "CREATE VIEW active_ml_models AS SELECT * FROM ml_models "
        "WHERE status = 'active'",
    },
}


def _create_views() -> None:
    dialect = op.get_context().dialect.name
    for ddl in VIEWS[dialect].values():
        op.execute(ddl)


def _drop_views() -> None:
    for name in VIEWS["postgresql"]:
        op.execute(f"DROP VIEW IF EXISTS {name}")


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "type",
            sa.String(length=50),
            nullable=False,
            comment="ML_ANOMALY, predicted_breach, ...",
        ),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="open", nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=True),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notification_status", sa.String(length=20), nullable=True),
        sa.CheckConstraint("status IN ('open', 'resolved')", name=op.f("ck_incidents_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index("idx_incidents_host_type", ["host", "type"], unique=False)
        batch_op.create_index("idx_incidents_status", ["status", "started_at"], unique=False)
        batch_op.create_index(
            "uq_incidents_open_dedup_key",
            ["dedup_key"],
            unique=True,
            postgresql_where=sa.text("status = 'open'"),
            sqlite_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "metrics_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "timestamp", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column(
            "cpu_usage_percent", sa.Float(), nullable=True, comment="Overall CPU utilisation"
        ),
        sa.Column("memory_usage_mb", sa.Float(), nullable=True, comment="RAM in use"),
        sa.Column(
            "memory_usage_percent",
            sa.Float(),
            nullable=True,
            comment="RAM in use as a share of the total",
        ),
        sa.Column("disk_usage_percent", sa.Float(), nullable=True, comment="Disk space used"),
        sa.Column(
            "disk_io_read_mb", sa.Float(), nullable=True, comment="Disk read in the interval"
        ),
        sa.Column(
            "disk_io_write_mb", sa.Float(), nullable=True, comment="Disk written in the interval"
        ),
        sa.Column(
            "active_requests", sa.Integer(), nullable=True, comment="Concurrent HTTP requests"
        ),
        sa.Column("error_rate", sa.Float(), nullable=True, comment="Errors per second"),
        sa.Column("response_time_p50", sa.Float(), nullable=True, comment="Median latency"),
        sa.Column(
            "response_time_p95", sa.Float(), nullable=True, comment="95th percentile latency"
        ),
        sa.Column(
            "response_time_p99", sa.Float(), nullable=True, comment="99th percentile latency"
        ),
        sa.Column(
            "cpu_rate_of_change",
            sa.Float(),
            nullable=True,
            comment="CPU percentage points change per minute",
        ),
        sa.Column(
            "memory_rate_of_change",
            sa.Float(),
            nullable=True,
            comment="Memory percentage points change per minute",
        ),
        sa.Column(
            "error_rate_trend", sa.Float(), nullable=True, comment="Error rate change per minute"
        ),
        sa.Column("label", sa.String(length=50), server_default="normal", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics_history")),
    )
    with op.batch_alter_table("metrics_history", schema=None) as batch_op:
        batch_op.create_index("idx_metrics_host_timestamp", ["host", "timestamp"], unique=False)
        batch_op.create_index("idx_metrics_label", ["label"], unique=False)
        batch_op.create_index("idx_metrics_timestamp", ["timestamp"], unique=False)

    op.create_table(
        "ml_models",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "name",
            sa.String(length=100),
            nullable=False,
            comment="Model family, e.g. anomaly_detector",
        ),
        sa.Column(
            "model_type",
            sa.String(length=50),
            nullable=False,
            comment="isolation_forest, prophet, ...",
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="candidate", nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("metric", sa.String(length=100), nullable=True),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column(
            "metrics",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'{}'"),
            nullable=False,
            comment="Evaluation figures",
        ),
        sa.Column("training_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("training_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sample_count", sa.Integer(), nullable=True),
        sa.Column("artifact", sa.LargeBinary(), nullable=True),
        sa.Column(
            "artifact_format",
            sa.String(length=30),
            nullable=True,
            comment="skops, prophet_json, ...",
        ),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('training', 'candidate', 'active', 'retired', 'failed')",
            name=op.f("ck_ml_models_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ml_models")),
        sa.UniqueConstraint("name", "host", "metric", "version", name="uq_ml_models_name_version"),
    )
    with op.batch_alter_table("ml_models", schema=None) as batch_op:
        batch_op.create_index("idx_ml_models_name", ["name", "host", "metric"], unique=False)
        batch_op.create_index("idx_ml_models_status", ["status"], unique=False)

    op.create_table(
        "anomaly_scores",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "metrics_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("score", sa.Float(), nullable=False, comment="Calibrated anomaly score, 0..1"),
        sa.Column("raw_score", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("is_anomaly", sa.Boolean(), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column(
            "contributions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("feedback", sa.String(length=20), nullable=True),
        sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["metrics_id"],
            ["metrics_history.id"],
            name=op.f("fk_anomaly_scores_metrics_id_metrics_history"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ml_models.id"],
            name=op.f("fk_anomaly_scores_model_id_ml_models"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomaly_scores")),
    )
    with op.batch_alter_table("anomaly_scores", schema=None) as batch_op:
        batch_op.create_index(
            "idx_anomaly_scores_host_timestamp", ["host", "timestamp"], unique=False
        )
        batch_op.create_index("idx_anomaly_scores_severity", ["severity"], unique=False)
        batch_op.create_index("idx_anomaly_scores_timestamp", ["timestamp"], unique=False)

    op.create_table(
        "failure_predictions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("horizon_minutes", sa.Integer(), nullable=False),
        sa.Column("failure_probability", sa.Float(), nullable=False),
        sa.Column("predicted_failure_type", sa.String(length=50), nullable=True),
        sa.Column("will_fail", sa.Boolean(), nullable=False),
        sa.Column(
            "top_features",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ml_models.id"],
            name=op.f("fk_failure_predictions_model_id_ml_models"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failure_predictions")),
    )
    with op.batch_alter_table("failure_predictions", schema=None) as batch_op:
        batch_op.create_index(
            "idx_failure_predictions_host_timestamp", ["host", "timestamp"], unique=False
        )

    op.create_table(
        "llm_analyses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "incident_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("provider", sa.String(length=50), nullable=False, comment="ollama or fallback"),
        sa.Column("model", sa.String(length=100), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("root_cause", sa.Text(), nullable=True),
        sa.Column(
            "recommendations",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            server_default=sa.text("'[]'"),
            nullable=False,
        ),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_llm_analyses_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_analyses")),
    )
    with op.batch_alter_table("llm_analyses", schema=None) as batch_op:
        batch_op.create_index("idx_llm_analyses_incident", ["incident_id"], unique=False)

    op.create_table(
        "metric_forecasts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("yhat", sa.Float(), nullable=False),
        sa.Column("yhat_lower", sa.Float(), nullable=False),
        sa.Column("yhat_upper", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ml_models.id"],
            name=op.f("fk_metric_forecasts_model_id_ml_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_forecasts")),
    )
    with op.batch_alter_table("metric_forecasts", schema=None) as batch_op:
        batch_op.create_index(
            "idx_metric_forecasts_lookup",
            ["host", "metric", "generated_at", "target_timestamp"],
            unique=False,
        )

    _create_views()


def downgrade() -> None:
    _drop_views()
    with op.batch_alter_table("metric_forecasts", schema=None) as batch_op:
        batch_op.drop_index("idx_metric_forecasts_lookup")

    op.drop_table("metric_forecasts")
    with op.batch_alter_table("llm_analyses", schema=None) as batch_op:
        batch_op.drop_index("idx_llm_analyses_incident")

    op.drop_table("llm_analyses")
    with op.batch_alter_table("failure_predictions", schema=None) as batch_op:
        batch_op.drop_index("idx_failure_predictions_host_timestamp")

    op.drop_table("failure_predictions")
    with op.batch_alter_table("anomaly_scores", schema=None) as batch_op:
        batch_op.drop_index("idx_anomaly_scores_timestamp")
        batch_op.drop_index("idx_anomaly_scores_severity")
        batch_op.drop_index("idx_anomaly_scores_host_timestamp")

    op.drop_table("anomaly_scores")
    with op.batch_alter_table("ml_models", schema=None) as batch_op:
        batch_op.drop_index("idx_ml_models_status")
        batch_op.drop_index("idx_ml_models_name")

    op.drop_table("ml_models")
    with op.batch_alter_table("metrics_history", schema=None) as batch_op:
        batch_op.drop_index("idx_metrics_timestamp")
        batch_op.drop_index("idx_metrics_label")
        batch_op.drop_index("idx_metrics_host_timestamp")

    op.drop_table("metrics_history")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_incidents_open_dedup_key",
            postgresql_where=sa.text("status = 'open'"),
            sqlite_where=sa.text("status = 'open'"),
        )
        batch_op.drop_index("idx_incidents_status")
        batch_op.drop_index("idx_incidents_host_type")

    op.drop_table("incidents")

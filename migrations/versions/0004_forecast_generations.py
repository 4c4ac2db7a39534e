"""forecast generations: the newest stored forecast generation per host and metric

Revision ID: 0004_forecast
Revises: 0001
Create Date: 2026-11-30 03:45:00

Fleet-wide forecast reads join this table to metric_forecasts (one index range per host and
metric) instead of grouping every stored point. Filled from the stored forecasts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_forecast"
down_revision: str | None = "0003_anomaly_thresholds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forecast_generations",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("host", "metric", name=op.f("pk_forecast_generations")),
    )
    with op.batch_alter_table("forecast_generations", schema=None) as batch_op:
        batch_op.create_index("idx_forecast_generations_metric", ["metric"], unique=False)
    op.execute(
        "INSERT INTO forecast_generations (host, metric, generated_at) "
        "SELECT host, metric, max(generated_at) FROM metric_forecasts GROUP BY host, metric"
    )


def downgrade() -> None:
    with op.batch_alter_table("forecast_generations", schema=None) as batch_op:
        batch_op.drop_index("idx_forecast_generations_metric")
    op.drop_table("forecast_generations")

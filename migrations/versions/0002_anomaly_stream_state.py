"""anomaly stream state: the per-host streaming detectors, the scoring cursor, and an index
on anomaly_scores.metrics_id

Revision ID: 0002_anomaly_stream_state
Revises: 0001
Create Date: 2026-11-30 03:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_anomaly_stream_state"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "anomaly_stream_state",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False, comment="HostStream.to_bytes()"),
        sa.Column(
            "last_ts", sa.DateTime(timezone=True), nullable=True, comment="Newest sample learned"
        ),
        sa.Column("late", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_anomaly_stream_state")),
    )
    op.create_table(
        "anomaly_scoring_cursor",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_anomaly_scoring_cursor")),
    )
    # Every sample is scored now: deleting samples nulls their scores' metrics_id.
    op.create_index("idx_anomaly_scores_metrics_id", "anomaly_scores", ["metrics_id"])


def downgrade() -> None:
    op.drop_index("idx_anomaly_scores_metrics_id", table_name="anomaly_scores")
    op.drop_table("anomaly_scoring_cursor")
    op.drop_table("anomaly_stream_state")

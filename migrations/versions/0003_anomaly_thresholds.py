"""anomaly thresholds per host and the ML_ANOMALY incident state per host

Revision ID: 0003_anomaly_thresholds
Revises: 0002_anomaly_stream_state
Create Date: 2026-11-30 03:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_anomaly_thresholds"
down_revision: str | None = "0002_anomaly_stream_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "anomaly_thresholds",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False, comment="Likelihood threshold, 0..1"),
        sa.Column(
            "lower", sa.Float(), nullable=True, comment="Range learned from the host's scores"
        ),
        sa.Column("upper", sa.Float(), nullable=True),
        sa.Column("verdicts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "precision_before", sa.Float(), nullable=True, comment="Before the last feedback"
        ),
        sa.Column("precision_after", sa.Float(), nullable=True, comment="After the last feedback"),
        sa.Column(
            "history",
            Json,
            server_default=sa.text("'[]'"),
            nullable=False,
            comment="Moves, newest last",
        ),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("host", name=op.f("pk_anomaly_thresholds")),
    )
    op.create_table(
        "anomaly_incident_states",
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column(
            "state", Json, nullable=False, comment="Counters of the ML_ANOMALY state machine"
        ),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("dedup_key", name=op.f("pk_anomaly_incident_states")),
    )


def downgrade() -> None:
    op.drop_table("anomaly_incident_states")
    op.drop_table("anomaly_thresholds")

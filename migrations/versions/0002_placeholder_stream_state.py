"""PLACEHOLDER for branch aops only: stands in for branch aint's 0002_anomaly_stream_state so
that 0003 chains; the lead drops this file at merge (the real 0002 replaces it).

Revision ID: 0002_anomaly_stream_state
Revises: 0001
"""

from collections.abc import Sequence

revision: str = "0002_anomaly_stream_state"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

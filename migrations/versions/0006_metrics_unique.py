"""metrics_history unique on (host, timestamp): one sample per host and time

Revision ID: 0006_metrics_unique
Revises: 0005_api_keys
Create Date: 2026-11-30 07:00:00

Ingest, collection and synthetic generation upsert on this key, so a retried push or two
concurrent generations never store a sample twice. Existing duplicates are removed first,
keeping the newest row (the highest id) of each (host, timestamp).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_metrics_unique"
down_revision: str | None = "0005_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain SQL both engines run; the (host, timestamp) index serves the EXISTS.
    op.execute(
        "DELETE FROM metrics_history WHERE EXISTS ("
        "SELECT 1 FROM metrics_history AS newer "
        "WHERE newer.host = metrics_history.host "
        'AND newer."timestamp" = metrics_history."timestamp" '
        "AND newer.id > metrics_history.id)"
    )
    op.drop_index("idx_metrics_host_timestamp", table_name="metrics_history")
    op.create_index(
        "idx_metrics_host_timestamp", "metrics_history", ["host", "timestamp"], unique=True
    )


def downgrade() -> None:
    op.drop_index("idx_metrics_host_timestamp", table_name="metrics_history")
    op.create_index(
        "idx_metrics_host_timestamp", "metrics_history", ["host", "timestamp"], unique=False
    )

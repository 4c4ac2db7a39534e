"""api keys (hashed, with a role, revocable) and the windows of synthetic rows

Revision ID: 0005_api_keys
Revises: 0004_forecast
Create Date: 2026-11-30 07:00:00

The gateway reads this table to authenticate requests (README, "Access control"); only the
sha256 of each key is stored. synthetic_windows records where generated rows were stored, so
that generation refuses to replace a host's real samples; rows of the host "synthetic" from
before are recorded as one window.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_api_keys"
down_revision: str | None = "0004_forecast"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), server_default="", nullable=False),
        sa.Column(
            "role", sa.String(length=20), nullable=False, comment="reader, operator or admin"
        ),
        sa.Column(
            "prefix", sa.String(length=16), nullable=False, comment="The key's first characters"
        ),
        sa.Column(
            "key_hash", sa.String(length=64), nullable=False, comment="sha256 of the key, hex"
        ),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "synthetic_windows",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("first", Timestamp, nullable=False, comment="First generated sample"),
        sa.Column("last", Timestamp, nullable=False, comment="Last generated sample"),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_synthetic_windows")),
        comment="Where synthetic rows were stored: a host's rows outside these are real samples.",
    )
    with op.batch_alter_table("synthetic_windows", schema=None) as batch_op:
        batch_op.create_index("idx_synthetic_windows_host", ["host", "first"], unique=False)
    op.execute(
        "INSERT INTO synthetic_windows (host, first, last, rows, created_at) "
        "SELECT host, min(timestamp), max(timestamp), count(*), max(timestamp) "
        "FROM metrics_history WHERE host = 'synthetic' GROUP BY host"
    )


def downgrade() -> None:
    with op.batch_alter_table("synthetic_windows", schema=None) as batch_op:
        batch_op.drop_index("idx_synthetic_windows_host")
    op.drop_table("synthetic_windows")
    op.drop_table("api_keys")

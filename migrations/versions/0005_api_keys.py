"""api keys: hashed, with a role, revocable

Revision ID: 0005_api_keys
Revises: 0004_forecast
Create Date: 2026-11-30 07:00:00

The gateway reads this table to authenticate requests (README, "Access control"); only the
sha256 of each key is stored.
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


def downgrade() -> None:
    op.drop_table("api_keys")

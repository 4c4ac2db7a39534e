"""llm_analyses holds the structured analysis, its evidence pack and the fallback's reason

Revision ID: 0007_llm_analyses
Revises: 0006_metrics_unique
Create Date: 2026-11-30 08:00:00

Incident analysis (docs/incident-analysis.md): who was asked and who answered, whether the
rules' answer was served because the LLM's was rejected (and why), the cause category, the
whole analysis and evidence as JSON, and token counts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_llm_analyses"
down_revision: str | None = "0006_metrics_unique"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COLUMNS = (
    "requested_provider",
    "status",
    "fallback",
    "rejected_reason",
    "category",
    "analysis",
    "evidence",
    "prompt_tokens",
    "completion_tokens",
)


def upgrade() -> None:
    with op.batch_alter_table("llm_analyses", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "requested_provider",
                sa.String(length=50),
                nullable=True,
                comment="Who was asked first",
            )
        )
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), server_default="ok", nullable=False)
        )
        batch_op.add_column(
            sa.Column("fallback", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("rejected_reason", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("category", sa.String(length=30), nullable=True, comment="Cause category")
        )
        batch_op.add_column(
            sa.Column("analysis", Json, server_default=sa.text("'{}'"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("evidence", Json, server_default=sa.text("'{}'"), nullable=False)
        )
        batch_op.add_column(sa.Column("prompt_tokens", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("completion_tokens", sa.Integer(), nullable=True))
        batch_op.alter_column(
            "provider",
            existing_type=sa.String(length=50),
            existing_nullable=False,
            comment="Who wrote it: rules, ollama, openai",
            existing_comment="ollama or fallback",
        )
        batch_op.create_index("idx_llm_analyses_created", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("llm_analyses", schema=None) as batch_op:
        batch_op.drop_index("idx_llm_analyses_created")
        batch_op.alter_column(
            "provider",
            existing_type=sa.String(length=50),
            existing_nullable=False,
            comment="ollama or fallback",
            existing_comment="Who wrote it: rules, ollama, openai",
        )
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)

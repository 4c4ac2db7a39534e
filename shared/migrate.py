"""Run the Alembic migrations from code: `upgrade(url)`, and the PostgreSQL DDL as text."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str, *, stdout: io.StringIO | None = None) -> Config:
    cfg = Config(stdout=stdout) if stdout is not None else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (blocking; call before serving)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def postgresql_ddl() -> str:
    """The whole schema as PostgreSQL SQL, for `psql < add_ml_tables.sql` workflows."""
    buffer = io.StringIO()
    cfg = alembic_config("postgresql+asyncpg://user@localhost/db", stdout=buffer)
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    return buffer.getvalue()

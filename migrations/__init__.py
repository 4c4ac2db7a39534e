"""Alembic environment and versions for PostgreSQL and SQLite."""

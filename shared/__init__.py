"""Shared package of autofix-ml: settings, metric catalogue, API models, tables, database, errors."""

"""Stored samples: ingest, statistics, export and retention of metrics_history."""

"""Incidents over HTTP: list, read and resolve what the detectors raised (shared.incidents)."""

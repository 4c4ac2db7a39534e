"""Sampling this host: psutil and a Prometheus scrape, buffered into metrics_history."""

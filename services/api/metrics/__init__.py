"""The gateway's own Prometheus metrics: counted by a middleware, served at /metrics."""

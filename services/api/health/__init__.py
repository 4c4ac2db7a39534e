"""GET /api/ml/health: every service's state in one answer."""

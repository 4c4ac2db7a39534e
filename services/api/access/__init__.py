"""Access control at the gateway: API keys and roles, limits, the checks before routing."""

"""Pydantic models of the API, one module per feature; services and gateway share them."""

"""The API docs (Swagger UI, ReDoc) from the gateway's own files."""

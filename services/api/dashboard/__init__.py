"""The dashboard: one page of plain JS modules and vendored charts, served by the gateway."""

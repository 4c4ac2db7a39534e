"""Incidents: raised by the detectors, deduplicated per cause, resolved, and sent to a webhook.

Usage: `incident, change = await repository.raise_incident(conn, type="ML_ANOMALY", host=h, ...)`
then `notifier.notify(incident)` after the transaction commits (`shared.incidents.notifier`).
"""

"""Incidents: raised by the detectors, deduplicated per cause, resolved, and sent to a webhook.

Usage: `incident, change = await raise_incident(conn, type="ML_ANOMALY", host=h, dedup_key=k, ...)`
then `notifier.notify(incident)` after the transaction commits.
"""

from shared.incidents.notifier import Notifier
from shared.incidents.repository import (
    Change,
    get_incident,
    list_incidents,
    raise_incident,
    resolve_incident,
)

__all__ = [
    "Change",
    "Notifier",
    "get_incident",
    "list_incidents",
    "raise_incident",
    "resolve_incident",
]

"""Fan-out: when an escalation enters a level, one Delivery per target person.

Registered as an outbox consumer in ``NotificationsConfig.ready``: the outbox dispatcher (a
Celery worker in production, the in-process ticker in the embedded default) calls it with a
batch of events inside its own transaction, after the changes have committed.
``services.deliveries_fan_out_many`` is idempotent, so an event handled twice (a dispatcher
killed mid-batch) notifies nobody twice.
"""

from __future__ import annotations

from escalations import hooks

from . import services


def on_escalation_events(events: list[hooks.Event]) -> None:
    """Called by the outbox dispatcher with the notifying events of a batch."""
    services.deliveries_fan_out_many(events)

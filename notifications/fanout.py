"""Fan-out: when an escalation enters a level, one Delivery per target person.

Registered as an outbox consumer in ``NotificationsConfig.ready``: the outbox dispatcher (a
Celery worker in production, the in-process ticker in the embedded default) calls it inside its
own transaction, after the change has committed. ``services.deliveries_fan_out`` is idempotent,
so an event handled twice (a dispatcher killed mid-batch) notifies nobody twice.
"""

from __future__ import annotations

from typing import Any

from . import services


def on_escalation_event(escalation_id: int, event: str, payload: dict[str, Any]) -> None:
    """Called by the outbox dispatcher for every notifying event (see ``escalations.hooks``)."""
    if event not in services.NOTIFYING_EVENTS:
        return
    services.deliveries_fan_out(escalation_id=escalation_id, event=event, payload=payload)

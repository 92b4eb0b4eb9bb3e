"""Fan-out: when an escalation enters a level, one Delivery per target person.

Registered as an escalations hook in ``NotificationsConfig.ready``. The hook runs after the
escalation's transaction has committed, in whichever process made the change (the API process
for a new escalation, the worker or in-process ticker for a timer step), so the fan-out opens a
transaction of its own; ``services.deliveries_fan_out`` is idempotent, so a hook run twice for
one event notifies nobody twice.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from . import services


def on_escalation_event(escalation_id: int, event: str, payload: dict[str, Any]) -> None:
    """Called after commit for every escalation event (see ``escalations.hooks``)."""
    if event not in services.NOTIFYING_EVENTS:
        return
    if settings.TIMERS_IN_PROCESS:
        from .sweeper import start_in_process_sweeper

        start_in_process_sweeper()
    services.deliveries_fan_out(escalation_id=escalation_id, event=event, payload=payload)

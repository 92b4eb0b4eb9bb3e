"""Celery entry points of agent callbacks and organization webhooks: thin wrappers over
``notifications.callbacks``. Beat sends ``webhook_messages_due`` every second in production.

The services are imported inside the tasks: ``callbacks`` imports this module to queue work, so
importing it here at the top would be a cycle.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def webhook_deliver(message_id: int, claim: str) -> None:
    """One attempt of a message this caller claimed (a stale claim sends nothing)."""
    from .callbacks import webhook_message_attempt

    webhook_message_attempt(message_id=message_id, claim=claim)


@shared_task(ignore_result=True)
def webhook_messages_due() -> int:
    from .callbacks import webhook_messages_due as due

    return due()

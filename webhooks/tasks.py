"""Celery entry points of agent callbacks and organization webhooks: thin wrappers over
``webhooks.sending``. Beat sends ``webhook_messages_due`` every second in production."""

from __future__ import annotations

from celery import shared_task

from . import sending


@shared_task(ignore_result=True)
def webhook_deliver(message_id: int, claim: str) -> None:
    """One attempt of a message this caller claimed (a stale claim sends nothing)."""
    sending.webhook_message_attempt(message_id=message_id, claim=claim)


@shared_task(ignore_result=True)
def webhook_messages_due() -> int:
    return sending.webhook_messages_due()

"""Celery entry points: thin wrappers over ``notifications.services``."""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from awaithuman.celery import enqueue

from . import services


@shared_task(
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=None,
    priority=settings.BULK_TASK_PRIORITY,
)
def deliver(self: Task, delivery_id: int) -> str:
    """Send one delivery (a no-op when it is not due, already sent, or another worker has it).

    ``acks_late``: a worker killed mid-send leaves the message to be redelivered; the claim in
    ``delivery_send`` keeps the redelivered task from sending a second time within the lease.
    """
    outcome = services.delivery_send(delivery_id)
    if isinstance(outcome, services.RetryLater):
        # Eagerly (the embedded default) a retry would run at once, in the caller's thread:
        # leave it to the sweep, which finds the row when ``next_attempt_at`` is due.
        if not self.app.conf.task_always_eager:
            raise self.retry(countdown=outcome.delay)
        return "retry"
    return getattr(outcome, "status", "not claimed")


@shared_task(ignore_result=True)
def deliveries_due() -> int:
    """The sweep (beat in production): re-queue deliveries that are due or stuck."""
    return enqueue(deliver, *[(pk,) for pk in services.deliveries_due()])

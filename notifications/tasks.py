"""Celery entry points: thin wrappers over ``notifications.deliveries``."""

from __future__ import annotations

from collections import Counter

from celery import Task, shared_task

from awaithuman.celery import enqueue

from . import deliveries


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver(self: Task, delivery_id: int) -> str:
    """Send one delivery (a no-op when it is not due, already sent, or another worker has it).

    ``acks_late``: a worker killed mid-send leaves the message to be redelivered; the claim in
    ``delivery_send`` keeps the redelivered task from sending a second time within the lease.
    """
    outcome = deliveries.delivery_send(delivery_id)
    if isinstance(outcome, deliveries.RetryLater):
        # Eagerly (the embedded default) a retry would run at once, in the caller's thread:
        # leave it to the sweep, which finds the row when ``next_attempt_at`` is due.
        if not self.app.conf.task_always_eager:
            raise self.retry(countdown=outcome.delay)
        return "retry"
    return getattr(outcome, "status", "not claimed")


@shared_task(bind=True, acks_late=True, ignore_result=True)
def deliver_many(self: Task, delivery_ids: list[int]) -> str:
    """Send a fan-out's deliveries together (``deliveries.deliveries_send``); each
    transient failure is retried on its own by ``deliver`` after its backoff (eagerly, by the
    sweep). Returns a summary for the worker's log, e.g. "sent 3"."""
    outcomes = deliveries.deliveries_send(delivery_ids)
    summary: Counter[str] = Counter()
    for delivery_id, outcome in outcomes.items():
        if isinstance(outcome, deliveries.RetryLater):
            summary["retry"] += 1
            if not self.app.conf.task_always_eager:
                deliver.apply_async((delivery_id,), countdown=outcome.delay)
        else:
            summary[getattr(outcome, "status", "not claimed")] += 1
    return ", ".join(f"{status} {count}" for status, count in sorted(summary.items()))


@shared_task(ignore_result=True)
def deliveries_due() -> int:
    """The sweep (beat in production): re-queue deliveries that are due or stuck."""
    return enqueue(deliver, *[(pk,) for pk in deliveries.deliveries_due()])


@shared_task(acks_late=True, ignore_result=True)
def messages_update_after_decision(escalation_id: int) -> None:
    """Edit the sent messages of a terminal escalation to show its outcome."""
    deliveries.messages_update_after_decision(escalation_id)

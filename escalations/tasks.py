"""Celery entry points: thin wrappers over services (beat ticks them in production)."""

from __future__ import annotations

from celery import shared_task

from audit.services import audit_seal

from . import deadlines, idempotency, outbox, redaction, rollup


@shared_task(ignore_result=True)
def timers_tick() -> int:
    return deadlines.timers_due()


@shared_task(ignore_result=True)
def idempotency_purge() -> int:
    return idempotency.idempotency_purge()


@shared_task(ignore_result=True)
def payloads_redact() -> int:
    return redaction.payloads_redact_expired()


@shared_task(ignore_result=True)
def outbox_dispatch_task() -> int:
    """Seal the audit events just committed, then hand the outbox to its consumers (in that
    order, so that live frames carry the sealed chain head as their version)."""
    outbox.nudge_consumed()
    audit_seal()
    return outbox.outbox_drain()


@shared_task(ignore_result=True)
def insights_rollup_task() -> int:
    return rollup.insights_rollup()

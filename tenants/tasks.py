"""Celery entry points of the tenants app: billing's periodic work and its e-mails, and the daily
checkpoint e-mail (thin wrappers over ``tenants.billing`` and ``tenants.checkpoint_mail``; beat
runs the periodic ones, see ``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import billing, checkpoint_mail


@shared_task(ignore_result=True)
def billing_usage_report() -> int:
    """Report unreported escalations to Stripe as meter events (idempotent; safe to repeat)."""
    return billing.usage_report()


@shared_task(ignore_result=True)
def billing_grace_expire() -> int:
    """Downgrade organizations whose payment grace period has ended."""
    return billing.grace_expired_downgrade()


@shared_task(ignore_result=True)
def billing_quota_email(organization_id: int, threshold: int) -> int:
    return billing.quota_email_send(organization_id=organization_id, threshold=threshold)


@shared_task(ignore_result=True)
def billing_owners_email(organization_id: int, template: str, context: dict[str, Any]) -> int:
    return billing.owners_email(organization_id=organization_id, template=template, context=context)


@shared_task(ignore_result=True)
def checkpoint_emails() -> int:
    """E-mail the latest signed audit checkpoint to each organization's checkpoint address."""
    return checkpoint_mail.checkpoint_emails_send()

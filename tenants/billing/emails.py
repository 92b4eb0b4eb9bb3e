"""E-mails to an organization's owners about its plan: quota thresholds, payment trouble, plan
changes. Sent by Celery tasks after the change that prompts them has committed."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string

from awaithuman.celery import app, enqueue
from tenants.models import Membership, Organization

from .limits import escalations_this_month, upgrade_url
from .plans import organization_plan

# Queued by name: tenants.tasks, the task's module, imports this package.
OWNERS_EMAIL_TASK = "tenants.tasks.billing_owners_email"


def _owner_emails(organization: Organization) -> list[str]:
    return list(
        organization.memberships.filter(role=Membership.Role.OWNER)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )


def owners_email(*, organization_id: int, template: str, context: dict[str, Any]) -> int:
    """Send ``tenants/email/billing_<template>.txt`` (first line: the subject) to the owners."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return 0
    recipients = _owner_emails(organization)
    if not recipients:
        return 0
    text = render_to_string(
        f"tenants/email/billing_{template}.txt",
        {
            "organization": organization,
            "billing_url": upgrade_url(),
            "plan": organization_plan(organization),
            **context,
        },
    )
    subject, _, body = text.strip().partition("\n")
    return send_mail(
        subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}{subject.strip()}",
        message=body.strip() + "\n",
        from_email=None,
        recipient_list=recipients,
    )


def quota_email_send(*, organization_id: int, threshold: int) -> int:
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return 0
    plan = organization_plan(organization)
    return owners_email(
        organization_id=organization_id,
        template="quota",
        context={
            "threshold": threshold,
            "used": escalations_this_month(organization),
            "allowed": plan.escalations_per_month,
        },
    )


def owners_email_after_commit(organization_id: int, template: str, **context: Any) -> None:
    """Queue ``owners_email`` once the caller's transaction commits."""
    transaction.on_commit(
        lambda: enqueue(app.tasks[OWNERS_EMAIL_TASK], (organization_id, template, context))
    )

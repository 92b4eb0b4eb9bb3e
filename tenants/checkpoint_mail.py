"""The daily checkpoint e-mail: a copy of an organization's latest signed audit checkpoint sent to
an address it chooses (``Organization.checkpoint_email``), outside our database.

A checkpoint only exposes a rewritten history if someone kept it where we cannot reach
(``audit.checkpoints``). Webhooks keep every checkpoint; this is the low-effort copy for a team
without a receiver: a compliance mailbox gets at most one e-mail a day
(``AUDIT_CHECKPOINT_EMAIL_HOURS``, 24 by default), and only when the chain grew since the last
one. The signed note is in the body and attached as a file, ready for ``audit_verify
--checkpoint``.

Delivery is at least once: the e-mail is sent, then the organization records the ``seq`` it
sent. A failed send is logged and tried again on the next run; a crash between the two sends
the same checkpoint again, which is harmless.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db.models import OuterRef, Q, Subquery
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from audit.checkpoints import note_verifier_keys
from audit.models import Checkpoint

from .models import Organization

logger = logging.getLogger(__name__)


def checkpoint_emails_send(*, now: datetime | None = None) -> int:
    """E-mail each organization's latest checkpoint to its checkpoint address, if the chain grew
    since the last e-mail and that e-mail is at least ``AUDIT_CHECKPOINT_EMAIL_HOURS`` old.
    Returns how many e-mails were sent."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.AUDIT_CHECKPOINT_EMAIL_HOURS)
    latest = Checkpoint.objects.filter(organization_id=OuterRef("pk")).order_by("-seq")
    # One query finds the organizations with a checkpoint newer than the one last e-mailed; those
    # whose chain stood still (or has none yet) cost nothing more.
    due = (
        Organization.objects.exclude(checkpoint_email="")
        .filter(Q(checkpoint_emailed_at__isnull=True) | Q(checkpoint_emailed_at__lte=cutoff))
        .filter(checkpoint_emailed_seq__lt=Subquery(latest.values("seq")[:1]))
        .annotate(latest_checkpoint=Subquery(latest.values("pk")[:1]))
    )
    sent = 0
    for organization in due.iterator():
        checkpoint = Checkpoint.objects.get(pk=organization.latest_checkpoint)
        try:
            _message(organization, checkpoint).send()
        except (smtplib.SMTPException, OSError) as exc:
            logger.warning(
                "checkpoint e-mail to %s for %s failed, retried next run: %s",
                organization.checkpoint_email,
                organization.public_id,
                exc,
            )
            continue
        # Only this job writes these two fields; the address may have changed meanwhile, and
        # then the new one is due at once.
        Organization.objects.filter(
            pk=organization.pk, checkpoint_email=organization.checkpoint_email
        ).update(checkpoint_emailed_seq=checkpoint.seq, checkpoint_emailed_at=now)
        sent += 1
    return sent


def attachment_name(organization: Organization, checkpoint: Checkpoint) -> str:
    return f"{organization.slug}-checkpoint-{checkpoint.seq}.txt"


def _message(organization: Organization, checkpoint: Checkpoint) -> EmailMessage:
    filename = attachment_name(organization, checkpoint)
    text = render_to_string(
        "tenants/email/checkpoint.txt",
        {
            "organization": organization,
            "checkpoint": checkpoint,
            "verifier_keys": note_verifier_keys(checkpoint.note),
            "filename": filename,
            "settings_url": settings.AWAITHUMAN_BASE_URL + reverse("organization_settings"),
            "every_hours": settings.AUDIT_CHECKPOINT_EMAIL_HOURS,
        },
    )
    # A header is one line, whatever the name holds.
    name = " ".join(organization.name.split())
    message = EmailMessage(
        subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}Audit checkpoint of {name}: "
        f"{checkpoint.seq} events",
        body=text.strip() + "\n",
        to=[organization.checkpoint_email],
    )
    # As bytes of an opaque type, the attachment travels base64-encoded and arrives byte for
    # byte; a text part would have its line ends rewritten to CRLF on the way.
    message.attach(filename, checkpoint.note.encode("utf-8"), "application/octet-stream")
    return message

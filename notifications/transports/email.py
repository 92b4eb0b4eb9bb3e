"""E-mail through Django's mail backends (the console backend by default, SMTP in production).

Each message carries a text and an HTML part. A plain approval gets signed single-use
"Approve" / "Reject" links (``notifications.links``); anything with a typed answer links to
the console's decision screen. A sent e-mail cannot be edited, so ``update_after_decision``
does nothing: the link's confirmation page says what happened instead.
"""

from __future__ import annotations

import json
import secrets
import smtplib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from notifications import links

from .base import Transport, TransportError

if TYPE_CHECKING:
    from notifications.models import ContactPoint, Delivery

SUBJECT_PREFIX = "[AwaitHuman] "
KIND_LABELS = {
    "level_entered": "",
    "escalated": "Escalated: ",
    "reminder": "Reminder: ",
    "deadline_warning": "Deadline soon: ",
}


def _message_id(reference: str) -> str:
    """``<reference@our host>``, the same on every try: one delivery is one message, so a send
    repeated after a worker died carries the same Message-ID and a receiving server (or a mail
    client) can drop or thread the repeat. (``make_msgid`` would mint a new one each time.)"""
    domain = urlsplit(settings.AWAITHUMAN_BASE_URL).hostname or "awaithuman.invalid"
    return f"<{reference}@{domain}>"


def _send(message: EmailMultiAlternatives) -> None:
    """Send one message; map SMTP failures onto permanent / transient ``TransportError``.

    5xx replies about the message or its recipient (a mailbox that does not exist) are permanent;
    4xx replies ("try again later", greylisting) and network errors are transient. A refused
    login or sender is our own server's settings, not the person's address: retried, and the
    contact point is never marked failing for it.
    """
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused) as exc:
        raise TransportError(
            f"the mail server refused our login or sender (SMTP {exc.smtp_code}): check "
            "EMAIL_HOST_USER, EMAIL_HOST_PASSWORD and DEFAULT_FROM_EMAIL"
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        permanent = bool(codes) and all(code >= 500 for code in codes)
        raise TransportError(f"recipient refused: {codes}", permanent=permanent) from exc
    except smtplib.SMTPResponseException as exc:
        raise TransportError(
            f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"[:300], permanent=exc.smtp_code >= 500
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise TransportError(f"SMTP unavailable: {exc}"[:300]) from exc


def escalation_summary(escalation: Any) -> dict[str, Any]:
    action = escalation.action if isinstance(escalation.action, dict) else None
    context = escalation.context if isinstance(escalation.context, dict) else {}
    reasoning = context.get("reasoning")
    arguments = action.get("arguments") if action else None
    return {
        "action_name": action.get("name") if action else "",
        "action_arguments": (
            json.dumps(arguments, indent=2, ensure_ascii=False) if arguments is not None else None
        ),
        "reasoning": reasoning[:2000] if isinstance(reasoning, str) else "",
    }


class EmailTransport(Transport):
    channel = "email"

    def send(self, delivery: Delivery) -> str:
        escalation = delivery.escalation
        one_click = links.answerable_by_link(escalation) and delivery.membership is not None
        context = {
            "escalation": escalation,
            "delivery": delivery,
            "kind": delivery.kind,
            "agent": escalation.agent.name,
            "console_url": escalation.console_url,
            "approve_url": links.action_url(delivery, "approve") if one_click else "",
            "reject_url": links.action_url(delivery, "reject") if one_click else "",
            **escalation_summary(escalation),
        }
        subject = f"{SUBJECT_PREFIX}{KIND_LABELS.get(delivery.kind, '')}{escalation.title}"
        message_id = _message_id(delivery.public_id)
        message = EmailMultiAlternatives(
            subject=subject.replace("\n", " ")[:250],
            body=render_to_string("notifications/email/escalation.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[delivery.contact_point.address if delivery.contact_point else ""],
            headers={"Message-ID": message_id, "Auto-Submitted": "auto-generated"},
        )
        message.attach_alternative(
            render_to_string("notifications/email/escalation.html", context), "text/html"
        )
        _send(message)
        return message_id

    def send_test(self, contact_point: ContactPoint) -> str:
        # Every test send is a message of its own.
        message_id = _message_id(f"test.{contact_point.public_id}.{secrets.token_hex(6)}")
        message = EmailMultiAlternatives(
            subject=f"{SUBJECT_PREFIX}Test notification",
            body=render_to_string("notifications/email/test.txt", {"contact_point": contact_point}),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[contact_point.address],
            headers={"Message-ID": message_id, "Auto-Submitted": "auto-generated"},
        )
        _send(message)
        return message_id

    def send_verification(self, contact_point: ContactPoint, code: str) -> None:
        message = EmailMultiAlternatives(
            subject=f"{SUBJECT_PREFIX}Your verification code: {code}",
            body=render_to_string(
                "notifications/email/verification.txt",
                {"contact_point": contact_point, "code": code},
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[contact_point.address],
            headers={"Auto-Submitted": "auto-generated"},
        )
        _send(message)

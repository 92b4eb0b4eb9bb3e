"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291).

The contact point's ``config`` is the browser's ``PushSubscription.toJSON()`` — ``endpoint`` and
``keys`` {``p256dh``, ``auth``}. The payload is JSON for ``static/console/sw.js``: it shows the
notification, with Approve/Reject actions for simple approvals that POST the button ``token`` to
``/hooks/push/answer``. After the decision a second push with the same ``tag`` replaces it.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.utils import timezone
from py_vapid import Vapid
from pywebpush import WebPusher

from awaithuman.outbound import OutboundRefused, outbound_client
from escalations.models import Escalation
from notifications.answer_codes import answer_code_for, push_answer_token
from notifications.messages import is_simple_approval, outcome_sentence, summary_text
from notifications.models import ContactPoint, Delivery

from . import http
from .base import Transport, TransportError

ANSWER_PATH = "/hooks/push/answer"
MAX_TTL = 24 * 3600


def subscription_of(contact_point: ContactPoint) -> dict[str, Any]:
    config = contact_point.config or {}
    subscription = config.get("subscription", config)
    keys = subscription.get("keys") or {}
    if not subscription.get("endpoint") or not keys.get("p256dh") or not keys.get("auth"):
        raise TransportError("The push subscription is incomplete.", permanent=True)
    return {"endpoint": subscription["endpoint"], "keys": keys}


def push(
    contact_point: ContactPoint,
    message: dict[str, Any],
    *,
    ttl: int,
    urgency: str = "normal",
    topic: str = "",
) -> str:
    """Encrypt and send one push message; returns the push service's message location.

    ``topic`` (RFC 8030 §5.4, at most 32 URL-safe base64 characters) makes the push service
    replace a message with the same topic that it has not delivered yet: a send repeated after a
    worker died reaches the browser once.

    The endpoint is whatever the browser's subscription says — input from outside — so the
    request goes through the SSRF-guarded client (``awaithuman.outbound``), like agent callbacks.
    pywebpush does the RFC 8291 encryption and py_vapid the RFC 8292 signature.
    """
    if not (settings.VAPID_PRIVATE_KEY and settings.VAPID_PUBLIC_KEY):
        raise TransportError("Web Push is not configured (VAPID keys).")
    subscription = subscription_of(contact_point)
    endpoint = subscription["endpoint"]
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise TransportError("The push endpoint is not an http(s) URL.", permanent=True)
    try:
        body = WebPusher(subscription).encode(
            json.dumps(message, separators=(",", ":")).encode(), "aes128gcm"
        )["body"]
    except (ValueError, TypeError) as exc:
        raise TransportError(
            f"The push subscription's keys are unusable: {exc}", permanent=True
        ) from None
    vapid = Vapid.from_string(settings.VAPID_PRIVATE_KEY)
    claims = {
        "sub": settings.VAPID_SUBJECT,
        "aud": f"{parts.scheme}://{parts.netloc}",
        "exp": int(time.time()) + 12 * 3600,
    }
    headers = {
        **vapid.sign(claims),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "TTL": str(ttl),
        "Urgency": urgency,
    }
    if topic:
        headers["Topic"] = topic
    try:
        with outbound_client(timeout=settings.NOTIFICATION_HTTP_TIMEOUT) as client:
            response = client.post(endpoint, content=body, headers=headers)
    except OutboundRefused as exc:
        raise TransportError(f"The push endpoint is refused: {exc}", permanent=True) from None
    except httpx.TimeoutException:
        raise TransportError("The push service did not answer in time.") from None
    except httpx.HTTPError as exc:
        raise TransportError(f"Could not reach the push service ({type(exc).__name__}).") from None
    if response.status_code in (200, 201, 202):
        return response.headers.get("Location", "")
    message_text = f"Push service {response.status_code}: {response.text[:200]}"
    if error := http.transient(response, message_text):
        raise error
    # 404/410: the subscription expired or was unsubscribed; 413: a payload it will never take.
    # 400/401/403 point at our VAPID keys, not at the person's browser.
    raise TransportError(message_text, permanent=response.status_code in (404, 410, 413))


class PushTransport(Transport):
    channel = "push"
    settings_required = ("VAPID_PUBLIC_KEY", "VAPID_PRIVATE_KEY")

    def send(self, delivery: Delivery) -> str:
        escalation = delivery.escalation
        contact_point = delivery.contact_point
        assert contact_point is not None
        message: dict[str, Any] = {
            "type": "escalation",
            "tag": escalation.public_id,
            "title": escalation.title,
            "body": summary_text(escalation).partition("\n")[2] or "Waiting for your answer.",
            "url": escalation.console_url,
        }
        if is_simple_approval(escalation):
            answer_code = answer_code_for(
                escalation=escalation, membership=contact_point.membership
            )
            message["answer_url"] = settings.AWAITHUMAN_BASE_URL + ANSWER_PATH
            message["token"] = push_answer_token(answer_code)
            message["actions"] = [
                {"action": "approve", "title": "Approve"},
                {"action": "reject", "title": "Reject"},
            ]
        remaining = int((escalation.expires_at - timezone.now()).total_seconds())
        urgent = escalation.priority in (Escalation.Priority.HIGH, Escalation.Priority.URGENT)
        return push(
            contact_point,
            message,
            ttl=max(60, min(remaining, MAX_TTL)),
            urgency="high" if urgent else "normal",
            topic=delivery.public_id,
        )

    def update_after_decision(self, delivery: Delivery) -> None:
        """Replace the notification (same tag) with the outcome, silently."""
        escalation = delivery.escalation
        assert delivery.contact_point is not None
        push(
            delivery.contact_point,
            {
                "type": "decided",
                "tag": escalation.public_id,
                "title": escalation.title,
                "body": outcome_sentence(escalation),
                "url": escalation.console_url,
            },
            ttl=3600,
            urgency="low",
        )

    def send_test(self, contact_point: ContactPoint) -> str:
        return push(
            contact_point,
            {
                "type": "test",
                "tag": "awaithuman-test",
                "title": "AwaitHuman",
                "body": "Test notification: escalations will reach this browser.",
                "url": settings.AWAITHUMAN_BASE_URL + "/",
            },
            ttl=600,
        )

    def send_verification(self, contact_point: ContactPoint, code: str) -> None:
        push(
            contact_point,
            {
                "type": "verification",
                "tag": "awaithuman-verification",
                "title": "AwaitHuman verification",
                "body": f"Your code is {code}.",
                "url": settings.AWAITHUMAN_BASE_URL + "/",
            },
            ttl=600,
            urgency="high",
        )

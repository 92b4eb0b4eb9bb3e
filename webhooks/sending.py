"""The delivery of every signed outbound message (Standard Webhooks): agent callbacks and
organization webhooks alike are ``WebhookMessage`` rows (made by ``webhooks.services``), sent by
this one engine:

* **Signing** — Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id`` (the
  message's public id, the same on every attempt so receivers can deduplicate),
  ``webhook-timestamp`` (Unix seconds of *this* attempt: receivers refuse stale timestamps), and
  ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with the
  base64-decoded ``whsec_`` secret; during a rotation's overlap one signature per secret,
  space-separated.
* **Schedule** — immediately, then ``WEBHOOK_RETRY_SCHEDULE`` (5 s, 5 min, 30 min, 2 h, 5 h,
  10 h, 14 h, 20 h, 24 h) after each failure, ±10 % jitter, or later when the receiver sent a
  ``Retry-After``. Only 2xx succeeds; redirects are failures (never followed); 410 Gone disables
  the endpoint and stops; a URL the outbound guard refuses (``awaithuman.outbound``) fails at
  once.
* **At least once, never lost** — ``next_attempt_at`` on the row is the truth. Every sender
  (the after-commit enqueue, the beat sweep, a replay) claims the row with a conditional UPDATE
  before sending; a claim whose worker died expires after ``WEBHOOK_CLAIM_SECONDS`` and the
  sweep takes the row again. So a crash can repeat an attempt (same ``webhook-id``), never
  drop a message.
* **Record** — every attempt is a ``WebhookAttempt``: status, duration, the start of the
  response body, or the error. A failed message can be replayed (API, console): one more attempt
  now, same ``webhook-id``; a replay also re-enables an endpoint a 410 disabled.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import SYSTEM_ACTOR, audit_record
from awaithuman import metrics, outbound
from awaithuman.celery import app, enqueue
from escalations.timers import ticking_in_process
from tenants.models import Agent

from .models import AgentWebhookSecret, CallbackEndpoint, WebhookEndpoint, WebhookMessage

logger = logging.getLogger(__name__)

RESPONSE_SNIPPET_BYTES = 1000
MAX_RETRY_AFTER_SECONDS = 24 * 3600
DUE_BATCH = 100
# By name: the task module imports this one (``webhooks.tasks``).
DELIVER_TASK = "webhooks.tasks.webhook_deliver"


# --- Signing -------------------------------------------------------------------------------------


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature, ``v1,<base64>``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(*, secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(
        sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body) for secret in secrets
    )


# --- An agent's signing secret -------------------------------------------------------------------


def agent_webhook_secret(*, agent: Agent) -> AgentWebhookSecret:
    """The agent's secret, made on first use (a callback before anyone opened the console)."""
    found, _ = AgentWebhookSecret.objects.get_or_create(agent=agent)
    return found


def _secret_for(message: WebhookMessage) -> list[str]:
    if message.kind == WebhookMessage.Kind.WEBHOOK:
        assert message.webhook_endpoint is not None
        return message.webhook_endpoint.signing_secrets()
    return agent_webhook_secret(agent=message.escalation.agent).signing_secrets()


# --- Sending ------------------------------------------------------------------------------------


def webhook_message_enqueue(message: WebhookMessage) -> None:
    """Send the message's due attempt now: in a worker (production), inline (tests: eager
    Celery, no scheduler), or from the in-process scheduler's next webhook job (embedded
    default), so that a slow receiver never holds up the dispatch of other effects."""
    if ticking_in_process():
        return
    claim = webhook_message_claim(message_id=message.pk)
    if claim:
        # Queued once the caller's transaction (the outbox dispatch) has made the message real.
        transaction.on_commit(lambda: enqueue(app.tasks[DELIVER_TASK], (message.pk, claim)))


def _claimable(now: datetime) -> Q:
    due = Q(status=WebhookMessage.Status.PENDING, next_attempt_at__lte=now)
    abandoned = Q(status=WebhookMessage.Status.SENDING, claimed_until__lt=now)
    return due | abandoned


def webhook_message_claim(*, message_id: int) -> str | None:
    """Take the right to send one attempt of a due message; None if it is not due or someone
    else holds it. A conditional UPDATE, so two sweeps never both win."""
    now = timezone.now()
    claim = secrets.token_hex(16)
    taken = (
        WebhookMessage.objects.filter(_claimable(now), pk=message_id).update(
            status=WebhookMessage.Status.SENDING,
            claim=claim,
            claimed_until=now + timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS),
        )
        == 1
    )
    return claim if taken else None


def webhook_messages_due() -> int:
    """Claim and queue every due message (beat's schedule, every second; embedded too)."""
    now = timezone.now()
    ids = list(
        WebhookMessage.objects.filter(_claimable(now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:DUE_BATCH]
    )
    claimed = []
    for message_id in ids:
        claim = webhook_message_claim(message_id=message_id)
        if claim:
            claimed.append((message_id, claim))
    return enqueue(app.tasks[DELIVER_TASK], *claimed)


@dataclass
class AttemptResult:
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    retry_after: float | None = None
    permanent: bool = False
    duration_ms: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def webhook_message_attempt(*, message_id: int, claim: str) -> None:
    """Send one attempt of a message claimed with ``claim`` and record what happened."""
    message = (
        WebhookMessage.objects.select_related(
            "escalation__agent", "callback_endpoint", "webhook_endpoint"
        )
        .filter(pk=message_id, status=WebhookMessage.Status.SENDING, claim=claim)
        .first()
    )
    if message is None:
        return  # another sender took over after our claim expired
    disabled = _endpoint_disabled(message)
    if disabled:
        _finish(message, claim, status=WebhookMessage.Status.FAILED, error=disabled)
        return
    timestamp = int(time.time())
    body = message.body.encode()
    headers = {
        "content-type": "application/json",
        "webhook-id": message.public_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets=_secret_for(message), msg_id=message.public_id, timestamp=timestamp, body=body
        ),
    }
    attempted_at = timezone.now()
    result = post(message.url, body, headers)
    metrics.callback_attempted(kind=message.kind, succeeded=result.succeeded)
    with transaction.atomic():
        message.attempt_count += 1
        message.attempts.create(
            number=message.attempt_count,
            attempted_at=attempted_at,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            response_body=result.response_body,
            error=result.error[:500],
        )
        if result.succeeded:
            _finish(message, claim, status=WebhookMessage.Status.SUCCEEDED)
        elif result.gone:
            _disable_endpoint(message, reason="The receiver answered 410 Gone.")
            _finish(message, claim, status=WebhookMessage.Status.FAILED, error=result.error)
        else:
            delay = None if result.permanent else _next_delay(message, result.retry_after)
            if delay is None:
                _finish(message, claim, status=WebhookMessage.Status.FAILED, error=result.error)
            else:
                _retry_later(message, claim, delay=delay, error=result.error)


def post(url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
    """POST through the outbound guard; read at most the start of the answer."""
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    started = time.monotonic()
    result = AttemptResult()
    try:
        with (
            outbound.outbound_client(timeout=timeout) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            result.status_code = response.status_code
            result.retry_after = _retry_after(response.headers.get("retry-after"))
            snippet = b""
            for chunk in response.iter_bytes():
                snippet += chunk
                # The per-read timeout alone would let a slow drip run for ever.
                if len(snippet) >= RESPONSE_SNIPPET_BYTES or time.monotonic() - started > timeout:
                    break
            result.response_body = snippet[:RESPONSE_SNIPPET_BYTES].decode(errors="replace")
            if response.is_redirect:
                location = response.headers.get("location", "")
                result.error = f"Redirect ({response.status_code}) to {location} not followed."
            elif not result.succeeded:
                result.error = f"The receiver answered {response.status_code}."
    except outbound.OutboundRefused as exc:
        result.error, result.permanent = f"Refused by the outbound guard: {exc}", True
    except httpx.InvalidURL as exc:
        result.error, result.permanent = f"Invalid URL: {exc}", True
    except httpx.TimeoutException:
        result.error = f"No answer within {timeout:g} s."
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.duration_ms = round((time.monotonic() - started) * 1000)
    return result


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date (RFC 9110 § 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max((when - timezone.now()).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)


def _next_delay(message: WebhookMessage, retry_after: float | None) -> float | None:
    """Seconds until the next attempt, or None once the schedule is used up."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if message.next_step >= len(schedule):
        return None
    delay = schedule[message.next_step] * random.uniform(0.9, 1.1)
    message.next_step += 1
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def _retry_later(message: WebhookMessage, claim: str, *, delay: float, error: str) -> None:
    WebhookMessage.objects.filter(pk=message.pk, claim=claim).update(
        status=WebhookMessage.Status.PENDING,
        attempt_count=message.attempt_count,
        next_step=message.next_step,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        claim="",
        claimed_until=None,
        last_error=error[:500],
    )


@transaction.atomic
def _finish(message: WebhookMessage, claim: str, *, status: str, error: str = "") -> None:
    now = timezone.now()
    succeeded = status == WebhookMessage.Status.SUCCEEDED
    finished = WebhookMessage.objects.filter(pk=message.pk, claim=claim).update(
        status=status,
        attempt_count=message.attempt_count,
        next_attempt_at=None,
        claim="",
        claimed_until=None,
        last_error="" if succeeded else error[:500],
        delivered_at=now if succeeded else None,
    )
    if finished:
        audit_record(
            organization_id=message.organization_id,
            action=f"{message.kind}.{'delivered' if succeeded else 'failed'}",
            actor=SYSTEM_ACTOR,
            target=message.public_id,
            data={
                "escalation": message.escalation.public_id if message.escalation else None,
                "event": message.event_type,
                "attempts": message.attempt_count,
                **({} if succeeded else {"error": error[:200]}),
            },
        )


def _endpoint_disabled(message: WebhookMessage) -> str:
    endpoint = message.callback_endpoint or message.webhook_endpoint
    if endpoint is None or endpoint.disabled_at is None:
        return ""
    return f"The endpoint is disabled: {endpoint.disabled_reason}"


def _disable_endpoint(message: WebhookMessage, *, reason: str) -> None:
    endpoint: CallbackEndpoint | WebhookEndpoint | None = (
        message.callback_endpoint or message.webhook_endpoint
    )
    if endpoint is None:
        return
    endpoint.disabled_at = timezone.now()
    endpoint.disabled_reason = reason
    endpoint.save(update_fields=["disabled_at", "disabled_reason"])
    audit_record(
        organization_id=message.organization_id,
        action=f"{message.kind}.endpoint_disabled",
        actor=SYSTEM_ACTOR,
        target=message.public_id,
        data={"url": endpoint.url, "reason": reason},
    )

"""Organization webhooks: generic signed outbound events for anything without its own transport
(PagerDuty Events, Teams workflows, in-house tools).

An organization admin adds an endpoint in the console (``/org/webhooks/``): a URL and the events
it wants — ``escalation.created``, ``escalation.escalated`` (moved to its next level),
``escalation.decided`` (any terminal state) and ``audit.checkpoint`` (a signed checkpoint of the
organization's audit trail, ``audit.checkpoints``: a copy kept outside our database). Each
endpoint has its own ``whsec_`` secret, shown once, rotated with a 24 h overlap. Messages are
Standard Webhooks signed and delivered by the same engine as agent callbacks
(``notifications.callbacks``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import Checkpoint
from audit.services import audit_record
from escalations import hooks
from escalations.models import Escalation
from escalations.redaction import redact_rendered
from tenants.models import Organization

from .models import WebhookEndpoint, WebhookMessage

Event = WebhookEndpoint.Event

# escalations.hooks event → webhook event type.
EVENT_TYPES = {
    "created": Event.CREATED.value,
    "escalated": Event.ESCALATED.value,
    "decided": Event.DECIDED.value,
    "expired": Event.DECIDED.value,
    "cancelled": Event.DECIDED.value,
}


def event_key(event: str, payload: dict[str, Any]) -> str:
    """Tells one event from a repeat of the same hook: an escalation is created and decided
    once, but escalates once per (level, round)."""
    if event == "escalated":
        return f"escalated:{payload.get('level')}:{payload.get('round')}"
    return "decided" if EVENT_TYPES[event] == Event.DECIDED else event


def message_body(event_type: str, data: dict[str, Any]) -> str:
    """The JSON every attempt of a message sends, fixed when the event happens."""
    body = {"type": event_type, "timestamp": timezone.now().isoformat(), "data": data}
    return json.dumps(body, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)


def _subscribed(organization: Organization | int, event_type: str) -> list[WebhookEndpoint]:
    endpoints = WebhookEndpoint.objects.filter(organization=organization, disabled_at=None)
    return [endpoint for endpoint in endpoints if event_type in endpoint.events]


def has_endpoints(organization: Organization | int, event_type: str) -> bool:
    return bool(_subscribed(organization, event_type))


def webhook_messages_create(
    *, escalation: Escalation, event_type: str, event_key: str, data: dict[str, Any]
) -> list[WebhookMessage]:
    """One message per subscribed endpoint; none for an event already recorded."""
    body = message_body(event_type, data)
    created = []
    for endpoint in _subscribed(escalation.organization_id, event_type):
        message = WebhookMessage(
            organization_id=escalation.organization_id,
            escalation=escalation,
            kind=WebhookMessage.Kind.WEBHOOK,
            webhook_endpoint=endpoint,
            event_type=event_type,
            event_key=event_key,
            url=endpoint.url,
            body=body,
            next_attempt_at=timezone.now(),
        )
        try:
            with transaction.atomic():
                message.save()
        except IntegrityError:
            continue
        created.append(message)
    return created


def checkpoint_messages_create(checkpoint: Checkpoint) -> None:
    """An ``audit.checkpoint`` message per subscribed endpoint; runs in the transaction that
    stores the checkpoint (``audit.checkpoints.on_checkpoint``), sent once it commits."""
    from .callbacks import webhook_message_enqueue  # callbacks imports this module

    event_type = Event.CHECKPOINT.value
    endpoints = _subscribed(checkpoint.organization_id, event_type)
    if not endpoints:
        return
    body = message_body(
        event_type,
        {
            "id": checkpoint.public_id,
            "seq": checkpoint.seq,
            "hash": checkpoint.hash,
            "note": checkpoint.note,
            "created_at": checkpoint.created_at,
        },
    )
    for endpoint in endpoints:
        message = WebhookMessage(
            organization_id=checkpoint.organization_id,
            kind=WebhookMessage.Kind.WEBHOOK,
            webhook_endpoint=endpoint,
            event_type=event_type,
            event_key=f"checkpoint:{checkpoint.seq}",
            url=endpoint.url,
            body=body,
            next_attempt_at=timezone.now(),
        )
        message.save()
        webhook_message_enqueue(message)


def messages_redact(events: list[hooks.Event]) -> None:
    """The outbox consumer of ``redacted``: the escalation's messages (callbacks and webhooks,
    sent or not) keep no payload the escalation no longer has."""
    escalations = Escalation.objects.in_bulk({event.escalation_id for event in events})
    for escalation in escalations.values():
        for message in WebhookMessage.objects.filter(escalation=escalation):
            body = json.loads(message.body)
            body["data"] = redact_rendered(body.get("data"), escalation)
            message.body = json.dumps(
                body, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False
            )
            message.save(update_fields=["body"])


# --- Endpoint services (the console's /org/webhooks/) ------------------------------------------


@transaction.atomic
def webhook_endpoint_create(
    *,
    organization: Organization,
    url: str,
    events: list[str],
    description: str = "",
    actor: dict[str, Any],
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (returned once)."""
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url=url,
        events=sorted(set(events)),
        description=description,
    )
    audit_record(
        organization_id=organization.pk,
        action="webhook_endpoint.created",
        actor=actor,
        target=endpoint.public_id,
        data={"url": url, "events": endpoint.events},
    )
    return endpoint, endpoint.secret


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: dict[str, Any]) -> None:
    audit_record(
        organization_id=endpoint.organization_id,
        action="webhook_endpoint.deleted",
        actor=actor,
        target=endpoint.public_id,
        data={"url": endpoint.url},
    )
    endpoint.delete()


@transaction.atomic
def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: dict[str, Any]) -> str:
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    plaintext = locked.rotate(timezone.now())
    locked.save(update_fields=["secret", "previous_secret", "rotated_at"])
    audit_record(
        organization_id=locked.organization_id,
        action="webhook_endpoint.secret_rotated",
        actor=actor,
        target=locked.public_id,
    )
    return plaintext


@transaction.atomic
def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, actor: dict[str, Any]) -> None:
    """Back on after a 410 disabled it. Messages that failed meanwhile stay failed (replay
    them)."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(disabled_at=None, disabled_reason="")
    audit_record(
        organization_id=endpoint.organization_id,
        action="webhook_endpoint.enabled",
        actor=actor,
        target=endpoint.public_id,
    )

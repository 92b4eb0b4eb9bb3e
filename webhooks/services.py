"""Organization webhooks: generic signed outbound events for anything without its own transport
(PagerDuty Events, Teams workflows, in-house tools).

An organization admin adds an endpoint in the console (``/org/webhooks/``): a URL and the events
it wants — ``escalation.created``, ``escalation.escalated`` (moved to its next level),
``escalation.decided`` (any terminal state) and ``audit.checkpoint`` (a signed checkpoint of the
organization's audit trail, ``audit.checkpoints``: a copy kept outside our database). Each
endpoint has its own ``whsec_`` secret, shown once, rotated with a 24 h overlap. Messages are
Standard Webhooks signed and delivered by the same engine as agent callbacks
(``webhooks.sending``).

Agent callbacks: when an escalation with a ``callback_url`` turns terminal, its agent gets
``{"type": "escalation.decided", "timestamp": …, "data": {…the escalation as the API returns
it…}}``, signed with the agent's own secret and sent by the same engine.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import Checkpoint
from audit.services import audit_record
from escalations import hooks
from escalations.errors import conflict
from escalations.models import Escalation
from escalations.redaction import redact_rendered
from escalations.serializers import escalation_data
from tenants.models import Agent, Organization

from .models import AgentWebhookSecret, CallbackEndpoint, WebhookEndpoint, WebhookMessage
from .sending import agent_webhook_secret, webhook_message_enqueue

Event = WebhookEndpoint.Event

DECIDED = Event.DECIDED.value
TERMINAL_EVENTS = frozenset({"decided", "expired", "cancelled"})

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


# --- Turning escalation events into messages -----------------------------------------------------


def on_escalation_event(escalation_id: int, event: str, payload: dict[str, Any]) -> None:
    """``on_escalation_events`` for one event."""
    on_escalation_events([hooks.Event(escalation_id, event, payload)])


def on_escalation_events(events: list[hooks.Event]) -> None:
    """The outbox consumer: queue the agent's callbacks and the organization's webhooks for a
    batch of events. Idempotent: a repeated event finds its messages already made."""
    wanted = [event for event in events if event.event in EVENT_TYPES]
    if not wanted:
        return
    # Narrow reads first, one for the batch: most events (a timeout sweep of thousands) want
    # no message at all.
    rows = {
        pk: (organization_id, callback_url)
        for pk, organization_id, callback_url in Escalation.objects.filter(
            pk__in={event.escalation_id for event in wanted}
        ).values_list("pk", "organization_id", "callback_url")
    }
    subscribed: dict[tuple[int, str], bool] = {}
    for event in wanted:
        if event.escalation_id not in rows:
            continue  # deleted with its organization since
        organization_id, callback_url = rows[event.escalation_id]
        event_type = EVENT_TYPES[event.event]
        wants_callback = event.event in TERMINAL_EVENTS and bool(callback_url)
        if not wants_callback:
            key = (organization_id, event_type)
            if key not in subscribed:
                subscribed[key] = has_endpoints(organization_id, event_type)
            if not subscribed[key]:
                continue
        _messages_create(event, event_type, wants_callback=wants_callback)


def _messages_create(event: hooks.Event, event_type: str, *, wants_callback: bool) -> None:
    escalation = (
        Escalation.objects.select_related("agent", "organization", "assignee__user")
        .prefetch_related("responses__membership__user")
        .get(pk=event.escalation_id)
    )
    data = escalation_data(escalation)
    queued: list[WebhookMessage] = []
    if wants_callback:
        message = callback_message_create(escalation=escalation, data=data)
        if message is not None:
            queued.append(message)
    queued += webhook_messages_create(
        escalation=escalation,
        event_type=event_type,
        event_key=event_key(event.event, event.payload),
        data=data,
    )
    for message in queued:
        webhook_message_enqueue(message)


def callback_message_create(
    *, escalation: Escalation, data: dict[str, Any]
) -> WebhookMessage | None:
    """The escalation's callback message, once; None if it already exists (a repeated hook)."""
    endpoint, _ = CallbackEndpoint.objects.get_or_create(
        agent=escalation.agent, url=escalation.callback_url
    )
    agent_webhook_secret(agent=escalation.agent)
    message = WebhookMessage(
        organization_id=escalation.organization_id,
        escalation=escalation,
        kind=WebhookMessage.Kind.CALLBACK,
        callback_endpoint=endpoint,
        event_type=DECIDED,
        event_key="decided",
        url=escalation.callback_url,
        body=message_body(DECIDED, data),
        next_attempt_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            message.save()
    except IntegrityError:
        return None
    return message


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


# --- An agent's signing secret -------------------------------------------------------------------


@transaction.atomic
def agent_webhook_secret_rotate(*, agent: Agent, actor: dict[str, Any]) -> str:
    """A new secret for the agent, returned once; the old one keeps signing for the overlap.
    The first call creates the secret."""
    now = timezone.now()
    found = AgentWebhookSecret.objects.select_for_update().filter(agent=agent).first()
    if found is None:
        found = AgentWebhookSecret(agent=agent)
        found.save()
        action, plaintext = "agent.webhook_secret_created", found.secret
    else:
        plaintext = found.rotate(now)
        found.save(update_fields=["secret", "previous_secret", "rotated_at"])
        action = "agent.webhook_secret_rotated"
    audit_record(
        organization_id=agent.organization_id,
        action=action,
        actor=actor,
        target=agent.public_id,
    )
    return plaintext


# --- Replay -------------------------------------------------------------------------------------


@transaction.atomic
def webhook_message_replay(*, message: WebhookMessage, actor: dict[str, Any]) -> WebhookMessage:
    """One more attempt of a failed message, now, with the same ``webhook-id``; it is not
    retried on failure (replay again). Re-enables an endpoint that a 410 disabled."""
    locked = (
        WebhookMessage.objects.select_for_update(of=("self",))
        .select_related("callback_endpoint", "webhook_endpoint", "escalation")
        .get(pk=message.pk)
    )
    if locked.status != WebhookMessage.Status.FAILED:
        raise conflict(
            f"Only a failed delivery can be replayed; this one is {locked.status}.",
            type_slug="not-replayable",
        )
    endpoint = locked.callback_endpoint or locked.webhook_endpoint
    if endpoint is not None and endpoint.disabled_at is not None:
        endpoint.disabled_at, endpoint.disabled_reason = None, ""
        endpoint.save(update_fields=["disabled_at", "disabled_reason"])
    locked.status = WebhookMessage.Status.PENDING
    locked.next_attempt_at = timezone.now()
    locked.next_step = len(settings.WEBHOOK_RETRY_SCHEDULE)
    locked.last_error = ""
    locked.save(update_fields=["status", "next_attempt_at", "next_step", "last_error"])
    audit_record(
        organization_id=locked.organization_id,
        action=f"{locked.kind}.replayed",
        actor=actor,
        target=locked.public_id,
        data={
            "escalation": locked.escalation.public_id if locked.escalation else None,
            "event": locked.event_type,
        },
    )
    transaction.on_commit(lambda: webhook_message_enqueue(locked))
    return locked

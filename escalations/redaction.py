"""Retention and redaction of escalation payloads, with the audit chain left verifiable.

The payloads of an escalation are its ``context`` (reasoning, conversation, tool results), its
action's ``arguments`` and the operators' edits (``edited_arguments``, on the escalation and on
each response). Redacting replaces each by a marker holding its digest::

    {"_redacted": "<SHA-256 hex of the canonical JSON of the value>"}

(``audit.services.payload_digest``). The audit events of an escalation record these same
digests, never the payloads themselves (``context_digest``, ``action.arguments_digest``,
``edited_arguments_digest``), so redaction changes no audit event and the chain verifies as
before; an evidence bundle shows the marker, and anyone who still holds the original value can
prove it is the one recorded by recomputing its digest. (A digest of a tiny value, a bare
``true``, can be guessed by trying candidates: redaction hides payloads, it does not make a
guessable value secret.)

Events written before payload digests (their ``escalation.created`` holds the action's
arguments, ``escalation.decided`` the raw edits) keep what they recorded: removing it would be
the very rewrite the chain exists to expose. ``escalation.redacted`` lists those events.

Two ways in: an admin's "redact now" for an erasure request (``escalation_redact``, with a
reason, audited), and the organization's retention (``payload_retention_days``), applied by the
periodic ``payloads_redact_expired``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import SYSTEM_ACTOR, audit_record, payload_digest
from tenants.models import Organization

from .exceptions import InvalidInput
from .models import Escalation, IdempotencyRecord
from .outbox import outbox_write
from .rules import redact_refusal

REDACTED = "_redacted"
RETENTION_BATCH = 500
# The organization's retention redacts as the system, named so the audit log says which part.
RETENTION_ACTOR = {**SYSTEM_ACTOR, "id": "retention"}


def is_redacted(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {REDACTED}


def digest_of(value: Any) -> str:
    """The digest of a payload, whether it is still there or already redacted."""
    return value[REDACTED] if is_redacted(value) else payload_digest(value)


def redacted(value: Any) -> dict[str, str]:
    return {REDACTED: digest_of(value)}


def optional_digest(value: Any) -> str | None:
    return None if value is None else digest_of(value)


def action_digests(action: dict[str, Any] | None) -> dict[str, Any] | None:
    """An action as the audit chain records it: its name, and its arguments' digest."""
    if not action:
        return None
    return {"name": action["name"], "arguments_digest": digest_of(action.get("arguments") or {})}


def _legacy_events(escalation: Escalation) -> list[int]:
    """The seq of this escalation's events that recorded a payload itself (before digests)."""
    events = AuditEvent.objects.filter(
        organization_id=escalation.organization_id,
        target=escalation.public_id,
        action__in=("escalation.created", "escalation.decided", "response.submitted"),
    ).values_list("seq", "action", "data")
    legacy = []
    for seq, action, data in events:
        if action == "escalation.created":
            recorded = (data.get("action") or {}).get("arguments") is not None
        else:
            recorded = data.get("edited_arguments") is not None
        if recorded:
            legacy.append(seq)
    return sorted(seq for seq in legacy if seq is not None)


@transaction.atomic
def escalation_redact(*, escalation: Escalation, actor: dict[str, Any], reason: str) -> Escalation:
    """Replace the escalation's payloads by their digests, now; audited with ``reason``.

    Only a terminal escalation (a pending one still needs its context to be decided). Redacting
    twice is a no-op. Copies kept for replays (idempotency records) and in organization webhook
    messages (``redacted`` outbox event, ``notifications``) are redacted the same way.
    """
    reason = reason.strip()
    if not reason:
        raise InvalidInput.field(
            "reason", "Say why the payloads are redacted (e.g. the erasure request)."
        )
    if len(reason) > 500:
        raise InvalidInput.field("reason", "At most 500 characters.")
    locked = Escalation.objects.select_for_update().get(pk=escalation.pk)
    if locked.redacted_at is not None:
        return locked
    if refusal := redact_refusal(locked):
        raise refusal
    digests: dict[str, str] = {"context": digest_of(locked.context)}
    locked.context = redacted(locked.context)
    if locked.action:
        arguments = locked.action.get("arguments") or {}
        digests["action.arguments"] = digest_of(arguments)
        locked.action = {**locked.action, "arguments": redacted(arguments)}
    if locked.edited_arguments is not None:
        digests["edited_arguments"] = digest_of(locked.edited_arguments)
        locked.edited_arguments = redacted(locked.edited_arguments)
    for response in locked.responses.exclude(edited_arguments=None):
        response.edited_arguments = redacted(response.edited_arguments)
        response.save(update_fields=["edited_arguments"])
    locked.redacted_at = timezone.now()
    locked.redaction_reason = reason
    locked.save(
        update_fields=["context", "action", "edited_arguments", "redacted_at", "redaction_reason"]
    )
    _redact_idempotency_records(locked)
    audit_record(
        organization_id=locked.organization_id,
        action="escalation.redacted",
        actor=actor,
        target=locked.public_id,
        data={
            "reason": reason,
            "digests": digests,
            "events_with_payloads": _legacy_events(locked),
        },
    )
    outbox_write(escalation_id=locked.pk, event="redacted", payload={})
    return locked


def _redact_idempotency_records(escalation: Escalation) -> None:
    """The create response kept for replays holds the payloads. It is stored as JSON text
    (``escalations.idempotency``), so it is found among the records made around the
    escalation's creation, the only time one can be about it."""
    around = IdempotencyRecord.objects.filter(
        organization_id=escalation.organization_id,
        created_at__gte=escalation.created_at - timedelta(minutes=5),
        created_at__lte=escalation.created_at + timedelta(minutes=5),
    ).exclude(response_body=None)
    for record in around:
        assert record.response_body is not None  # excluded above
        body = json.loads(record.response_body)
        if isinstance(body, dict) and body.get("id") == escalation.public_id:
            record.response_body = json.dumps(redact_rendered(body, escalation))
            record.save(update_fields=["response_body"])


def redact_rendered(rendered: Any, escalation: Escalation) -> Any:
    """An escalation's API rendering (a webhook body's ``data``, a replayed response) with the
    payloads of the now redacted ``escalation``."""
    if not isinstance(rendered, dict):
        return rendered
    rendered = {**rendered, "context": escalation.context, "action": escalation.action}
    decision = rendered.get("decision")
    if isinstance(decision, dict):
        rendered["decision"] = {
            **decision,
            "edited_arguments": escalation.edited_arguments,
            "receipt": None,
        }
    return rendered


def payloads_redact_expired(*, now: Any = None) -> int:
    """Redact the payloads of escalations decided longer ago than their organization's
    ``payload_retention_days``; returns how many. Batched, and safe to run anywhere at once
    (each escalation is locked and re-checked)."""
    now = now or timezone.now()
    done = 0
    for organization in Organization.objects.exclude(payload_retention_days=None):
        assert organization.payload_retention_days is not None  # excluded above
        cutoff = now - timedelta(days=organization.payload_retention_days)
        reason = f"retention: payloads kept {organization.payload_retention_days} days"
        while True:
            due = list(
                Escalation.objects.filter(
                    organization=organization,
                    redacted_at=None,
                    decided_at__lt=cutoff,
                    status__in=Escalation.TERMINAL,
                ).order_by("decided_at", "id")[:RETENTION_BATCH]
            )
            for escalation in due:
                escalation_redact(escalation=escalation, actor=RETENTION_ACTOR, reason=reason)
            done += len(due)
            if len(due) < RETENTION_BATCH:
                break
    return done

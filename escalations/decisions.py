"""Deciding an escalation, the one write every outcome goes through.

An answer, a policy, a timeout and a cancel all end in ``decide``: the decision's fields, the
receipt of an approval (signed here, once, and stored), the ``escalation.decided`` audit event and
the effects owed after commit. The services (``escalations.services``) and the timer sweep
(``escalations.deadlines``) share these, and the transaction and locking helpers around them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from django.db import transaction

from audit.services import audit_batch, audit_record
from awaithuman import metrics

from . import outbox, wakeups
from .models import Escalation
from .receipts import receipt_sign
from .redaction import optional_digest

P = ParamSpec("P")
R = TypeVar("R")


def atomic_audited(function: Callable[P, R]) -> Callable[P, R]:
    """``transaction.atomic`` plus ``audit_batch``: the service's audit events are written
    together at its end, so the organization's chain lock is held only up to the commit."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic(), audit_batch():
            return function(*args, **kwargs)

    return wrapper


def after_commit(escalation: Escalation, event: str, payload: dict[str, Any] | None = None) -> None:
    """Owe ``event``'s effects (outbox rows, in this transaction) and, for a decision, wake the
    long-polls right after commit; the outbox's own wake consumer is the safety net."""
    payload = {"generation": escalation.timer_generation, **(payload or {})}
    outbox.outbox_write(escalation_id=escalation.pk, event=event, payload=payload)
    if escalation.is_terminal:
        transaction.on_commit(functools.partial(wakeups.publish, escalation.public_id))


def locked(escalation: Escalation) -> Escalation:
    # ``of=("self",)``: PostgreSQL cannot lock the nullable side of the assignee outer join.
    return (
        Escalation.objects.select_for_update(of=("self",))
        .select_related("assignee__user")
        .get(pk=escalation.pk)
    )


def decide(
    escalation: Escalation,
    *,
    status: str,
    decided_by: dict[str, Any],
    now: datetime,
    response: Any = None,
    comment: str = "",
    edited_arguments: Any = None,
    channel: str = "",
) -> None:
    """Decide the locked, pending ``escalation``; an approval's receipt is signed here."""
    escalation.status = status
    escalation.decided_at = now
    escalation.decided_by = decided_by
    escalation.decision_response = response
    escalation.decision_comment = comment
    escalation.edited_arguments = edited_arguments
    escalation.decision_channel = channel
    escalation.receipt = receipt_sign(escalation) if status == Escalation.Status.APPROVED else ""
    escalation.next_action_at = None
    escalation.assignee = None
    escalation.claimed_at = None
    escalation.save(
        update_fields=[
            "status",
            "decided_at",
            "decided_by",
            "decision_response",
            "decision_comment",
            "edited_arguments",
            "decision_channel",
            "receipt",
            "next_action_at",
            "assignee",
            "claimed_at",
            "timer_generation",
        ]
    )
    decision_audited(
        escalation,
        status=status,
        decided_by=decided_by,
        response=response,
        comment=comment,
        edited_arguments=edited_arguments,
        channel=channel,
    )


def decision_audited(
    escalation: Escalation,
    *,
    status: str,
    decided_by: dict[str, Any],
    response: Any = None,
    comment: str = "",
    edited_arguments: Any = None,
    channel: str = "",
) -> None:
    metrics.escalation_decided(escalation, outcome=status, decided_by=decided_by["type"])
    audit_record(
        organization_id=escalation.organization_id,
        action="escalation.decided",
        actor=decided_by,
        target=escalation.public_id,
        data={
            "outcome": status,
            "response": response,
            "comment": comment,
            "edited_arguments_digest": optional_digest(edited_arguments),
            "channel": channel,
        },
    )

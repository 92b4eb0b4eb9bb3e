"""Decided escalations written straight to the table, as the services leave them once decided
(the miner only reads history; going through the API for each one would make these tests slow
without testing anything more)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from escalations.models import Escalation
from tenants.ids import new_public_id
from tenants.models import Agent, Membership, Organization


def decided(
    organization: Organization,
    agent: Agent,
    amounts: Iterable[Any],
    *,
    status: str,
    by: Membership | dict[str, Any] | None,
    action: str = "issue_refund",
    wait: timedelta = timedelta(minutes=10),
    age: timedelta = timedelta(days=2),
    now: datetime | None = None,
) -> list[Escalation]:
    """One escalation per amount (``None``: no amount argument; a dict: these arguments),
    decided ``status`` by ``by`` (a member, a ``decided_by`` object, or ``None``: pending)."""
    created_at = (now or timezone.now()) - age
    if isinstance(by, Membership):
        decided_by: dict[str, Any] | None = by.as_actor()
    else:
        decided_by = by
    rows = []
    for amount in amounts:
        if isinstance(amount, dict):
            arguments = amount
        elif amount is None:
            arguments = {"order": 1042}
        else:
            arguments = {"order": 1042, "amount": amount}
        rows.append(
            Escalation(
                public_id=new_public_id("esc"),
                organization=organization,
                agent=agent,
                kind="approval",
                status=status,
                title=f"{action} {amount}"[:300],
                action={"name": action, "arguments": arguments},
                response_schema={"type": "boolean"},
                timeout_seconds=3600,
                on_timeout="reject",
                created_at=created_at,
                expires_at=created_at + timedelta(hours=1),
                decided_at=None if decided_by is None else created_at + wait,
                decided_by=decided_by,
            )
        )
    return Escalation.objects.bulk_create(rows)

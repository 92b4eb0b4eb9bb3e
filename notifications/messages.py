"""What the chat channels show of an escalation: its summary, its action, its outcome."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from escalations.models import Escalation
from escalations.schemas import answer_errors
from tenants.models import Membership


def is_simple_approval(escalation: Escalation) -> bool:
    """Approve/reject buttons are enough: an approval whose schema accepts an empty answer."""
    return escalation.kind == Escalation.Kind.APPROVAL and not answer_errors(
        escalation.response_schema, {}
    )


def action_line(escalation: Escalation) -> str:
    """``issue_refund(order=1042, amount=750)``, shortened for a chat line."""
    action = escalation.action or {}
    if not action.get("name"):
        return ""
    arguments = action.get("arguments") or {}
    args = (
        ", ".join(
            f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
            for key, value in arguments.items()
        )
        if isinstance(arguments, dict)
        else ""
    )
    line = f"{action['name']}({args})"
    return line if len(line) <= 200 else line[:199] + "…"


def summary_text(escalation: Escalation) -> str:
    """The message body every chat channel starts from (plain text, no markup)."""
    lines = [escalation.title]
    if line := action_line(escalation):
        lines.append(line)
    reasoning = (escalation.context or {}).get("reasoning")
    if isinstance(reasoning, str) and reasoning.strip():
        reasoning = reasoning.strip()
        lines.append(reasoning if len(reasoning) <= 300 else reasoning[:299] + "…")
    if escalation.priority in (Escalation.Priority.HIGH, Escalation.Priority.URGENT):
        lines.insert(0, f"[{escalation.priority.upper()}]")
    return "\n".join(lines)


def decider_name(escalation: Escalation) -> str:
    by: dict[str, Any] = escalation.decided_by or {}
    kind = by.get("type")
    if kind == "user":
        membership = (
            Membership.objects.select_related("user").filter(public_id=by.get("id")).first()
        )
        if membership is not None:
            user = membership.user
            return user.get_full_name() or user.first_name or user.email
        return by.get("email") or "someone"
    if kind == "agent":
        return "the agent"
    if kind == "policy":
        return f"policy {by['name']}" if by.get("name") else "a policy"
    if kind == "timeout":
        return "the timeout"
    return by.get("name") or by.get("email") or "someone"


def outcome_text(escalation: Escalation) -> str:
    """ "approved by Ana at 14:02 UTC", "expired at 09:00 UTC", … (the date too when not today)."""
    when = ""
    if escalation.decided_at is not None:
        local = timezone.localtime(escalation.decided_at)
        when = local.strftime("%H:%M %Z")
        if timezone.now() - escalation.decided_at > timedelta(hours=20):
            when = local.strftime("%d %b %Y %H:%M %Z")
        when = f" at {when}"
    if escalation.status == Escalation.Status.EXPIRED:
        return f"expired{when}"
    return f"{escalation.status} by {decider_name(escalation)}{when}"


def outcome_sentence(escalation: Escalation) -> str:
    """ "Approved by Ana at 14:02 UTC" — ``outcome_text`` as a sentence start."""
    text = outcome_text(escalation)
    return text[:1].upper() + text[1:]

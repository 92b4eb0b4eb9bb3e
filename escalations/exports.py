"""Learning data: an organization's decisions as JSON Lines for fine-tuning and other tooling.

Three formats (``docs/exports.md`` shows a line of each and how to train with it):

``chat``
    OpenAI's chat fine-tuning format: one line per escalation a *human* approved that carries an
    action, ``{"messages": [...the agent's conversation..., {"role": "assistant", "tool_calls":
    [the approved call, edits applied]}], "tools": [...], "parallel_tool_calls": false}``.
``preference``
    OpenAI's preference (DPO) format, ``{"input": {"messages": [...]}, "preferred_output":
    [assistant message], "non_preferred_output": [assistant message]}``, from two kinds of human
    decisions: an approval with edits (the edited call is preferred over the proposed one) and a
    rejection with a comment (the comment is preferred over the proposed call). OpenAI's
    preference tuning takes text outputs only, so a call is written as its JSON text.
``decisions``
    Every terminal escalation: context, proposed and approved action, outcome, edits, comment,
    who decided, when and where.

The training formats need a prompt: escalations whose conversation has no user message with
text content are left out, and only ``system`` / ``user`` / ``assistant`` messages with text
content are kept (anything else in ``context.messages`` is the agent's own structure). Policy and
timeout decisions teach nothing about human judgement and appear in ``decisions`` only.

Every export streams: rows are read in chunks and written line by line, so memory stays flat
however many escalations the organization has.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from tenants.models import Organization

from .models import Escalation
from .receipts import approved_action

FORMATS = ("chat", "preference", "decisions")
FILTERS = ("agent", "action", "outcome", "since", "until")
TERMINAL = (
    Escalation.Status.APPROVED,
    Escalation.Status.REJECTED,
    Escalation.Status.ANSWERED,
    Escalation.Status.EXPIRED,
    Escalation.Status.CANCELLED,
)
CHUNK = 1000
PROMPT_ROLES = ("system", "user", "assistant")


class ExportError(ValueError):
    """Bad export parameters: ``errors`` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class ExportFilters:
    agent: str | None = None  # agt_… public id
    action: str | None = None  # action name
    outcome: str | None = None  # approved | rejected | answered | expired | cancelled
    since: datetime | None = None  # decided at or after
    until: datetime | None = None  # decided before

    @classmethod
    def parse(cls, values: dict[str, str]) -> ExportFilters:
        """Filters from query parameters or command options; ``ExportError`` naming each bad
        field. ``since`` / ``until`` take an ISO date (midnight UTC) or date-time."""
        errors: dict[str, list[str]] = {}
        unknown = sorted(set(values) - set(FILTERS))
        for name in unknown:
            errors[name] = ["Unknown filter."]
        # A parameter given empty (``?until=``) is a mistake to name, not a filter left out.
        outcome = values.get("outcome")
        if outcome is not None and outcome not in TERMINAL:
            errors["outcome"] = [f"Must be one of: {', '.join(TERMINAL)}."]
        bounds: dict[str, datetime | None] = {}
        for name in ("since", "until"):
            raw = values.get(name)
            bounds[name] = None
            if raw is not None:
                parsed = parse_moment(raw)
                if parsed is None:
                    errors[name] = ["Must be an ISO 8601 date or date-time."]
                bounds[name] = parsed
        if errors:
            raise ExportError(errors)
        return cls(
            agent=values.get("agent") or None,
            action=values.get("action") or None,
            outcome=outcome,
            since=bounds["since"],
            until=bounds["until"],
        )


def parse_moment(raw: str) -> datetime | None:
    """An ISO 8601 date-time (or a bare date, midnight UTC) as an aware UTC datetime; ``None``
    when it is not one. In UTC because PostgreSQL refuses offsets beyond ±15:59 that ISO 8601
    and Python accept (``+19:22``), and a moment that leaves Python's years 1–9999 once in UTC
    is not one we can compare with."""
    try:
        moment = parse_datetime(raw)
        if moment is None:
            day = parse_date(raw)
            if day is None:
                return None
            moment = datetime.combine(day, time.min)
        if timezone.is_naive(moment):
            return timezone.make_aware(moment, UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def decided_escalations(
    organization: Organization, filters: ExportFilters, *, humans_only: bool = False
) -> QuerySet[Escalation]:
    """The organization's terminal escalations matching ``filters``, oldest decision first."""
    escalations = Escalation.objects.filter(organization=organization, status__in=TERMINAL)
    if filters.agent:
        escalations = escalations.filter(agent__public_id=filters.agent)
    if filters.action:
        escalations = escalations.filter(action__name=filters.action)
    if filters.outcome:
        escalations = escalations.filter(status=filters.outcome)
    if filters.since:
        escalations = escalations.filter(decided_at__gte=filters.since)
    if filters.until:
        escalations = escalations.filter(decided_at__lt=filters.until)
    if humans_only:
        # Learning data needs the payloads: redacted escalations are left out entirely.
        escalations = escalations.filter(decided_by__type="user", redacted_at=None)
    return escalations.select_related("agent").order_by("decided_at", "id")


# --- Lines -------------------------------------------------------------------------------------


def _prompt(escalation: Escalation) -> list[dict[str, str]] | None:
    """The conversation as chat messages, or ``None`` if it holds no user text to learn from."""
    messages = escalation.context.get("messages") if isinstance(escalation.context, dict) else None
    kept = [
        {"role": message["role"], "content": message["content"]}
        for message in messages or []
        if isinstance(message, dict)
        and message.get("role") in PROMPT_ROLES
        and isinstance(message.get("content"), str)
    ]
    if not any(message["role"] == "user" for message in kept):
        return None
    return kept


def _tool_call(escalation: Escalation, action: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"call_{escalation.public_id}",
        "type": "function",
        "function": {
            "name": action["name"],
            "arguments": json.dumps(action["arguments"], sort_keys=True, ensure_ascii=False),
        },
    }


def _call_text(action: dict[str, Any]) -> str:
    return json.dumps(
        {"name": action["name"], "arguments": action["arguments"]},
        sort_keys=True,
        ensure_ascii=False,
    )


def _proposed_action(escalation: Escalation) -> dict[str, Any]:
    action = escalation.action or {}
    return {"name": action["name"], "arguments": action.get("arguments") or {}}


def chat_line(escalation: Escalation) -> dict[str, Any] | None:
    action = approved_action(escalation)
    prompt = _prompt(escalation)
    if escalation.status != Escalation.Status.APPROVED or action is None or prompt is None:
        return None
    return {
        "messages": [
            *prompt,
            {"role": "assistant", "tool_calls": [_tool_call(escalation, action)]},
        ],
        "tools": [{"type": "function", "function": {"name": action["name"]}}],
        "parallel_tool_calls": False,
    }


def preference_line(escalation: Escalation) -> dict[str, Any] | None:
    prompt = _prompt(escalation)
    if not escalation.action or prompt is None:
        return None
    proposed = _call_text(_proposed_action(escalation))
    if escalation.status == Escalation.Status.APPROVED and escalation.edited_arguments is not None:
        action = approved_action(escalation)
        assert action is not None
        preferred = _call_text(action)
    elif escalation.status == Escalation.Status.REJECTED and escalation.decision_comment.strip():
        preferred = escalation.decision_comment.strip()
    else:
        return None
    if preferred == proposed:
        return None  # "edits" that changed nothing teach nothing
    return {
        "input": {"messages": prompt},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": proposed}],
    }


def decision_line(escalation: Escalation) -> dict[str, Any]:
    """Every field of the decision; once redacted, the payloads (context, arguments, edits) are
    left out and ``redacted_at`` says when."""
    line = {
        "id": escalation.public_id,
        "agent": {"id": escalation.agent.public_id, "name": escalation.agent.name},
        "kind": escalation.kind,
        "title": escalation.title,
        "context": escalation.context,
        "proposed_action": escalation.action,
        "approved_action": approved_action(escalation)
        if escalation.status == Escalation.Status.APPROVED
        else None,
        "outcome": escalation.status,
        "response": escalation.decision_response,
        "edited_arguments": escalation.edited_arguments,
        "comment": escalation.decision_comment,
        "decided_by": escalation.decided_by,
        "decided_at": _iso(escalation.decided_at),
        "channel": escalation.decision_channel,
        "created_at": _iso(escalation.created_at),
    }
    if escalation.redacted_at is not None:
        for name in ("context", "edited_arguments"):
            del line[name]
        for name in ("proposed_action", "approved_action"):
            if line[name]:
                line[name] = {"name": line[name]["name"]}
        line["redacted_at"] = _iso(escalation.redacted_at)
    return line


def _iso(moment: datetime | date | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


LINES = {"chat": chat_line, "preference": preference_line, "decisions": decision_line}


def export_lines(
    *, organization: Organization, export_format: str, filters: ExportFilters
) -> Iterator[bytes]:
    """The export as UTF-8 JSON Lines, one ``bytes`` per line, read ``CHUNK`` rows at a time."""
    if export_format not in LINES:
        raise ExportError({"format": [f"Must be one of: {', '.join(FORMATS)}."]})
    make_line = LINES[export_format]
    escalations = decided_escalations(
        organization, filters, humans_only=export_format != "decisions"
    )
    if export_format == "preference":
        escalations = escalations.filter(
            Q(status=Escalation.Status.APPROVED, edited_arguments__isnull=False)
            | Q(status=Escalation.Status.REJECTED) & ~Q(decision_comment="")
        )
    elif export_format == "chat":
        escalations = escalations.filter(status=Escalation.Status.APPROVED)
    for escalation in escalations.iterator(chunk_size=CHUNK):
        line = make_line(escalation)
        if line is not None:
            yield json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

"""Answers from a channel (SMS, WhatsApp, Telegram, Slack, Web Push) and what the channel shows.

Every answer goes through ``escalations.services.response_submit`` — the same quorum, validation
and audit as the console — with the channel's name. This module only finds what an answer refers
to (a ``ChannelAnswerCode``), turns the service's refusals into a sentence fit for a chat bubble,
and, once an escalation is terminal, edits the messages already sent (``update_after_decision``).
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from awaithuman.celery import enqueue
from escalations import hooks
from escalations.exceptions import EscalationError
from escalations.models import Escalation, Response
from escalations.schemas import answer_errors
from escalations.services import response_submit
from tenants.models import Membership

from .models import ChannelAnswerCode, Delivery

logger = logging.getLogger(__name__)

# Channels whose sent messages can be edited (or replaced) to show the outcome.
EDITABLE_CHANNELS = ("telegram", "slack", "push")
TERMINAL_EVENTS = frozenset({"decided", "expired", "cancelled"})

_SMS_ANSWER = re.compile(
    r"^\s*(?P<word>yes|y|approve|ok|no|n|reject)\b[\s:,.-]*(?P<code>\d{4,8})\b[\s:,.-]*(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_APPROVE_WORDS = {"yes", "y", "approve", "ok"}


# --- what an answer refers to ---------------------------------------------------------------


def answer_code_for(*, escalation: Escalation, membership: Membership) -> ChannelAnswerCode:
    """The person's code and button token for this escalation, made on first use.

    The SMS code is unique among the person's codes for escalations still pending, so "YES 4821"
    names exactly one open request; four digits while that is easy, more when it is not.
    """
    existing = ChannelAnswerCode.objects.filter(
        escalation=escalation, membership=membership
    ).first()
    if existing is not None:
        return existing
    in_use = set(
        ChannelAnswerCode.objects.filter(
            membership=membership, escalation__status=Escalation.Status.PENDING
        ).values_list("code", flat=True)
    )
    digits = 4 if len(in_use) < 1000 else 6
    code = str(secrets.randbelow(9 * 10 ** (digits - 1)) + 10 ** (digits - 1))
    while code in in_use:
        code = str(secrets.randbelow(9 * 10 ** (digits - 1)) + 10 ** (digits - 1))
    try:
        # A savepoint: two deliveries to the same person racing here must not break the caller's
        # transaction; the loser reads the winner's row.
        with transaction.atomic():
            return ChannelAnswerCode.objects.create(
                escalation=escalation,
                membership=membership,
                code=code,
                token=secrets.token_urlsafe(16),
            )
    except IntegrityError:
        return ChannelAnswerCode.objects.get(escalation=escalation, membership=membership)


def answer_code_by_token(token: str) -> ChannelAnswerCode | None:
    if not token or len(token) > 32:
        return None
    return (
        ChannelAnswerCode.objects.select_related("escalation", "membership__user")
        .filter(token=token)
        .first()
    )


def answer_code_by_sms(*, memberships: list[Membership], code: str) -> ChannelAnswerCode | None:
    """The code among these members' (the ones this phone number belongs to), a pending
    escalation first, else the most recent — so a late "YES 4821" is told what happened."""
    candidates = (
        ChannelAnswerCode.objects.select_related("escalation", "membership__user")
        .filter(membership__in=memberships, code=code)
        .order_by("-created_at")
    )
    pending = [c for c in candidates[:20] if c.escalation.status == Escalation.Status.PENDING]
    return pending[0] if pending else candidates.first()


def push_answer_token(answer_code: ChannelAnswerCode) -> str:
    """The credential in a push payload: the token plus an HMAC under ``SECRET_KEY``.

    Telegram and Slack see the bare token in their button data, but their answers are
    authenticated by the provider's signature and the sender's user id; a push answer has only
    this token, so it must be one that no chat provider has seen.
    """
    return f"{answer_code.token}.{_push_mac(answer_code.token)}"


def answer_code_by_push_token(value: str) -> ChannelAnswerCode | None:
    token, _, mac = (value or "").partition(".")
    if not mac or not hmac.compare_digest(mac, _push_mac(token)):
        return None
    return answer_code_by_token(token)


def _push_mac(token: str) -> str:
    digest = salted_hmac("awaithuman.push-answer", token, algorithm="sha256").hexdigest()
    return digest[:32]


@dataclass(frozen=True)
class SmsAnswer:
    outcome: str
    code: str
    comment: str


def parse_sms_answer(text: str) -> SmsAnswer | None:
    """ "YES 4821", "no 4821 too risky", "Reject: 4821" → an answer; anything else → None."""
    match = _SMS_ANSWER.match(text or "")
    if match is None:
        return None
    word = match["word"].lower()
    outcome = Response.Outcome.APPROVE if word in _APPROVE_WORDS else Response.Outcome.REJECT
    return SmsAnswer(outcome=outcome, code=match["code"], comment=match["rest"].strip()[:2000])


# --- answering ------------------------------------------------------------------------------


def answer_from_channel(
    *,
    answer_code: ChannelAnswerCode,
    membership: Membership,
    outcome: str,
    comment: str = "",
    channel: str,
) -> tuple[bool, str]:
    """Submit the answer; returns (accepted, the sentence to show in the channel)."""
    escalation = answer_code.escalation
    escalation.refresh_from_db()
    if escalation.is_terminal:
        return False, f"Already {outcome_text(escalation)}."
    needs_console = escalation.kind != Escalation.Kind.APPROVAL or (
        outcome == Response.Outcome.APPROVE and not is_simple_approval(escalation)
    )
    if needs_console:
        return False, f"This one needs a typed answer: {console_url(escalation)}"
    try:
        response_submit(
            escalation=escalation,
            membership=membership,
            outcome=outcome,
            comment=comment,
            channel=channel,
        )
    except EscalationError as problem:
        escalation.refresh_from_db()
        if escalation.is_terminal:
            return False, f"Already {outcome_text(escalation)}."
        if problem.errors and "comment" in problem.errors:
            # The organization asks for a reason with every rejection; a button has none.
            if channel in ("sms", "whatsapp"):
                how = f"reply NO {answer_code.code} and your reason"
            else:
                how = f"reject in the console with one: {console_url(escalation)}"
            return False, f"{escalation.organization.name} asks for a reason to reject: {how}"
        return False, str(problem.detail)
    ChannelAnswerCode.objects.filter(pk=answer_code.pk, used_at=None).update(used_at=timezone.now())
    escalation.refresh_from_db()
    if escalation.is_terminal:
        return True, f"Done: {outcome_text(escalation)}."
    approvals = escalation.responses.filter(outcome=Response.Outcome.APPROVE).count()
    missing = max(escalation.required_approvals - approvals, 0)
    return True, f"Your approval is recorded; {missing} more needed."


# --- what the channel shows -----------------------------------------------------------------


def is_simple_approval(escalation: Escalation) -> bool:
    """Approve/reject buttons are enough: an approval whose schema accepts an empty answer."""
    return escalation.kind == Escalation.Kind.APPROVAL and not answer_errors(
        escalation.response_schema, {}
    )


def console_url(escalation: Escalation) -> str:
    return f"{settings.AWAITHUMAN_BASE_URL}/escalations/{escalation.public_id}/"


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


# --- editing sent messages after the decision -----------------------------------------------


def _sent_editable(escalation_ids: int | set[int]) -> Any:
    ids = {escalation_ids} if isinstance(escalation_ids, int) else escalation_ids
    return Delivery.objects.filter(
        escalation_id__in=ids,
        status=Delivery.Status.SENT,
        channel__in=EDITABLE_CHANNELS,
    )


def on_escalation_events(events: list[hooks.Event]) -> None:
    """Outbox consumer: once terminal, have the messages already sent show the outcome.
    Most escalations have none to edit (a timeout sweep of thousands, e-mail and SMS only):
    one indexed query for the whole batch spares them a task each."""
    terminal = {event.escalation_id for event in events if event.event in TERMINAL_EVENTS}
    if not terminal:
        return
    editable = set(_sent_editable(terminal).values_list("escalation_id", flat=True).distinct())
    for escalation_id in sorted(editable):
        transaction.on_commit(
            functools.partial(enqueue, messages_update_after_decision, (escalation_id,))
        )


@shared_task(acks_late=True, ignore_result=True)
def messages_update_after_decision(escalation_id: int) -> None:
    """Edit every sent Telegram/Slack message (and replace push notifications) of a terminal
    escalation. A provider failure is logged and skipped: the decision stands either way."""
    from .transports import TRANSPORTS

    deliveries = _sent_editable(escalation_id).select_related(
        "escalation", "contact_point", "membership__user"
    )
    for delivery in deliveries:
        if not delivery.escalation.is_terminal or delivery.contact_point is None:
            return
        transport = TRANSPORTS.get(delivery.channel)
        if transport is None:
            continue
        try:
            transport().update_after_decision(delivery)
        except Exception:
            # Also keeps an eager (embedded) run from turning a provider hiccup into an error
            # on the answer request that decided it.
            logger.warning(
                "update after decision failed delivery=%s escalation=%s",
                delivery.public_id,
                delivery.escalation.public_id,
                exc_info=True,
            )

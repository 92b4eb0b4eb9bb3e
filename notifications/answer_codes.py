"""Answers from a channel (SMS, WhatsApp, Telegram, Slack, Web Push).

Every answer goes through ``escalations.services.response_submit`` — the same quorum, validation
and audit as the console — with the channel's name. This module only finds what an answer refers
to (a ``ChannelAnswerCode``) and turns the service's refusals into a sentence fit for a chat
bubble.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from escalations.exceptions import EscalationError
from escalations.models import Escalation, Response
from escalations.services import response_submit
from tenants.models import Membership

from .messages import is_simple_approval, outcome_text
from .models import ChannelAnswerCode

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
        return False, f"This one needs a typed answer: {escalation.console_url}"
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
                how = f"reject in the console with one: {escalation.console_url}"
            return False, f"{escalation.organization.name} asks for a reason to reject: {how}"
        return False, str(problem.detail)
    ChannelAnswerCode.objects.filter(pk=answer_code.pk, used_at=None).update(used_at=timezone.now())
    escalation.refresh_from_db()
    if escalation.is_terminal:
        return True, f"Done: {outcome_text(escalation)}."
    approvals = escalation.responses.filter(outcome=Response.Outcome.APPROVE).count()
    missing = max(escalation.required_approvals - approvals, 0)
    return True, f"Your approval is recorded; {missing} more needed."

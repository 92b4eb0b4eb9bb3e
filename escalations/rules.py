"""Who may do what to an escalation, written once.

The services enforce these rules under the escalation's row lock; the API and the console ask
the same functions before offering an action (a button, a form), so what is offered and what is
accepted cannot drift apart. Each ``*_refusal`` returns the refusal to raise, or ``None`` when
the action is allowed; each ``can_*`` is its yes/no for a screen.
"""

from __future__ import annotations

from tenants.models import Agent, Membership

from .exceptions import Conflict, EscalationError, NotAllowed
from .models import Escalation


def terminal_refusal(escalation: Escalation) -> Conflict | None:
    """A decided escalation takes no further changes; the refusal says who decided it, when."""
    if not escalation.is_terminal:
        return None
    by = escalation.decided_by or {}
    who = by.get("email") or by.get("name") or by.get("type", "someone")
    when = escalation.decided_at.isoformat() if escalation.decided_at else "earlier"
    return Conflict(
        f"The escalation is already {escalation.status} (by {who} at {when}); "
        "it takes no further changes.",
        code="escalation-terminal",
        escalation_status=escalation.status,
    )


def _other_claimer(escalation: Escalation, membership: Membership) -> Membership | None:
    """Who holds the claim, when someone other than ``membership`` does."""
    if escalation.assignee_id in (None, membership.pk):
        return None
    return escalation.assignee


def _claimed_by_other(claimer: Membership, detail: str) -> Conflict:
    return Conflict(detail, code="already-claimed", claimed_by=claimer.public_id)


def claim_refusal(escalation: Escalation, membership: Membership) -> EscalationError | None:
    """Operators, admins and owners claim an unclaimed escalation (their own claim again is a
    no-op, not a refusal)."""
    if refusal := terminal_refusal(escalation):
        return refusal
    if not membership.can_answer:
        return NotAllowed("Viewers cannot claim escalations.")
    if (claimer := _other_claimer(escalation, membership)) is not None:
        when = escalation.claimed_at.isoformat() if escalation.claimed_at else "earlier"
        return _claimed_by_other(
            claimer, f"{claimer.user.email} claimed this escalation at {when}."
        )
    return None


def release_refusal(escalation: Escalation, membership: Membership) -> EscalationError | None:
    """The claimer releases their claim; admins and owners release anyone's (someone went home)."""
    if refusal := terminal_refusal(escalation):
        return refusal
    if membership.role not in Membership.MANAGING_ROLES and (
        claimer := _other_claimer(escalation, membership)
    ):
        return _claimed_by_other(
            claimer, f"{claimer.user.email} holds the claim; only they or an admin can release it."
        )
    return None


def answer_refusal(escalation: Escalation, membership: Membership) -> EscalationError | None:
    """Who may answer at all; the answer itself is checked by ``response_submit``, and answering
    twice is refused there (after the answer's own checks)."""
    if refusal := terminal_refusal(escalation):
        return refusal
    if not membership.can_answer:
        return NotAllowed("Viewers cannot answer escalations.")
    if (claimer := _other_claimer(escalation, membership)) is not None:
        return _claimed_by_other(
            claimer,
            f"{claimer.user.email} has claimed this escalation; wait for them to "
            "answer or release it.",
        )
    return None


def cancel_refusal(escalation: Escalation, agent: Agent | None) -> EscalationError | None:
    """Only the agent that asked can take the question back, while it is pending."""
    if agent is None or escalation.agent_id != agent.pk:
        return NotAllowed("Only the agent that created an escalation can cancel it.")
    return terminal_refusal(escalation)


def redact_refusal(escalation: Escalation) -> EscalationError | None:
    """A pending escalation still needs its context to be decided."""
    if not escalation.is_terminal:
        return Conflict("Only a decided escalation's payloads can be redacted.")
    return None


def can_claim(escalation: Escalation, membership: Membership) -> bool:
    return escalation.assignee_id is None and claim_refusal(escalation, membership) is None


def can_release(escalation: Escalation, membership: Membership) -> bool:
    return escalation.assignee_id is not None and release_refusal(escalation, membership) is None


def can_answer(escalation: Escalation, membership: Membership, *, answered: bool) -> bool:
    """``answered``: whether ``membership`` has answered it already (the caller has the list)."""
    return not answered and answer_refusal(escalation, membership) is None


def can_redact(escalation: Escalation, membership: Membership) -> bool:
    return (
        membership.role in Membership.MANAGING_ROLES
        and escalation.redacted_at is None
        and redact_refusal(escalation) is None
    )

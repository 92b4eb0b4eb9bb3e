"""The life of an escalation: create, claim, answer, decide, cancel, expire.

Every function here changes state inside one transaction, locks the escalation row first (so two
operators answering at once are serialised), writes its audit event in that same transaction, and
wakes long-polls only after commit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.services import audit_batch, audit_record, payload_digest
from awaithuman import metrics
from tenants.billing import escalation_quota_consume
from tenants.models import Agent, ApiKey, Membership, Organization
from tenants.services import SYSTEM_ACTOR

from . import outbox, wakeups
from .errors import conflict, forbidden, invalid, invalid_fields
from .models import Escalation, Response
from .policies import ConditionFailure, policy_match, policy_snapshot
from .redaction import action_digests, optional_digest
from .schemas import answer_errors, default_schema

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT_SECONDS = 24 * 3600
DEFAULT_ON_TIMEOUT: dict[str, str] = {
    Escalation.Kind.APPROVAL: Escalation.OnTimeout.REJECT,
    Escalation.Kind.QUESTION: Escalation.OnTimeout.EXPIRE,
}
_TIMEOUT_STATUS: dict[str, str] = {
    Escalation.OnTimeout.APPROVE: Escalation.Status.APPROVED,
    Escalation.OnTimeout.REJECT: Escalation.Status.REJECTED,
    Escalation.OnTimeout.EXPIRE: Escalation.Status.EXPIRED,
}


@dataclass(frozen=True)
class PolicyOutcome:
    """What the policy engine decided for a proposed escalation."""

    snapshot: dict[str, Any] | None
    outcome: str
    failures: list[ConditionFailure]

    def as_dict(self, *, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """The dry-run answer: policy, outcome and the terms the escalation would get."""
        snapshot = self.snapshot or {}
        timeout_seconds, on_timeout = _timeout_terms(kind, data, snapshot)
        return {
            "policy": {"id": snapshot["id"], "name": snapshot["name"]} if snapshot else None,
            "outcome": self.outcome,
            "levels": snapshot.get("levels", []),
            "timeout_seconds": timeout_seconds,
            "on_timeout": on_timeout,
            "required_approvals": snapshot.get("required_approvals", 1),
        }


def policy_evaluate(
    *, organization: Organization, agent: Agent, data: dict[str, Any], now: datetime | None = None
) -> PolicyOutcome:
    """Run the policy engine on a proposed escalation (no side effects)."""
    match = policy_match(
        organization=organization, agent=agent, data=data, now=now or timezone.now()
    )
    if match.policy is None:
        return PolicyOutcome(snapshot=None, outcome="require_human", failures=match.failures)
    outcome = match.policy.outcome
    if outcome == "auto_approve" and data["kind"] == Escalation.Kind.QUESTION:
        # Nothing can answer a question automatically; a human still must.
        outcome = "require_human"
    return PolicyOutcome(
        snapshot=policy_snapshot(match.policy), outcome=outcome, failures=match.failures
    )


def _timeout_terms(kind: str, data: dict[str, Any], snapshot: dict[str, Any]) -> tuple[int, str]:
    """The agent's timeout terms win; then the policy's defaults; then ours."""
    timeout_seconds = (
        data.get("timeout_seconds") or snapshot.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS
    )
    on_timeout = data.get("on_timeout") or snapshot.get("on_timeout") or DEFAULT_ON_TIMEOUT[kind]
    if kind == Escalation.Kind.QUESTION and on_timeout == Escalation.OnTimeout.APPROVE:
        on_timeout = Escalation.OnTimeout.EXPIRE
    return timeout_seconds, on_timeout


def atomic_audited(function: Callable[P, R]) -> Callable[P, R]:
    """``transaction.atomic`` plus ``audit_batch``: the service's audit events are written
    together at its end, so the organization's chain lock is held only up to the commit."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.atomic(), audit_batch():
            return function(*args, **kwargs)

    return wrapper


def _after_commit(
    escalation: Escalation, event: str, payload: dict[str, Any] | None = None
) -> None:
    """Owe ``event``'s effects (outbox rows, in this transaction) and, for a decision, wake the
    long-polls right after commit; the outbox's own wake consumer is the safety net."""
    payload = {"generation": escalation.timer_generation, **(payload or {})}
    outbox.outbox_write(escalation_id=escalation.pk, event=event, payload=payload)
    if escalation.is_terminal:
        transaction.on_commit(functools.partial(wakeups.publish, escalation.public_id))


@atomic_audited
def escalation_create(
    *, organization: Organization, agent: Agent, api_key: ApiKey | None, data: dict[str, Any]
) -> Escalation:
    """Create an escalation from validated input and run the policy engine on it at once.

    An automatic outcome decides it in this same transaction (the create response is already
    terminal); otherwise it enters the first level of its policy.
    """
    kind = data["kind"]
    now = timezone.now()
    evaluation = policy_evaluate(organization=organization, agent=agent, data=data, now=now)
    snapshot = evaluation.snapshot
    timeout_seconds, on_timeout = _timeout_terms(kind, data, snapshot or {})
    # The plan's monthly quota (402 past it); counted in this transaction, so a failed create
    # gives its unit back.
    escalation_quota_consume(organization=organization, now=now)
    escalation = Escalation(
        organization=organization,
        agent=agent,
        kind=kind,
        title=data["title"],
        action=data.get("action"),
        context=data.get("context") or {},
        response_schema=data.get("response_schema") or default_schema(kind),
        priority=data.get("priority") or Escalation.Priority.NORMAL,
        timeout_seconds=timeout_seconds,
        on_timeout=on_timeout,
        callback_url=data.get("callback_url") or "",
        external_id=data.get("external_id") or "",
        metadata=data.get("metadata") or {},
        created_at=now,
        expires_at=now + timedelta(seconds=timeout_seconds),
        policy_snapshot=snapshot,
        required_approvals=(snapshot or {}).get("required_approvals") or 1,
    )
    automatic = evaluation.outcome in ("auto_approve", "auto_reject") and snapshot is not None
    levels = _levels(escalation)
    if not automatic:
        # Enter level 1 and set the first timer in the INSERT itself: no second write.
        if levels:
            escalation.level_entered_at = now
            escalation.timer_generation = 1
        escalation.next_action_at = _next_timer(escalation)
    escalation.save(force_insert=True)
    # A new escalation has no responses: the create's response body need not ask.
    escalation._prefetched_objects_cache = {"responses": Response.objects.none()}
    actor = api_key.as_actor() if api_key is not None else agent.as_actor()
    audit_record(
        organization_id=organization.pk,
        action="escalation.created",
        actor=actor,
        target=escalation.public_id,
        data={
            "kind": kind,
            "title": escalation.title,
            # Payloads (context, arguments, edits) go into the chain as digests: they prove the
            # payload, and redacting it later (escalations.redaction) leaves the chain intact.
            "action": action_digests(escalation.action),
            "context_digest": payload_digest(escalation.context),
            "priority": escalation.priority,
            "timeout_seconds": timeout_seconds,
            "on_timeout": on_timeout,
            "external_id": escalation.external_id,
            "policy": snapshot["id"] if snapshot else None,
            "policy_outcome": evaluation.outcome,
        },
    )
    for failure in evaluation.failures:
        audit_record(
            organization_id=organization.pk,
            action="policy.condition_failed",
            actor=SYSTEM_ACTOR,
            target=escalation.public_id,
            data={"policy": failure.policy_id, "error": failure.error},
        )
    _after_commit(escalation, "created")
    metrics.escalation_created(escalation, policy_outcome=evaluation.outcome)

    if automatic:
        status = (
            Escalation.Status.APPROVED
            if evaluation.outcome == "auto_approve"
            else Escalation.Status.REJECTED
        )
        _decide(
            escalation,
            status=status,
            decided_by={"type": "policy", "id": snapshot["id"], "name": snapshot["name"]},
            now=now,
            comment=f"Decided by policy “{snapshot['name']}”.",
        )
        _after_commit(escalation, "decided")
        return escalation

    if levels:
        _level_entered(escalation)
    return escalation


def escalations_delete_for_organization(organization: Organization) -> None:
    """``tenants.hooks`` consumer: an organization is being deleted. Escalations PROTECT their
    agent and answers their member, so they go first (their outbox rows with them)."""
    Escalation.objects.filter(organization=organization).delete()


def _locked(escalation: Escalation) -> Escalation:
    # ``of=("self",)``: PostgreSQL cannot lock the nullable side of the assignee outer join.
    return (
        Escalation.objects.select_for_update(of=("self",))
        .select_related("assignee__user")
        .get(pk=escalation.pk)
    )


def _terminal_conflict(escalation: Escalation) -> Exception:
    by = escalation.decided_by or {}
    who = by.get("email") or by.get("name") or by.get("type", "someone")
    when = escalation.decided_at.isoformat() if escalation.decided_at else "earlier"
    return conflict(
        f"The escalation is already {escalation.status} (by {who} at {when}); "
        "it takes no further changes.",
        type_slug="escalation-terminal",
        escalation_status=escalation.status,
    )


def _decide(
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
    escalation.status = status
    escalation.decided_at = now
    escalation.decided_by = decided_by
    escalation.decision_response = response
    escalation.decision_comment = comment
    escalation.edited_arguments = edited_arguments
    escalation.decision_channel = channel
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
            "next_action_at",
            "assignee",
            "claimed_at",
            "timer_generation",
        ]
    )
    _decision_audited(
        escalation,
        status=status,
        decided_by=decided_by,
        response=response,
        comment=comment,
        edited_arguments=edited_arguments,
        channel=channel,
    )


def _decision_audited(
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


@atomic_audited
def escalation_cancel(*, escalation: Escalation, api_key: ApiKey) -> Escalation:
    escalation = _locked(escalation)
    if escalation.is_terminal:
        raise _terminal_conflict(escalation)
    _decide(
        escalation,
        status=Escalation.Status.CANCELLED,
        decided_by=api_key.as_actor(),
        now=timezone.now(),
        channel="api",
    )
    _after_commit(escalation, "cancelled")
    return escalation


@atomic_audited
def escalation_claim(*, escalation: Escalation, membership: Membership) -> Escalation:
    escalation = _locked(escalation)
    if escalation.is_terminal:
        raise _terminal_conflict(escalation)
    if not membership.can_answer:
        raise forbidden("Viewers cannot claim escalations.")
    if escalation.assignee_id == membership.pk:
        return escalation
    if escalation.assignee_id is not None:
        raise conflict(
            f"{escalation.assignee.user.email} claimed this escalation at "
            f"{escalation.claimed_at.isoformat()}.",
            type_slug="already-claimed",
            claimed_by=escalation.assignee.public_id,
        )
    escalation.assignee = membership
    escalation.claimed_at = timezone.now()
    escalation.save(update_fields=["assignee", "claimed_at"])
    audit_record(
        organization_id=escalation.organization_id,
        action="escalation.claimed",
        actor=membership.as_actor(),
        target=escalation.public_id,
    )
    _after_commit(escalation, "claimed")
    return escalation


@atomic_audited
def escalation_release(*, escalation: Escalation, membership: Membership) -> Escalation:
    """Give up a claim. Admins may release anyone's claim (someone went home)."""
    escalation = _locked(escalation)
    if escalation.is_terminal:
        raise _terminal_conflict(escalation)
    if escalation.assignee_id is None:
        return escalation
    if escalation.assignee_id != membership.pk and membership.role not in Membership.MANAGING_ROLES:
        raise conflict(
            f"{escalation.assignee.user.email} holds the claim; only they or an admin can "
            "release it.",
            type_slug="already-claimed",
            claimed_by=escalation.assignee.public_id,
        )
    released = escalation.assignee.public_id
    escalation.assignee = None
    escalation.claimed_at = None
    escalation.save(update_fields=["assignee", "claimed_at"])
    audit_record(
        organization_id=escalation.organization_id,
        action="escalation.released",
        actor=membership.as_actor(),
        target=escalation.public_id,
        data={"released": released},
    )
    _after_commit(escalation, "released")
    return escalation


_OUTCOMES_BY_KIND: dict[str, set[str]] = {
    Escalation.Kind.APPROVAL: {Response.Outcome.APPROVE, Response.Outcome.REJECT},
    Escalation.Kind.QUESTION: {Response.Outcome.ANSWER, Response.Outcome.REJECT},
}


REJECT_REASON_REQUIRED = "Say why you reject: this organization asks for a reason, for the agent."


@atomic_audited
def response_submit(
    *,
    escalation: Escalation,
    membership: Membership,
    outcome: str,
    response: Any = None,
    comment: str = "",
    edited_arguments: dict[str, Any] | None = None,
    channel: str = "api",
) -> Response:
    """Record one operator's answer and decide the escalation when that settles it.

    Approvals need ``required_approvals`` distinct members; one rejection rejects; an answer to a
    question decides it. The typed payload is validated against ``response_schema``.
    """
    escalation = _locked(escalation)
    if escalation.is_terminal:
        raise _terminal_conflict(escalation)
    if not membership.can_answer:
        raise forbidden("Viewers cannot answer escalations.")
    if escalation.assignee_id not in (None, membership.pk):
        raise conflict(
            f"{escalation.assignee.user.email} has claimed this escalation; wait for them to "
            "answer or release it.",
            type_slug="already-claimed",
            claimed_by=escalation.assignee.public_id,
        )
    allowed = _OUTCOMES_BY_KIND[escalation.kind]
    if outcome not in allowed:
        raise invalid(
            "outcome",
            f"A {escalation.kind} takes one of: {', '.join(sorted(allowed))}.",
        )
    if (
        outcome == Response.Outcome.REJECT
        and not comment.strip()
        and escalation.organization.reject_reason_required
    ):
        raise invalid("comment", REJECT_REASON_REQUIRED)
    if edited_arguments is not None and (
        outcome != Response.Outcome.APPROVE or not escalation.action
    ):
        raise invalid("edited_arguments", "Only an approval of an action can edit arguments.")
    if outcome == Response.Outcome.REJECT:
        payload = response
    else:
        payload = response if response is not None else {}
        errors = answer_errors(escalation.response_schema, payload)
        if errors:
            raise invalid_fields(errors)
    if escalation.responses.filter(membership=membership).exists():
        raise conflict("You have already answered this escalation.", type_slug="already-answered")

    now = timezone.now()
    answer = Response.objects.create(
        escalation=escalation,
        membership=membership,
        outcome=outcome,
        payload=payload,
        comment=comment,
        edited_arguments=edited_arguments,
        channel=channel,
        created_at=now,
    )
    actor = membership.as_actor()
    audit_record(
        organization_id=escalation.organization_id,
        action="response.submitted",
        actor=actor,
        target=escalation.public_id,
        data={
            "response_id": answer.public_id,
            "outcome": outcome,
            "response": payload,
            "comment": comment,
            "edited_arguments_digest": optional_digest(edited_arguments),
            "channel": channel,
        },
    )

    decided_status = None
    if outcome == Response.Outcome.REJECT:
        decided_status = Escalation.Status.REJECTED
    elif outcome == Response.Outcome.ANSWER:
        decided_status = Escalation.Status.ANSWERED
    elif (
        escalation.responses.filter(outcome=Response.Outcome.APPROVE).count()
        >= escalation.required_approvals
    ):
        decided_status = Escalation.Status.APPROVED

    if decided_status is not None:
        _decide(
            escalation,
            status=decided_status,
            decided_by=actor,
            now=now,
            response=payload,
            comment=comment,
            edited_arguments=edited_arguments,
            channel=channel,
        )
        _after_commit(escalation, "decided")
    else:
        if escalation.assignee_id == membership.pk:
            escalation.assignee = None
            escalation.claimed_at = None
            escalation.save(update_fields=["assignee", "claimed_at"])
        _after_commit(escalation, "answered")
    return answer


def timers_due(now: datetime | None = None, *, batch: int = 1000) -> int:
    """Run every timer that is due; returns how many escalations it acted on.

    Rows are claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` so any number of tickers (beat on
    several hosts, an in-process ticker) can run at once: each due row is handled by one of them,
    the step is re-derived from the row under its lock, and a lost or duplicated tick is harmless.
    Escalations past their deadline, the bulk of any large sweep, are decided set-wise: one
    UPDATE per outcome, their audit events and outbox rows in one INSERT each, per batch.
    """
    now = now or timezone.now()
    handled = 0
    while True:
        with transaction.atomic(), audit_batch():
            due = list(
                Escalation.objects.select_for_update(skip_locked=True)
                .filter(status=Escalation.Status.PENDING, next_action_at__lte=now)
                .order_by("next_action_at")[:batch]
            )
            metrics.timers_acted([escalation.next_action_at for escalation in due], now)
            _expire_many([escalation for escalation in due if escalation.expires_at <= now], now)
            for escalation in due:
                if escalation.expires_at > now:
                    _timer_step(escalation, now)
        handled += len(due)
        if len(due) < batch:
            return handled


def _expire_many(escalations: list[Escalation], now: datetime) -> None:
    """Apply ``on_timeout`` to locked, pending escalations past their deadline, set-wise."""
    if not escalations:
        return
    by_outcome: dict[str, list[Escalation]] = {}
    for escalation in escalations:
        by_outcome.setdefault(escalation.on_timeout, []).append(escalation)
    for on_timeout, group in by_outcome.items():
        decided_by = {"type": "timeout", "on_timeout": on_timeout}
        status = _TIMEOUT_STATUS[on_timeout]
        Escalation.objects.filter(pk__in=[escalation.pk for escalation in group]).update(
            status=status,
            decided_at=now,
            decided_by=decided_by,
            decision_response=None,
            decision_comment="",
            edited_arguments=None,
            decision_channel="",
            next_action_at=None,
            assignee=None,
            claimed_at=None,
            timer_generation=F("timer_generation") + 1,
        )
        for escalation in group:
            _decision_audited(escalation, status=status, decided_by=decided_by)
    outbox.outbox_write_many(
        [
            (escalation.pk, "expired", {"generation": escalation.timer_generation + 1})
            for escalation in escalations
        ]
    )
    public_ids = [escalation.public_id for escalation in escalations]
    transaction.on_commit(functools.partial(wakeups.publish_many, public_ids))


def _levels(escalation: Escalation) -> list[dict[str, Any]]:
    return (escalation.policy_snapshot or {}).get("levels") or []


def _warning_lead(escalation: Escalation) -> timedelta:
    """Warn a tenth of the timeout before the deadline, at most 15 minutes before."""
    return timedelta(seconds=min(900, escalation.timeout_seconds // 10))


def _has_next_level(escalation: Escalation) -> bool:
    repeat = (escalation.policy_snapshot or {}).get("repeat", 0)
    return escalation.current_level < len(_levels(escalation)) or escalation.current_round < repeat


def _next_timer(escalation: Escalation) -> datetime:
    """The earliest moment something must happen: deadline, warning, next level or reminder."""
    candidates = [escalation.expires_at]
    lead = _warning_lead(escalation)
    if not escalation.deadline_warned and lead.total_seconds() >= 1:
        candidates.append(escalation.expires_at - lead)
    levels = _levels(escalation)
    if levels and escalation.level_entered_at is not None:
        level = levels[escalation.current_level - 1]
        if _has_next_level(escalation):
            candidates.append(
                escalation.level_entered_at + timedelta(seconds=level["wait_seconds"])
            )
        if level.get("reminder_seconds"):
            since = escalation.last_reminder_at or escalation.level_entered_at
            candidates.append(since + timedelta(seconds=level["reminder_seconds"]))
    return min(candidates)


def _enter_level(escalation: Escalation, *, level: int, round_: int, now: datetime) -> None:
    escalation.current_level = level
    escalation.current_round = round_
    escalation.level_entered_at = now
    escalation.last_reminder_at = None
    escalation.timer_generation += 1
    escalation.save(
        update_fields=[
            "current_level",
            "current_round",
            "level_entered_at",
            "last_reminder_at",
            "timer_generation",
        ]
    )
    _level_entered(escalation)


def _level_entered(escalation: Escalation) -> None:
    """Record that the escalation is now at its current level, and owe its effects (outbox)."""
    level, round_ = escalation.current_level, escalation.current_round
    snapshot_level = _levels(escalation)[level - 1]
    audit_record(
        organization_id=escalation.organization_id,
        action="escalation.level_entered",
        actor=SYSTEM_ACTOR,
        target=escalation.public_id,
        data={
            "level": level,
            "round": round_,
            "targets": snapshot_level["targets"],
            "channels": snapshot_level["channels"],
        },
    )
    _after_commit(
        escalation,
        "level_entered" if (level, round_) == (1, 0) else "escalated",
        {"level": level, "round": round_},
    )


def _timer_step(escalation: Escalation, now: datetime) -> None:
    """Do what is due for one locked, pending escalation, then set its next timer."""
    if escalation.expires_at <= now:
        escalation.timer_generation += 1
        _decide(
            escalation,
            status=_TIMEOUT_STATUS[escalation.on_timeout],
            decided_by={"type": "timeout", "on_timeout": escalation.on_timeout},
            now=now,
        )
        _after_commit(escalation, "expired")
        return

    levels = _levels(escalation)
    if levels and escalation.level_entered_at is not None and _has_next_level(escalation):
        wait = timedelta(seconds=levels[escalation.current_level - 1]["wait_seconds"])
        if now >= escalation.level_entered_at + wait:
            if escalation.current_level < len(levels):
                _enter_level(
                    escalation,
                    level=escalation.current_level + 1,
                    round_=escalation.current_round,
                    now=now,
                )
            else:
                _enter_level(escalation, level=1, round_=escalation.current_round + 1, now=now)

    if levels and escalation.level_entered_at is not None:
        reminder = levels[escalation.current_level - 1].get("reminder_seconds")
        since = escalation.last_reminder_at or escalation.level_entered_at
        if reminder and now >= since + timedelta(seconds=reminder):
            escalation.last_reminder_at = now
            escalation.timer_generation += 1
            audit_record(
                organization_id=escalation.organization_id,
                action="escalation.reminded",
                actor=SYSTEM_ACTOR,
                target=escalation.public_id,
                data={"level": escalation.current_level, "round": escalation.current_round},
            )
            _after_commit(escalation, "reminder", {"level": escalation.current_level})

    lead = _warning_lead(escalation)
    if (
        not escalation.deadline_warned
        and lead.total_seconds() >= 1
        and now >= escalation.expires_at - lead
    ):
        escalation.deadline_warned = True
        escalation.timer_generation += 1
        audit_record(
            organization_id=escalation.organization_id,
            action="escalation.deadline_warning",
            actor=SYSTEM_ACTOR,
            target=escalation.public_id,
            data={"expires_at": escalation.expires_at.isoformat()},
        )
        _after_commit(escalation, "deadline_warning")

    escalation.next_action_at = _next_timer(escalation)
    escalation.save(
        update_fields=["next_action_at", "last_reminder_at", "deadline_warned", "timer_generation"]
    )

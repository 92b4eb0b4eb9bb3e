"""The life of an escalation: create, claim, release, answer, cancel.

Every function here changes state inside one transaction, locks the escalation row first (so two
operators answering at once are serialised), writes its audit event in that same transaction, and
wakes long-polls only after commit. Who may do what is ``escalations.rules``; a refusal is an
``escalations.exceptions`` error. Deciding is ``escalations.decisions``; what time does to a
pending escalation (levels, reminders, timeouts) is ``escalations.deadlines``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from audit.services import SYSTEM_ACTOR, audit_record, payload_digest
from awaithuman import metrics, telemetry
from tenants.billing import escalation_quota_consume
from tenants.models import Agent, ApiKey, Membership, Organization

from . import rules
from .deadlines import level_entered, next_timer, policy_levels
from .decisions import after_commit, atomic_audited, decide, locked
from .exceptions import Conflict, InvalidInput
from .models import Escalation, Response
from .policies import policy_evaluate, timeout_terms
from .redaction import action_digests, optional_digest
from .schemas import answer_errors, default_schema


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
    timeout_seconds, on_timeout = timeout_terms(kind, data, snapshot or {})
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
        trace_carrier=telemetry.trace_carrier(),
    )
    automatic = evaluation.outcome in ("auto_approve", "auto_reject") and snapshot is not None
    levels = policy_levels(escalation)
    if not automatic:
        # Enter level 1 and set the first timer in the INSERT itself: no second write.
        if levels:
            escalation.level_entered_at = now
            escalation.timer_generation = 1
        escalation.next_action_at = next_timer(escalation)
    escalation.save(force_insert=True)
    # A new escalation has no responses: the create's response body need not ask.
    # Django's private prefetch cache, which django-stubs does not declare on models.
    escalation._prefetched_objects_cache = {"responses": Response.objects.none()}  # type: ignore[attr-defined]
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
    after_commit(escalation, "created")
    metrics.escalation_created(escalation, policy_outcome=evaluation.outcome)

    if automatic and snapshot is not None:
        status = (
            Escalation.Status.APPROVED
            if evaluation.outcome == "auto_approve"
            else Escalation.Status.REJECTED
        )
        decide(
            escalation,
            status=status,
            decided_by={"type": "policy", "id": snapshot["id"], "name": snapshot["name"]},
            now=now,
            comment=f"Decided by policy “{snapshot['name']}”.",
        )
        after_commit(escalation, "decided")
        return escalation

    if levels:
        level_entered(escalation)
    return escalation


def escalations_delete_for_organization(organization: Organization) -> None:
    """``tenants.hooks`` consumer: an organization is being deleted. Escalations PROTECT their
    agent and answers their member, so they go first (their outbox rows with them)."""
    Escalation.objects.filter(organization=organization).delete()


@atomic_audited
def escalation_cancel(*, escalation: Escalation, api_key: ApiKey) -> Escalation:
    """The agent that asked takes its question back (``rules.cancel_refusal``)."""
    escalation = locked(escalation)
    if refusal := rules.cancel_refusal(escalation, api_key.agent):
        raise refusal
    decide(
        escalation,
        status=Escalation.Status.CANCELLED,
        decided_by=api_key.as_actor(),
        now=timezone.now(),
        channel="api",
    )
    after_commit(escalation, "cancelled")
    return escalation


@atomic_audited
def escalation_claim(*, escalation: Escalation, membership: Membership) -> Escalation:
    """Take the escalation (``rules.claim_refusal``); claiming one's own claim again is a no-op."""
    escalation = locked(escalation)
    if refusal := rules.claim_refusal(escalation, membership):
        raise refusal
    if escalation.assignee_id == membership.pk:
        return escalation
    escalation.assignee = membership
    escalation.claimed_at = timezone.now()
    escalation.save(update_fields=["assignee", "claimed_at"])
    audit_record(
        organization_id=escalation.organization_id,
        action="escalation.claimed",
        actor=membership.as_actor(),
        target=escalation.public_id,
    )
    after_commit(escalation, "claimed")
    return escalation


@atomic_audited
def escalation_release(*, escalation: Escalation, membership: Membership) -> Escalation:
    """Give up a claim. Admins may release anyone's claim (someone went home)."""
    escalation = locked(escalation)
    if refusal := rules.release_refusal(escalation, membership):
        raise refusal
    if escalation.assignee is None:
        return escalation
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
    after_commit(escalation, "released")
    return escalation


_OUTCOMES_BY_KIND: dict[str, set[str]] = {
    Escalation.Kind.APPROVAL: {Response.Outcome.APPROVE, Response.Outcome.REJECT},
    Escalation.Kind.QUESTION: {Response.Outcome.ANSWER, Response.Outcome.REJECT},
}


REJECT_REASON_REQUIRED = "Say why you reject: this organization asks for a reason, for the agent."


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

    With tracing on, the answer runs in the trace of the request that created the escalation
    (linked to the answering request's own), so its outbox events, and the callback they cause,
    stay in the create's trace.
    """
    with telemetry.continued(escalation.trace_carrier, "escalation answered"):
        return _response_recorded(
            escalation=escalation,
            membership=membership,
            outcome=outcome,
            response=response,
            comment=comment,
            edited_arguments=edited_arguments,
            channel=channel,
        )


@atomic_audited
def _response_recorded(
    *,
    escalation: Escalation,
    membership: Membership,
    outcome: str,
    response: Any,
    comment: str,
    edited_arguments: dict[str, Any] | None,
    channel: str,
) -> Response:
    escalation = locked(escalation)
    if refusal := rules.answer_refusal(escalation, membership):
        raise refusal
    allowed = _OUTCOMES_BY_KIND[escalation.kind]
    if outcome not in allowed:
        raise InvalidInput.field(
            "outcome",
            f"A {escalation.kind} takes one of: {', '.join(sorted(allowed))}.",
        )
    if (
        outcome == Response.Outcome.REJECT
        and not comment.strip()
        and escalation.organization.reject_reason_required
    ):
        raise InvalidInput.field("comment", REJECT_REASON_REQUIRED)
    if edited_arguments is not None and (
        outcome != Response.Outcome.APPROVE or not escalation.action
    ):
        raise InvalidInput.field(
            "edited_arguments", "Only an approval of an action can edit arguments."
        )
    if outcome == Response.Outcome.REJECT:
        payload = response
    else:
        payload = response if response is not None else {}
        errors = answer_errors(escalation.response_schema, payload)
        if errors:
            raise InvalidInput(errors)
    if escalation.responses.filter(membership=membership).exists():
        raise Conflict("You have already answered this escalation.", code="already-answered")

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
        decide(
            escalation,
            status=decided_status,
            decided_by=actor,
            now=now,
            response=payload,
            comment=comment,
            edited_arguments=edited_arguments,
            channel=channel,
        )
        after_commit(escalation, "decided")
    else:
        if escalation.assignee_id == membership.pk:
            escalation.assignee = None
            escalation.claimed_at = None
            escalation.save(update_fields=["assignee", "claimed_at"])
        after_commit(escalation, "answered")
    return answer

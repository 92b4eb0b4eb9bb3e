"""The operator console's queue and decision screen (server-rendered; live updates in JS).

Views are thin: every query starts from ``request.organization`` (another organization's
escalation is a 404), writes go through the services, and the services' problems are shown in
place. Agent-supplied text is only ever rendered through Django's autoescaping — never ``|safe``,
never markdown, never turned into links.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from audit.models import AuditEvent, ChainHead
from awaithuman.problems import refusal_status
from tenants.billing import FEATURE_AUDIT_EXPORT, feature_refusal
from tenants.console import role_required
from tenants.lookups import get_for_organization_or_404
from tenants.models import Membership
from tenants.requests import OrganizationRequest

from . import bundles, live, outbox, redaction, rules
from .exceptions import EscalationError
from .exports import ExportError
from .forms import ResponseForm
from .models import Escalation, Response
from .policies import always_allow_url
from .services import escalation_claim, escalation_release, response_submit

ANSWERING = tuple(Membership.ANSWERING_ROLES)
# Agent text longer than this (or with more lines) is folded behind a <details>.
FOLD_CHARS = 600
FOLD_LINES = 12
MESSAGE_ROLES = {"user", "assistant", "system", "tool", "function", "developer"}


def duration(seconds: float) -> str:
    """``42s``, ``7m``, ``3h 5m``, ``2d 4h``: short enough for a table cell."""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


@require_GET
@role_required()
def queue(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    seq = (
        ChainHead.objects.filter(organization_id=organization.pk)
        .values_list("seq", flat=True)
        .first()
    )
    now = timezone.now()
    # Rows are plain dicts (the same shape the websocket sends), and the detail link is built
    # from one reversed prefix: 500 rows render without 500 model method calls or reverse()s.
    detail = reverse("queue:escalation", args=["ESCALATION_ID"])
    rows = []
    for escalation in live.pending_escalations(organization):
        row = live.queue_row(escalation)
        left = (escalation.expires_at - now).total_seconds()
        row.update(
            href=detail.replace("ESCALATION_ID", escalation.public_id),
            waiting=duration((now - escalation.created_at).total_seconds()),
            left=duration(left),
            soon=left < 300,
            mine=escalation.assignee_id is not None
            and escalation.assignee_id == request.membership.pk,
        )
        rows.append(row)
    # A new organization's first visit: nothing ever asked yet, so show how to get there.
    first_run = not rows and not organization.escalations.exists()
    context = {
        "rows": rows,
        "seq": seq or 0,
        "first_run": first_run,
        "has_agent": first_run and organization.agents.exists(),
        "can_manage": request.membership.role in Membership.MANAGING_ROLES,
    }
    return render(request, "escalations/queue.html", context)


def _escalation(request: OrganizationRequest, public_id: str) -> Escalation:
    return get_for_organization_or_404(
        Escalation.objects.select_related("agent", "assignee__user"),
        request.organization,
        public_id,
        prefix="esc",
    )


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@dataclass
class Text:
    """Agent text ready to show: folded when long, with a one-line preview."""

    text: str

    @property
    def folded(self) -> bool:
        return len(self.text) > FOLD_CHARS or self.text.count("\n") >= FOLD_LINES

    @property
    def inline(self) -> bool:
        return "\n" not in self.text and len(self.text) <= 120

    @property
    def preview(self) -> str:
        first = self.text.strip().split("\n", 1)[0]
        return first[:120] + ("…" if len(first) > 120 else "")

    @property
    def size(self) -> str:
        lines = self.text.count("\n") + 1
        return f"{lines} lines, {len(self.text):,} characters"


def _tool_calls(raw: Any) -> list[dict[str, Any]]:
    calls = []
    for index, call in enumerate(raw if isinstance(raw, list) else [], start=1):
        if not isinstance(call, dict):
            calls.append({"index": index, "name": "", "arguments": Text(as_text(call))})
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = call.get("name") or call.get("tool") or function.get("name") or ""
        arguments = call.get("arguments", call.get("input", function.get("arguments")))
        result = call.get("result", call.get("output"))
        error = call.get("error")
        calls.append(
            {
                "index": index,
                "name": as_text(name),
                "arguments": Text(as_text(arguments)) if arguments is not None else None,
                "result": Text(as_text(result)) if result is not None else None,
                "error": Text(as_text(error)) if error not in (None, "", False) else None,
            }
        )
    return calls


def _message_text(content: Any) -> str:
    if isinstance(content, list):
        parts = [
            part["text"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else as_text(part)
            for part in content
        ]
        return "\n\n".join(parts)
    return as_text(content) if content is not None else ""


def _messages(raw: Any) -> list[dict[str, Any]]:
    bubbles = []
    for message in raw if isinstance(raw, list) else []:
        if isinstance(message, dict):
            role = str(message.get("role") or "")
            text = _message_text(message.get("content"))
        else:
            role, text = "", as_text(message)
        bubbles.append(
            {
                "role": role[:40],
                # The role becomes a CSS class only from a fixed list.
                "side": role if role in MESSAGE_ROLES else "other",
                "text": Text(text),
            }
        )
    return bubbles


def _actor_label(actor: Any) -> str:
    if not isinstance(actor, dict):
        return "?"
    label = actor.get("email") or actor.get("name") or actor.get("type") or "?"
    if actor.get("type") == "agent":
        return f"agent {label}"
    return str(label)


TIMELINE_LABELS = {
    "escalation.created": "created the escalation",
    "escalation.level_entered": "entered level {level}",
    "escalation.claimed": "claimed it",
    "escalation.released": "released the claim",
    "escalation.reminded": "sent a reminder (level {level})",
    "escalation.deadline_warning": "warned of the deadline",
    "response.submitted": "answered: {outcome}",
    "escalation.decided": "decided: {outcome}",
    "policy.condition_failed": "policy condition failed",
    "delivery.queued": "queued {count} notification(s) (level {level})",
    "delivery.sent": "notified {email} by {channel}",
    "delivery.attempt_failed": "could not reach {email} by {channel} yet; retrying",
    "delivery.failed": "failed to notify {email} by {channel}",
    "delivery.delivered": "{email} received it by {channel}",
    "delivery.read": "{email} read it on {channel}",
}


def _timeline(escalation: Escalation) -> list[dict[str, Any]]:
    events = AuditEvent.objects.filter(
        organization_id=escalation.organization_id, target=escalation.public_id
    ).order_by("id")
    timeline = []
    for event in events:
        data = event.data if isinstance(event.data, dict) else {}
        template = TIMELINE_LABELS.get(event.action, event.action)
        try:
            what = template.format(
                **{
                    key: data.get(key, "")
                    for key in ("level", "outcome", "channel", "count", "email")
                }
            )
        except (KeyError, ValueError):
            what = event.action
        timeline.append(
            {
                "at": event.created_at,
                "actor": _actor_label(event.actor),
                "what": what,
                "comment": data.get("comment") or data.get("error") or "",
                "seq": event.seq,
            }
        )
    return timeline


def _claim_state(escalation: Escalation, membership: Membership) -> str:
    if escalation.assignee_id is None:
        return "unclaimed"
    return "mine" if escalation.assignee_id == membership.pk else "other"


def _detail_context(
    request: OrganizationRequest,
    escalation: Escalation,
    *,
    form: ResponseForm | None = None,
    comment: str = "",
    edited_arguments: str | None = None,
    edited_arguments_errors: list[str] | None = None,
    comment_errors: list[str] | None = None,
) -> dict[str, Any]:
    membership: Membership = request.membership
    responses = list(escalation.responses.select_related("membership__user"))
    approvals = sum(1 for r in responses if r.outcome == Response.Outcome.APPROVE)
    mine = next((r for r in responses if r.membership_id == membership.pk), None)
    context = escalation.context if isinstance(escalation.context, dict) else {}
    action = escalation.action if isinstance(escalation.action, dict) else None
    arguments = action.get("arguments") if action else None
    argument_rows = (
        [(key, Text(as_text(value))) for key, value in arguments.items()]
        if isinstance(arguments, dict)
        else []
    )
    known = {"reasoning", "tool_calls", "messages"}
    claim = _claim_state(escalation, membership)
    form = form or ResponseForm(escalation.response_schema)
    return {
        "escalation": escalation,
        "action": action,
        "argument_rows": argument_rows,
        "edited_arguments_text": Text(as_text(escalation.edited_arguments)),
        "reasoning": Text(as_text(context["reasoning"])) if context.get("reasoning") else None,
        "tool_calls": _tool_calls(context.get("tool_calls")),
        "bubbles": _messages(context.get("messages")),
        "other_context": [
            (key, Text(as_text(value))) for key, value in context.items() if key not in known
        ],
        "metadata": [
            (key, Text(as_text(value))) for key, value in (escalation.metadata or {}).items()
        ],
        "timeline": _timeline(escalation),
        "responses": responses,
        "approvals": approvals,
        "my_response": mine,
        "claim": claim,
        "can_act": membership.can_answer,
        "can_claim": rules.can_claim(escalation, membership),
        "can_answer": rules.can_answer(escalation, membership, answered=mine is not None),
        "can_release": rules.can_release(escalation, membership),
        "can_redact": rules.can_redact(escalation, membership),
        "always_allow_url": always_allow_url(escalation)
        if membership.role in Membership.MANAGING_ROLES
        and escalation.kind == Escalation.Kind.APPROVAL
        and action
        else None,
        "form": form,
        "comment": comment,
        "comment_errors": comment_errors or [],
        "edited_arguments": edited_arguments
        if edited_arguments is not None
        else (json.dumps(arguments, indent=2, ensure_ascii=False) if arguments is not None else ""),
        "edited_arguments_errors": edited_arguments_errors or [],
        "waiting": duration((timezone.now() - escalation.created_at).total_seconds()),
        "left": duration((escalation.expires_at - timezone.now()).total_seconds()),
        "levels": len((escalation.policy_snapshot or {}).get("levels") or []),
    }


@require_GET
@role_required()
def escalation_detail(request: OrganizationRequest, public_id: str) -> HttpResponse:
    escalation = _escalation(request, public_id)
    return render(request, "escalations/detail.html", _detail_context(request, escalation))


def _back(escalation: Escalation) -> HttpResponseRedirect:
    return HttpResponseRedirect(escalation.get_absolute_url())


@require_POST
@role_required(*ANSWERING)
def escalation_claim_view(request: OrganizationRequest, public_id: str) -> HttpResponse:
    escalation = _escalation(request, public_id)
    try:
        escalation_claim(escalation=escalation, membership=request.membership)
    except EscalationError as refusal:
        messages.error(request, refusal.detail)
    return _back(escalation)


@require_POST
@role_required(*ANSWERING)
def escalation_release_view(request: OrganizationRequest, public_id: str) -> HttpResponse:
    escalation = _escalation(request, public_id)
    try:
        escalation_release(escalation=escalation, membership=request.membership)
    except EscalationError as refusal:
        messages.error(request, refusal.detail)
    return _back(escalation)


@require_POST
@role_required(*Membership.MANAGING_ROLES)
def escalation_redact_view(request: OrganizationRequest, public_id: str) -> HttpResponse:
    """ "Redact now" (an erasure request): the payloads give way to their digests, audited."""
    escalation = _escalation(request, public_id)
    try:
        redaction.escalation_redact(
            escalation=escalation,
            actor=request.membership.as_actor(),
            reason=request.POST.get("reason", ""),
        )
    except EscalationError as refusal:
        field_errors = [error for errors in (refusal.errors or {}).values() for error in errors]
        messages.error(request, " ".join(field_errors) or refusal.detail)
    else:
        messages.success(request, "The payloads were replaced by their digests.")
    return _back(escalation)


OUTCOME_MESSAGES: dict[str, str] = {
    Response.Outcome.APPROVE: "You approved “{title}”.",
    Response.Outcome.REJECT: "You rejected “{title}”.",
    Response.Outcome.ANSWER: "You answered “{title}”.",
}


@require_POST
@role_required(*ANSWERING)
def escalation_respond(request: OrganizationRequest, public_id: str) -> HttpResponse:
    escalation = _escalation(request, public_id)
    outcome = request.POST.get("outcome", "")
    comment = request.POST.get("comment", "").strip()
    raw_arguments = request.POST.get("edited_arguments")
    form = ResponseForm(escalation.response_schema)
    comment_errors: list[str] = []
    arguments_errors: list[str] = []
    edited: dict[str, Any] | None = None
    payload: Any = None

    if outcome != Response.Outcome.REJECT:
        payload = form.parse(request.POST)
        action = escalation.action if isinstance(escalation.action, dict) else None
        if outcome == Response.Outcome.APPROVE and action and raw_arguments is not None:
            try:
                edited = json.loads(raw_arguments)
            except json.JSONDecodeError as exc:
                arguments_errors.append(f"Not valid JSON: {exc.msg} (line {exc.lineno}).")
            else:
                if not isinstance(edited, dict):
                    arguments_errors.append("The arguments must be a JSON object.")
                    edited = None
                elif edited == (action.get("arguments") or {}):
                    edited = None  # unchanged: a plain approval

    def again(status: int) -> HttpResponse:
        context = _detail_context(
            request,
            escalation,
            form=form,
            comment=comment,
            edited_arguments=raw_arguments,
            edited_arguments_errors=arguments_errors,
            comment_errors=comment_errors,
        )
        return render(request, "escalations/detail.html", context, status=status)

    if arguments_errors or form.has_errors:
        return again(400)
    try:
        response_submit(
            escalation=escalation,
            membership=request.membership,
            outcome=outcome,
            response=payload,
            comment=comment,
            edited_arguments=edited,
            channel="console",
        )
    except EscalationError as refusal:
        errors = dict(refusal.errors or {})
        comment_errors += errors.pop("comment", [])
        arguments_errors += errors.pop("edited_arguments", [])
        unplaced = errors.pop("outcome", [])
        form.add_errors(errors)
        form.errors += unplaced
        if not (errors or comment_errors or arguments_errors or unplaced):
            form.errors.append(refusal.detail)
        escalation.refresh_from_db()
        return again(refusal_status(refusal))
    template = OUTCOME_MESSAGES.get(outcome, "Saved your answer to “{title}”.")
    messages.success(request, template.format(title=escalation.title[:80]))
    return HttpResponseRedirect(reverse("queue:index"))


@role_required("admin", "owner")
def effects(request: OrganizationRequest) -> HttpResponse:
    """Effects (notifications, callbacks, frames, …) that kept failing and were parked: what
    failed, why, and a Retry once the cause is fixed (a receiver back up, a setting corrected)."""
    organization = request.organization
    parked = outbox.outbox_parked(organization_id=organization.pk)
    if request.method == "POST":
        wanted = parked
        if request.POST.get("event"):
            wanted = parked.filter(pk=_int_or_zero(request.POST["event"]))
        ids = list(wanted.values_list("pk", flat=True))
        retried = outbox.outbox_retry(ids=ids, actor=request.membership.as_actor())
        messages.success(request, f"{retried} effect(s) will be tried again within a second.")
        return HttpResponseRedirect(reverse("queue:effects"))
    return render(request, "escalations/effects.html", {"parked": parked[:200]})


def _int_or_zero(value: str) -> int:
    return int(value) if value.isdigit() else 0


@role_required("admin", "owner")
def evidence(request: OrganizationRequest) -> HttpResponse | StreamingHttpResponse:
    """The evidence bundle download (``escalations.bundles``): a date range, then the ZIP."""
    organization = request.organization
    values = {name: request.GET.get(name, "") for name in ("since", "until")}
    if request.GET.get("download"):
        if refusal := feature_refusal(organization, FEATURE_AUDIT_EXPORT):
            context = {**values, "errors": {"plan": [refusal]}}
            return render(request, "escalations/evidence.html", context, status=402)
        try:
            since, until = bundles.bundle_range(values)
        except ExportError as exc:
            context = {**values, "errors": exc.errors}
            return render(request, "escalations/evidence.html", context, status=400)
        return bundles.bundle_response(request, organization, since, until)
    today = timezone.now().date()
    context = {"since": today.replace(day=1).isoformat(), "until": today.isoformat(), "errors": {}}
    return render(request, "escalations/evidence.html", context)

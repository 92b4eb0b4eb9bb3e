"""Pages: answering from an e-mail's action link, and my contact points in the console.

The action link page needs no session: the signed token is the credential (``links``). Its GET
only shows what would be decided, so a mail scanner that fetches every link changes nothing;
the page's button POSTs the token back. That POST carries no CSRF token — a forged cross-site
POST would need the secret token itself, and with it the attacker could simply click.
"""

from __future__ import annotations

import json
from datetime import time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from awaithuman.problems import refusal_status
from escalations.exceptions import EscalationError
from escalations.models import CHANNEL_CHOICES, Escalation
from escalations.services import response_submit
from tenants.console import role_required
from tenants.ids import get_by_public_id_or_404
from tenants.requests import OrganizationRequest

from . import contact_points as point_services
from . import links
from .contact_points import ContactPointError
from .models import ContactPoint, Delivery
from .transports.email import escalation_summary

COMMENT_MAX = 2000


def _decided_by(escalation: Escalation) -> str:
    by = escalation.decided_by or {}
    if by.get("type") == "user":
        return by.get("email") or "an operator"
    if by.get("type") == "policy":
        return f"policy “{by.get('name', '')}”"
    if by.get("type") == "timeout":
        return "the deadline"
    if by.get("type") == "agent":
        return "the agent (withdrawn)"
    return "someone"


def _action_page(
    request: HttpRequest, state: str, status: int = 200, **context: Any
) -> HttpResponse:
    escalation = context.get("escalation")
    if escalation is not None and escalation.is_terminal:
        context.setdefault("decided_by", _decided_by(escalation))
    return render(request, "notifications/action.html", {"state": state, **context}, status=status)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def action(request: HttpRequest, token: str) -> HttpResponse:
    try:
        claim = links.action_claim(token)
    except signing.BadSignature:
        return _action_page(request, "invalid", status=404)
    delivery = (
        Delivery.objects.select_related(
            "escalation__agent", "escalation__organization", "membership__user"
        )
        .filter(
            public_id=claim.delivery,
            escalation__public_id=claim.escalation,
            membership__public_id=claim.membership,
        )
        .first()
    )
    if delivery is None or delivery.membership is None:
        return _action_page(request, "invalid", status=404)
    escalation = delivery.escalation
    context: dict[str, Any] = {
        "escalation": escalation,
        "outcome": claim.outcome,
        "member": delivery.membership,
        "console_url": escalation.console_url,
        **escalation_summary(escalation),
    }
    conflict = 409 if request.method == "POST" else 200
    if escalation.is_terminal:
        return _action_page(request, "decided", status=conflict, **context)
    if delivery.action_used_at is not None:
        return _action_page(request, "used", status=conflict, **context)
    if timezone.now() >= escalation.expires_at:
        return _action_page(request, "expired", status=conflict, **context)
    if request.method == "GET":
        return _action_page(request, "confirm", **context)

    comment = request.POST.get("comment", "")[:COMMENT_MAX]
    try:
        with transaction.atomic():
            # Single use: the first POST marks the delivery; a second finds it marked.
            first = Delivery.objects.filter(pk=delivery.pk, action_used_at__isnull=True).update(
                action_used_at=timezone.now()
            )
            if not first:
                return _action_page(request, "used", status=409, **context)
            response_submit(
                escalation=escalation,
                membership=delivery.membership,
                outcome=claim.outcome,
                comment=comment,
                channel="email",
            )
    except EscalationError as problem:
        escalation.refresh_from_db()
        if escalation.is_terminal:
            return _action_page(request, "decided", status=409, **context)
        if problem.errors and "comment" in problem.errors:
            # A missing reason: ask again on the same page (the link was not used up).
            errors = problem.errors["comment"]
            return _action_page(request, "confirm", status=400, comment_errors=errors, **context)
        return _action_page(
            request,
            "refused",
            status=refusal_status(problem),
            detail=str(problem.detail),
            **context,
        )
    escalation.refresh_from_db()
    return _action_page(request, "done", **context)


# --- Contact points ---------------------------------------------------------------------------


def _my_point(request: OrganizationRequest, public_id: str) -> ContactPoint:
    """One of my contact points in this organization; anyone else's is a 404."""
    return get_by_public_id_or_404(
        ContactPoint.objects.select_related("membership__user").filter(
            membership=request.membership
        ),
        "cp",
        public_id,
    )


def _back() -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("notifications:contact_points"))


@require_GET
@role_required()
def contact_points(request: HttpRequest) -> HttpResponse:
    membership = request.membership  # type: ignore[attr-defined]
    preference = point_services.preference_get(membership)
    available = point_services.channels_available()
    latest = Delivery.objects.filter(contact_point=OuterRef("pk")).order_by("-created_at", "-id")
    points = list(
        membership.contact_points.annotate(
            last_status=Subquery(latest.values("status")[:1]),
            last_at=Subquery(latest.values("created_at")[:1]),
            last_error_text=Subquery(latest.values("last_error")[:1]),
        ).order_by("position", "id")
    )
    return render(
        request,
        "notifications/contact_points.html",
        {
            "nav_active": "contact_points",
            "points": points,
            "preference": preference,
            "channels": [
                (value, label)
                for value, label in CHANNEL_CHOICES
                if value in available and value != "push"
            ],
            "push_key": settings.VAPID_PUBLIC_KEY if "push" in available else "",
            "priorities": Escalation.Priority.choices,
            "usable": any(point.is_usable for point in points),
        },
    )


@require_POST
@role_required()
def contact_point_add(request: OrganizationRequest) -> HttpResponse:
    try:
        point = point_services.contact_point_add(
            membership=request.membership,
            channel=request.POST.get("channel", ""),
            address=request.POST.get("address", ""),
            priorities=request.POST.getlist("priorities"),
        )
    except ContactPointError as exc:
        messages.error(request, str(exc))
        return _back()
    _begin_verification(request, point)
    return _back()


@require_POST
@role_required()
def contact_point_add_push(request: OrganizationRequest) -> HttpResponse:
    """The "Notify this browser" button: ``pwa.js`` subscribes the browser and posts the
    subscription here; the verification code then arrives as a push on it."""
    try:
        subscription = json.loads(request.POST.get("subscription") or "null")
    except ValueError:
        subscription = None
    try:
        point = point_services.contact_point_add_push(
            membership=request.membership,
            subscription=subscription,
            label=request.POST.get("label", ""),
        )
    except ContactPointError as exc:
        messages.error(request, str(exc))
        return _back()
    _begin_verification(request, point)
    return _back()


def _begin_verification(request: HttpRequest, point: ContactPoint) -> None:
    try:
        instructions = point_services.contact_point_verification_begin(contact_point=point)
    except ContactPointError as exc:
        messages.error(request, str(exc))
        return
    if instructions:
        messages.info(request, instructions)
    else:
        messages.success(request, f"We sent a 6-digit code to {point.address}; enter it below.")


@require_POST
@role_required()
def contact_point_send_code(request: OrganizationRequest, public_id: str) -> HttpResponse:
    point = _my_point(request, public_id)
    if point.verified_at is None:
        _begin_verification(request, point)
    return _back()


@require_POST
@role_required()
def contact_point_verify(request: OrganizationRequest, public_id: str) -> HttpResponse:
    point = _my_point(request, public_id)
    try:
        point_services.contact_point_verify(
            contact_point=point,
            membership=request.membership,
            code=request.POST.get("code", ""),
        )
    except ContactPointError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{point.address} is verified.")
    return _back()


@require_POST
@role_required()
def contact_point_test(request: OrganizationRequest, public_id: str) -> HttpResponse:
    point = _my_point(request, public_id)
    try:
        point_services.contact_point_send_test(
            contact_point=point,
            membership=request.membership,
        )
    except ContactPointError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Test sent to {point.address}.")
    return _back()


@require_POST
@role_required()
def contact_point_move(request: OrganizationRequest, public_id: str) -> HttpResponse:
    point = _my_point(request, public_id)
    point_services.contact_point_move(
        contact_point=point,
        membership=request.membership,
        up=request.POST.get("direction") == "up",
    )
    return _back()


@require_POST
@role_required()
def contact_point_priorities(request: OrganizationRequest, public_id: str) -> HttpResponse:
    point = _my_point(request, public_id)
    point_services.contact_point_set_priorities(
        contact_point=point,
        membership=request.membership,
        priorities=request.POST.getlist("priorities"),
    )
    return _back()


@require_POST
@role_required()
def contact_point_remove(request: OrganizationRequest, public_id: str) -> HttpResponse:
    point = _my_point(request, public_id)
    point_services.contact_point_remove(
        contact_point=point,
        membership=request.membership,
    )
    messages.success(request, f"Removed {point.address}.")
    return _back()


def _time(value: str) -> time | None:
    value = value.strip()
    if not value:
        return None
    try:
        return time.fromisoformat(value)
    except ValueError as exc:
        raise ContactPointError(f"“{value}” is not a time like 22:00.") from exc


@require_POST
@role_required()
def all_points_for(request: HttpRequest) -> HttpResponse:
    point_services.preference_set_all_points_for(
        membership=request.membership,  # type: ignore[attr-defined]
        priorities=request.POST.getlist("priorities"),
    )
    messages.success(request, "Saved which priorities reach every contact point.")
    return _back()


@require_POST
@role_required()
def quiet_hours(request: OrganizationRequest) -> HttpResponse:
    try:
        point_services.preference_update(
            membership=request.membership,
            quiet_start=_time(request.POST.get("quiet_start", "")),
            quiet_end=_time(request.POST.get("quiet_end", "")),
            time_zone=request.POST.get("time_zone", "UTC").strip() or "UTC",
        )
    except ContactPointError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Quiet hours saved.")
    return _back()

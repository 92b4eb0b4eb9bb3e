"""Billing in the console and Stripe's webhook.

* ``/org/billing/`` — every member sees the plan and the usage bars; owners also see the
  subscription (status, renewal, payment trouble) and the buttons: choose a plan (Stripe
  Checkout), manage payment methods, invoices and cancellation (the customer portal).
* ``/org/billing/return/`` — where Checkout sends the owner back: "processing" until the
  webhook for that Checkout Session has arrived, then the new plan.
* ``/billing/stripe/webhook/`` — signed events from Stripe (``tenants.billing`` applies them).

A plan limit reached by a console view is rendered by ``tenants.middleware.plan_limits``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.functional import SimpleLazyObject
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from awaithuman.problems import problem_response

from . import billing, stripe_gateway
from .console import role_required
from .models import BillingAccount, Membership, Organization
from .requests import OrganizationRequest

logger = logging.getLogger(__name__)

OWNER = Membership.Role.OWNER


def _organization(request: OrganizationRequest) -> Organization:
    return request.organization


def _is_owner(request: HttpRequest) -> bool:
    membership = getattr(request, "membership", None)
    return membership is not None and membership.role == OWNER


def _banner(organization: Organization, *, owner: bool) -> dict[str, Any] | None:
    """What the console should warn owners about: payment trouble first, then the quota."""
    if not owner or not billing.billing_enabled():
        return None
    account = BillingAccount.objects.filter(organization=organization).first()
    if account is not None and account.payment_grace_until is not None:
        return {
            "level": "bad",
            "text": (
                "Stripe could not collect the last payment. The plan stays until "
                f"{account.payment_grace_until:%Y-%m-%d %H:%M} UTC, then the organization "
                "moves to Free. Update the payment method."
            ),
        }
    plan = billing.organization_plan(organization)
    allowed = plan.escalations_per_month
    if not allowed:
        return None
    used = billing.escalations_this_month(organization)
    if used >= allowed:
        text = (
            f"All {allowed} escalations of this month's {plan.name} plan are used; new "
            "escalations are refused until next month or an upgrade."
        )
        return {"level": "bad", "text": text}
    if used * 100 >= billing.QUOTA_THRESHOLDS[0] * allowed:
        text = f"{used} of this month's {allowed} escalations ({plan.name} plan) are used."
        return {"level": "warn", "text": text}
    return None


def billing_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: ``billing_banner`` for the console's header (computed only if a
    template uses it; render ``tenants/billing_banner.html``)."""

    def banner() -> dict[str, Any] | None:
        organization = getattr(request, "organization", None)
        if organization is None:
            return None
        return _banner(organization, owner=_is_owner(request))

    return {"billing_banner": SimpleLazyObject(banner)}


@role_required()
@require_GET
def billing_page(request: OrganizationRequest) -> HttpResponse:
    organization = _organization(request)
    owner = _is_owner(request)
    context: dict[str, Any] = {
        "billing_enabled": billing.billing_enabled(),
        "plan": billing.organization_plan(organization),
        "usage": billing.organization_usage(organization),
        "plans": list(billing.PLANS.values()),
        "is_owner": owner,
        "checkout_cancelled": request.GET.get("checkout") == "cancelled",
        "banner": _banner(organization, owner=owner),
    }
    if owner:
        context["account"] = BillingAccount.objects.filter(organization=organization).first()
    return render(request, "tenants/billing.html", context)


@role_required(OWNER)
@require_POST
def billing_checkout(request: OrganizationRequest) -> HttpResponse:
    organization = _organization(request)
    if organization.stripe_subscription_id and organization.subscription_status not in (
        billing.ENDED_STATUSES
    ):
        # One subscription per organization: changing plan happens in the portal.
        return _portal(request)
    try:
        url = billing.checkout_url(
            organization=organization,
            plan_key=request.POST.get("plan", ""),
            email=request.user.email,
        )
    except billing.BillingUnavailable as exc:
        messages.error(request, str(exc))
        return redirect("billing")
    return _see_other(url)


@role_required(OWNER)
@require_POST
def billing_portal(request: OrganizationRequest) -> HttpResponse:
    return _portal(request)


def _portal(request: OrganizationRequest) -> HttpResponse:
    try:
        url = billing.portal_url(organization=_organization(request))
    except billing.BillingUnavailable as exc:
        messages.error(request, str(exc))
        return redirect("billing")
    return _see_other(url)


def _see_other(url: str) -> HttpResponse:
    response = HttpResponse(status=303)
    response["Location"] = url
    return response


@role_required(OWNER)
@require_GET
def billing_return(request: OrganizationRequest) -> HttpResponse:
    organization = _organization(request)
    session_id = request.GET.get("session_id", "")[:255]
    processed = bool(session_id) and billing.checkout_processed(
        organization=organization, session_id=session_id
    )
    return render(
        request,
        "tenants/billing_return.html",
        {
            "processed": processed,
            "session_id": session_id,
            "plan": billing.organization_plan(organization),
        },
    )


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's webhook endpoint: 200 once an event is applied (or was before), 400 for a bad
    signature or body, 503 when Stripe itself did not answer our re-fetch (Stripe retries)."""
    if not billing.billing_enabled():
        return problem_response(
            status_code=404, type_slug="not-found", detail="Billing is off on this installation."
        )
    try:
        event = stripe_gateway.webhook_event_parse(
            request.body, request.headers.get("Stripe-Signature", "")
        )
        processed = billing.stripe_event_process(event=event)
    except (stripe_gateway.InvalidSignature, billing.MalformedEvent) as exc:
        return problem_response(status_code=400, type_slug="invalid-webhook", detail=str(exc))
    except stripe_gateway.StripeUnavailable as exc:
        logger.warning("Stripe webhook deferred: %s", exc)
        return problem_response(
            status_code=503,
            type_slug="stripe-unavailable",
            detail="Could not reach Stripe to confirm the event; deliver it again.",
            headers={"Retry-After": "60"},
        )
    return JsonResponse({"received": True, "duplicate": not processed})

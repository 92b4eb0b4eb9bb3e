"""The Stripe side of billing, through ``tenants.stripe_gateway``: Checkout and portal sessions,
webhook events that make an organization's plan match its subscription, the downgrade when a
payment grace period runs out, and metered usage reports.

Webhooks never trust the event's copy of a subscription: they re-fetch it from Stripe under a
lock of the organization row, so out-of-order or concurrent events converge on Stripe's current
state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record
from tenants import stripe_gateway
from tenants.models import BillingAccount, Organization, StripeEvent, UsagePeriod

from .emails import owners_email_after_commit
from .limits import period_end_for
from .plans import BILLING_ACTOR, FREE, PLANS, billing_enabled, plan_for_price

logger = logging.getLogger(__name__)

# --- Checkout and portal --------------------------------------------------------------------------


class BillingUnavailable(Exception):
    """Billing cannot do this now; ``str(exc)`` is safe to show an owner."""


def checkout_url(*, organization: Organization, plan_key: str, email: str) -> str:
    """A Stripe Checkout (subscription mode) address for ``plan_key``; the plan changes when
    the webhook says the subscription is live, not when the owner comes back."""
    plan = PLANS.get(plan_key)
    if not billing_enabled():
        raise BillingUnavailable("Billing is off on this installation.")
    if plan is None or not plan.is_paid:
        raise BillingUnavailable("Choose the Team or Business plan.")
    if not plan.price_id:
        raise BillingUnavailable(f"The {plan.name} plan has no Stripe price configured.")
    prices = [plan.price_id]
    if settings.STRIPE_PRICE_ESCALATIONS:
        prices.append(settings.STRIPE_PRICE_ESCALATIONS)
    base = settings.AWAITHUMAN_BASE_URL
    try:
        return stripe_gateway.checkout_session_create(
            organization_public_id=organization.public_id,
            price_ids=prices,
            # Stripe fills in {CHECKOUT_SESSION_ID}; the return page waits for its webhook.
            success_url=base + reverse("billing_return") + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=base + reverse("billing") + "?checkout=cancelled",
            customer_id=organization.stripe_customer_id,
            customer_email=email,
        )
    except stripe_gateway.StripeUnavailable as exc:
        logger.warning("Stripe Checkout failed: %s", exc)
        raise BillingUnavailable("Stripe did not answer; try again in a minute.") from None


def portal_url(*, organization: Organization) -> str:
    if not billing_enabled():
        raise BillingUnavailable("Billing is off on this installation.")
    if not organization.stripe_customer_id:
        raise BillingUnavailable("There is no subscription to manage yet; choose a plan first.")
    try:
        return stripe_gateway.portal_session_create(
            customer_id=organization.stripe_customer_id,
            return_url=settings.AWAITHUMAN_BASE_URL + reverse("billing"),
        )
    except stripe_gateway.StripeUnavailable as exc:
        logger.warning("Stripe portal failed: %s", exc)
        raise BillingUnavailable("Stripe did not answer; try again in a minute.") from None


def checkout_processed(*, organization: Organization, session_id: str) -> bool:
    """Has the webhook for this Checkout Session (of this organization) arrived?"""
    return organization.stripe_events.filter(
        type="checkout.session.completed", object_id=session_id
    ).exists()


# --- Webhook events -------------------------------------------------------------------------------

# Subscription statuses in which the paid plan applies; in the trouble ones only until the grace
# period ends.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due", "unpaid"})
TROUBLE_STATUSES = frozenset({"past_due", "unpaid"})
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
HANDLED_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
    }
)


class MalformedEvent(Exception):
    """A verified event without the fields its type must have."""


def _event_object(event: dict[str, Any]) -> dict[str, Any]:
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, dict) or not isinstance(event.get("type"), str):
        raise MalformedEvent("The event has no type or data.object.")
    return obj


def _id_of(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def _event_organization(event_type: str, obj: dict[str, Any]) -> Organization | None:
    """The organization an event is about, its row locked (see the module docstring)."""
    organizations = Organization.objects.select_for_update()
    public_id = ""
    if event_type == "checkout.session.completed":
        public_id = obj.get("client_reference_id") or ""
    public_id = public_id or (obj.get("metadata") or {}).get("organization") or ""
    if public_id:
        found = organizations.filter(public_id=public_id).first()
        if found is not None:
            return found
    customer = _id_of(obj.get("customer"))
    return organizations.filter(stripe_customer_id=customer).first() if customer else None


def _invoice_subscription(obj: dict[str, Any]) -> str:
    # API versions from 2025-03-31 moved it to parent.subscription_details.subscription.
    parent = (obj.get("parent") or {}).get("subscription_details") or {}
    return _id_of(obj.get("subscription")) or _id_of(parent.get("subscription"))


def stripe_event_process(*, event: dict[str, Any]) -> bool:
    """Apply one verified Stripe event; False when its id was processed before.

    The event id is stored in the same transaction as its effects: a duplicate (even one
    delivered concurrently, which waits on the unique index) changes nothing, and an event
    whose processing failed is not recorded, so Stripe's retry runs it again.
    """
    obj = _event_object(event)
    event_type = event["type"]
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = StripeEvent.objects.create(
                    event_id=event["id"],
                    type=event_type[:100],
                    object_id=_id_of(obj.get("id"))[:255],
                    created=datetime.fromtimestamp(int(event.get("created") or 0), tz=UTC),
                )
        except IntegrityError:
            return False
        if event_type not in HANDLED_EVENTS:
            return True
        organization = _event_organization(event_type, obj)
        if organization is None:
            logger.warning("Stripe event %s (%s) matches no organization", event["id"], event_type)
            return True
        record.organization = organization
        record.save(update_fields=["organization"])
        subscription_id = ""
        if event_type == "checkout.session.completed":
            if obj.get("mode") != "subscription":
                return True
            subscription_id = _id_of(obj.get("subscription"))
        elif event_type.startswith("customer.subscription."):
            subscription_id = _id_of(obj.get("id"))
        else:
            subscription_id = _invoice_subscription(obj) or organization.stripe_subscription_id
        if not subscription_id:
            return True
        subscription = stripe_gateway.subscription_retrieve(subscription_id)
        subscription_apply(organization=organization, subscription=subscription, event=event)
    return True


def _billing_state(organization: Organization, account: BillingAccount) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "plan": organization.plan,
        "stripe_customer_id": organization.stripe_customer_id,
        "stripe_subscription_id": organization.stripe_subscription_id,
        "subscription_status": organization.subscription_status,
        "payment_grace_until": iso(account.payment_grace_until),
        "current_period_end": iso(account.current_period_end),
        "cancel_at_period_end": account.cancel_at_period_end,
    }


def subscription_apply(
    *,
    organization: Organization,
    subscription: stripe_gateway.SubscriptionState,
    event: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """Make the organization match Stripe's current subscription; audit and e-mail what
    changed. The caller holds the organization's row lock. True if anything changed."""
    now = now or timezone.now()
    if (
        organization.stripe_subscription_id
        and subscription.id != organization.stripe_subscription_id
        and subscription.status in ENDED_STATUSES
    ):
        # An older subscription ending (after a re-subscription) says nothing about this one.
        return False
    account, _ = BillingAccount.objects.get_or_create(organization=organization)
    before = _billing_state(organization, account)
    before_grace = account.payment_grace_until

    plan = FREE
    if subscription.status in LIVE_STATUSES:
        found = plan_for_price(subscription.price_ids)
        if found is None:
            logger.warning(
                "Subscription %s has no price of a known plan (%s); plan left as it is",
                subscription.id,
                ", ".join(subscription.price_ids),
            )
            found = PLANS.get(organization.plan, FREE)
        plan = found
    if subscription.status in TROUBLE_STATUSES:
        account.payment_grace_until = before_grace or now + timedelta(
            days=settings.BILLING_GRACE_DAYS
        )
        if account.payment_grace_until <= now:
            plan = FREE
    else:
        account.payment_grace_until = None
    organization.plan = plan.key
    organization.stripe_customer_id = subscription.customer or organization.stripe_customer_id
    organization.stripe_subscription_id = subscription.id
    organization.subscription_status = subscription.status
    account.current_period_end = subscription.current_period_end
    account.cancel_at_period_end = subscription.cancel_at_period_end
    after = _billing_state(organization, account)
    if after == before:
        return False
    organization.save(
        update_fields=[
            "plan",
            "stripe_customer_id",
            "stripe_subscription_id",
            "subscription_status",
        ]
    )
    account.updated_at = now
    account.save()
    actor = {"type": "stripe", "event": event["id"]} if event else BILLING_ACTOR
    changed = {key: after[key] for key in after if after[key] != before[key]}
    audit_record(
        organization_id=organization.pk,
        action="billing.subscription_changed",
        actor=actor,
        target=subscription.id,
        data={
            "event": event["type"] if event else None,
            "before": {key: before[key] for key in changed},
            "after": changed,
        },
    )
    if account.payment_grace_until and not before_grace:
        owners_email_after_commit(
            organization.pk,
            "payment_failed",
            grace_until=account.payment_grace_until.strftime("%Y-%m-%d %H:%M UTC"),
        )
    if before["plan"] != after["plan"]:
        owners_email_after_commit(
            organization.pk, "plan_changed", before=PLANS[before["plan"]].name, after=plan.name
        )
    return True


def grace_expired_downgrade(*, now: datetime | None = None) -> int:
    """Downgrade to Free every organization whose payment grace period has run out. Stripe is
    asked first (a payment may have gone through while a webhook was lost); if it does not
    answer, the downgrade still happens: the paid plan's limits already stopped applying."""
    now = now or timezone.now()
    due = BillingAccount.objects.filter(payment_grace_until__lte=now).exclude(
        organization__plan=Organization.Plan.FREE
    )
    downgraded = 0
    for organization_id in due.values_list("organization_id", flat=True):
        subscription = None
        subscription_id = (
            Organization.objects.filter(pk=organization_id)
            .values_list("stripe_subscription_id", flat=True)
            .first()
        )
        if subscription_id and billing_enabled():
            try:
                subscription = stripe_gateway.subscription_retrieve(subscription_id)
            except stripe_gateway.StripeUnavailable as exc:
                logger.warning("Stripe unavailable during grace check: %s", exc)
        with transaction.atomic():
            organization = Organization.objects.select_for_update().get(pk=organization_id)
            if subscription is not None:
                subscription_apply(organization=organization, subscription=subscription, now=now)
            if organization.plan == Organization.Plan.FREE:
                downgraded += 1
                continue
            account = organization.billing_account
            if account.payment_grace_until is None or account.payment_grace_until > now:
                continue
            before = organization.plan
            organization.plan = Organization.Plan.FREE
            organization.save(update_fields=["plan"])
            audit_record(
                organization_id=organization.pk,
                action="billing.plan_downgraded",
                actor=BILLING_ACTOR,
                target=organization.public_id,
                data={
                    "before": before,
                    "after": organization.plan,
                    "reason": "payment grace period ended",
                    "payment_grace_until": account.payment_grace_until.isoformat(),
                },
            )
            owners_email_after_commit(
                organization.pk, "plan_changed", before=PLANS[before].name, after=FREE.name
            )
            downgraded += 1
    return downgraded


# --- Usage reports to Stripe ----------------------------------------------------------------------


def usage_report(*, now: datetime | None = None) -> int:
    """Send every subscribed organization's unreported escalations as a Stripe meter event;
    returns how many events were sent.

    Each report is first written down (``reporting`` = the total being reported), then sent with
    an identifier and Idempotency-Key made of the period and the totals, then acknowledged
    (``reported`` = ``reporting``). A crash or a lost answer in between leaves the same
    ``reporting`` in place, so the retry sends the very same event and Stripe drops it as a
    duplicate: usage is never billed twice, and never lost.
    """
    if not billing_enabled():
        return 0
    now = now or timezone.now()
    due = UsagePeriod.objects.filter(
        escalations__gt=F("reported"),
        organization__stripe_customer_id__gt="",
        organization__stripe_subscription_id__gt="",
    ).select_related("organization")
    sent = 0
    for period in due:
        UsagePeriod.objects.filter(pk=period.pk, reporting__lte=F("reported")).update(
            reporting=F("escalations")
        )
        period.refresh_from_db(fields=["reported", "reporting"])
        if period.reporting <= period.reported:
            continue
        end = datetime.combine(period_end_for(period.period_start), datetime.min.time(), UTC)
        try:
            stripe_gateway.meter_event_create(
                event_name=settings.STRIPE_METER_EVENT_NAME,
                customer_id=period.organization.stripe_customer_id,
                value=period.reporting - period.reported,
                identifier=(
                    f"{period.organization.public_id}-{period.period_start:%Y%m}-"
                    f"{period.reported}-{period.reporting}"
                ),
                # Stripe bills an event into the cycle its timestamp falls in.
                timestamp=min(now, end - timedelta(seconds=1)),
            )
        except stripe_gateway.StripeUnavailable as exc:
            # ``reporting`` stays: the next run resends this very event.
            logger.warning("Usage report for %s failed: %s", period.organization.public_id, exc)
            continue
        UsagePeriod.objects.filter(pk=period.pk, reported=period.reported).update(
            reported=period.reporting
        )
        sent += 1
    return sent

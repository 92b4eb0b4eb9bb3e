"""Plans, limits and usage — the only billing questions product code asks.

Product code never calls Stripe. It asks the organization about its plan
(``organization_plan``, ``organization_has_feature``) and calls the limit checks where the action
happens (``agent_limit_check``, ``operator_limit_check``, ``escalation_quota_consume``); a check
that fails raises ``PlanLimitExceeded``, a 402 problem naming the limit, the usage and where to
upgrade. This module is also the adapter's inside: Checkout and portal sessions, webhook events
and usage reports go through ``tenants.stripe_gateway``.

``BILLING_ENABLED`` off (the default without ``STRIPE_SECRET_KEY``): every organization has the
``UNLIMITED`` plan, nothing is counted and Stripe is never called.

Decisions:

* The escalation quota counts calendar months in UTC (``UsagePeriod``), whatever the Stripe
  billing cycle; Stripe bills the metered usage by the timestamps of the meter events we send.
* Only new things are limited. Escalations already in flight, agents and members over a lower
  limit after a downgrade keep working; only creating more is refused.
* Operators are seats that can answer (owner, admin, operator) plus pending invitations for such
  roles; viewers are free.
* Webhooks never trust the event's copy of a subscription: they re-fetch it from Stripe under a
  lock of the organization row, so out-of-order or concurrent events converge on Stripe's
  current state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record
from awaithuman.celery import enqueue
from awaithuman.problems import ApiProblem

from . import stripe_gateway
from .models import BillingAccount, Membership, Organization, StripeEvent, UsagePeriod

logger = logging.getLogger(__name__)

BILLING_ACTOR = {"type": "system", "name": "billing"}
QUOTA_THRESHOLDS = (80, 100)

FEATURE_SMS = "sms_whatsapp"
FEATURE_QUORUM = "quorum"
FEATURE_AUDIT_EXPORT = "audit_export"
ALL_FEATURES = frozenset({FEATURE_SMS, FEATURE_QUORUM, FEATURE_AUDIT_EXPORT})


# --- Plans ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A plan as data. ``None`` means no limit. ``price_setting`` names the setting that holds
    the plan's Stripe Price id (empty for Free)."""

    key: str
    name: str
    agents: int | None
    operators: int | None
    escalations_per_month: int | None
    features: frozenset[str]
    price_setting: str = ""
    summary: str = ""

    @property
    def price_id(self) -> str:
        return getattr(settings, self.price_setting, "") if self.price_setting else ""

    @property
    def is_paid(self) -> bool:
        return bool(self.price_setting)


FREE = Plan(
    key=Organization.Plan.FREE,
    name="Free",
    agents=2,
    operators=3,
    escalations_per_month=500,
    features=frozenset(),
    summary="2 agents, 3 operators, 500 escalations a month; e-mail, chat and push channels.",
)
TEAM = Plan(
    key=Organization.Plan.TEAM,
    name="Team",
    agents=10,
    operators=25,
    escalations_per_month=10_000,
    features=frozenset({FEATURE_SMS, FEATURE_QUORUM}),
    price_setting="STRIPE_PRICE_TEAM",
    summary="10 agents, 25 operators, 10,000 escalations a month; SMS and WhatsApp; quorums.",
)
BUSINESS = Plan(
    key=Organization.Plan.BUSINESS,
    name="Business",
    agents=None,
    operators=None,
    escalations_per_month=None,
    features=ALL_FEATURES,
    price_setting="STRIPE_PRICE_BUSINESS",
    summary="Unlimited agents and operators, escalations billed by use; every feature.",
)
PLANS: dict[str, Plan] = {plan.key: plan for plan in (FREE, TEAM, BUSINESS)}
UNLIMITED = Plan(
    key="unlimited",
    name="Unlimited (billing off)",
    agents=None,
    operators=None,
    escalations_per_month=None,
    features=ALL_FEATURES,
)


def billing_enabled() -> bool:
    return bool(settings.BILLING_ENABLED)


def plan_for_price(price_ids: tuple[str, ...] | list[str]) -> Plan | None:
    """The paid plan whose Price id is among ``price_ids`` (a subscription's items)."""
    for plan in (BUSINESS, TEAM):
        if plan.price_id and plan.price_id in price_ids:
            return plan
    return None


def _grace_expired(organization: Organization, now: datetime) -> bool:
    return BillingAccount.objects.filter(
        organization_id=organization.pk, payment_grace_until__lte=now
    ).exists()


def organization_plan(organization: Organization, *, now: datetime | None = None) -> Plan:
    """The plan whose limits apply now. A paid plan whose payment grace period has run out
    counts as Free at once, before the periodic task records the downgrade."""
    if not billing_enabled():
        return UNLIMITED
    plan = PLANS.get(organization.plan, FREE)
    if plan.is_paid and _grace_expired(organization, now or timezone.now()):
        return FREE
    return plan


def organization_has_feature(organization: Organization, feature: str) -> bool:
    return feature in organization_plan(organization).features


# --- Usage and limits -----------------------------------------------------------------------------


def period_start_for(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def period_end_for(start: date) -> date:
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def upgrade_url() -> str:
    return settings.AWAITHUMAN_BASE_URL + reverse("billing")


@dataclass(frozen=True)
class Usage:
    limit: str
    label: str
    used: int
    allowed: int | None

    @property
    def percent(self) -> int | None:
        if not self.allowed:
            return None
        return min(100, self.used * 100 // self.allowed)


def _operator_count(
    organization: Organization, *, invitations: bool, exclude_email: str = ""
) -> int:
    seats = organization.memberships.filter(role__in=Membership.ANSWERING_ROLES).count()
    if invitations:
        pending = organization.invitations.filter(
            role__in=Membership.ANSWERING_ROLES,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        if exclude_email:
            pending = pending.exclude(email__iexact=exclude_email)
        seats += pending.count()
    return seats


def escalations_this_month(organization: Organization, *, now: datetime | None = None) -> int:
    start = period_start_for(now or timezone.now())
    used = (
        UsagePeriod.objects.filter(organization_id=organization.pk, period_start=start)
        .values_list("escalations", flat=True)
        .first()
    )
    return used or 0


def organization_usage(organization: Organization) -> list[Usage]:
    """Usage against the current plan's limits, for the billing page and banner."""
    plan = organization_plan(organization)
    return [
        Usage("agents", "Agents", organization.agents.count(), plan.agents),
        Usage(
            "operators",
            "Operators (members who can answer, and pending invitations)",
            _operator_count(organization, invitations=True),
            plan.operators,
        ),
        Usage(
            "escalations_per_month",
            "Escalations this month",
            escalations_this_month(organization),
            plan.escalations_per_month,
        ),
    ]


class PlanLimitExceeded(ApiProblem):
    """402: the plan's limit is reached. The body names ``limit``, ``usage``, ``allowed``,
    ``plan`` and ``upgrade_url``; the console renders it as a page with an upgrade button."""

    def __init__(
        self, *, organization: Organization, plan: Plan, usage: Usage, detail: str
    ) -> None:
        super().__init__(
            status_code=402,
            type_slug="plan-limit-exceeded",
            detail=detail,
            extra={
                "limit": usage.limit,
                "usage": usage.used,
                "allowed": usage.allowed,
                "plan": plan.key,
                "upgrade_url": upgrade_url(),
            },
        )
        self.organization = organization
        self.plan = plan
        self.usage = usage


def _lock(organization: Organization) -> None:
    """Serialise limit checks of one organization (two creates must not both see room for
    one more) on its row; the lock ends with the caller's transaction."""
    list(Organization.objects.select_for_update().filter(pk=organization.pk).values_list("pk"))


def agent_limit_check(*, organization: Organization) -> None:
    """Call inside the transaction that creates an agent, before creating it."""
    plan = organization_plan(organization)
    if plan.agents is None:
        return
    _lock(organization)
    used = organization.agents.count()
    if used >= plan.agents:
        raise PlanLimitExceeded(
            organization=organization,
            plan=plan,
            usage=Usage("agents", "Agents", used, plan.agents),
            detail=(
                f"The {plan.name} plan allows {plan.agents} agents and {organization.name} has "
                f"{used}. An owner can upgrade at {upgrade_url()}."
            ),
        )


def operator_limit_check(
    *, organization: Organization, role: str, invitations: bool = True, email: str = ""
) -> None:
    """Call before adding a seat that can answer: an invitation (``invitations=True`` counts
    pending ones, except an earlier one to ``email`` that the new one replaces) or a member
    joining or promoted (``invitations=False``). Viewers take no seat."""
    if role not in Membership.ANSWERING_ROLES:
        return
    plan = organization_plan(organization)
    if plan.operators is None:
        return
    _lock(organization)
    used = _operator_count(organization, invitations=invitations, exclude_email=email)
    if used >= plan.operators:
        raise PlanLimitExceeded(
            organization=organization,
            plan=plan,
            usage=Usage("operators", "Operators", used, plan.operators),
            detail=(
                f"The {plan.name} plan allows {plan.operators} operators (members who can "
                f"answer, counting pending invitations) and {organization.name} has {used}. "
                f"Invite a viewer instead, or an owner can upgrade at {upgrade_url()}."
            ),
        )


def escalation_quota_consume(*, organization: Organization, now: datetime | None = None) -> None:
    """Count one escalation against this month's quota, or raise ``PlanLimitExceeded``.

    Call inside the create transaction, before the escalation row is written. The counter goes
    up with one conditional ``UPDATE … SET escalations = escalations + 1 WHERE escalations <
    quota``: on PostgreSQL a concurrent create waits for the row lock and re-checks the
    condition against the committed count, on SQLite the write lock serialises them, so a burst
    gets exactly the quota through and a clean 402 for the rest. A rolled-back create gives its
    unit back with its transaction.
    """
    if not billing_enabled():
        return
    now = now or timezone.now()
    plan = organization_plan(organization, now=now)
    start = period_start_for(now)
    rows = UsagePeriod.objects.filter(organization_id=organization.pk, period_start=start)
    allowed = plan.escalations_per_month
    counted = rows if allowed is None else rows.filter(escalations__lt=allowed)
    if not counted.update(escalations=F("escalations") + 1):
        if not rows.exists():
            # First escalation of the month: INSERT … ON CONFLICT DO NOTHING, so two first
            # creates make one row (the second waits for the first's commit, then skips).
            UsagePeriod.objects.bulk_create(
                [UsagePeriod(organization_id=organization.pk, period_start=start)],
                ignore_conflicts=True,
            )
        if not counted.update(escalations=F("escalations") + 1):
            used = rows.values_list("escalations", flat=True).get()
            raise _quota_refused(organization, plan, used, start)
    if allowed:
        period = rows.values_list("pk", "escalations").get()
        _quota_threshold_reached(organization, period[0], period[1], allowed, start)


def _quota_refused(organization: Organization, plan: Plan, used: int, start: date) -> Exception:
    allowed = plan.escalations_per_month
    return PlanLimitExceeded(
        organization=organization,
        plan=plan,
        usage=Usage("escalations_per_month", "Escalations this month", used, allowed),
        detail=(
            f"The {plan.name} plan includes {allowed} escalations a month and "
            f"{organization.name} has created {used} since {start:%Y-%m-%d}. Escalations "
            "already in flight are not affected. New ones can be created again on "
            f"{period_end_for(start):%Y-%m-%d}, or at once after an owner upgrades at "
            f"{upgrade_url()}."
        ),
    )


def _quota_threshold_reached(
    organization: Organization, period_id: int, used: int, allowed: int, start: date
) -> None:
    """Tell the owners once per threshold per month (the conditional UPDATE makes it once even
    when concurrent creates cross the threshold together)."""
    crossed = [t for t in QUOTA_THRESHOLDS if used * 100 >= t * allowed]
    if not crossed:
        return
    threshold = crossed[-1]
    if not UsagePeriod.objects.filter(pk=period_id, notified_percent__lt=threshold).update(
        notified_percent=threshold
    ):
        return
    audit_record(
        organization_id=organization.pk,
        action="billing.quota_threshold_reached",
        actor=BILLING_ACTOR,
        target=organization.public_id,
        data={"threshold": threshold, "used": used, "allowed": allowed, "period": str(start)},
    )
    from . import tasks

    organization_id = organization.pk
    transaction.on_commit(lambda: enqueue(tasks.billing_quota_email, (organization_id, threshold)))


# --- E-mails to owners ----------------------------------------------------------------------------


def _owner_emails(organization: Organization) -> list[str]:
    return list(
        organization.memberships.filter(role=Membership.Role.OWNER)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )


def owners_email(*, organization_id: int, template: str, context: dict[str, Any]) -> int:
    """Send ``tenants/email/billing_<template>.txt`` (first line: the subject) to the owners."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return 0
    recipients = _owner_emails(organization)
    if not recipients:
        return 0
    text = render_to_string(
        f"tenants/email/billing_{template}.txt",
        {
            "organization": organization,
            "billing_url": upgrade_url(),
            "plan": organization_plan(organization),
            **context,
        },
    )
    subject, _, body = text.strip().partition("\n")
    return send_mail(
        subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}{subject.strip()}",
        message=body.strip() + "\n",
        from_email=None,
        recipient_list=recipients,
    )


def quota_email_send(*, organization_id: int, threshold: int) -> int:
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None:
        return 0
    plan = organization_plan(organization)
    return owners_email(
        organization_id=organization_id,
        template="quota",
        context={
            "threshold": threshold,
            "used": escalations_this_month(organization),
            "allowed": plan.escalations_per_month,
        },
    )


def _email_after_commit(organization_id: int, template: str, **context: Any) -> None:
    from . import tasks

    transaction.on_commit(
        lambda: enqueue(tasks.billing_owners_email, (organization_id, template, context))
    )


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
        _email_after_commit(
            organization.pk,
            "payment_failed",
            grace_until=account.payment_grace_until.strftime("%Y-%m-%d %H:%M UTC"),
        )
    if before["plan"] != after["plan"]:
        _email_after_commit(
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
            _email_after_commit(
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

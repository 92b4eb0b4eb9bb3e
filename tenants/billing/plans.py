"""The plans as data, and which one applies to an organization now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from tenants.models import BillingAccount, Organization

BILLING_ACTOR = {"type": "system", "name": "billing"}

FEATURE_SMS = "sms_whatsapp"
FEATURE_QUORUM = "quorum"
FEATURE_AUDIT_EXPORT = "audit_export"
ALL_FEATURES = frozenset({FEATURE_SMS, FEATURE_QUORUM, FEATURE_AUDIT_EXPORT})


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

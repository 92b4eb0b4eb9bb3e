"""Plans, limits and usage — the only billing questions product code asks.

Product code never calls Stripe. It asks the organization about its plan
(``organization_plan``, ``organization_has_feature``), calls the feature check where a feature
is set up or used (``require_feature``, ``feature_refusal``: ``features``) and the limit checks
where the action happens (``agent_limit_check``, ``operator_limit_check``,
``escalation_quota_consume``: ``limits``). A check that fails raises ``PlanFeatureRequired`` or
``PlanLimitExceeded``, 402 problems naming what is missing and where to upgrade. The Stripe side
(Checkout and portal sessions, webhook events, usage reports) is ``stripe_sync``, through
``tenants.stripe_gateway``; the e-mails to owners are ``emails``.

``BILLING_ENABLED`` off (the default without ``STRIPE_SECRET_KEY``): every organization has the
``UNLIMITED`` plan, with every feature; nothing is counted and Stripe is never called.

Decisions:

* The escalation quota counts calendar months in UTC (``UsagePeriod``), whatever the Stripe
  billing cycle; Stripe bills the metered usage by the timestamps of the meter events we send.
* Only new things are limited. Escalations already in flight, agents and members over a lower
  limit after a downgrade keep working; only creating more is refused.
* Operators are seats that can answer (owner, admin, operator) plus pending invitations for such
  roles; viewers are free.

This package's names are the public API; other apps import them from ``tenants.billing``.
"""

from __future__ import annotations

from .emails import owners_email, quota_email_send
from .features import (
    SMS_CHANNELS,
    PlanFeatureRequired,
    channel_refusal,
    feature_refusal,
    organization_has_feature,
    plan_with_feature,
    require_feature,
)
from .limits import (
    QUOTA_THRESHOLDS,
    PlanLimitExceeded,
    Usage,
    agent_limit_check,
    escalation_quota_consume,
    escalations_this_month,
    operator_limit_check,
    organization_usage,
    period_end_for,
    period_start_for,
    upgrade_url,
)
from .plans import (
    ALL_FEATURES,
    BUSINESS,
    FEATURE_AUDIT_EXPORT,
    FEATURE_QUORUM,
    FEATURE_SMS,
    FREE,
    PLANS,
    TEAM,
    UNLIMITED,
    Plan,
    billing_enabled,
    organization_plan,
    plan_for_price,
)
from .stripe_sync import (
    ENDED_STATUSES,
    BillingUnavailable,
    MalformedEvent,
    checkout_processed,
    checkout_url,
    grace_expired_downgrade,
    portal_url,
    stripe_event_process,
    subscription_apply,
    usage_report,
)

__all__ = [
    "ALL_FEATURES",
    "BUSINESS",
    "ENDED_STATUSES",
    "FEATURE_AUDIT_EXPORT",
    "FEATURE_QUORUM",
    "FEATURE_SMS",
    "FREE",
    "PLANS",
    "QUOTA_THRESHOLDS",
    "SMS_CHANNELS",
    "TEAM",
    "UNLIMITED",
    "BillingUnavailable",
    "MalformedEvent",
    "Plan",
    "PlanFeatureRequired",
    "PlanLimitExceeded",
    "Usage",
    "agent_limit_check",
    "billing_enabled",
    "channel_refusal",
    "checkout_processed",
    "checkout_url",
    "escalation_quota_consume",
    "escalations_this_month",
    "feature_refusal",
    "grace_expired_downgrade",
    "operator_limit_check",
    "organization_has_feature",
    "organization_plan",
    "organization_usage",
    "owners_email",
    "period_end_for",
    "period_start_for",
    "plan_for_price",
    "plan_with_feature",
    "portal_url",
    "quota_email_send",
    "require_feature",
    "stripe_event_process",
    "subscription_apply",
    "upgrade_url",
    "usage_report",
]

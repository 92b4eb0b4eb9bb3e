"""Plan features, enforced where an organization sets one up or uses it.

Each use site asks one question: ``require_feature`` (services and the API: a 402 problem naming
the field, the feature and the plan that includes it) or ``feature_refusal`` and
``channel_refusal`` (forms: the message to show on the field, or None). The check comes before
anything is written.

Where each feature is checked:

* ``sms_whatsapp``: adding an SMS or WhatsApp contact point, and a policy level that names the
  ``sms`` or ``whatsapp`` channel.
* ``quorum``: a policy that needs more than one approval.
* ``audit_export``: downloading an evidence bundle (the API and the console).

Like the limits, features are checked when something is set up, not each time it runs: contact
points and policies saved before a downgrade keep working, and only saving new ones (or editing
one while it still asks for the feature) is refused. For a quorum this is the point: quietly
lowering the number of approvals an organization asked for would weaken a safety rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from awaithuman.problems import ApiProblem
from tenants.models import Organization

from .limits import upgrade_url
from .plans import (
    FEATURE_AUDIT_EXPORT,
    FEATURE_QUORUM,
    FEATURE_SMS,
    PLANS,
    Plan,
    organization_plan,
)

FEATURE_LABELS = {
    FEATURE_SMS: "SMS and WhatsApp notifications",
    FEATURE_QUORUM: "Quorums (more than one approval)",
    FEATURE_AUDIT_EXPORT: "Evidence bundles",
}
# The notification channels that need ``FEATURE_SMS``.
SMS_CHANNELS = frozenset({"sms", "whatsapp"})


def plan_with_feature(feature: str) -> Plan:
    """The cheapest plan that includes ``feature``."""
    return next(plan for plan in PLANS.values() if feature in plan.features)


def organization_has_feature(organization: Organization, feature: str) -> bool:
    return feature in organization_plan(organization).features


def feature_refusal(organization: Organization, feature: str) -> str | None:
    """Why ``organization`` may not use ``feature`` (a sentence fit for a form field), or None
    if its plan includes it."""
    plan = organization_plan(organization)
    if feature in plan.features:
        return None
    return (
        f"{FEATURE_LABELS[feature]} are not part of the {plan.name} plan; they come with the "
        f"{plan_with_feature(feature).name} plan. An owner can upgrade at {upgrade_url()}."
    )


def channel_refusal(organization: Organization, channels: Iterable[str]) -> str | None:
    """``feature_refusal`` for notification channels: why ``organization`` may not use one of
    ``channels``, or None."""
    if SMS_CHANNELS.isdisjoint(channels):
        return None
    return feature_refusal(organization, FEATURE_SMS)


class PlanFeatureRequired(ApiProblem):
    """402: the organization's plan does not include ``feature``. The body names the field that
    asked for it (``errors``, when there is one), the ``feature``, the current ``plan``, the
    ``required_plan`` and the ``upgrade_url``."""

    def __init__(self, *, organization: Organization, feature: str, field: str, detail: str):
        super().__init__(
            status_code=402,
            type_slug="plan-feature-required",
            detail=detail,
            errors={field: [detail]} if field else None,
            extra={
                "feature": feature,
                "plan": organization_plan(organization).key,
                "required_plan": plan_with_feature(feature).key,
                "upgrade_url": upgrade_url(),
            },
        )
        self.organization = organization
        self.feature = feature
        self.field = field


def require_feature(organization: Organization, feature: str, *, field: str = "") -> None:
    """Raise ``PlanFeatureRequired`` unless ``organization``'s plan includes ``feature``;
    ``field`` is the input that asked for it."""
    refusal = feature_refusal(organization, feature)
    if refusal is not None:
        raise PlanFeatureRequired(
            organization=organization, feature=feature, field=field, detail=refusal
        )

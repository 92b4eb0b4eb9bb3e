"""Usage and limits: the checks product code calls where an agent, a seat or an escalation is
added, and the monthly escalation counter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record
from awaithuman.celery import app, enqueue
from awaithuman.problems import ApiProblem
from tenants.models import Membership, Organization, UsagePeriod

from .plans import BILLING_ACTOR, Plan, billing_enabled, organization_plan

QUOTA_THRESHOLDS = (80, 100)
# Queued by name: tenants.tasks, the task's module, imports this package.
QUOTA_EMAIL_TASK = "tenants.tasks.billing_quota_email"


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
    organization_id = organization.pk
    transaction.on_commit(
        lambda: enqueue(app.tasks[QUOTA_EMAIL_TASK], (organization_id, threshold))
    )

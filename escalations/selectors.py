"""Read-side queries over escalations that the console shows as figures."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from tenants.models import Membership, Organization

from .models import Escalation, Response

OVERVIEW_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class OperatorLoad:
    membership: Membership
    claimed_now: int
    answered_this_week: int


@dataclass(frozen=True)
class Overview:
    since: datetime
    pending: int
    decided: int
    human_decisions: int
    median_seconds: float | None
    p90_seconds: float | None
    approved: int
    rejected: int
    operators: list[OperatorLoad]

    @property
    def approval_rate(self) -> float | None:
        total = self.approved + self.rejected
        return self.approved / total if total else None


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of values at or
    below it (no interpolation, so it is always a time somebody actually waited)."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def organization_overview(*, organization: Organization, now: datetime | None = None) -> Overview:
    """Pending now; over the last seven days: time from creation to a person's decision (median
    and p90; policy and timeout decisions are excluded, they would read as instant or as the
    deadline), approvals against rejections, and each answering member's load. Three queries,
    however many escalations and members there are."""
    now = now or timezone.now()
    since = now - OVERVIEW_WINDOW
    escalations = Escalation.objects.filter(organization=organization)
    decided_recently = Q(decided_at__gte=since)
    counts = escalations.aggregate(
        pending=Count("pk", filter=Q(status=Escalation.Status.PENDING)),
        decided=Count("pk", filter=decided_recently),
        approved=Count("pk", filter=decided_recently & Q(status=Escalation.Status.APPROVED)),
        rejected=Count("pk", filter=decided_recently & Q(status=Escalation.Status.REJECTED)),
    )
    waits = sorted(
        (decided_at - created_at).total_seconds()
        for created_at, decided_at in escalations.filter(
            decided_recently, decided_by__type="user"
        ).values_list("created_at", "decided_at")
        if decided_at is not None  # always, by decided_recently; for the type checker
    )
    claimed = (
        Escalation.objects.filter(assignee=OuterRef("pk"), status=Escalation.Status.PENDING)
        .order_by()
        .values("assignee")
        .annotate(n=Count("pk"))
        .values("n")
    )
    answered = (
        Response.objects.filter(membership=OuterRef("pk"), created_at__gte=since)
        .order_by()
        .values("membership")
        .annotate(n=Count("pk"))
        .values("n")
    )
    members = (
        organization.memberships.filter(role__in=Membership.ANSWERING_ROLES)
        .select_related("user")
        .annotate(
            claimed_now=Coalesce(Subquery(claimed, output_field=IntegerField()), 0),
            answered_this_week=Coalesce(Subquery(answered, output_field=IntegerField()), 0),
        )
        .order_by("-claimed_now", "-answered_this_week", "user__email")
    )
    return Overview(
        since=since,
        pending=counts["pending"],
        decided=counts["decided"],
        human_decisions=len(waits),
        median_seconds=statistics.median(waits) if waits else None,
        p90_seconds=_percentile(waits, 0.9) if waits else None,
        approved=counts["approved"],
        rejected=counts["rejected"],
        operators=[OperatorLoad(m, m.claimed_now, m.answered_this_week) for m in members],
    )

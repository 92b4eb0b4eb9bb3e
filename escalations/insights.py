"""Insights: an organization's escalations over the last N days, aggregated in the database.

Finished UTC days are read from the per-day rollup (``escalations.rollup``: ``InsightDay`` and
``InsightWait``, built every 10 minutes); today, and any day not rolled up yet, are read live
from the escalations, so a figure is never missing. Each figure is then one ``GROUP BY`` query
on the rollup's days plus one on the live ones, scoped to the organization, and the pending
count by priority; the decided figures are bucketed by the UTC day of the decision. Nothing here
loads escalations one by one.

Counts and approval rates are exact either way. Time to decision is a person's: from creation to
the decision of a member (``decided_by.type == "user"``); policy decisions would read as instant
and timeouts as the deadline, so they are left out, as on the overview's figures. Its
percentiles are exact on live days: PostgreSQL's ``percentile_cont`` (linear interpolation
between the two nearest durations), or on SQLite, which has no percentile aggregate, the same
interpolation in Python over the (group, seconds) pairs the database computes and sorts. On
rolled-up days they come from the rollup's log-scale histogram, within 5 % (``rollup.RATIO -
1``, or 0.1 s for shorter waits) of the exact figure; the per-channel median over a range that
includes rolled-up days does too (the live days' waits bucketed the same way), and
``Insights.approximate`` says so (the charts show "≈").

On PostgreSQL the live queries read only the partial index ``esc_org_decided`` (an index-only
scan: ``decider`` and ``action_name`` are the generated copies of ``decided_by.type`` and
``action.name``), the rollup's by ``(organization, day)``, and the pending count reads
``esc_org_pending``; ``bench/insights.py`` measures them at a million escalations.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Count, FloatField, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from tenants.models import Organization

from . import rollup
from .models import Escalation, InsightDay, InsightRollupDay, InsightWait

RANGES = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_DAYS = 90
# Per-agent and per-action rates show the busiest few; the rest would be unreadable slivers.
TOP = 10

OUTCOMES: tuple[str, ...] = tuple(
    status.value
    for status in (
        Escalation.Status.APPROVED,
        Escalation.Status.REJECTED,
        Escalation.Status.ANSWERED,
        Escalation.Status.EXPIRED,
        Escalation.Status.CANCELLED,
    )
)
# ``decided_by.type`` of each way an escalation gets decided: a member, a policy at creation, the
# deadline's ``on_timeout``, the asking agent withdrawing it (a cancellation).
DECIDERS = ("user", "policy", "timeout", "agent")
DECIDER_LABELS = {
    "user": "A person",
    "policy": "A policy",
    "timeout": "The deadline",
    "agent": "The agent (cancelled)",
    "other": "Other",
}
PRIORITIES: tuple[str, ...] = tuple(Escalation.Priority.values[::-1])  # urgent … low


class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def percentile_cont(sorted_values: list[float], fraction: float) -> float:
    """What PostgreSQL's ``percentile_cont`` returns for these (ascending) values."""
    position = fraction * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


@dataclass(frozen=True)
class Wait:
    """Time from creation to a person's decision, over ``decisions`` decisions."""

    decisions: int
    p50: float | None
    p90: float | None


@dataclass(frozen=True)
class Day:
    day: date
    outcomes: dict[str, int]
    deciders: dict[str, int]
    wait: Wait

    @property
    def decided(self) -> int:
        return sum(self.outcomes.values())


@dataclass(frozen=True)
class Rate:
    """Approvals against rejections for one agent or one action name."""

    key: str
    label: str
    approved: int
    rejected: int

    @property
    def total(self) -> int:
        return self.approved + self.rejected

    @property
    def approval_rate(self) -> float:
        return self.approved / self.total


@dataclass(frozen=True)
class Channel:
    channel: str
    decisions: int
    median_seconds: float


@dataclass(frozen=True)
class Insights:
    days: int
    since: datetime
    until: datetime
    daily: list[Day]
    agents: list[Rate]
    actions: list[Rate]
    channels: list[Channel]
    pending: dict[str, int]
    # Some percentiles come from the rollup's histograms (within ``rollup.RATIO - 1``): the
    # charts mark them with "≈".
    approximate: bool = False

    @property
    def decided(self) -> int:
        return sum(day.decided for day in self.daily)


def range_start(days: int, now: datetime) -> datetime:
    """Midnight UTC of the first of ``days`` calendar days ending today."""
    first = now.astimezone(UTC).date() - timedelta(days=days - 1)
    return datetime.combine(first, time.min, tzinfo=UTC)


@dataclass(frozen=True)
class _Split:
    """Where a range is read from: its rolled-up finished days, and a filter for the rest."""

    rolled: list[date]
    live: Q


def _split(since: datetime) -> _Split:
    """The days from ``since`` that ``escalations.rollup`` has rolled up, and the live rest
    (today, and any day not rolled up yet) as ranges of ``decided_at``."""
    today = timezone.now().astimezone(UTC).date()
    rolled = sorted(
        InsightRollupDay.objects.filter(day__gte=since.date(), day__lt=today).values_list(
            "day", flat=True
        )
    )
    live = []
    start = since
    for day in rolled:
        if rollup.day_start(day) > start:
            live.append(Q(decided_at__gte=start, decided_at__lt=rollup.day_start(day)))
        start = rollup.day_start(day + timedelta(days=1))
    return _Split(rolled, functools.reduce(operator.or_, live, Q(decided_at__gte=start)))


def _decided(organization: Organization, live: Q) -> QuerySet[Escalation]:
    return Escalation.objects.filter(live, organization=organization).order_by()


def _rolled(organization: Organization, split: _Split) -> QuerySet[InsightDay]:
    return InsightDay.objects.filter(organization=organization, day__in=split.rolled).order_by()


def _rolled_waits(organization: Organization, split: _Split) -> QuerySet[InsightWait]:
    return InsightWait.objects.filter(organization=organization, day__in=split.rolled).order_by()


def _human(queryset: QuerySet[Escalation]) -> QuerySet[Escalation]:
    return queryset.filter(decider="user")


def _wait() -> rollup.SecondsBetween:
    return rollup.seconds_between()


def _percentiles(
    queryset: QuerySet[Escalation], group: str, fractions: tuple[float, ...]
) -> dict[Any, tuple[int, list[float]]]:
    """For each value of ``group``: the number of escalations and the wait's percentiles."""
    if connection.vendor == "postgresql":
        rows = (
            queryset.values(group)
            .annotate(
                n=Count("*"),
                **{f"p{i}": PercentileCont(_wait(), f) for i, f in enumerate(fractions)},
            )
            .values_list(group, "n", *(f"p{i}" for i in range(len(fractions))))
        )
        return {row[0]: (row[1], list(row[2:])) for row in rows}
    waits: dict[Any, list[float]] = defaultdict(list)
    for key, seconds in (
        queryset.annotate(seconds=_wait()).order_by(group, "seconds").values_list(group, "seconds")
    ):
        waits[key].append(seconds)
    return {
        key: (len(values), [percentile_cont(values, f) for f in fractions])
        for key, values in waits.items()
    }


def _from_histograms(
    histograms: dict[Any, dict[int, int]], fractions: tuple[float, ...]
) -> dict[Any, tuple[int, list[float]]]:
    """``_percentiles``' figures from histograms (approximate, ``escalations.rollup``)."""
    return {
        key: (
            sum(histogram.values()),
            [rollup.histogram_percentile(histogram, f) or 0.0 for f in fractions],
        )
        for key, histogram in histograms.items()
    }


def daily_counts(
    organization: Organization, since: datetime
) -> dict[date, tuple[dict[str, int], dict[str, int]]]:
    """Decisions per UTC day, by outcome and by who decided (one query on the rollup's days,
    one on the live ones)."""
    split = _split(since)
    rows = itertools.chain(
        _rolled(organization, split)
        .values("day", "status", "decider")
        .annotate(n=Sum("count"))
        .values_list("day", "status", "decider", "n"),
        _decided(organization, split.live)
        .annotate(day=TruncDate("decided_at"))
        .values("day", "status", "decider")
        .annotate(n=Count("*"))
        .values_list("day", "status", "decider", "n"),
    )
    days: dict[date, tuple[dict[str, int], dict[str, int]]] = {}
    for day, status, decider, n in rows:
        outcomes, deciders = days.setdefault(day, ({}, {}))
        outcomes[status] = outcomes.get(status, 0) + n
        who = decider if decider in DECIDERS else "other"
        deciders[who] = deciders.get(who, 0) + n
    return days


def daily_waits(organization: Organization, since: datetime) -> dict[date, Wait]:
    """A person's time to decision per UTC day: p50 and p90, from the rollup's histograms for
    its days (within ``rollup.RATIO - 1``), exact for the live days."""
    split = _split(since)
    rolled = rollup.histograms(
        _rolled_waits(organization, split)
        .values("day", "bucket")
        .annotate(n=Sum("count"))
        .values_list("day", "bucket", "n")
    )
    decided = _human(_decided(organization, split.live)).annotate(day=TruncDate("decided_at"))
    figures = _from_histograms(rolled, (0.5, 0.9)) | _percentiles(decided, "day", (0.5, 0.9))
    return {day: Wait(n, p50, p90) for day, (n, (p50, p90)) in figures.items()}


def _rates(rows: Iterable[tuple[Any, Any, int, int]]) -> list[Rate]:
    """The busiest ``TOP`` of (key, label, approved, rejected) rows, summed by key."""
    summed: dict[Any, list[Any]] = {}
    for key, label, approved, rejected in rows:
        row = summed.setdefault(key, [label, 0, 0])
        row[1] += approved
        row[2] += rejected
    ordered = sorted(
        summed.items(), key=lambda i: (-(i[1][1] + i[1][2]), i[1][0] is None, i[1][0] or "")
    )
    return [
        Rate(key=str(key) if key is not None else "", label=label, approved=a, rejected=r)
        for key, (label, a, r) in ordered[:TOP]
    ]


_DECISIONS = (Escalation.Status.APPROVED, Escalation.Status.REJECTED)
_APPROVED = Count("status", filter=Q(status=Escalation.Status.APPROVED))
_REJECTED = Count("status", filter=Q(status=Escalation.Status.REJECTED))
_ROLLED_APPROVED = Sum("count", filter=Q(status=Escalation.Status.APPROVED), default=0)
_ROLLED_REJECTED = Sum("count", filter=Q(status=Escalation.Status.REJECTED), default=0)


def _approvals(organization: Organization, since: datetime, *fields: str) -> list[Rate]:
    """Approvals and rejections by ``fields`` (key, label), whoever decided (one query on the
    rollup's days, one on the live ones): the busiest ``TOP``."""
    split = _split(since)
    return _rates(
        itertools.chain(
            _rolled(organization, split)
            .filter(status__in=_DECISIONS)
            .values(*fields)
            .annotate(approved=_ROLLED_APPROVED, rejected=_ROLLED_REJECTED)
            .values_list(fields[0], fields[-1], "approved", "rejected"),
            _decided(organization, split.live)
            .filter(status__in=_DECISIONS)
            .values(*fields)
            .annotate(approved=_APPROVED, rejected=_REJECTED)
            .values_list(fields[0], fields[-1], "approved", "rejected"),
        )
    )


def agent_rates(organization: Organization, since: datetime) -> list[Rate]:
    """Approval rate of the busiest agents, whoever decided."""
    return _approvals(organization, since, "agent__public_id", "agent__name")


def action_rates(organization: Organization, since: datetime) -> list[Rate]:
    """Approval rate of the most frequent action names, whoever decided."""
    return [
        Rate(rate.key, rate.label or "(no action)", rate.approved, rate.rejected)
        for rate in _approvals(organization, since, "action_name")
    ]


def channel_figures(organization: Organization, since: datetime) -> list[Channel]:
    """Where people answered: decisions and median time to decision per channel. Exact when the
    whole range is live; otherwise the rollup's histograms plus the live days' waits bucketed
    the same way (the median within ``rollup.RATIO - 1``)."""
    split = _split(since)
    live = _human(_decided(organization, split.live))
    if not split.rolled:
        figures = _percentiles(live, "decision_channel", (0.5,))
    else:
        rows = itertools.chain(
            _rolled_waits(organization, split)
            .values("decision_channel", "bucket")
            .annotate(n=Sum("count"))
            .values_list("decision_channel", "bucket", "n"),
            live.annotate(seconds=_wait(), bucket=rollup.bucket_expression())
            .values("decision_channel", "bucket")
            .annotate(n=Count("*"))
            .values_list("decision_channel", "bucket", "n"),
        )
        figures = _from_histograms(rollup.histograms(rows), (0.5,))
    channels = [
        Channel(channel or "unknown", n, median) for channel, (n, (median,)) in figures.items()
    ]
    return sorted(channels, key=lambda c: (-c.decisions, c.channel))


def pending_by_priority(organization: Organization) -> dict[str, int]:
    """Pending escalations by priority, most urgent first, zeros included (one query)."""
    rows = (
        Escalation.objects.filter(organization=organization, status=Escalation.Status.PENDING)
        .order_by()
        .values("priority")
        .annotate(n=Count("*"))
        .values_list("priority", "n")
    )
    counts = dict(rows)
    return {priority: counts.get(priority, 0) for priority in PRIORITIES}


def organization_insights(
    *, organization: Organization, days: int = DEFAULT_DAYS, now: datetime | None = None
) -> Insights:
    """Every figure of the insights, for the ``days`` calendar days (UTC) ending today: about
    a dozen small queries (the rollup's and the live days' of each figure), whatever the number
    of escalations."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    now = now or timezone.now()
    since = range_start(days, now)
    counts = daily_counts(organization, since)
    waits = daily_waits(organization, since)
    daily = []
    for offset in range(days):
        day = since.date() + timedelta(days=offset)
        outcomes, deciders = counts.get(day, ({}, {}))
        daily.append(Day(day, outcomes, deciders, waits.get(day, Wait(0, None, None))))
    return Insights(
        days=days,
        since=since,
        until=now,
        daily=daily,
        agents=agent_rates(organization, since),
        actions=action_rates(organization, since),
        channels=channel_figures(organization, since),
        pending=pending_by_priority(organization),
        approximate=bool(_split(since).rolled),
    )


class InvalidDays(ValueError):
    """``days`` is not a whole number of days in range; the message says what is accepted."""


def parse_days(raw: str | None) -> int:
    """The ``days`` of a query string: absent is the default, anything else a whole number of
    days from 1 to ``MAX_DAYS``."""
    if raw is None:
        return DEFAULT_DAYS
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_DAYS:
        raise InvalidDays(f"Give a whole number of days from 1 to {MAX_DAYS}, e.g. 30.")
    return int(raw)

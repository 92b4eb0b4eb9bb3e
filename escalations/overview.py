"""The console's overview page: the organization's escalation figures at a glance, and for
admins and owners the insights charts over a range of days (``?days=7|30|90``).

It lives with escalations (whose numbers it shows) rather than in ``tenants.views``, so the
tenants app keeps depending only downward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET

from tenants.console import role_required
from tenants.models import Membership
from tenants.requests import OrganizationRequest

from . import charts, insights, rollup
from .outbox import outbox_parked
from .selectors import organization_overview

MANAGING = tuple(Membership.MANAGING_ROLES)

OUTCOME_LABELS = {
    "approved": "Approved",
    "rejected": "Rejected",
    "answered": "Answered",
    "expired": "Expired",
    "cancelled": "Cancelled",
}
# Two charts a row on a wide screen: the per-day pair, time to decision beside the live pending
# chart, the approval rates, the channels.
CHART_ORDER = (
    "outcomes",
    "deciders",
    "waits",
    "pending",
    "agents",
    "actions",
    "channel_counts",
    "channel_speed",
)
PRIORITY_LABELS = {"urgent": "Urgent", "high": "High", "normal": "Normal", "low": "Low"}


@dataclass(frozen=True)
class Chart:
    title: str
    svg: SafeString


def _chart(draw: Callable[..., SafeString], **kwargs: Any) -> Chart:
    """The chart and its title, shown above it (the SVG names itself with the same title)."""
    return Chart(kwargs["title"], draw(**kwargs))


def _sum_text(parts: dict[str, int], labels: dict[str, str]) -> str:
    return ", ".join(f"{labels[key].lower()} {n:,}" for key, n in parts.items() if n) or "none"


def _rate_bars(rates: list[insights.Rate], kind: str) -> tuple[list[charts.Bar], str]:
    bars = [
        charts.Bar(
            key=rate.key,
            label=rate.label,
            parts=[
                ("approved", "approved", rate.approved / rate.total),
                ("rejected", "rejected", rate.rejected / rate.total),
            ],
            text=f"{rate.approval_rate:.0%} of {rate.total:,}",
            detail=f" ({rate.approved:,} approved, {rate.rejected:,} rejected)",
        )
        for rate in rates
    ]
    summary = "; ".join(f"{r.label}: {r.approval_rate:.0%} of {r.total:,}" for r in rates)
    return bars, (
        f"Share of approvals among approvals and rejections, by {kind}: {summary}."
        if rates
        else f"No approvals or rejections in this range, so no rate by {kind}."
    )


def pending_chart(pending: dict[str, int]) -> Chart:
    total = sum(pending.values())
    return _chart(
        charts.hbars,
        chart_id="chart-pending",
        title="Pending now, by priority",
        description=f"{total:,} pending: {_sum_text(pending, PRIORITY_LABELS)}.",
        bars=[
            charts.Bar(priority, PRIORITY_LABELS[priority], [(priority, "pending", n)], f"{n:,}")
            for priority, n in pending.items()
        ],
        maximum=max(pending.values(), default=0),
    )


def insight_charts(figures: insights.Insights) -> dict[str, Chart]:
    """Every chart of the insights section, as SVG markup."""
    days = [day.day for day in figures.daily]
    outcome_totals = {o: sum(d.outcomes.get(o, 0) for d in figures.daily) for o in OUTCOME_LABELS}
    decider_totals = {
        who: sum(d.deciders.get(who, 0) for d in figures.daily) for who in insights.DECIDER_LABELS
    }
    waited = [d for d in figures.daily if d.wait.decisions]
    agent_bars, agent_summary = _rate_bars(figures.agents, "agent")
    action_bars, action_summary = _rate_bars(figures.actions, "action")
    about = "≈ " if figures.approximate else ""  # percentiles from the rollup's histograms
    channel_summary = "; ".join(
        f"{c.channel}: {c.decisions:,} decisions, median {about}{charts.duration(c.median_seconds)}"
        for c in figures.channels
    )
    return {
        "outcomes": _chart(
            charts.stacked_columns,
            chart_id="chart-outcomes",
            title=f"Decided per day, by outcome (last {figures.days} days)",
            description=f"{figures.decided:,} decided: "
            f"{_sum_text(outcome_totals, OUTCOME_LABELS)}.",
            days=days,
            series=[
                charts.Series(key, label, [d.outcomes.get(key, 0) for d in figures.daily])
                for key, label in OUTCOME_LABELS.items()
            ],
        ),
        "deciders": _chart(
            charts.stacked_columns,
            chart_id="chart-deciders",
            title=f"Decided per day, by who decided (last {figures.days} days)",
            description=f"{figures.decided:,} decided: "
            f"{_sum_text(decider_totals, insights.DECIDER_LABELS)}.",
            days=days,
            series=[
                charts.Series(f"by-{key}", label, [d.deciders.get(key, 0) for d in figures.daily])
                for key, label in insights.DECIDER_LABELS.items()
                if key != "other" or decider_totals["other"]
            ],
        ),
        "waits": _chart(
            charts.lines,
            chart_id="chart-waits",
            title="A person's time to decision per day: median and p90"
            + (f" (≈, within {rollup.RATIO - 1:.0%})" if figures.approximate else ""),
            description=(
                f"Over {sum(d.wait.decisions for d in waited):,} decisions by people on "
                f"{len(waited)} days; the slowest day's p90 was {about}"
                f"{charts.duration(max(d.wait.p90 or 0 for d in waited))}."
                if waited
                else "Nobody decided in this range."
            ),
            days=days,
            series=[
                charts.Series("p50", "Median", [d.wait.p50 for d in figures.daily]),
                charts.Series("p90", "p90", [d.wait.p90 for d in figures.daily]),
            ],
        ),
        "agents": _chart(
            charts.hbars,
            chart_id="chart-agents",
            title="Approval rate by agent",
            description=agent_summary,
            bars=agent_bars,
            maximum=1,
            legend=[("approved", "Approved"), ("rejected", "Rejected")],
        ),
        "actions": _chart(
            charts.hbars,
            chart_id="chart-actions",
            title="Approval rate by action",
            description=action_summary,
            bars=action_bars,
            maximum=1,
            legend=[("approved", "Approved"), ("rejected", "Rejected")],
        ),
        "channel_counts": _chart(
            charts.hbars,
            chart_id="chart-channels",
            title="Where people answer: decisions by channel",
            description=channel_summary or "Nobody decided in this range.",
            bars=[
                charts.Bar(
                    c.channel,
                    c.channel,
                    [("channel", "decisions", c.decisions)],
                    f"{c.decisions:,}",
                )
                for c in figures.channels
            ],
            maximum=max((c.decisions for c in figures.channels), default=0),
        ),
        "channel_speed": _chart(
            charts.hbars,
            chart_id="chart-channel-speed",
            title="How fast: median time to decision by channel",
            description=channel_summary or "Nobody decided in this range.",
            bars=[
                charts.Bar(
                    c.channel,
                    c.channel,
                    [("p50", "median time to decision", c.median_seconds)],
                    about + charts.duration(c.median_seconds),
                )
                for c in figures.channels
            ],
            maximum=max((c.median_seconds for c in figures.channels), default=0),
        ),
        "pending": pending_chart(figures.pending),
    }


@role_required()
@require_GET
def overview(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    figures = organization_overview(organization=organization)
    managing = request.membership.role in Membership.MANAGING_ROLES
    parked = outbox_parked(organization_id=organization.pk).count() if managing else 0
    context: dict[str, object] = {
        "overview": figures,
        "nav_active": "overview",
        "parked_effects": parked,
    }
    status = 200
    if managing:
        try:
            days = insights.parse_days(request.GET.get("days"))
        except insights.InvalidDays as exc:
            context["days_error"] = str(exc)
            days, status = insights.DEFAULT_DAYS, 400
        found = insights.organization_insights(organization=organization, days=days)
        drawn = insight_charts(found)
        context.update(
            insights=found,
            charts=[(name, drawn[name]) for name in CHART_ORDER],
            ranges=insights.RANGES,
            days=days,
        )
    return render(request, "tenants/overview.html", context, status=status)


@role_required(*MANAGING)
@require_GET
def overview_pending(request: OrganizationRequest) -> JsonResponse:
    """The live pending-by-priority chart's figures; ``insights.js`` asks again whenever the
    queue's websocket reports a change."""
    return JsonResponse(
        {"pending": insights.pending_by_priority(request.organization)},
        headers={"Cache-Control": "no-store"},
    )

"""``GET /api/v1/insights?days=30``: the overview's insights as JSON, for admins and owners.

Like the console's charts, the figures are for the organization's admins and owners only (per
agent and per action approval rates, who answers where): a personal key of one of them, never an
agent's key.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response as HttpResponse

from tenants.api import KeyedAPIView
from tenants.models import Membership, Scope
from tenants.requests import ApiRequest

from . import insights
from .errors import forbidden, invalid_fields

PROBLEM = OpenApiResponse(description="Problem details (RFC 9457, application/problem+json)")
PROBLEMS = {code: PROBLEM for code in (400, 401, 403, 429)}
PARAMETERS = frozenset({"days"})


def _counts(name: str, keys: tuple[str, ...]) -> type[serializers.Serializer]:
    """A serializer of one count per key (a named OpenAPI component)."""
    fields = {key: serializers.IntegerField() for key in keys}
    return type(f"{name}Serializer", (serializers.Serializer,), fields)


class WaitSerializer(serializers.Serializer):
    decisions = serializers.IntegerField(help_text="Decisions by people that day.")
    p50 = serializers.FloatField(allow_null=True, help_text="Median seconds to decision.")
    p90 = serializers.FloatField(allow_null=True, help_text="90th percentile, seconds.")


class DaySerializer(serializers.Serializer):
    date = serializers.DateField(help_text="The UTC day of the decisions.")
    decided = serializers.IntegerField()
    outcomes = _counts("OutcomeCounts", insights.OUTCOMES)()
    decided_by = _counts("DeciderCounts", (*insights.DECIDERS, "other"))()
    time_to_decision = WaitSerializer(help_text="From creation to a person's decision.")


class RateSerializer(serializers.Serializer):
    id = serializers.CharField(allow_null=True, help_text="The agent's id (agents only).")
    name = serializers.CharField()
    approved = serializers.IntegerField()
    rejected = serializers.IntegerField()
    approval_rate = serializers.FloatField(help_text="approved / (approved + rejected)")


class ChannelSerializer(serializers.Serializer):
    channel = serializers.CharField(help_text="console, api, email, sms, slack, …")
    decisions = serializers.IntegerField()
    median_seconds = serializers.FloatField()


class InsightsSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateTimeField(help_text="Midnight UTC of the first day.")
    until = serializers.DateTimeField()
    daily = DaySerializer(many=True)
    agents = RateSerializer(many=True, help_text=f"The {insights.TOP} busiest agents.")
    actions = RateSerializer(many=True, help_text=f"The {insights.TOP} most frequent actions.")
    channels = ChannelSerializer(many=True, help_text="Decisions by people, by channel.")
    pending = _counts("PriorityCounts", insights.PRIORITIES)(help_text="Pending now, by priority.")


def _rate(rate: insights.Rate, *, agent: bool) -> dict[str, Any]:
    return {
        "id": rate.key if agent else None,
        "name": rate.label,
        "approved": rate.approved,
        "rejected": rate.rejected,
        "approval_rate": rate.approval_rate,
    }


def insights_data(figures: insights.Insights) -> dict[str, Any]:
    return {
        "days": figures.days,
        "since": figures.since,
        "until": figures.until,
        "daily": [
            {
                "date": day.day,
                "decided": day.decided,
                "outcomes": {key: day.outcomes.get(key, 0) for key in insights.OUTCOMES},
                "decided_by": {
                    key: day.deciders.get(key, 0) for key in (*insights.DECIDERS, "other")
                },
                "time_to_decision": {
                    "decisions": day.wait.decisions,
                    "p50": day.wait.p50,
                    "p90": day.wait.p90,
                },
            }
            for day in figures.daily
        ],
        "agents": [_rate(rate, agent=True) for rate in figures.agents],
        "actions": [_rate(rate, agent=False) for rate in figures.actions],
        "channels": [
            {"channel": c.channel, "decisions": c.decisions, "median_seconds": c.median_seconds}
            for c in figures.channels
        ],
        "pending": figures.pending,
    }


class InsightsView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_READ

    @extend_schema(
        operation_id="insights_read",
        parameters=[
            OpenApiParameter(
                "days",
                {"type": "integer", "minimum": 1, "maximum": insights.MAX_DAYS},
                description=f"Calendar days (UTC) ending today; default {insights.DEFAULT_DAYS}.",
            )
        ],
        responses={200: InsightsSerializer, **PROBLEMS},
        description="Decisions per day by outcome and by who decided, a person's time to "
        "decision (p50, p90) per day, approval rates by agent and by action, decisions and "
        "median time by channel, and pending escalations by priority. Admins' and owners' "
        "personal keys only.",
    )
    def get(self, request: ApiRequest) -> HttpResponse:
        membership = request.membership
        if membership is None or membership.role not in Membership.MANAGING_ROLES:
            raise forbidden("Insights are for admins and owners, with a personal key.")
        unknown = sorted(set(request.query_params) - PARAMETERS)
        if unknown:
            raise invalid_fields({name: ["Unknown query parameter."] for name in unknown})
        try:
            days = insights.parse_days(request.query_params.get("days"))
        except insights.InvalidDays as exc:
            raise invalid_fields({"days": [str(exc)]}) from None
        figures = insights.organization_insights(organization=request.organization, days=days)
        return HttpResponse(InsightsSerializer(insights_data(figures)).data)

"""The SQL building blocks of the miner: the window, a numeric argument read from the action's
JSON, a number per (agent, action) group, the time to a decision and its median.

Each works on SQLite and PostgreSQL, except ``Median`` (``percentile_cont``, PostgreSQL only;
``suggestions.mining`` reads a median row by row elsewhere).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import (
    Aggregate,
    BooleanField,
    Case,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from escalations.models import Escalation
from tenants.models import Organization

APPROVED = Escalation.Status.APPROVED
REJECTED = Escalation.Status.REJECTED
DECIDED = (APPROVED, REJECTED)

Group = tuple[int, str]  # (agent pk, action name)

WAIT = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())


class _IsNumber(Func):
    """True where ``action.arguments.<key>`` is a JSON number (not a string, bool or null), the
    only values a CEL comparison with a number accepts."""

    output_field = BooleanField()

    def __init__(self, argument: str) -> None:
        super().__init__(F("action"))
        self.argument = argument

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(jsonb_typeof({sql} -> 'arguments' -> %s) = 'number')", [*params, self.argument]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        sql, params = compiler.compile(self.source_expressions[0])
        path = f'$.arguments."{self.argument}"'
        return f"(json_type({sql}, %s) IN ('integer', 'real'))", [*params, path]


class Median(Aggregate):
    """``percentile_cont(0.5)`` of an interval (PostgreSQL)."""

    function = "percentile_cont"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


def argument_value(argument: str) -> Case:
    """The argument as a float, NULL unless it is a JSON number (a CASE, so that PostgreSQL
    never casts a string: the order of AND-ed conditions is not guaranteed, a CASE's is)."""
    return Case(
        When(_IsNumber(argument), then=Cast(KT(f"action__arguments__{argument}"), FloatField())),
        default=Value(None),
        output_field=FloatField(),
    )


def window_queryset(organization: Organization, since: datetime) -> QuerySet[Escalation]:
    """Every escalation of the organization created since ``since`` with a named action."""
    return Escalation.objects.filter(
        organization=organization, created_at__gte=since, action__name__isnull=False
    ).order_by()


def human_decisions(window: QuerySet[Escalation]) -> QuerySet[Escalation]:
    """Approvals and rejections made by a person (not a policy, a timeout or the agent)."""
    return window.filter(status__in=DECIDED, decided_by__type="user")


def in_groups(groups: list[Group]) -> Q:
    condition = Q(pk__in=[])
    for agent_id, action_name in groups:
        condition |= Q(agent_id=agent_id, action__name=action_name)
    return condition


def per_group(values: dict[Group, float]) -> Case:
    """A CASE giving each group its own number (its bound), NULL for any other row."""
    return Case(
        *[
            When(agent_id=agent_id, action__name=action_name, then=Value(value))
            for (agent_id, action_name), value in values.items()
        ],
        default=Value(None),
        output_field=FloatField(),
    )

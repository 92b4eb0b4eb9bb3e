"""Mining policy suggestions from an organization's own human decisions.

The rule, in plain words (the console page and the README say the same):

1. Take the escalations created in the last ``days`` days that a **person** approved or rejected
   (``decided_by.type == "user"``; decisions by a policy, a timeout or the agent's own cancel do
   not count: they say nothing about what people want).
2. Group them by agent and action name.
3. For every numeric argument of the action (read from the group's latest escalation), look at
   where people drew the line: the largest approved value and the smallest rejected one. If
   every approval lies below every rejection, "value ≤ largest approval" is a rule people always
   followed (and "value ≥ smallest rejection" its mirror for rejections). If they overlap, the
   widest clean bound is the largest approval below the smallest rejection; with a confidence
   threshold below 100 %, the bound covering every approval is tried too.
4. A rule is suggested when it covers at least ``min_support`` human decisions and at least
   ``min_confidence`` of them went the rule's way; per group and outcome the rule covering the
   most decisions wins. A group whose action has no numeric argument gets the rule "this agent,
   this action" when the whole group meets the same two thresholds.
5. Each suggestion carries the time people spent on what it covers (the sum of
   ``decided_at - created_at``), the median wait, and a **dry run**: every escalation of the
   window the rule would have decided (whoever decided it, or still pending), and those decided
   the other way.

Everything is aggregated in the database (``GROUP BY`` agent, action name and status, with the
numeric argument extracted from the JSON and cast): the miner's cost is a few scans of the
window, never a row per escalation in Python.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from escalations.models import Escalation, Policy
from escalations.policies import ConditionError, condition_check
from tenants.models import Agent, Organization

from .models import DismissedSuggestion

APPROVED = Escalation.Status.APPROVED
REJECTED = Escalation.Status.REJECTED
DECIDED = (APPROVED, REJECTED)
# A key CEL can reach as ``action.arguments.<key>``; "__" would split Django's JSON key path.
_ARGUMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LINKS = 10


@dataclass(frozen=True)
class MiningOptions:
    """The knobs of the rule, as the console page offers them."""

    days: int = 30
    min_support: int = 10
    min_confidence: float = 1.0


@dataclass(frozen=True)
class Rule:
    """A candidate condition: this agent, this action, optionally a bound on one argument."""

    agent_id: int
    action_name: str
    outcome: str  # Policy.Outcome.AUTO_APPROVE or AUTO_REJECT
    argument: str | None = None
    bound: float | None = None

    @property
    def status(self) -> str:
        """The decision the rule would make."""
        return APPROVED if self.outcome == Policy.Outcome.AUTO_APPROVE else REJECTED

    @property
    def operator(self) -> str:
        return "<=" if self.outcome == Policy.Outcome.AUTO_APPROVE else ">="

    @property
    def group(self) -> tuple[int, str]:
        return (self.agent_id, self.action_name)


@dataclass(frozen=True)
class DryRun:
    """What the rule would have done to every escalation of the window."""

    matched: int
    by_status: dict[str, int]
    contradicted: int  # decided (by anyone) the other way
    contradicted_ids: list[str]


@dataclass
class Suggestion:
    rule: Rule
    agent: Agent
    support: int  # covered human decisions that went the rule's way
    disagreed: int  # covered human decisions that went the other way
    saved: timedelta
    median_wait: timedelta | None = None
    dry_run: DryRun | None = None
    existing_policy: Policy | None = None

    @property
    def confidence(self) -> float:
        return self.support / (self.support + self.disagreed)

    @property
    def covered(self) -> int:
        return self.support + self.disagreed

    @property
    def condition(self) -> str:
        """The CEL condition, over the variables ``escalations.policies.activation`` exposes."""
        rule = self.rule
        clauses = [
            f"agent.id == {_string(self.agent.public_id)}",
            f"action.name == {_string(rule.action_name)}",
        ]
        if rule.argument is not None and rule.bound is not None:
            bound = _number(rule.bound)
            clauses.append(f"action.arguments.{rule.argument} {rule.operator} {bound}")
        return " && ".join(clauses)

    @property
    def fingerprint(self) -> str:
        """The rule's identity: its outcome and condition, not its figures (see the model)."""
        return hashlib.sha256(f"{self.rule.outcome}\n{self.condition}".encode()).hexdigest()

    @property
    def outcome_label(self) -> str:
        return Policy.Outcome(self.rule.outcome).label

    @property
    def saved_text(self) -> str:
        return duration_text(self.saved)

    @property
    def median_text(self) -> str:
        return duration_text(self.median_wait) if self.median_wait is not None else ""

    @property
    def decided(self) -> str:
        return "approved" if self.rule.status == APPROVED else "rejected"

    @property
    def name(self) -> str:
        rule = self.rule
        verb = "Approve" if rule.status == APPROVED else "Reject"
        bound = ""
        if rule.argument is not None and rule.bound is not None:
            bound = f" with {rule.argument} {_symbol(rule.operator)} {_number(rule.bound)}"
        return f"{verb} {rule.action_name}{bound} from {self.agent.name}"[:200]

    @property
    def summary(self) -> str:
        """ "42 of 42 issue_refund with amount ≤ 300 from support-bot were approved"."""
        rule = self.rule
        bound = ""
        if rule.argument is not None and rule.bound is not None:
            bound = f" with {rule.argument} {_symbol(rule.operator)} {_number(rule.bound)}"
        return (
            f"{self.support} of {self.covered} {rule.action_name}{bound} "
            f"from {self.agent.name} were {self.decided} by people"
        )


def duration_text(value: timedelta) -> str:
    """ "2 h 5 min", "11 min", "40 s": as precise as a person reads it."""
    seconds = round(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _string(value: str) -> str:
    """A CEL string literal. JSON's escapes are CEL's, except that JSON writes a character
    beyond the BMP as a surrogate pair, which CEL refuses: keep such characters as they are."""
    return json.dumps(value, ensure_ascii=False)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _symbol(operator: str) -> str:
    return {"<=": "≤", ">=": "≥"}[operator]


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


def _value(argument: str) -> Case:
    """The argument as a float, NULL unless it is a JSON number (a CASE, so that PostgreSQL
    never casts a string: the order of AND-ed conditions is not guaranteed, a CASE's is)."""
    return Case(
        When(_IsNumber(argument), then=Cast(KT(f"action__arguments__{argument}"), FloatField())),
        default=Value(None),
        output_field=FloatField(),
    )


_WAIT = ExpressionWrapper(F("decided_at") - F("created_at"), output_field=DurationField())


def window_queryset(organization: Organization, since: datetime) -> QuerySet[Escalation]:
    """Every escalation of the organization created since ``since`` with a named action."""
    return Escalation.objects.filter(
        organization=organization, created_at__gte=since, action__name__isnull=False
    ).order_by()


def _human(window: QuerySet[Escalation]) -> QuerySet[Escalation]:
    return window.filter(status__in=DECIDED, decided_by__type="user")


def _groups(human: QuerySet[Escalation], min_support: int) -> dict[tuple[int, str], dict[str, int]]:
    """Human decisions per (agent, action name) and status; groups too small are left out."""
    counts: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    rows = human.values("agent_id", "status", action_name=KT("action__name")).annotate(
        n=Count("id")
    )
    for row in rows:
        counts[(row["agent_id"], row["action_name"])][row["status"]] = row["n"]
    return {group: n for group, n in counts.items() if max(n.values()) >= min_support}


def _numeric_arguments(human: QuerySet[Escalation], group: tuple[int, str]) -> list[str]:
    """The numeric arguments of the group's latest action (its shape, one row read)."""
    action = (
        human.filter(agent_id=group[0], action__name=group[1])
        .order_by("-created_at", "-id")
        .values_list("action", flat=True)
        .first()
    )
    arguments = action.get("arguments") if isinstance(action, dict) else None
    if not isinstance(arguments, dict):
        return []
    return sorted(
        key
        for key, value in arguments.items()
        if _ARGUMENT.match(key)
        and "__" not in key
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    )


def _in_groups(groups: list[tuple[int, str]]) -> Q:
    condition = Q(pk__in=[])
    for agent_id, action_name in groups:
        condition |= Q(agent_id=agent_id, action__name=action_name)
    return condition


def _per_group(values: dict[tuple[int, str], float]) -> Case:
    """A CASE giving each group its own number (its bound), NULL for any other row."""
    return Case(
        *[
            When(agent_id=agent_id, action__name=action_name, then=Value(value))
            for (agent_id, action_name), value in values.items()
        ],
        default=Value(None),
        output_field=FloatField(),
    )


def _extremes(
    human: QuerySet[Escalation], argument: str, groups: list[tuple[int, str]]
) -> dict[tuple[int, str], dict[str, tuple[float, float]]]:
    """Per group and status: the smallest and largest value of ``argument``."""
    rows = (
        human.filter(_in_groups(groups))
        .annotate(value=_value(argument))
        .filter(value__isnull=False)
        .values("agent_id", "status", action_name=KT("action__name"))
        .annotate(low=Min("value"), high=Max("value"))
    )
    found: dict[tuple[int, str], dict[str, tuple[float, float]]] = defaultdict(dict)
    for row in rows:
        found[(row["agent_id"], row["action_name"])][row["status"]] = (row["low"], row["high"])
    return found


def _clean_bounds(
    human: QuerySet[Escalation], argument: str, limits: dict[tuple[int, str], float], status: str
) -> dict[tuple[int, str], float]:
    """Where the two outcomes overlap: the largest approval below each group's smallest
    rejection (``status`` approved), or the smallest rejection above its largest approval."""
    if not limits:
        return {}
    approving = status == APPROVED
    beyond = "value__lt" if approving else "value__gt"
    rows = (
        human.filter(_in_groups(list(limits)), status=status)
        .annotate(value=_value(argument), limit=_per_group(limits))
        .filter(**{beyond: F("limit")})
        .values("agent_id", action_name=KT("action__name"))
        .annotate(bound=Max("value") if approving else Min("value"))
    )
    return {(row["agent_id"], row["action_name"]): row["bound"] for row in rows}


def _covered(
    queryset: QuerySet[Escalation], rules: list[Rule]
) -> dict[Rule, dict[str, tuple[int, timedelta]]]:
    """Per rule and status: how many escalations of ``queryset`` the rule matches and the time
    people took on them. Rules of one batch share argument and outcome, one rule per group."""
    if not rules:
        return {}
    first = rules[0]
    by_group = {rule.group: rule for rule in rules}
    matched = queryset.filter(_in_groups(list(by_group)))
    if first.argument is not None:
        bounds = {rule.group: rule.bound for rule in rules if rule.bound is not None}
        lookup = "value__lte" if first.operator == "<=" else "value__gte"
        matched = matched.annotate(value=_value(first.argument), bound=_per_group(bounds))
        matched = matched.filter(**{lookup: F("bound")})
    rows = matched.values("agent_id", "status", action_name=KT("action__name")).annotate(
        n=Count("id"), wait=Sum(_WAIT)
    )
    found: dict[Rule, dict[str, tuple[int, timedelta]]] = defaultdict(dict)
    for row in rows:
        rule = by_group[(row["agent_id"], row["action_name"])]
        found[rule][row["status"]] = (row["n"], row["wait"] or timedelta(0))
    return found


def rule_queryset(queryset: QuerySet[Escalation], rule: Rule) -> QuerySet[Escalation]:
    """The escalations of ``queryset`` (a window) that ``rule`` matches."""
    matched = queryset.filter(agent_id=rule.agent_id, action__name=rule.action_name)
    if rule.argument is None or rule.bound is None:
        return matched
    lookup = "value__lte" if rule.operator == "<=" else "value__gte"
    return matched.annotate(value=_value(rule.argument)).filter(**{lookup: rule.bound})


def _candidates(
    human: QuerySet[Escalation],
    groups: dict[tuple[int, str], dict[str, int]],
    options: MiningOptions,
) -> list[list[Rule]]:
    """Candidate rules in batches for ``_covered`` (one argument and outcome per batch, one rule
    per group per batch)."""
    arguments: dict[str, list[tuple[int, str]]] = defaultdict(list)
    batches: list[list[Rule]] = []
    whole: dict[str, list[Rule]] = defaultdict(list)
    for group in groups:
        keys = _numeric_arguments(human, group)
        for key in keys:
            arguments[key].append(group)
        if not keys:
            for outcome in (Policy.Outcome.AUTO_APPROVE, Policy.Outcome.AUTO_REJECT):
                whole[outcome].append(Rule(group[0], group[1], outcome))
    batches.extend(rules for rules in whole.values() if rules)
    for key, keyed in sorted(arguments.items()):
        extremes = _extremes(human, key, keyed)
        for outcome, own, other in (
            (Policy.Outcome.AUTO_APPROVE, APPROVED, REJECTED),
            (Policy.Outcome.AUTO_REJECT, REJECTED, APPROVED),
        ):
            approving = own == APPROVED
            widest: dict[tuple[int, str], float] = {}
            overlapping: dict[tuple[int, str], float] = {}
            for group, stats in extremes.items():
                if own not in stats:
                    continue
                mine = stats[own][1] if approving else stats[own][0]
                if other not in stats:
                    widest[group] = mine
                    continue
                theirs = stats[other][0] if approving else stats[other][1]
                if (mine < theirs) if approving else (mine > theirs):
                    widest[group] = mine
                else:
                    overlapping[group] = theirs
                    if options.min_confidence < 1:
                        widest[group] = mine
            clean = _clean_bounds(human, key, overlapping, own)
            for bounds in (widest, clean):
                rules = [Rule(g[0], g[1], outcome, key, bound) for g, bound in bounds.items()]
                if rules:
                    batches.append(rules)
    return batches


def mine(
    *, organization: Organization, options: MiningOptions, now: datetime | None = None
) -> list[Suggestion]:
    """The organization's suggestions, best first (the most human decisions covered), less the
    dismissed ones."""
    since = (now or timezone.now()) - timedelta(days=options.days)
    window = window_queryset(organization, since)
    human = _human(window)
    groups = _groups(human, options.min_support)
    best: dict[tuple[tuple[int, str], str], tuple[Rule, int, int, timedelta]] = {}
    for batch in _candidates(human, groups, options):
        for rule, statuses in _covered(human, batch).items():
            agreed, saved = statuses.get(rule.status, (0, timedelta(0)))
            other = REJECTED if rule.status == APPROVED else APPROVED
            disagreed, other_wait = statuses.get(other, (0, timedelta(0)))
            confidence = agreed / (agreed + disagreed) if agreed else 0.0
            if agreed < options.min_support or confidence < options.min_confidence:
                continue
            key = (rule.group, rule.outcome)
            ranking = (agreed, -disagreed)
            if key not in best or ranking > (best[key][1], -best[key][2]):
                best[key] = (rule, agreed, disagreed, saved + other_wait)
    agents = Agent.objects.in_bulk({group[0] for group, _ in best})
    suggestions = [
        Suggestion(rule=rule, agent=agents[rule.agent_id], support=n, disagreed=d, saved=saved)
        for rule, n, d, saved in best.values()
    ]
    dismissed = set(
        DismissedSuggestion.objects.filter(organization=organization).values_list(
            "fingerprint", flat=True
        )
    )
    # The condition check is the policy editor's: a suggestion is always one it would save (an
    # action name too long for a condition, say, is left out rather than offered broken).
    suggestions = [
        s for s in suggestions if s.fingerprint not in dismissed and _usable(s.condition)
    ]
    suggestions.sort(key=lambda s: (-s.support, s.agent.name, s.rule.action_name, s.rule.outcome))
    _dry_runs(window, human, suggestions)
    policies = {
        policy.condition: policy
        for policy in Policy.objects.filter(organization=organization).order_by("-id")
    }
    for suggestion in suggestions:
        suggestion.existing_policy = policies.get(suggestion.condition)
    return suggestions


def _usable(condition: str) -> bool:
    try:
        condition_check(condition)
    except ConditionError:
        return False
    return True


def _dry_runs(
    window: QuerySet[Escalation], human: QuerySet[Escalation], suggestions: list[Suggestion]
) -> None:
    """Fill in each suggestion's dry run over the whole window and its median human wait."""
    batches: dict[tuple[str | None, str], list[Rule]] = defaultdict(list)
    for suggestion in suggestions:
        batches[(suggestion.rule.argument, suggestion.rule.outcome)].append(suggestion.rule)
    covered: dict[Rule, dict[str, tuple[int, timedelta]]] = {}
    for rules in batches.values():
        # One rule per group per batch: a group's approve and reject rules differ in outcome.
        covered.update(_covered(window, rules))
    for suggestion in suggestions:
        rule = suggestion.rule
        statuses = {status: n for status, (n, _) in covered.get(rule, {}).items()}
        other = REJECTED if rule.status == APPROVED else APPROVED
        contradicted_ids: list[str] = []
        if statuses.get(other):
            contradicted_ids = list(
                rule_queryset(window, rule)
                .filter(status=other)
                .order_by("-created_at", "-id")
                .values_list("public_id", flat=True)[:LINKS]
            )
        suggestion.dry_run = DryRun(
            matched=sum(statuses.values()),
            by_status=dict(sorted(statuses.items())),
            contradicted=statuses.get(other, 0),
            contradicted_ids=contradicted_ids,
        )
        waits = (
            rule_queryset(human, rule)
            .annotate(wait=_WAIT)
            .order_by("wait")
            .values_list("wait", flat=True)
        )
        suggestion.median_wait = waits[suggestion.covered // 2] if suggestion.covered else None


def suggestion_find(
    *, organization: Organization, options: MiningOptions, fingerprint: str
) -> Suggestion | None:
    """The suggestion with ``fingerprint`` as the miner finds it now (never trust a posted
    condition: drafts and dismissals are made from what the data says)."""
    for suggestion in mine(organization=organization, options=options):
        if suggestion.fingerprint == fingerprint:
            return suggestion
    return None

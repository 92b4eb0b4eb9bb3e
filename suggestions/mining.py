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
   ``decided_at - created_at``), the median wait of those that went its way, and a **dry run**:
   every escalation of the window the rule would have decided (whoever decided it, or still
   pending), and those decided the other way.

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

from django.db import connection
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from escalations.models import Escalation, Policy
from escalations.policies import ConditionError, condition_check
from tenants.models import Agent, Organization

from .models import DismissedSuggestion
from .queries import (
    APPROVED,
    REJECTED,
    WAIT,
    Group,
    Median,
    argument_value,
    human_decisions,
    in_groups,
    per_group,
    window_queryset,
)

# A key CEL can reach as ``action.arguments.<key>``; "__" would split Django's JSON key path.
_ARGUMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LINKS = 10
OUTCOMES = (Policy.Outcome.AUTO_APPROVE, Policy.Outcome.AUTO_REJECT)


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
    def group(self) -> Group:
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


Stats = dict[str, tuple[int, timedelta]]  # per status: how many, and the time people took


def _groups(
    human: QuerySet[Escalation], min_support: int
) -> tuple[dict[Group, Stats], dict[Group, int]]:
    """Human decisions per (agent, action name) and status, for the groups big enough, and the
    id of each group's latest escalation (its action shows the arguments' shape)."""
    stats: dict[Group, Stats] = defaultdict(dict)
    latest: dict[Group, int] = {}
    rows = human.values("agent_id", "status", "action_name").annotate(
        n=Count("id"), wait=Sum(WAIT), latest=Max("id")
    )
    for row in rows:
        group = (row["agent_id"], row["action_name"])
        stats[group][row["status"]] = (row["n"], row["wait"] or timedelta(0))
        latest[group] = max(latest.get(group, 0), row["latest"])
    big = {group: n for group, n in stats.items() if max(v[0] for v in n.values()) >= min_support}
    return big, {group: latest[group] for group in big}


def _numeric_arguments(action: Any) -> list[str]:
    """The keys of ``action.arguments`` holding a number that CEL can name."""
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


def _extremes(
    human: QuerySet[Escalation], argument: str, groups: list[Group]
) -> dict[Group, dict[str, tuple[float, float]]]:
    """Per group and status: the smallest and largest value of ``argument``."""
    rows = (
        human.filter(in_groups(groups))
        .annotate(value=argument_value(argument))
        .filter(value__isnull=False)
        .values("agent_id", "status", "action_name")
        .annotate(low=Min("value"), high=Max("value"))
    )
    found: dict[Group, dict[str, tuple[float, float]]] = defaultdict(dict)
    for row in rows:
        found[(row["agent_id"], row["action_name"])][row["status"]] = (row["low"], row["high"])
    return found


def _clean_bounds(
    human: QuerySet[Escalation],
    argument: str,
    below: dict[Group, float],
    above: dict[Group, float],
) -> list[Rule]:
    """Where the outcomes overlap: the largest approval below each group's smallest rejection
    (``below``), and the smallest rejection above its largest approval (``above``)."""
    if not below and not above:
        return []
    rows = (
        human.filter(in_groups([*below, *above]))
        .annotate(value=argument_value(argument))
        .values("agent_id", "action_name")
        .annotate(
            approve=Max("value", filter=Q(status=APPROVED, value__lt=per_group(below))),
            reject=Min("value", filter=Q(status=REJECTED, value__gt=per_group(above))),
        )
    )
    rules = []
    for row in rows:
        for outcome in OUTCOMES:
            bound = row["approve" if outcome == Policy.Outcome.AUTO_APPROVE else "reject"]
            if bound is not None:
                rules.append(Rule(row["agent_id"], row["action_name"], outcome, argument, bound))
    return rules


def _matching(rules: list[Rule], outcome: str) -> Q | None:
    """Rows the batch's ``outcome`` rules match (one rule per group; None: no such rule)."""
    bounds = {rule.group: rule.bound for rule in rules if rule.outcome == outcome}
    if not bounds:
        return None
    first = next(rule for rule in rules if rule.outcome == outcome)
    if first.argument is None:
        return in_groups(list(bounds))
    lookup = "value__lte" if first.operator == "<=" else "value__gte"
    return Q(**{lookup: per_group({g: b for g, b in bounds.items() if b is not None})})


def _batch(queryset: QuerySet[Escalation], rules: list[Rule]) -> QuerySet[Escalation]:
    """The rows of ``queryset`` in the groups of ``rules`` (which share one argument)."""
    matched = queryset.filter(in_groups(list({rule.group for rule in rules})))
    if rules[0].argument is not None:
        matched = matched.annotate(value=argument_value(rules[0].argument))
    return matched


def _covered(queryset: QuerySet[Escalation], rules: list[Rule]) -> dict[Rule, Stats]:
    """Per rule and status: how many rows of ``queryset`` it matches and the time people took
    on them. The rules share one argument; at most one per group and outcome. One query."""
    if not rules:
        return {}
    aggregates: dict[str, Any] = {}
    for outcome in OUTCOMES:
        condition = _matching(rules, outcome)
        if condition is not None:
            aggregates[f"n_{outcome}"] = Count("id", filter=condition)
            aggregates[f"wait_{outcome}"] = Sum(WAIT, filter=condition)
    rows = (
        _batch(queryset, rules).values("agent_id", "status", "action_name").annotate(**aggregates)
    )
    by_key = {(rule.group, rule.outcome): rule for rule in rules}
    found: dict[Rule, Stats] = defaultdict(dict)
    for row in rows:
        for outcome in OUTCOMES:
            rule = by_key.get(((row["agent_id"], row["action_name"]), outcome))
            if rule is not None and row[f"n_{outcome}"]:
                wait = row[f"wait_{outcome}"] or timedelta(0)
                found[rule][row["status"]] = (row[f"n_{outcome}"], wait)
    return found


def rule_queryset(queryset: QuerySet[Escalation], rule: Rule) -> QuerySet[Escalation]:
    """The escalations of ``queryset`` (a window) that ``rule`` matches."""
    matched = queryset.filter(agent_id=rule.agent_id, action__name=rule.action_name)
    if rule.argument is None or rule.bound is None:
        return matched
    lookup = "value__lte" if rule.operator == "<=" else "value__gte"
    return matched.annotate(value=argument_value(rule.argument)).filter(**{lookup: rule.bound})


def _candidates(
    human: QuerySet[Escalation], latest: dict[Group, int], confidence: float
) -> tuple[list[Rule], list[list[Rule]]]:
    """Candidate rules: those over whole groups (their figures are the groups' own), and
    batches of bounded ones for ``_covered`` (one argument per batch)."""
    actions = Escalation.objects.in_bulk(list(latest.values()))
    arguments: dict[str, list[Group]] = defaultdict(list)
    whole: list[Rule] = []
    for group, pk in latest.items():
        keys = _numeric_arguments(actions[pk].action)
        for key in keys:
            arguments[key].append(group)
        if not keys:
            whole += [Rule(*group, outcome) for outcome in OUTCOMES]
    batches: list[list[Rule]] = []
    for key, keyed in sorted(arguments.items()):
        widest: list[Rule] = []
        below: dict[Group, float] = {}
        above: dict[Group, float] = {}
        for group, stats in _extremes(human, key, keyed).items():
            approved, rejected = stats.get(APPROVED), stats.get(REJECTED)
            # (low, high) per outcome; they overlap when some rejection is not above every
            # approval. Without overlap (or below 100 % confidence) the widest bound is kept;
            # with it, the clean bound inside is looked for.
            overlap = bool(approved and rejected and approved[1] >= rejected[0])
            if approved and (not overlap or confidence < 1):
                widest.append(Rule(*group, Policy.Outcome.AUTO_APPROVE, key, approved[1]))
            if rejected and (not overlap or confidence < 1):
                widest.append(Rule(*group, Policy.Outcome.AUTO_REJECT, key, rejected[0]))
            if approved and rejected and overlap:
                below[group] = rejected[0]
                above[group] = approved[1]
        batches += [rules for rules in (widest, _clean_bounds(human, key, below, above)) if rules]
    return whole, batches


def mine(
    *, organization: Organization, options: MiningOptions, now: datetime | None = None
) -> list[Suggestion]:
    """The organization's suggestions, best first (the most human decisions covered), less the
    dismissed ones."""
    since = (now or timezone.now()) - timedelta(days=options.days)
    window = window_queryset(organization, since)
    human = human_decisions(window)
    groups, latest = _groups(human, options.min_support)
    whole, batches = _candidates(human, latest, options.min_confidence)
    evaluated: dict[Rule, Stats] = {rule: groups[rule.group] for rule in whole}
    for batch in batches:
        evaluated.update(_covered(human, batch))
    best: dict[tuple[Group, str], tuple[Rule, int, int, timedelta]] = {}
    for rule, statuses in evaluated.items():
        agreed, saved = statuses.get(rule.status, (0, timedelta(0)))
        disagreed, other_wait = statuses.get(_other(rule.status), (0, timedelta(0)))
        confidence = agreed / (agreed + disagreed) if agreed else 0.0
        if agreed < options.min_support or confidence < options.min_confidence:
            continue
        key = (rule.group, rule.outcome)
        if key not in best or (agreed, -disagreed) > (best[key][1], -best[key][2]):
            best[key] = (rule, agreed, disagreed, saved + other_wait)
    agents = Agent.objects.in_bulk({group[0] for group, _ in best})
    dismissed = set(
        DismissedSuggestion.objects.filter(organization=organization).values_list(
            "fingerprint", flat=True
        )
    )
    suggestions = [
        suggestion
        for rule, n, d, saved in best.values()
        if (
            suggestion := Suggestion(
                rule=rule, agent=agents[rule.agent_id], support=n, disagreed=d, saved=saved
            )
        ).fingerprint
        not in dismissed
        # The policy editor's own check: an action name too long for a condition, say, is
        # left out rather than offered broken.
        and _usable(suggestion.condition)
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


def _other(status: str) -> str:
    return REJECTED if status == APPROVED else APPROVED


def _usable(condition: str) -> bool:
    try:
        condition_check(condition)
    except ConditionError:
        return False
    return True


def _dry_runs(
    window: QuerySet[Escalation], human: QuerySet[Escalation], suggestions: list[Suggestion]
) -> None:
    """Fill in each suggestion's dry run over the whole window (a query per argument, and one
    for the contradicted escalations' links) and its median wait."""
    batches: dict[str | None, list[Rule]] = defaultdict(list)
    for suggestion in suggestions:
        batches[suggestion.rule.argument].append(suggestion.rule)
    covered: dict[Rule, Stats] = {}
    links: dict[Rule, list[str]] = {}
    medians: dict[Rule, timedelta | None] = {}
    for rules in batches.values():
        found = _covered(window, rules)
        covered.update(found)
        if any(found.get(rule, {}).get(_other(rule.status)) for rule in rules):
            links.update(_contradicted_links(window, rules))
        medians.update(_medians(human, rules))
    for suggestion in suggestions:
        rule = suggestion.rule
        statuses = {status: n for status, (n, _) in covered.get(rule, {}).items()}
        suggestion.dry_run = DryRun(
            matched=sum(statuses.values()),
            by_status=dict(sorted(statuses.items())),
            contradicted=statuses.get(_other(rule.status), 0),
            contradicted_ids=links.get(rule, []),
        )
        suggestion.median_wait = medians.get(rule)


def _contradicted_links(queryset: QuerySet[Escalation], rules: list[Rule]) -> dict[Rule, list[str]]:
    """The newest ``LINKS`` escalations each rule matches that were decided the other way."""
    contradicted = Q(pk__in=[])
    for outcome, status in (
        (Policy.Outcome.AUTO_APPROVE, REJECTED),
        (Policy.Outcome.AUTO_REJECT, APPROVED),
    ):
        condition = _matching(rules, outcome)
        if condition is not None:
            contradicted |= condition & Q(status=status)
    newest_first = [F("created_at").desc(), F("id").desc()]
    rows = (
        _batch(queryset, rules)
        .filter(contradicted)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("agent_id"), F("action_name"), F("status")],
                order_by=newest_first,
            )
        )
        .filter(rank__lte=LINKS)
        .order_by(*newest_first)
        .values_list("agent_id", "action__name", "status", "public_id")
    )
    by_key = {(rule.group, _other(rule.status)): rule for rule in rules}
    found: dict[Rule, list[str]] = defaultdict(list)
    for agent_id, action_name, decided, public_id in rows:
        found[by_key[((agent_id, action_name), decided)]].append(public_id)
    return found


def _medians(human: QuerySet[Escalation], rules: list[Rule]) -> dict[Rule, timedelta | None]:
    """The median wait of the human decisions each rule covers that went its way: one query
    on PostgreSQL (``percentile_cont``), one per rule elsewhere (SQLite has no percentile)."""
    if connection.vendor != "postgresql":
        medians: dict[Rule, timedelta | None] = {}
        for rule in rules:
            agreed = rule_queryset(human, rule).filter(status=rule.status)
            waits = agreed.annotate(wait=WAIT).order_by("wait").values_list("wait", flat=True)
            medians[rule] = waits[(agreed.count() - 1) // 2] if agreed.exists() else None
        return medians
    aggregates: dict[str, Any] = {}
    for outcome in OUTCOMES:
        condition = _matching(rules, outcome)
        if condition is not None:
            aggregates[outcome] = Median(WAIT, filter=condition)
    rows = _batch(human, rules).values("agent_id", "status", "action_name").annotate(**aggregates)
    by_key = {(rule.group, rule.status): rule for rule in rules}
    found: dict[Rule, timedelta | None] = {}
    for row in rows:
        agreeing = by_key.get(((row["agent_id"], row["action_name"]), row["status"]))
        if agreeing is not None:
            found[agreeing] = row[agreeing.outcome]
    return found


def suggestion_find(
    *, organization: Organization, options: MiningOptions, fingerprint: str
) -> Suggestion | None:
    """The suggestion with ``fingerprint`` as the miner finds it now (never trust a posted
    condition: drafts and dismissals are made from what the data says)."""
    for suggestion in mine(organization=organization, options=options):
        if suggestion.fingerprint == fingerprint:
            return suggestion
    return None

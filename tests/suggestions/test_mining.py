"""The miner on seeded history: the group and its bound, what breaks a rule, who counts as a
person, the dry run, and the CEL it writes (compiled and evaluated by the policy engine's own
library, and matching exactly what the miner's SQL matched)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from escalations.models import Escalation
from escalations.policies import activation, condition_check, condition_matches
from suggestions.mining import MiningOptions, mine, rule_queryset, window_queryset
from tests.suggestions.history import decided

pytestmark = pytest.mark.django_db

POLICY = {"type": "policy", "id": "pol_x", "name": "Small refunds"}
TIMEOUT = {"type": "timeout", "on_timeout": "reject"}
APPROVALS = [10, 25, 40, 60, 80, 100, 120, 150, 200, 250, 280, 300]


def agent_of(tenant):
    return tenant.organization.agents.get()


def test_finds_the_group_and_the_bound_where_people_always_approve(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    decided(organization, agent, APPROVALS, status="approved", by=bob, wait=timedelta(minutes=11))
    decided(organization, agent, [500, 750, 900], status="rejected", by=bob)

    [suggestion] = mine(organization=organization, options=MiningOptions())

    assert suggestion.rule.outcome == "auto_approve"
    assert (suggestion.rule.argument, suggestion.rule.bound) == ("amount", 300)
    assert suggestion.condition == (
        f'agent.id == "{agent.public_id}" && action.name == "issue_refund"'
        " && action.arguments.amount <= 300"
    )
    assert (suggestion.support, suggestion.disagreed, suggestion.confidence) == (12, 0, 1.0)
    assert suggestion.summary == (
        "12 of 12 issue_refund with amount ≤ 300 from support-bot were approved by people"
    )
    assert suggestion.saved == timedelta(minutes=11 * 12)
    assert suggestion.median_wait == timedelta(minutes=11)
    assert suggestion.dry_run.matched == 12
    assert suggestion.dry_run.contradicted == 0


def test_a_rejection_inside_the_approved_range_breaks_the_rule(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    decided(organization, agent, APPROVALS, status="approved", by=bob)
    decided(organization, agent, [30], status="rejected", by=bob)

    # The clean bound falls below 30: two approvals, under the support of ten.
    assert mine(organization=organization, options=MiningOptions()) == []
    # With support two, the narrower rule people never broke is offered.
    [narrow] = mine(organization=organization, options=MiningOptions(min_support=2))
    assert (narrow.rule.bound, narrow.support, narrow.disagreed) == (25, 2, 0)
    # With a confidence threshold of 90 %, the rule covering every approval is, and says so.
    [wide] = mine(organization=organization, options=MiningOptions(min_confidence=0.9))
    assert (wide.rule.bound, wide.support, wide.disagreed) == (300, 12, 1)
    assert round(wide.confidence, 3) == round(12 / 13, 3)


def test_an_action_without_numbers_needs_every_decision_to_agree(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    email = {"to": "a@b.test"}
    decided(organization, agent, [email] * 12, status="approved", by=bob, action="send_email")
    [whole] = mine(organization=organization, options=MiningOptions())
    assert whole.condition == f'agent.id == "{agent.public_id}" && action.name == "send_email"'

    decided(organization, agent, [email], status="rejected", by=bob, action="send_email")
    assert mine(organization=organization, options=MiningOptions()) == []


def test_mirrored_rule_for_rejections(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    decided(organization, agent, [10, 20], status="approved", by=bob)
    decided(organization, agent, [1000 + 50 * n for n in range(10)], status="rejected", by=bob)

    [suggestion] = mine(organization=organization, options=MiningOptions())
    assert suggestion.rule.outcome == "auto_reject"
    assert suggestion.condition.endswith("action.arguments.amount >= 1000")


def test_only_people_count_and_only_the_window(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    decided(organization, agent, APPROVALS, status="approved", by=POLICY)
    decided(organization, agent, APPROVALS, status="rejected", by=TIMEOUT)
    decided(organization, agent, APPROVALS, status="approved", by=bob, age=timedelta(days=40))
    assert mine(organization=organization, options=MiningOptions()) == []
    assert len(mine(organization=organization, options=MiningOptions(days=60))) == 1


def test_dry_run_flags_a_past_escalation_decided_the_other_way(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    decided(organization, agent, APPROVALS, status="approved", by=bob)
    [timed_out] = decided(organization, agent, [100], status="rejected", by=TIMEOUT)
    decided(organization, agent, [50, 5000], status="pending", by=None)

    [suggestion] = mine(organization=organization, options=MiningOptions())
    assert (suggestion.support, suggestion.disagreed) == (12, 0)  # the timeout is no person
    dry_run = suggestion.dry_run
    assert dry_run.matched == 14  # 12 approved, the timed-out one, the pending 50
    assert dry_run.by_status == {"approved": 12, "pending": 1, "rejected": 1}
    assert (dry_run.contradicted, dry_run.contradicted_ids) == (1, [timed_out.public_id])


def test_the_cel_rule_compiles_and_matches_what_the_miner_counted(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    decided(organization, agent, APPROVALS, status="approved", by=bob)
    decided(organization, agent, [500], status="rejected", by=bob)
    decided(organization, agent, [300.5, 299.5, None, True], status="pending", by=None)
    decided(organization, agent, [{"amount": "100"}], status="pending", by=None)
    decided(organization, agent, [10], status="pending", by=None, action="delete_account")

    [suggestion] = mine(organization=organization, options=MiningOptions())
    condition_check(suggestion.condition)  # raises ConditionError if the editor would refuse it

    since = timezone.now() - timedelta(days=30)
    window = Escalation.objects.filter(organization=organization, created_at__gte=since)
    matched_rows = rule_queryset(window_queryset(organization, since), suggestion.rule)
    in_sql = set(matched_rows.values_list("pk", flat=True))
    in_cel = set()
    for escalation in window.select_related("agent"):
        data = {"kind": escalation.kind, "action": escalation.action}
        variables = activation(agent=escalation.agent, data=data, now=escalation.created_at)
        try:
            matches = condition_matches(suggestion.condition, variables)
        except Exception:  # the engine counts an evaluation error as no match
            matches = False
        if matches:
            in_cel.add(escalation.pk)
    assert in_cel == in_sql
    amounts = {escalation.action["arguments"].get("amount") for escalation in window}
    matched = {row.action["arguments"].get("amount") for row in window.filter(pk__in=in_cel)}
    assert matched == {*APPROVALS, 299.5}
    assert {300.5, None, True, "100", 500} <= amounts - matched


def test_any_action_name_gives_a_condition_the_engine_accepts_and_matches(acme):
    organization, agent, bob = acme.organization, agent_of(acme), acme.members["bob"]
    name = 'say "hi" \\ to β 🎉'
    decided(organization, agent, [{"to": "x"}] * 12, status="approved", by=bob, action=name)
    decided(organization, agent, [{}] * 12, status="approved", by=bob, action="x" * 2000)

    [suggestion] = mine(organization=organization, options=MiningOptions())  # not the long one
    condition_check(suggestion.condition)
    variables = activation(
        agent=agent, data={"kind": "approval", "action": {"name": name}}, now=timezone.now()
    )
    assert condition_matches(suggestion.condition, variables)
    other = activation(
        agent=agent, data={"kind": "approval", "action": {"name": "say"}}, now=timezone.now()
    )
    assert not condition_matches(suggestion.condition, other)


def test_another_organizations_decisions_never_count(acme, globex):
    bob, dana = acme.members["bob"], globex.members["dana"]
    decided(acme.organization, agent_of(acme), APPROVALS[:6], status="approved", by=bob)
    # Globex approves the same action a lot, and rejects a small amount: neither reaches Acme.
    decided(globex.organization, agent_of(globex), APPROVALS, status="approved", by=dana)
    decided(acme.organization, agent_of(acme), [700], status="rejected", by=bob)
    decided(globex.organization, agent_of(globex), [5], status="rejected", by=dana)

    assert mine(organization=acme.organization, options=MiningOptions()) == []
    [ours] = mine(organization=acme.organization, options=MiningOptions(min_support=6))
    assert (ours.support, ours.rule.bound, ours.dry_run.matched) == (6, 100, 6)
    # Acme's rejection at 700 does not make Globex's approvals a clean rule either.
    assert mine(organization=globex.organization, options=MiningOptions()) == []

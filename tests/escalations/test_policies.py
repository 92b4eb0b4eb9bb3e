"""Policies: CEL conditions, automatic decisions, levels over time, quorum, the dry run."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from audit.models import AuditEvent
from escalations.deadlines import timers_due
from escalations.models import Escalation, Policy, PolicyLevel
from escalations.policies import ConditionError, condition_check
from tests.conftest import APPROVAL, create_escalation

REFUND_OVER_500 = 'action.name == "issue_refund" && action.arguments.amount > 500'


def refund(amount: int) -> dict:
    return {
        **APPROVAL,
        "action": {"name": "issue_refund", "arguments": {"order": 1042, "amount": amount}},
    }


def seed_refund_rules(tenant, *, level_waits=(60, 60), repeat=0, reminder=None) -> Policy:
    """The seed example: refunds over $500 need a human; smaller refunds are approved."""
    organization = tenant.organization
    human = Policy.objects.create(
        organization=organization,
        name="Refunds over $500",
        priority=10,
        condition=REFUND_OVER_500,
        outcome="require_human",
        timeout_seconds=600,
        on_timeout="reject",
        repeat=repeat,
    )
    for position, wait in enumerate(level_waits, start=1):
        level = PolicyLevel.objects.create(
            policy=human,
            position=position,
            wait_seconds=wait,
            reminder_seconds=reminder if position == 1 else None,
            channels=["email"],
        )
        level.members.add(tenant.members["bob" if position == 1 else "alice"])
    Policy.objects.create(
        organization=organization,
        name="Small refunds",
        priority=20,
        condition='action.name == "issue_refund"',
        outcome="auto_approve",
    )
    return human


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ('action.name == "x" &&', "Syntax error at line 1, column"),
        ("amount > 500", "Unknown variable(s): amount"),
        ("action.name > 5", "Type error"),
        ("action.name", "must be true or false"),
        ("x" * 2001, "at most 2000 characters"),
        (
            "[1].all(a, true) && [1].all(b, true) && [1].all(c, true) && [1].all(d, true)",
            "At most 3 comprehension macros",
        ),
    ],
)
def test_a_bad_condition_is_refused_with_a_clear_message(condition, message):
    with pytest.raises(ConditionError) as error:
        condition_check(condition)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "condition",
    [
        REFUND_OVER_500,
        "has(action.arguments.amount) && action.arguments.amount > 500",
        'kind == "approval" && priority in ["high", "urgent"]',
        "now.getHours() >= 9 && now.getHours() < 17",
        'agent.name.startsWith("support") && context.message_count > 3',
        "action.arguments.items.all(i, i.price < 100)",
        "",
    ],
)
def test_good_conditions_are_accepted(condition):
    condition_check(condition)


@pytest.mark.django_db
def test_small_refund_is_approved_by_policy_in_the_create_response(acme):
    seed_refund_rules(acme)
    created = create_escalation(acme, **refund(200))
    assert created["status"] == "approved"
    assert created["decision"]["decided_by"]["type"] == "policy"
    assert created["decision"]["decided_by"]["name"] == "Small refunds"
    assert created["policy"]["name"] == "Small refunds"
    assert AuditEvent.objects.filter(action="escalation.decided", target=created["id"]).exists()


@pytest.mark.django_db
def test_large_refund_waits_for_a_human_at_level_one(acme):
    seed_refund_rules(acme)
    created = create_escalation(acme, **refund(750))
    assert created["status"] == "pending"
    assert created["policy"]["name"] == "Refunds over $500"
    assert created["level"] == {"level": 1, "round": 0}
    assert created["on_timeout"] == "reject"
    assert created["timeout_seconds"] == 600
    entered = AuditEvent.objects.get(action="escalation.level_entered", target=created["id"])
    assert entered.data["targets"]["members"] == [acme.members["bob"].public_id]


@pytest.mark.django_db
def test_auto_reject_policy_rejects_at_once(acme):
    Policy.objects.create(
        organization=acme.organization,
        name="Never delete customers",
        condition='action.name == "delete_customer"',
        outcome="auto_reject",
    )
    created = create_escalation(acme, action={"name": "delete_customer", "arguments": {}})
    assert created["status"] == "rejected"
    assert created["decision"]["decided_by"]["name"] == "Never delete customers"


@pytest.mark.django_db
def test_a_condition_that_fails_at_run_time_is_no_match_and_audited(acme):
    Policy.objects.create(
        organization=acme.organization,
        name="Amount rule",
        priority=1,
        condition="action.arguments.amount > 500",
        outcome="auto_approve",
    )
    created = create_escalation(acme, action={"name": "send_email", "arguments": {"to": "ceo"}})
    assert created["status"] == "pending"
    assert created["policy"] is None
    failure = AuditEvent.objects.get(action="policy.condition_failed", target=created["id"])
    assert failure.data["error"]


@pytest.mark.django_db
def test_disabled_policies_and_other_agents_policies_do_not_apply(acme):
    Policy.objects.create(
        organization=acme.organization, name="Off", enabled=False, outcome="auto_approve"
    )
    scoped = Policy.objects.create(
        organization=acme.organization, name="Only for billing-bot", outcome="auto_approve"
    )
    from audit.services import SYSTEM_ACTOR
    from tenants.services import agent_create

    scoped.agents.add(
        agent_create(organization=acme.organization, name="billing-bot", actor=SYSTEM_ACTOR)
    )
    created = create_escalation(acme)
    assert created["status"] == "pending"


@pytest.mark.django_db
def test_editing_a_policy_never_changes_an_escalation_in_flight(acme):
    human = seed_refund_rules(acme)
    created = create_escalation(acme, **refund(750))
    human.name = "Renamed"
    human.required_approvals = 3
    human.save()
    human.levels.all().delete()
    escalation = Escalation.objects.get(public_id=created["id"])
    assert escalation.policy_snapshot["name"] == "Refunds over $500"
    assert len(escalation.policy_snapshot["levels"]) == 2
    assert escalation.required_approvals == 1


@pytest.mark.django_db
def test_time_walks_through_levels_reminders_repeat_warning_and_timeout(acme):
    seed_refund_rules(acme, level_waits=(60, 60), repeat=1, reminder=20)
    created = create_escalation(acme, **refund(750))
    escalation = Escalation.objects.get(public_id=created["id"])
    start = escalation.created_at

    def at(seconds: int) -> Escalation:
        timers_due(now=start + timedelta(seconds=seconds))
        return Escalation.objects.get(pk=escalation.pk)

    def events(action: str) -> int:
        return AuditEvent.objects.filter(action=action, target=created["id"]).count()

    assert at(19).current_level == 1
    assert events("escalation.reminded") == 0
    assert at(20).last_reminder_at is not None
    assert events("escalation.reminded") == 1
    state = at(60)
    assert (state.current_level, state.current_round) == (2, 0)
    state = at(120)
    assert (state.current_level, state.current_round) == (1, 1)
    state = at(180)
    assert (state.current_level, state.current_round) == (2, 1)
    # No levels left: it stays at level 2 until the deadline.
    state = at(300)
    assert (state.current_level, state.current_round) == (2, 1)
    assert events("escalation.level_entered") == 4
    assert not at(539).deadline_warned
    assert at(540).deadline_warned
    assert events("escalation.deadline_warning") == 1
    assert at(599).status == "pending"
    final = at(600)
    assert final.status == "rejected"
    assert final.decided_by == {"type": "timeout", "on_timeout": "reject"}


@pytest.mark.django_db
def test_a_repeated_tick_does_nothing_twice(acme):
    seed_refund_rules(acme)
    created = create_escalation(acme, **refund(750))
    moment = Escalation.objects.get(public_id=created["id"]).created_at + timedelta(seconds=60)
    timers_due(now=moment)
    timers_due(now=moment)
    assert AuditEvent.objects.filter(action="escalation.level_entered").count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_workers_ticking_at_once_decide_each_escalation_once(acme):
    ids = [create_escalation(acme, timeout_seconds=1)["id"] for _ in range(30)]
    later = timezone.now() + timedelta(seconds=5)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            timers_due(now=later, batch=7)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert set(Escalation.objects.values_list("status", flat=True)) == {"rejected"}
    decided = AuditEvent.objects.filter(action="escalation.decided", target__in=ids)
    assert decided.count() == len(ids)


@pytest.mark.django_db
def test_quorum_shows_partial_progress_and_refuses_the_same_operator_twice(acme):
    policy = seed_refund_rules(acme)
    policy.required_approvals = 2
    policy.save()
    created = create_escalation(acme, **refund(750))
    assert created["required_approvals"] == 2
    url = f"/api/v1/escalations/{created['id']}/responses"
    first = acme.client_for("bob").post(url, {"outcome": "approve"}, format="json")
    assert first.json()["status"] == "pending"
    assert [a["by"]["email"] for a in first.json()["approvals"]] == ["bob@acme.test"]
    assert (
        acme.client_for("bob").post(url, {"outcome": "approve"}, format="json").status_code == 409
    )
    second = acme.client_for("alice").post(url, {"outcome": "approve"}, format="json")
    assert second.json()["status"] == "approved"
    assert len(second.json()["approvals"]) == 2


@pytest.mark.django_db
def test_one_rejection_rejects_despite_earlier_approvals(acme):
    policy = seed_refund_rules(acme)
    policy.required_approvals = 2
    policy.save()
    created = create_escalation(acme, **refund(750))
    url = f"/api/v1/escalations/{created['id']}/responses"
    acme.client_for("bob").post(url, {"outcome": "approve"}, format="json")
    rejected = acme.client_for("alice").post(
        url, {"outcome": "reject", "comment": "no"}, format="json"
    )
    assert rejected.json()["status"] == "rejected"


@pytest.mark.django_db
def test_evaluate_returns_the_policy_levels_and_terms_without_creating(acme):
    seed_refund_rules(acme)
    response = acme.agent_client().post("/api/v1/policies/evaluate", refund(750), format="json")
    body = response.json()
    assert body["policy"]["name"] == "Refunds over $500"
    assert body["outcome"] == "require_human"
    assert [level["wait_seconds"] for level in body["levels"]] == [60, 60]
    assert body["timeout_seconds"] == 600
    assert body["on_timeout"] == "reject"
    small = acme.agent_client().post("/api/v1/policies/evaluate", refund(200), format="json")
    assert small.json()["outcome"] == "auto_approve"
    assert not Escalation.objects.exists()


@pytest.mark.django_db
def test_agents_list_their_organizations_policies_only(acme, globex):
    seed_refund_rules(acme)
    Policy.objects.create(organization=globex.organization, name="Globex rule")
    response = acme.agent_client().get("/api/v1/policies")
    assert response.status_code == 200
    names = [policy["name"] for policy in response.json()["results"]]
    assert names == ["Refunds over $500", "Small refunds"]
    assert response.json()["results"][0]["levels"][0]["targets"]["members"] == [
        acme.members["bob"].public_id
    ]

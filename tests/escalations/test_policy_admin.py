"""The policy editor in Django admin, as an organization's owner uses it (not a superuser)."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from escalations.models import Escalation, Policy
from escalations.policies import always_allow_prefill, always_allow_url
from tests.conftest import APPROVAL, create_escalation
from tests.console.helpers import verified

pytestmark = pytest.mark.django_db

REFUND_OVER_500 = 'action.name == "issue_refund" && action.arguments.amount > 500'


def admin_client(tenant, person: str) -> Client:
    """Signed in past the second factor: Django admin always requires one."""
    return verified(tenant.members[person].user)


def policy_form(tenant, **overrides) -> dict:
    data = {
        "organization": tenant.organization.pk,
        "name": "Refunds over $500",
        "enabled": "on",
        "priority": 10,
        "condition": REFUND_OVER_500,
        "outcome": "require_human",
        "timeout_seconds": 600,
        "on_timeout": "reject",
        "required_approvals": 1,
        "repeat": 0,
        "levels-TOTAL_FORMS": 2,
        "levels-INITIAL_FORMS": 0,
        "levels-MIN_NUM_FORMS": 0,
        "levels-MAX_NUM_FORMS": 1000,
        "levels-0-position": 1,
        "levels-0-members": [next(iter(tenant.members.values())).pk],
        "levels-0-channels": ["email"],
        "levels-0-wait_seconds": 60,
        "levels-1-position": 2,
        "levels-1-all_operators": "on",
        "levels-1-wait_seconds": 60,
    }
    data.update(overrides)
    return data


def refund(amount: int) -> dict:
    return {**APPROVAL, "action": {"name": "issue_refund", "arguments": {"amount": amount}}}


def test_org_owner_enters_the_seed_refund_rule_and_it_governs_the_api(acme):
    client = admin_client(acme, "alice")
    response = client.post("/admin/escalations/policy/add/", policy_form(acme))
    assert response.status_code == 302, response.content.decode()[:2000]
    small = client.post(
        "/admin/escalations/policy/add/",
        policy_form(
            acme,
            name="Small refunds",
            priority=20,
            condition='action.name == "issue_refund"',
            outcome="auto_approve",
            **{"levels-TOTAL_FORMS": 0},
        ),
    )
    assert small.status_code == 302
    assert create_escalation(acme, **refund(200))["status"] == "approved"
    large = create_escalation(acme, **refund(750))
    assert large["status"] == "pending"
    assert large["policy"]["name"] == "Refunds over $500"
    created = AuditEvent.objects.get(action="policy.created", data__after__name="Small refunds")
    assert created.actor["email"] == "alice@acme.test"


def test_a_bad_condition_is_refused_at_the_field_with_its_position(acme):
    response = admin_client(acme, "alice").post(
        "/admin/escalations/policy/add/", policy_form(acme, condition='action.name == "x" &&')
    )
    assert response.status_code == 200
    assert "Syntax error at line 1, column" in response.content.decode()
    assert not Policy.objects.exists()


def test_an_update_is_audited_with_a_before_after_diff(acme):
    client = admin_client(acme, "alice")
    client.post("/admin/escalations/policy/add/", policy_form(acme))
    policy = Policy.objects.get()
    level_ids = list(policy.levels.order_by("position").values_list("pk", flat=True))
    edited = policy_form(
        acme,
        priority=5,
        **{
            "levels-INITIAL_FORMS": 2,
            "levels-0-id": level_ids[0],
            "levels-1-id": level_ids[1],
        },
    )
    response = client.post(f"/admin/escalations/policy/{policy.pk}/change/", edited)
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="policy.updated")
    assert event.data["changed"] == ["priority"]
    assert (event.data["before"]["priority"], event.data["after"]["priority"]) == (10, 5)


def test_org_admin_sees_only_their_organizations_policies(acme, globex):
    Policy.objects.create(organization=acme.organization, name="Acme rule")
    foreign = Policy.objects.create(organization=globex.organization, name="Globex rule")
    client = admin_client(acme, "alice")
    listing = client.get("/admin/escalations/policy/").content.decode()
    assert "Acme rule" in listing
    assert "Globex rule" not in listing
    page = client.get(f"/admin/escalations/policy/{foreign.pk}/change/")
    assert page.status_code == 302  # admin's "does not exist" redirect, never the form
    tampered = client.post(
        f"/admin/escalations/policy/{foreign.pk}/change/",
        policy_form(globex, name="Hijacked", **{"levels-TOTAL_FORMS": 0}),
    )
    assert tampered.status_code == 302
    foreign.refresh_from_db()
    assert foreign.name == "Globex rule"


def test_org_admin_cannot_create_a_policy_in_another_organization(acme, globex):
    response = admin_client(acme, "alice").post(
        "/admin/escalations/policy/add/",
        policy_form(acme, organization=globex.organization.pk, **{"levels-TOTAL_FORMS": 0}),
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Policy.objects.exists()


def test_org_admin_cannot_target_another_organizations_members(acme, globex):
    response = admin_client(acme, "alice").post(
        "/admin/escalations/policy/add/",
        policy_form(acme, **{"levels-0-members": [globex.members["dana"].pk]}),
    )
    assert response.status_code == 200
    assert not Policy.objects.exists()


def test_operators_and_viewers_cannot_use_admin(acme):
    for person in ("bob", "vera"):
        response = admin_client(acme, person).get("/admin/escalations/policy/")
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


def test_dry_run_shows_which_recent_escalations_would_match(acme):
    create_escalation(acme, **refund(750))
    create_escalation(acme, **refund(200))
    create_escalation(acme, action={"name": "send_email", "arguments": {}})
    response = admin_client(acme, "alice").post(
        "/admin/escalations/policy/dry-run/",
        {
            "organization": acme.organization.pk,
            "condition": REFUND_OVER_500,
            "sample": '{"kind": "approval", "action": {"name": "issue_refund", '
            '"arguments": {"amount": 900}}}',
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "1 of the last 3 escalations would match" in page
    assert "Sample:</strong>\n        matches" in page


def test_always_allow_drafts_a_narrower_auto_approve_policy(acme):
    Policy.objects.create(
        organization=acme.organization, name="Refunds", priority=10, condition=REFUND_OVER_500
    )
    created = create_escalation(acme, **refund(750))
    escalation = Escalation.objects.get(public_id=created["id"])
    prefill = always_allow_prefill(escalation)
    assert prefill["outcome"] == "auto_approve"
    assert prefill["condition"] == (
        'action.name == "issue_refund" && action.arguments.amount <= 750'
    )
    assert int(prefill["priority"]) < 10
    page = admin_client(acme, "alice").get(always_allow_url(escalation))
    assert page.status_code == 200
    assert "action.arguments.amount &lt;= 750" in page.content.decode()
    # Once saved as-is, the same request is approved and a bigger one still asks a human.
    Policy.objects.create(
        organization=acme.organization,
        name=prefill["name"],
        priority=int(prefill["priority"]),
        condition=prefill["condition"],
        outcome="auto_approve",
    )
    assert create_escalation(acme, **refund(750))["status"] == "approved"
    assert create_escalation(acme, **refund(751))["status"] == "pending"

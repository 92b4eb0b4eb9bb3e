"""``/org/suggestions/`` as owners, admins, operators and another organization use it: the page,
a draft policy (disabled, audited, and without effect on new escalations), dismissals that are
remembered until the data moves the rule, and bad input naming its field."""

from __future__ import annotations

import re

import pytest

from audit.models import AuditEvent
from escalations.models import Policy
from suggestions.models import DismissedSuggestion
from tests.conftest import create_escalation
from tests.console.helpers import signed_in, verified
from tests.suggestions.history import decided

pytestmark = pytest.mark.django_db

APPROVALS = [10, 25, 40, 60, 80, 100, 120, 150, 200, 250, 280, 300]
OPTIONS = {"days": 30, "support": 10, "confidence": 100}


@pytest.fixture
def history(acme):
    agent = acme.organization.agents.get()
    bob = acme.members["bob"]
    decided(acme.organization, agent, APPROVALS, status="approved", by=bob)
    decided(acme.organization, agent, [500, 900], status="rejected", by=bob)
    return agent


def fingerprints(response) -> list[str]:
    return re.findall(r'data-fingerprint="([0-9a-f]{64})"', response.content.decode())


def test_the_owner_sees_the_rule_its_support_and_its_dry_run(acme, history):
    response = signed_in(acme.members["alice"].user).get("/org/suggestions/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "12 of 12 issue_refund with amount ≤ 300 from support-bot were approved" in body
    assert "action.arguments.amount &lt;= 300" in body
    assert "median wait 10 min" in body
    assert "Time people spent on them: 2 h 0 min" in body
    assert "none went the other way" in body
    assert len(fingerprints(response)) == 1


def test_operators_and_viewers_are_refused(acme, history):
    for person in ("bob", "vera"):
        response = signed_in(acme.members[person].user).get("/org/suggestions/")
        assert response.status_code == 403
        draft = signed_in(acme.members[person].user).post("/org/suggestions/x/draft/", OPTIONS)
        assert draft.status_code == 403
    assert not Policy.objects.exists()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("days=abc", "days"),
        ("days=0", "days"),
        ("support=-1", "support"),
        ("confidence=7", "confidence"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(acme, history, query, field):
    response = signed_in(acme.members["alice"].user).get(f"/org/suggestions/?{query}")
    assert response.status_code == 400
    assert f"{field}: " in response.content.decode()
    fingerprint = fingerprints(signed_in(acme.members["alice"].user).get("/org/suggestions/"))[0]
    key, value = query.split("=")
    posted = signed_in(acme.members["alice"].user).post(
        f"/org/suggestions/{fingerprint}/draft/", {**OPTIONS, key: value}
    )
    assert posted.status_code == 400
    assert not Policy.objects.exists()


def test_a_draft_is_a_disabled_audited_policy_opened_in_the_editor(acme, history):
    alice = acme.members["alice"]
    client = verified(alice.user)
    [fingerprint] = fingerprints(client.get("/org/suggestions/"))

    response = client.post(f"/org/suggestions/{fingerprint}/draft/", OPTIONS)

    policy = Policy.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/escalations/policy/{policy.pk}/change/"
    assert policy.enabled is False
    assert policy.outcome == "auto_approve"
    assert policy.condition.endswith(
        'action.name == "issue_refund" && action.arguments.amount <= 300'
    )
    assert list(policy.agents.all()) == [history]
    event = AuditEvent.objects.get(action="policy.created", target=policy.public_id)
    assert event.actor == alice.as_actor()
    assert event.data["source"] == "suggestion"
    assert event.data["after"]["enabled"] is False

    # The editor shows it for review: the condition, and "enabled" unticked.
    editor = client.get(response["Location"]).content.decode()
    assert "action.arguments.amount &lt;= 300" in editor
    assert re.search(r'<input type="checkbox" name="enabled" id="id_enabled"\s*>', editor)

    # A draft never takes effect by itself: a small refund still waits for a person.
    created = create_escalation(acme, action={"name": "issue_refund", "arguments": {"amount": 50}})
    assert created["status"] == "pending"

    # Clicking again opens the same draft instead of making another.
    page = client.get("/org/suggestions/").content.decode()
    assert "(draft)" in page
    again = client.post(f"/org/suggestions/{fingerprint}/draft/", OPTIONS)
    assert again["Location"] == response["Location"]
    assert Policy.objects.count() == 1


def test_a_dismissal_is_audited_and_remembered_until_the_data_moves_the_rule(acme, history):
    alice = acme.members["alice"]
    client = signed_in(alice.user)
    [fingerprint] = fingerprints(client.get("/org/suggestions/"))

    response = client.post(f"/org/suggestions/{fingerprint}/dismiss/", OPTIONS)
    assert response.status_code == 302
    dismissed = DismissedSuggestion.objects.get()
    assert (dismissed.organization, dismissed.fingerprint) == (acme.organization, fingerprint)
    event = AuditEvent.objects.get(action="suggestion.dismissed")
    assert (event.target, event.actor) == (fingerprint, alice.as_actor())
    assert fingerprints(client.get("/org/suggestions/")) == []

    # More decisions that keep the rule keep it dismissed.
    bob = acme.members["bob"]
    decided(acme.organization, history, [30, 70], status="approved", by=bob)
    assert fingerprints(client.get("/org/suggestions/")) == []
    # An approval at 350 moves the bound: a new rule, offered again.
    decided(acme.organization, history, [350], status="approved", by=bob)
    page = client.get("/org/suggestions/")
    assert len(fingerprints(page)) == 1
    assert fingerprints(page) != [fingerprint]
    assert "amount ≤ 350" in page.content.decode()


def test_another_organization_cannot_draft_or_dismiss_ours(acme, globex, history):
    [fingerprint] = fingerprints(signed_in(acme.members["alice"].user).get("/org/suggestions/"))
    charlie = signed_in(globex.members["charlie"].user)
    assert fingerprints(charlie.get("/org/suggestions/")) == []
    for verb in ("draft", "dismiss"):
        response = charlie.post(f"/org/suggestions/{fingerprint}/{verb}/", OPTIONS)
        assert response.status_code == 404
    assert not Policy.objects.exists()
    assert not DismissedSuggestion.objects.exists()

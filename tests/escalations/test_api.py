"""The agent loop through the public API: create, read, list, claim, answer, cancel."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from escalations.models import Escalation
from tests.conftest import APPROVAL, create_escalation

pytestmark = pytest.mark.django_db


def test_agent_creates_an_escalation_and_reads_it_back(acme):
    created = create_escalation(acme)
    assert created["id"].startswith("esc_")
    assert created["status"] == "pending"
    assert created["action"] == APPROVAL["action"]
    assert created["context"]["reasoning"] == "The customer was charged twice."
    assert created["decision"] is None
    assert created["links"]["wait"].endswith(f"/api/v1/escalations/{created['id']}/wait")
    fetched = acme.agent_client().get(f"/api/v1/escalations/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_create_is_audited_in_the_same_transaction(acme):
    created = create_escalation(acme)
    event = AuditEvent.objects.get(action="escalation.created", target=created["id"])
    assert event.organization_id == acme.organization.pk
    assert event.actor["type"] == "agent"


def test_operator_approves_and_the_decision_is_returned(acme):
    created = create_escalation(acme)
    bob = acme.client_for("bob")
    answer = bob.post(
        f"/api/v1/escalations/{created['id']}/responses",
        {"outcome": "approve", "comment": "Double charge confirmed."},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    decision = answer.json()["decision"]
    assert answer.json()["status"] == "approved"
    assert decision["outcome"] == "approved"
    assert decision["comment"] == "Double charge confirmed."
    assert decision["decided_by"]["email"] == "bob@acme.test"
    assert decision["channel"] == "api"


def test_rejection_carries_the_reason_for_the_agent(acme):
    created = create_escalation(acme)
    answer = acme.client_for("bob").post(
        f"/api/v1/escalations/{created['id']}/responses",
        {"outcome": "reject", "comment": "Refunds over $500 need a manager."},
        format="json",
    )
    assert answer.json()["status"] == "rejected"
    assert answer.json()["decision"]["comment"] == "Refunds over $500 need a manager."


def test_approve_with_edits_returns_the_edited_arguments(acme):
    created = create_escalation(acme)
    answer = acme.client_for("bob").post(
        f"/api/v1/escalations/{created['id']}/responses",
        {"outcome": "approve", "edited_arguments": {"order": 1042, "amount": 500}},
        format="json",
    )
    assert answer.json()["decision"]["edited_arguments"] == {"order": 1042, "amount": 500}


def test_late_answer_is_refused_with_what_happened_first(acme):
    created = create_escalation(acme)
    url = f"/api/v1/escalations/{created['id']}/responses"
    acme.client_for("bob").post(url, {"outcome": "approve"}, format="json")
    late = acme.client_for("alice").post(url, {"outcome": "reject"}, format="json")
    assert late.status_code == 409
    assert late["Content-Type"] == "application/problem+json"
    assert "already approved" in late.json()["detail"]
    assert "bob@acme.test" in late.json()["detail"]


def test_typed_answer_is_validated_against_the_response_schema(acme):
    created = create_escalation(
        acme,
        kind="question",
        title="Which plan should the customer get?",
        action=None,
        response_schema={
            "type": "object",
            "properties": {"plan": {"enum": ["basic", "pro"]}},
            "required": ["plan"],
        },
    )
    url = f"/api/v1/escalations/{created['id']}/responses"
    bad = acme.client_for("bob").post(
        url, {"outcome": "answer", "response": {"plan": "gold"}}, format="json"
    )
    assert bad.status_code == 400
    assert "response.plan" in bad.json()["errors"]
    good = acme.client_for("bob").post(
        url, {"outcome": "answer", "response": {"plan": "pro"}}, format="json"
    )
    assert good.status_code == 201
    assert good.json()["status"] == "answered"
    assert good.json()["decision"]["response"] == {"plan": "pro"}


def test_invalid_response_schema_is_refused_at_create(acme):
    response = acme.agent_client().post(
        "/api/v1/escalations",
        {**APPROVAL, "response_schema": {"type": "not-a-type"}},
        format="json",
    )
    assert response.status_code == 400
    assert "response_schema" in response.json()["errors"]
    assert not Escalation.objects.exists()


def test_viewer_cannot_answer(acme):
    created = create_escalation(acme)
    response = acme.client_for("vera").post(
        f"/api/v1/escalations/{created['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert response.status_code == 403
    assert Escalation.objects.get(public_id=created["id"]).status == "pending"


def test_agent_key_can_never_answer(acme):
    created = create_escalation(acme)
    response = acme.agent_client().post(
        f"/api/v1/escalations/{created['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert response.status_code == 403
    assert "responses:write" in response.json()["detail"]


def test_claim_is_exclusive_and_can_be_released(acme):
    created = create_escalation(acme)
    url = f"/api/v1/escalations/{created['id']}/claim"
    claimed = acme.client_for("bob").post(url)
    assert claimed.status_code == 200
    assert claimed.json()["claimed_by"]["email"] == "bob@acme.test"
    other = acme.client_for("alice").post(url)
    assert other.status_code == 409
    assert "bob@acme.test" in other.json()["detail"]
    answer_while_claimed = acme.client_for("alice").post(
        f"/api/v1/escalations/{created['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert answer_while_claimed.status_code == 409
    released = acme.client_for("bob").delete(url)
    assert released.status_code == 200
    assert released.json()["claimed_by"] is None
    assert acme.client_for("alice").post(url).status_code == 200


def test_agent_cancels_its_escalation_once(acme):
    created = create_escalation(acme)
    url = f"/api/v1/escalations/{created['id']}/cancel"
    cancelled = acme.agent_client().post(url)
    assert cancelled.status_code == 200
    assert cancelled.json()["decision"]["outcome"] == "cancelled"
    assert cancelled.json()["decision"]["decided_by"]["type"] == "agent"
    assert acme.agent_client().post(url).status_code == 409


def test_quorum_needs_distinct_operators(acme):
    created = create_escalation(acme)
    Escalation.objects.filter(public_id=created["id"]).update(required_approvals=2)
    url = f"/api/v1/escalations/{created['id']}/responses"
    first = acme.client_for("bob").post(url, {"outcome": "approve"}, format="json")
    assert first.json()["status"] == "pending"
    again = acme.client_for("bob").post(url, {"outcome": "approve"}, format="json")
    assert again.status_code == 409
    second = acme.client_for("alice").post(url, {"outcome": "approve"}, format="json")
    assert second.json()["status"] == "approved"


def test_list_is_newest_first_with_a_cursor_and_filters(acme):
    ids = [create_escalation(acme, external_id=f"run_{n}")["id"] for n in range(5)]
    page = acme.agent_client().get("/api/v1/escalations?limit=2")
    assert page.status_code == 200
    body = page.json()
    assert [item["id"] for item in body["results"]] == ids[::-1][:2]
    next_page = acme.agent_client().get(body["next"])
    assert [item["id"] for item in next_page.json()["results"]] == ids[::-1][2:4]
    filtered = acme.agent_client().get("/api/v1/escalations?external_id=run_3")
    assert [item["id"] for item in filtered.json()["results"]] == [ids[3]]
    bad = acme.agent_client().get("/api/v1/escalations?status=bogus")
    assert bad.status_code == 400
    assert "status" in bad.json()["errors"]


def test_policy_evaluation_is_a_dry_run(acme):
    response = acme.agent_client().post("/api/v1/policies/evaluate", APPROVAL, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "policy": None,
        "outcome": "require_human",
        "levels": [],
        "timeout_seconds": 86400,
        "on_timeout": "reject",
        "required_approvals": 1,
    }
    assert not Escalation.objects.exists()

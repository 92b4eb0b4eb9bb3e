"""One rule for a rejection's reason, per organization, on the API (the console, e-mail, SMS,
chat and push paths are tested with their channels: tests/console/test_queue.py,
tests/notifications/test_email.py, tests/notifications/test_inbound.py)."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from tests.conftest import create_escalation
from tests.console.helpers import verified

pytestmark = pytest.mark.django_db


def _require_reason(tenant) -> None:
    tenant.organization.reject_reason_required = True
    tenant.organization.save()


def test_by_default_the_api_rejects_without_a_reason(acme):
    created = create_escalation(acme)
    response = acme.client_for("bob").post(
        f"/api/v1/escalations/{created['id']}/responses", {"outcome": "reject"}, format="json"
    )
    assert response.status_code == 201
    assert acme.agent_client().get(f"/api/v1/escalations/{created['id']}").json()["status"] == (
        "rejected"
    )


def test_where_a_reason_is_required_the_api_names_the_comment_field(acme):
    _require_reason(acme)
    created = create_escalation(acme)
    client = acme.client_for("bob")
    url = f"/api/v1/escalations/{created['id']}/responses"
    for comment in (None, "", "   "):
        body = (
            {"outcome": "reject"} if comment is None else {"outcome": "reject", "comment": comment}
        )
        refused = client.post(url, body, format="json")
        assert refused.status_code == 400
        assert refused["Content-Type"] == "application/problem+json"
        assert "asks for a reason" in refused.json()["errors"]["comment"][0]
    accepted = client.post(url, {"outcome": "reject", "comment": "Too risky."}, format="json")
    assert accepted.status_code == 201
    decision = acme.agent_client().get(f"/api/v1/escalations/{created['id']}").json()["decision"]
    assert (decision["outcome"], decision["comment"]) == ("rejected", "Too risky.")


def test_approvals_and_answers_never_need_a_reason(acme):
    _require_reason(acme)
    created = create_escalation(acme)
    response = acme.client_for("bob").post(
        f"/api/v1/escalations/{created['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert response.status_code == 201


def test_an_admin_turns_the_rule_on_in_settings_and_it_is_audited(acme):
    client = verified(acme.members["alice"].user)
    page = client.get("/org/settings/").content.decode()
    assert "Require a reason with every rejection" in page
    response = client.post(
        "/org/settings/", {"name": "Acme", "reject_reason_required": "on"}, follow=True
    )
    assert response.status_code == 200
    acme.organization.refresh_from_db()
    assert acme.organization.reject_reason_required
    event = AuditEvent.objects.filter(action="organization.updated").latest("seq")
    assert event.data["after"]["reject_reason_required"] is True
    assert event.data["before"]["reject_reason_required"] is False

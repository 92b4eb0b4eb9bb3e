"""The queue page and the decision screen, through the console's HTTP surface."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.shortcuts import resolve_url
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from escalations.models import Escalation
from escalations.services import escalation_claim
from tests.conftest import Tenant, create_escalation


def signed_in(tenant: Tenant, name: str) -> Client:
    client = Client()
    client.force_login(tenant.members[name].user)
    return client


def queue_ids(html: str) -> list[str]:
    return re.findall(r'<tr class="qrow" data-id="([^"]+)"', html)


def typed(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    return create_escalation(
        tenant,
        kind="question",
        title="Pick a shipping method",
        action=None,
        response_schema={
            "type": "object",
            "properties": {
                "method": {"enum": ["ground", "air"], "title": "Method"},
                "days": {"type": "integer", "minimum": 1, "maximum": 30},
                "note": {"type": "string", "maxLength": 80},
                "gift": {"type": "boolean"},
                "address": {
                    "type": "object",
                    "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["zip"],
                },
            },
            "required": ["method", "days"],
        },
        **overrides,
    )


def test_anonymous_is_sent_to_sign_in(acme):
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith(resolve_url(settings.LOGIN_URL))


def test_queue_lists_pending_escalations_by_priority_then_age(acme):
    low = create_escalation(acme, title="low", priority="low")
    normal_old = create_escalation(acme, title="normal old")
    urgent = create_escalation(acme, title="urgent", priority="urgent")
    normal_new = create_escalation(acme, title="normal new")
    high = create_escalation(acme, title="high", priority="high")
    done = create_escalation(acme, title="done")
    acme.agent_client().post(f"/api/v1/escalations/{done['id']}/cancel")

    response = signed_in(acme, "bob").get("/")

    assert response.status_code == 200
    assert queue_ids(response.content.decode()) == [
        urgent["id"],
        high["id"],
        normal_old["id"],
        normal_new["id"],
        low["id"],
    ]


def test_queue_shows_claim_level_and_quorum(acme):
    created = create_escalation(acme)
    escalation = Escalation.objects.get(public_id=created["id"])
    escalation_claim(escalation=escalation, membership=acme.members["alice"])

    html = signed_in(acme, "bob").get("/").content.decode()

    assert "alice@acme.test" in html
    assert "0 of 1" in html
    assert 'class="q-level">1<' in html


def test_queue_does_not_show_another_organizations_escalations(acme, globex):
    create_escalation(globex, title="Globex secret")
    html = signed_in(acme, "bob").get("/").content.decode()
    assert "Globex secret" not in html
    assert queue_ids(html) == []


def _bulk_pending(tenant: Tenant, count: int) -> None:
    now = timezone.now()
    template = Escalation.objects.filter(organization=tenant.organization).first()
    Escalation.objects.bulk_create(
        [
            Escalation(
                organization=tenant.organization,
                agent=template.agent,
                kind="approval",
                title=f"Bulk {index}",
                action=template.action,
                response_schema=template.response_schema,
                priority=["low", "normal", "high", "urgent"][index % 4],
                timeout_seconds=3600,
                on_timeout="reject",
                created_at=now,
                expires_at=now + timezone.timedelta(hours=1),
                public_id=f"esc_bulk{index:05d}",
                assignee=tenant.members["bob"] if index % 3 == 0 else None,
                claimed_at=now if index % 3 == 0 else None,
            )
            for index in range(count)
        ]
    )


@pytest.mark.parametrize("count", [10, 500])
def test_queue_renders_any_number_of_rows_in_constant_queries(
    acme, count, django_assert_num_queries
):
    client = signed_in(acme, "bob")
    # The page's fixed cost (session, user, membership, whatever the console's middleware and
    # nav read) with one row; then the same count, exactly, with many rows.
    create_escalation(acme)
    with CaptureQueriesContext(connection) as one_row:
        client.get("/")
    _bulk_pending(acme, count - 1)
    with django_assert_num_queries(len(one_row)):
        response = client.get("/")
    assert len(queue_ids(response.content.decode())) == count


def test_decision_screen_of_another_organization_is_404(acme, globex):
    created = create_escalation(globex)
    client = signed_in(acme, "alice")
    assert client.get(f"/escalations/{created['id']}/").status_code == 404
    assert client.post(f"/escalations/{created['id']}/claim").status_code == 404
    assert (
        client.post(f"/escalations/{created['id']}/respond", {"outcome": "approve"}).status_code
        == 404
    )


def test_decision_screen_shows_the_agents_picture(acme):
    created = create_escalation(acme)
    html = signed_in(acme, "vera").get(f"/escalations/{created['id']}/").content.decode()
    assert "issue_refund" in html
    assert "The customer was charged twice." in html
    assert "lookup_order" in html
    assert "I was charged twice!" in html
    assert "0 of 1 approval" in html
    assert "created the escalation" in html  # the timeline, from the audit chain


def test_viewer_sees_but_cannot_act(acme):
    created = create_escalation(acme)
    client = signed_in(acme, "vera")
    html = client.get(f"/escalations/{created['id']}/").content.decode()
    assert "Viewers can read escalations but not answer them." in html
    assert 'id="claim-form"' not in html
    assert client.post(f"/escalations/{created['id']}/claim").status_code == 403
    assert (
        client.post(f"/escalations/{created['id']}/respond", {"outcome": "approve"}).status_code
        == 403
    )
    assert Escalation.objects.get(public_id=created["id"]).status == "pending"


def test_operator_claims_then_another_sees_the_claim_and_cannot_answer(acme):
    created = create_escalation(acme)
    bob = signed_in(acme, "bob")
    response = bob.post(f"/escalations/{created['id']}/claim")
    assert response.status_code == 302
    escalation = Escalation.objects.get(public_id=created["id"])
    assert escalation.assignee == acme.members["bob"]

    alice = signed_in(acme, "alice")
    html = alice.get(f"/escalations/{created['id']}/").content.decode()
    assert "bob@acme.test has claimed this escalation." in html
    response = alice.post(f"/escalations/{created['id']}/respond", {"outcome": "approve"})
    assert response.status_code == 409
    assert "bob@acme.test has claimed this escalation" in response.content.decode()

    assert bob.post(f"/escalations/{created['id']}/release").status_code == 302
    assert Escalation.objects.get(public_id=created["id"]).assignee is None


def test_operator_approves_with_edited_arguments(acme):
    created = create_escalation(acme)
    response = signed_in(acme, "bob").post(
        f"/escalations/{created['id']}/respond",
        {"outcome": "approve", "edited_arguments": '{"order": 1042, "amount": 500}'},
    )
    assert response.status_code == 302
    escalation = Escalation.objects.get(public_id=created["id"])
    assert escalation.status == "approved"
    assert escalation.edited_arguments == {"order": 1042, "amount": 500}
    assert escalation.decision_channel == "console"


def test_unchanged_arguments_are_a_plain_approval(acme):
    created = create_escalation(acme)
    signed_in(acme, "bob").post(
        f"/escalations/{created['id']}/respond",
        {"outcome": "approve", "edited_arguments": '{"amount": 750, "order": 1042}'},
    )
    assert Escalation.objects.get(public_id=created["id"]).edited_arguments is None


def test_bad_edited_arguments_are_shown_in_place(acme):
    created = create_escalation(acme)
    response = signed_in(acme, "bob").post(
        f"/escalations/{created['id']}/respond",
        {"outcome": "approve", "edited_arguments": "{not json"},
    )
    assert response.status_code == 400
    assert "Not valid JSON" in response.content.decode()
    assert Escalation.objects.get(public_id=created["id"]).status == "pending"


def test_reject_needs_a_reason_where_the_organization_asks_and_it_goes_to_the_agent(acme):
    acme.organization.reject_reason_required = True
    acme.organization.save()
    created = create_escalation(acme)
    bob = signed_in(acme, "bob")
    page = bob.get(f"/escalations/{created['id']}/").content.decode()
    assert "(required to reject; sent to the agent)" in page
    response = bob.post(f"/escalations/{created['id']}/respond", {"outcome": "reject"})
    assert response.status_code == 400
    assert "this organization asks for a reason" in response.content.decode()

    bob.post(
        f"/escalations/{created['id']}/respond",
        {"outcome": "reject", "comment": "Refund only the duplicate charge."},
    )
    decision = acme.agent_client().get(f"/api/v1/escalations/{created['id']}").json()
    assert decision["status"] == "rejected"
    assert "Refund only the duplicate charge." in str(decision["decision"])


def test_reject_without_a_reason_goes_through_where_the_organization_does_not_ask(acme):
    created = create_escalation(acme)
    bob = signed_in(acme, "bob")
    page = bob.get(f"/escalations/{created['id']}/").content.decode()
    assert "(optional; sent to the agent)" in page
    response = bob.post(f"/escalations/{created['id']}/respond", {"outcome": "reject"})
    assert response.status_code == 302
    assert Escalation.objects.get(public_id=created["id"]).status == "rejected"


def test_typed_form_is_generated_from_the_response_schema(acme):
    created = typed(acme)
    html = signed_in(acme, "bob").get(f"/escalations/{created['id']}/").content.decode()
    assert '<select id="f-response-method" name="response.method" required>' in html
    assert 'name="response.days"' in html and 'min="1"' in html and 'max="30"' in html
    assert 'step="1"' in html
    assert 'maxlength="80"' in html
    assert 'type="radio" name="response.gift" value="true"' in html
    assert "<legend>Address</legend>" in html
    assert 'pattern="^[0-9]{5}$"' in html


def test_typed_answer_errors_are_shown_in_place_then_the_answer_goes_through(acme):
    created = typed(acme)
    bob = signed_in(acme, "bob")
    url = f"/escalations/{created['id']}/respond"

    # Missing required value, caught by the form; then a bound the schema sets, caught by the
    # service's JSON Schema validation and placed next to its input.
    response = bob.post(url, {"outcome": "answer", "response.method": "1", "response.days": ""})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()

    response = bob.post(
        url,
        {"outcome": "answer", "response.method": "1", "response.days": "45", "response.note": ""},
    )
    html = response.content.decode()
    assert response.status_code == 400
    errors = re.search(r'id="f-response-days-errors">(.*?)</ul>', html, re.S)
    assert errors and "45 is greater than the maximum of 30" in errors.group(1)
    assert 'value="45"' in html  # what was typed is kept
    assert Escalation.objects.get(public_id=created["id"]).status == "pending"

    response = bob.post(
        url,
        {
            "outcome": "answer",
            "response.method": "1",
            "response.days": "3",
            "response.gift": "true",
            "response.address.zip": "12345",
        },
    )
    assert response.status_code == 302
    escalation = Escalation.objects.get(public_id=created["id"])
    assert escalation.status == "answered"
    assert escalation.decision_response == {
        "method": "air",
        "days": 3,
        "gift": True,
        "address": {"zip": "12345"},
    }


def test_quorum_progress_is_shown(acme):
    from escalations.models import Policy

    Policy.objects.create(organization=acme.organization, name="Two keys", required_approvals=2)
    created = create_escalation(acme)
    signed_in(acme, "bob").post(f"/escalations/{created['id']}/respond", {"outcome": "approve"})
    html = signed_in(acme, "alice").get(f"/escalations/{created['id']}/").content.decode()
    assert "1 of 2 approvals" in html


def test_always_allow_link_is_for_owners_and_admins_only(acme):
    created = create_escalation(acme)
    url = f"/escalations/{created['id']}/"
    assert "Always allow" in signed_in(acme, "alice").get(url).content.decode()
    assert "Always allow" not in signed_in(acme, "bob").get(url).content.decode()


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_agent_text_is_escaped_everywhere(acme):
    created = create_escalation(
        acme,
        title=HOSTILE,
        action={"name": HOSTILE, "arguments": {HOSTILE: HOSTILE, "url": "javascript:alert(1)"}},
        context={
            "reasoning": HOSTILE,
            "tool_calls": [
                {"name": HOSTILE, "arguments": HOSTILE, "result": HOSTILE, "error": HOSTILE}
            ],
            "messages": [{"role": '"><script>x</script>', "content": HOSTILE}],
            "extra": HOSTILE,
        },
        metadata={HOSTILE: HOSTILE},
    )
    client = signed_in(acme, "alice")
    for url in ("/", f"/escalations/{created['id']}/"):
        html = client.get(url).content.decode()
        assert "<script>alert" not in html
        assert "<img src=x" not in html
        assert 'href="javascript:' not in html
        assert "&lt;script&gt;alert" in html


def test_a_question_shows_no_approval_count_and_a_capitalised_answer_label(acme):
    created = create_escalation(acme, kind="question", title="Which carrier?", action=None)
    html = signed_in(acme, "bob").get(f"/escalations/{created['id']}/").content.decode()
    assert 'id="quorum"' not in html
    assert "decision-grid no-action" in html  # one column: reasoning, then the answer
    assert '<label for="f-response-answer">Answer <span class="req"' in html


def test_an_approval_with_an_action_keeps_its_quorum_and_two_columns(acme):
    created = create_escalation(acme)
    html = signed_in(acme, "bob").get(f"/escalations/{created['id']}/").content.decode()
    assert 'id="quorum">0 of 1 approval<' in html
    assert 'class="decision-grid"' in html

"""Plans and limits: unlimited with billing off, 402 problems naming the limit with it on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import SYSTEM_ACTOR
from tenants import billing
from tenants.memberships import invitation_create
from tenants.models import BillingAccount, Organization, UsagePeriod
from tenants.services import agent_create
from tests.conftest import APPROVAL, create_escalation
from tests.console.helpers import signed_in

pytestmark = pytest.mark.django_db


def _used(organization: Organization, count: int) -> UsagePeriod:
    period, _ = UsagePeriod.objects.update_or_create(
        organization=organization,
        period_start=billing.period_start_for(timezone.now()),
        defaults={"escalations": count},
    )
    return period


def test_billing_off_every_organization_is_unlimited(acme: Any, settings: Any) -> None:
    settings.BILLING_ENABLED = False
    settings.STRIPE_SECRET_KEY = ""
    for n in range(4):
        agent_create(organization=acme.organization, name=f"bot-{n}", actor=SYSTEM_ACTOR)
    create_escalation(acme)
    assert billing.organization_plan(acme.organization) is billing.UNLIMITED
    assert not UsagePeriod.objects.exists()
    page = signed_in(acme.members["alice"].user).get("/org/billing/")
    assert page.status_code == 200
    assert b"Billing is off" in page.content


def test_free_plan_allows_two_agents_then_402(acme: Any, billing_on: Any) -> None:
    agent_create(organization=acme.organization, name="second", actor=SYSTEM_ACTOR)
    with pytest.raises(billing.PlanLimitExceeded) as refused:
        agent_create(organization=acme.organization, name="third", actor=SYSTEM_ACTOR)
    assert refused.value.status_code == 402
    assert refused.value.extra["limit"] == "agents"
    assert refused.value.extra["usage"] == 2
    assert refused.value.extra["upgrade_url"].endswith("/org/billing/")
    assert acme.organization.agents.count() == 2


def test_console_agent_over_the_limit_gets_a_402_page_with_upgrade(
    acme: Any, billing_on: Any
) -> None:
    agent_create(organization=acme.organization, name="second", actor=SYSTEM_ACTOR)
    client = signed_in(acme.members["alice"].user)
    response = client.post("/org/agents/", {"name": "third", "description": ""})
    assert response.status_code == 402
    assert b"allows 2 agents" in response.content
    assert b"Upgrade the plan" in response.content
    assert not acme.organization.agents.filter(name="third").exists()


def test_inviting_a_fourth_operator_is_refused_but_viewers_are_free(
    acme: Any, billing_on: Any
) -> None:
    alice = acme.members["alice"]
    # alice (owner) and bob (operator) take two seats; vera is a viewer.
    invitation_create(
        organization=acme.organization, email="olga@acme.test", role="operator", invited_by=alice
    )
    # Re-inviting the same address replaces the earlier invitation: no extra seat.
    invitation_create(
        organization=acme.organization, email="olga@acme.test", role="operator", invited_by=alice
    )
    with pytest.raises(billing.PlanLimitExceeded) as refused:
        invitation_create(
            organization=acme.organization, email="pat@acme.test", role="admin", invited_by=alice
        )
    assert refused.value.extra == {
        "limit": "operators",
        "usage": 3,
        "allowed": 3,
        "plan": "free",
        "upgrade_url": "http://127.0.0.1:8000/org/billing/",
    }
    invitation_create(
        organization=acme.organization, email="vic@acme.test", role="viewer", invited_by=alice
    )


def test_escalations_past_the_monthly_quota_get_a_402_problem(acme: Any, billing_on: Any) -> None:
    _used(acme.organization, 498)
    create_escalation(acme)
    create_escalation(acme)
    response = acme.agent_client().post("/api/v1/escalations", APPROVAL, format="json")
    assert response.status_code == 402
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/plan-limit-exceeded")
    assert body["limit"] == "escalations_per_month"
    assert body["usage"] == 500
    assert body["allowed"] == 500
    assert body["plan"] == "free"
    assert body["upgrade_url"] == "http://127.0.0.1:8000/org/billing/"
    assert "in flight are not affected" in body["detail"]
    assert acme.organization.escalations.count() == 2
    assert escalation_count(acme) == 500


def escalation_count(tenant: Any) -> int:
    return billing.escalations_this_month(tenant.organization)


def test_idempotent_create_past_the_quota_is_402_and_can_be_retried(
    acme: Any, billing_on: Any
) -> None:
    _used(acme.organization, 500)
    client = acme.agent_client()
    first = client.post("/api/v1/escalations", APPROVAL, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 402
    _used(acme.organization, 10)
    again = client.post("/api/v1/escalations", APPROVAL, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert again.status_code == 201


def test_escalations_in_flight_can_still_be_answered_past_the_quota(
    acme: Any, billing_on: Any
) -> None:
    _used(acme.organization, 499)
    escalation = create_escalation(acme)
    assert acme.agent_client().post("/api/v1/escalations", APPROVAL, format="json").status_code == (
        402
    )
    answer = acme.client_for("bob").post(
        f"/api/v1/escalations/{escalation['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert answer.status_code in (200, 201), answer.content
    assert answer.json()["status"] == "approved"


def _billing_mail() -> list[Any]:
    """The outbox without the escalations' own notifications to operators."""
    return [message for message in mail.outbox if APPROVAL["title"] not in message.subject]


def test_owners_are_told_once_at_80_and_once_at_100_percent(
    acme: Any, billing_on: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _used(acme.organization, 398)
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)  # 399
    assert _billing_mail() == []
    for _ in range(3):  # 400 (80 %), 401, 402
        with django_capture_on_commit_callbacks(execute=True):
            create_escalation(acme)
    assert len(_billing_mail()) == 1
    assert _billing_mail()[0].to == ["alice@acme.test"]
    assert "80%" in _billing_mail()[0].subject
    _used(acme.organization, 499)
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)  # 500
    assert len(_billing_mail()) == 2
    assert "all 500 escalations" in _billing_mail()[1].subject
    reached = AuditEvent.objects.filter(
        organization_id=acme.organization.pk, action="billing.quota_threshold_reached"
    )
    assert [event.data["threshold"] for event in reached.order_by("seq")] == [80, 100]


def test_the_console_banner_warns_owners_near_the_quota(acme: Any, billing_on: Any) -> None:
    _used(acme.organization, 450)
    owner_page = signed_in(acme.members["alice"].user).get("/org/billing/")
    assert b'data-testid="billing-banner"' in owner_page.content
    assert b"450 of this month" in owner_page.content
    operator_page = signed_in(acme.members["bob"].user).get("/org/billing/")
    assert b'data-testid="billing-banner"' not in operator_page.content


def test_a_paid_plan_past_its_payment_grace_counts_as_free(acme: Any, billing_on: Any) -> None:
    Organization.objects.filter(pk=acme.organization.pk).update(plan="team")
    acme.organization.refresh_from_db()
    assert billing.organization_plan(acme.organization) is billing.TEAM
    BillingAccount.objects.create(
        organization=acme.organization,
        payment_grace_until=timezone.now() - timedelta(minutes=1),
    )
    assert billing.organization_plan(acme.organization) is billing.FREE

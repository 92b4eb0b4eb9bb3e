"""Usage reported to Stripe as meter events: exact, idempotent, never billed twice."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from tenants import billing, tasks
from tenants.models import Organization, UsagePeriod
from tests.conftest import create_escalation

pytestmark = pytest.mark.django_db


def _subscribed(organization: Organization) -> None:
    Organization.objects.filter(pk=organization.pk).update(
        plan="business",
        stripe_customer_id="cus_acme",
        stripe_subscription_id="sub_acme",
        subscription_status="active",
    )
    organization.refresh_from_db()


def test_usage_is_reported_once_with_an_idempotency_key(acme: Any, billing_on: Any) -> None:
    _subscribed(acme.organization)
    for _ in range(3):
        create_escalation(acme)
    assert tasks.billing_usage_report() == 1
    (call,) = billing_on.calls_to("/v1/billing/meter_events")
    assert call.headers["authorization"] == "Bearer sk_test_fake_4242"
    assert call.params["event_name"] == "awaithuman_escalations"
    assert call.params["payload[stripe_customer_id]"] == "cus_acme"
    assert call.params["payload[value]"] == "3"
    assert call.headers["idempotency-key"] == call.params["identifier"]
    assert abs(int(call.params["timestamp"]) - timezone.now().timestamp()) < 60

    assert tasks.billing_usage_report() == 0  # nothing new: nothing sent
    create_escalation(acme)
    create_escalation(acme)
    assert tasks.billing_usage_report() == 1
    assert [e["payload[value]"] for e in billing_on.meter_events] == ["3", "2"]
    period = UsagePeriod.objects.get(organization=acme.organization)
    assert (period.escalations, period.reported) == (5, 5)


def test_a_lost_answer_is_retried_with_the_same_event_and_billed_once(
    acme: Any, billing_on: Any
) -> None:
    _subscribed(acme.organization)
    for _ in range(4):
        create_escalation(acme)
    # Stripe records the event but every answer (first try and the library's 2 retries) is lost.
    billing_on.meter_event_failures = 3
    assert billing.usage_report() == 0
    period = UsagePeriod.objects.get(organization=acme.organization)
    assert (period.reported, period.reporting) == (0, 4)
    create_escalation(acme)  # arrives meanwhile; must not change the resent event
    assert billing.usage_report() == 1
    assert billing.usage_report() == 1  # and then the fifth
    assert billing_on.billed_units() == 5
    keys = [
        call.headers["idempotency-key"] for call in billing_on.calls_to("/v1/billing/meter_events")
    ]
    assert len(set(keys)) == 2


def test_free_organizations_without_a_subscription_are_not_reported(
    acme: Any, billing_on: Any
) -> None:
    create_escalation(acme)
    assert billing.usage_report() == 0
    assert billing_on.calls == []


def test_nothing_is_reported_with_billing_off(acme: Any, settings: Any) -> None:
    settings.BILLING_ENABLED = False
    create_escalation(acme)
    assert billing.usage_report() == 0

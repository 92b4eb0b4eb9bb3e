"""Stripe webhooks: verified signatures, each event once, out-of-order safe, grace periods."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from tenants import billing
from tenants.models import BillingAccount, Organization, StripeEvent
from tests.conftest import make_tenant

from .conftest import WEBHOOK_URL, deliver, event, signed, subscription_event


def _billing_audits(organization: Organization) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            organization_id=organization.pk, action__startswith="billing."
        ).order_by("seq")
    )


@pytest.mark.django_db
def test_a_valid_event_upgrades_the_plan_and_is_audited(acme: Any, billing_on: Any) -> None:
    response = deliver(subscription_event(billing_on, acme.organization))
    assert response.status_code == 200, response.content
    assert response.json() == {"received": True, "duplicate": False}
    acme.organization.refresh_from_db()
    assert acme.organization.plan == "team"
    assert acme.organization.stripe_customer_id == "cus_test_1"
    assert acme.organization.subscription_status == "active"
    (audit,) = _billing_audits(acme.organization)
    assert audit.action == "billing.subscription_changed"
    assert audit.data["after"]["plan"] == "team"
    assert audit.data["before"]["plan"] == "free"
    # The subscription was re-fetched with the secret key.
    (fetch,) = billing_on.calls_to("/v1/subscriptions/sub_test_1")
    assert fetch.headers["authorization"] == f"Bearer {billing_on.secret_key}"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tamper",
    ["body_changed", "wrong_secret", "stale_timestamp", "no_signature", "garbage_header"],
)
def test_a_bad_signature_is_400_and_changes_nothing(
    acme: Any, billing_on: Any, tamper: str, client: Any
) -> None:
    body = json.dumps(subscription_event(billing_on, acme.organization))
    header = signed(body)
    if tamper == "body_changed":
        body = body.replace("price_team_monthly", "price_business_monthly")
    elif tamper == "wrong_secret":
        header = signed(body, secret="whsec_someone_else")
    elif tamper == "stale_timestamp":
        header = signed(body, timestamp=int(time.time()) - 301)
    elif tamper == "no_signature":
        header = ""
    else:
        header = "t=abc,v1=zz"
    response = client.post(
        WEBHOOK_URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    acme.organization.refresh_from_db()
    assert acme.organization.plan == "free"
    assert not StripeEvent.objects.exists()
    assert billing_on.calls == []


@pytest.mark.django_db
def test_a_timestamp_inside_the_tolerance_is_accepted(acme: Any, billing_on: Any) -> None:
    body = subscription_event(billing_on, acme.organization)
    assert deliver(body, timestamp=int(time.time()) - 290).status_code == 200


@pytest.mark.django_db
def test_a_signed_event_that_is_not_an_event_is_400(billing_on: Any) -> None:
    assert deliver({"id": "evt_1", "type": "invoice.paid"}).status_code == 400
    assert deliver("[1, 2]").status_code == 400


@pytest.mark.django_db
def test_an_event_delivered_five_times_changes_state_once(acme: Any, billing_on: Any) -> None:
    body = subscription_event(billing_on, acme.organization)
    answers = [deliver(body).json()["duplicate"] for _ in range(5)]
    assert answers == [False, True, True, True, True]
    assert StripeEvent.objects.filter(event_id=body["id"]).count() == 1
    assert len(_billing_audits(acme.organization)) == 1
    assert len(billing_on.calls_to("/v1/subscriptions/sub_test_1")) == 1


@pytest.mark.django_db(transaction=True)
def test_duplicates_delivered_concurrently_change_state_once(billing_on: Any) -> None:
    acme = make_tenant("Acme", "acme", {"alice": "owner"}, "support-bot")
    body = json.dumps(subscription_event(billing_on, acme.organization))
    barrier = threading.Barrier(3)
    statuses: list[int] = []

    def post() -> None:
        from django.test import Client

        try:
            barrier.wait()
            header = signed(body)
            response = Client().post(
                WEBHOOK_URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # And twice more, one after the other: five deliveries in all.
    for _ in range(2):
        statuses.append(deliver(body).status_code)
    assert statuses == [200] * 5
    assert StripeEvent.objects.count() == 1
    assert len(_billing_audits(acme.organization)) == 1
    acme.organization.refresh_from_db()
    assert acme.organization.plan == "team"


@pytest.mark.django_db
def test_events_in_reverse_order_end_in_stripes_current_state(acme: Any, billing_on: Any) -> None:
    org = acme.organization
    older = subscription_event(billing_on, org, "customer.subscription.created")
    older["created"] -= 60
    # Then the owner upgraded to Business in the portal: Stripe now has that.
    newer = subscription_event(billing_on, org, price="price_business_monthly")
    assert deliver(newer).status_code == 200
    assert deliver(older).status_code == 200  # arrives last, is the oldest
    org.refresh_from_db()
    assert org.plan == "business"
    assert len(_billing_audits(org)) == 1  # the stale event changed nothing


@pytest.mark.django_db
def test_a_deleted_subscription_downgrades_to_free_and_tells_the_owners(
    acme: Any, billing_on: Any, django_capture_on_commit_callbacks: Any
) -> None:
    org = acme.organization
    deliver(subscription_event(billing_on, org))
    with django_capture_on_commit_callbacks(execute=True):
        ended = subscription_event(
            billing_on, org, "customer.subscription.deleted", status="canceled"
        )
        assert deliver(ended).status_code == 200
    org.refresh_from_db()
    assert (org.plan, org.subscription_status) == ("free", "canceled")
    assert "now on the Free plan" in mail.outbox[-1].subject


@pytest.mark.django_db
def test_an_old_subscription_ending_does_not_downgrade_the_new_one(
    acme: Any, billing_on: Any
) -> None:
    org = acme.organization
    deliver(subscription_event(billing_on, org, subscription_id="sub_new"))
    deliver(
        subscription_event(
            billing_on,
            org,
            "customer.subscription.deleted",
            subscription_id="sub_old",
            status="canceled",
        )
    )
    org.refresh_from_db()
    assert (org.plan, org.stripe_subscription_id) == ("team", "sub_new")


@pytest.mark.django_db
def test_a_failed_payment_keeps_the_plan_for_the_grace_period_then_free(
    acme: Any, billing_on: Any, django_capture_on_commit_callbacks: Any
) -> None:
    org = acme.organization
    deliver(subscription_event(billing_on, org))
    billing_on.subscriptions["sub_test_1"]["status"] = "past_due"
    invoice = {
        "id": "in_1",
        "object": "invoice",
        "customer": "cus_test_1",
        "parent": {"subscription_details": {"subscription": "sub_test_1"}},
    }
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(event("invoice.payment_failed", invoice)).status_code == 200
    org.refresh_from_db()
    account = BillingAccount.objects.get(organization=org)
    assert org.plan == "team"
    assert org.subscription_status == "past_due"
    assert account.payment_grace_until > timezone.now() + timedelta(days=6)
    assert "Payment failed" in mail.outbox[-1].subject
    assert billing.organization_plan(org) is billing.TEAM

    # A week later nobody has paid: the periodic task moves the organization to Free.
    later = timezone.now() + timedelta(days=8)
    with django_capture_on_commit_callbacks(execute=True):
        assert billing.grace_expired_downgrade(now=later) == 1
    org.refresh_from_db()
    assert org.plan == "free"
    assert "now on the Free plan" in mail.outbox[-1].subject
    assert _billing_audits(org)[-1].action == "billing.subscription_changed"

    # Then the payment goes through: the paid plan is back, the grace period gone.
    billing_on.subscriptions["sub_test_1"]["status"] = "active"
    assert deliver(event("invoice.paid", invoice)).status_code == 200
    org.refresh_from_db()
    account.refresh_from_db()
    assert (org.plan, account.payment_grace_until) == ("team", None)


@pytest.mark.django_db
def test_a_failed_payment_reported_after_the_payment_went_through_changes_nothing(
    acme: Any, billing_on: Any
) -> None:
    org = acme.organization
    deliver(subscription_event(billing_on, org))
    invoice = {"id": "in_1", "object": "invoice", "customer": "cus_test_1"}
    deliver(event("invoice.paid", invoice))
    deliver(event("invoice.payment_failed", invoice, created=int(time.time()) - 3600))
    org.refresh_from_db()
    assert org.subscription_status == "active"
    assert not BillingAccount.objects.get(organization=org).payment_grace_until


@pytest.mark.django_db
def test_when_stripe_cannot_be_reached_the_event_is_not_recorded(
    acme: Any, billing_on: Any
) -> None:
    body = event(
        "customer.subscription.updated",
        {
            "id": "sub_unknown",
            "customer": "cus_x",
            "metadata": {"organization": acme.organization.public_id},
        },
    )
    assert deliver(body).status_code == 503
    assert not StripeEvent.objects.exists()  # Stripe's retry will process it


@pytest.mark.django_db
def test_an_event_for_another_organization_leaves_mine_alone(
    acme: Any, globex: Any, billing_on: Any
) -> None:
    deliver(subscription_event(billing_on, globex.organization, customer="cus_globex"))
    acme.organization.refresh_from_db()
    globex.organization.refresh_from_db()
    assert (acme.organization.plan, globex.organization.plan) == ("free", "team")
    assert _billing_audits(acme.organization) == []


@pytest.mark.django_db
def test_the_webhook_is_404_when_billing_is_off(settings: Any, client: Any) -> None:
    settings.BILLING_ENABLED = False
    response = client.post(WEBHOOK_URL, "{}", content_type="application/json")
    assert response.status_code == 404

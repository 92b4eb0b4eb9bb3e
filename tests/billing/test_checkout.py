"""The console: billing page by role, Checkout → webhook → upgraded plan, the customer portal."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tenants.models import Organization

from .conftest import deliver, event

pytestmark = pytest.mark.django_db


def test_checkout_then_webhook_upgrades_the_plan(acme: Any, billing_on: Any) -> None:
    from tests.console.helpers import signed_in

    org = acme.organization
    alice = signed_in(acme.members["alice"].user)
    response = alice.post("/org/billing/checkout/", {"plan": "team"})
    assert response.status_code == 303
    assert response["Location"].startswith("https://checkout.stripe.test/c/pay/cs_test_")
    (call,) = billing_on.calls_to("/v1/checkout/sessions")
    assert call.headers["authorization"] == "Bearer sk_test_fake_4242"
    assert call.params["mode"] == "subscription"
    assert call.params["line_items[0][price]"] == "price_team_monthly"
    assert call.params["line_items[0][quantity]"] == "1"
    assert call.params["line_items[1][price]"] == "price_escalations_metered"
    assert "line_items[1][quantity]" not in call.params
    assert call.params["client_reference_id"] == org.public_id
    assert call.params["subscription_data[metadata][organization]"] == org.public_id
    assert call.params["customer_email"] == "alice@acme.test"
    assert call.params["success_url"] == (
        "http://127.0.0.1:8000/org/billing/return/?session_id={CHECKOUT_SESSION_ID}"
    )
    session_id = urlsplit(response["Location"]).path.rsplit("/", 1)[1]

    # Back from Stripe before the webhook: "processing", and the page reloads itself.
    waiting = alice.get(f"/org/billing/return/?session_id={session_id}")
    assert b'data-testid="checkout-processing"' in waiting.content
    assert b'http-equiv="refresh"' in waiting.content

    billing_on.subscription(
        "sub_checkout", customer="cus_new", price="price_team_monthly", organization=org.public_id
    )
    completed = event(
        "checkout.session.completed",
        {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "client_reference_id": org.public_id,
            "customer": "cus_new",
            "subscription": "sub_checkout",
        },
    )
    assert deliver(completed).status_code == 200
    org.refresh_from_db()
    assert (org.plan, org.stripe_customer_id, org.stripe_subscription_id) == (
        "team",
        "cus_new",
        "sub_checkout",
    )
    done = alice.get(f"/org/billing/return/?session_id={session_id}")
    assert b'data-testid="checkout-done"' in done.content
    assert b"Team" in done.content

    # With a subscription, choosing another plan goes through the portal.
    switch = alice.post("/org/billing/checkout/", {"plan": "business"})
    assert switch.status_code == 303
    assert switch["Location"].startswith("https://billing.stripe.test/p/session/")
    assert len(billing_on.calls_to("/v1/checkout/sessions")) == 1


def test_the_portal_opens_for_the_owners_customer(acme: Any, billing_on: Any) -> None:
    from tests.console.helpers import signed_in

    Organization.objects.filter(pk=acme.organization.pk).update(stripe_customer_id="cus_acme")
    response = signed_in(acme.members["alice"].user).post("/org/billing/portal/")
    assert response.status_code == 303
    (call,) = billing_on.calls_to("/v1/billing_portal/sessions")
    assert call.params == {
        "customer": "cus_acme",
        "return_url": "http://127.0.0.1:8000/org/billing/",
    }


def test_the_portal_without_a_customer_explains_instead(acme: Any, billing_on: Any) -> None:
    from tests.console.helpers import signed_in

    alice = signed_in(acme.members["alice"].user)
    response = alice.post("/org/billing/portal/", follow=True)
    assert b"choose a plan first" in response.content
    assert billing_on.calls == []


def test_an_unknown_plan_or_stripe_down_is_a_message_not_a_500(
    acme: Any, billing_on: Any, settings: Any
) -> None:
    from tests.console.helpers import signed_in

    alice = signed_in(acme.members["alice"].user)
    assert (
        b"Choose the Team or Business plan"
        in alice.post("/org/billing/checkout/", {"plan": "platinum"}, follow=True).content
    )
    settings.STRIPE_SECRET_KEY = "sk_test_revoked"
    response = alice.post("/org/billing/checkout/", {"plan": "team"}, follow=True)
    assert response.status_code == 200
    assert b"Stripe did not answer" in response.content


@pytest.mark.parametrize("person", ["bob", "vera"])
def test_only_owners_start_checkout_or_the_portal(acme: Any, billing_on: Any, person: str) -> None:
    from tests.console.helpers import signed_in

    client = signed_in(acme.members[person].user)
    assert client.post("/org/billing/checkout/", {"plan": "team"}).status_code == 403
    assert client.post("/org/billing/portal/").status_code == 403
    assert client.get("/org/billing/return/?session_id=cs_x").status_code == 403
    assert billing_on.calls == []


def test_members_see_the_plan_but_only_owners_see_payment_details(
    acme: Any, billing_on: Any
) -> None:
    from tests.console.helpers import signed_in

    Organization.objects.filter(pk=acme.organization.pk).update(
        plan="team",
        stripe_customer_id="cus_acme",
        stripe_subscription_id="sub_acme",
        subscription_status="active",
    )
    owner = signed_in(acme.members["alice"].user).get("/org/billing/")
    assert b'data-testid="plan">Team' in owner.content
    assert b'data-testid="payment"' in owner.content
    assert b'data-testid="usage-agents">1 / 10' in owner.content
    operator = signed_in(acme.members["bob"].user).get("/org/billing/")
    assert operator.status_code == 200
    assert b'data-testid="plan">Team' in operator.content
    assert b'data-testid="payment"' not in operator.content
    assert b"cus_acme" not in operator.content


def test_another_organizations_checkout_session_is_never_shown_as_mine(
    acme: Any, globex: Any, billing_on: Any
) -> None:
    from tests.console.helpers import signed_in

    billing_on.subscription(
        "sub_globex",
        customer="cus_globex",
        price="price_business_monthly",
        organization=globex.organization.public_id,
    )
    deliver(
        event(
            "checkout.session.completed",
            {
                "id": "cs_test_globex",
                "mode": "subscription",
                "client_reference_id": globex.organization.public_id,
                "customer": "cus_globex",
                "subscription": "sub_globex",
            },
        )
    )
    page = signed_in(acme.members["alice"].user).get(
        "/org/billing/return/?session_id=cs_test_globex"
    )
    assert b'data-testid="checkout-processing"' in page.content
    acme.organization.refresh_from_db()
    assert acme.organization.plan == "free"


def test_the_billing_page_needs_a_sign_in(client: Any, billing_on: Any) -> None:
    response = client.get("/org/billing/")
    assert response.status_code == 302
    assert "/account/login/" in response["Location"]

"""Billing fixtures: the fake Stripe server, billing switched on against it, and webhooks signed
with the stripe library's own helper."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from django.core.cache import cache
from django.test import Client

from tenants.models import Organization

from .fake_stripe import FakeStripe, FakeStripeServer

WEBHOOK_SECRET = "whsec_test_billing_secret"
WEBHOOK_URL = "/billing/stripe/webhook/"


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripeServer() as fake:
        yield fake


@pytest.fixture
def billing_on(settings: Any, fake_stripe: FakeStripe) -> FakeStripe:
    settings.BILLING_ENABLED = True
    settings.STRIPE_SECRET_KEY = fake_stripe.secret_key
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = fake_stripe.url
    settings.STRIPE_PRICE_TEAM = "price_team_monthly"
    settings.STRIPE_PRICE_BUSINESS = "price_business_monthly"
    settings.STRIPE_PRICE_ESCALATIONS = "price_escalations_metered"
    settings.BILLING_GRACE_DAYS = 7
    return fake_stripe


def event(event_type: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    return {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "type": event_type,
        "created": created or int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def signed(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=timestamp or int(time.time())
    )


def deliver(
    body: dict[str, Any] | str,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    client: Client | None = None,
) -> Any:
    payload = body if isinstance(body, str) else json.dumps(body)
    return (client or Client()).post(
        WEBHOOK_URL,
        payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signed(payload, secret=secret, timestamp=timestamp),
    )


def subscription_event(
    fake: FakeStripe,
    organization: Organization,
    event_type: str = "customer.subscription.updated",
    *,
    subscription_id: str = "sub_test_1",
    customer: str = "cus_test_1",
    price: str = "price_team_monthly",
    status: str = "active",
) -> dict[str, Any]:
    """Stripe now has this subscription; the event announcing it."""
    subscription = fake.subscription(
        subscription_id,
        customer=customer,
        price=price,
        status=status,
        organization=organization.public_id,
    )
    return event(event_type, subscription)

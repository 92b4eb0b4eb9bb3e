"""The one module that talks to Stripe (and the only one that imports ``stripe``).

Everything else in AwaitHuman asks ``tenants.billing`` about plans and limits; billing calls the
few functions here, which take and return plain values, never Stripe objects. The API base is
the ``STRIPE_API_BASE`` setting (Stripe's by default), so tests point the library at a fake
Stripe server on 127.0.0.1.

stripe-python ≥ 8 sets the base per client (``StripeClient(base_addresses={"api": …})``), not
through the global ``stripe.api_base``; we build one client per key and base and keep it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import stripe
from django.conf import settings

if TYPE_CHECKING:
    from stripe.params.checkout import SessionCreateParams, SessionCreateParamsLineItem

WEBHOOK_TOLERANCE_SECONDS = 300


class StripeUnavailable(Exception):
    """Stripe (or the network to it) failed; ``str(exc)`` is safe to log, never to show raw."""


class InvalidSignature(Exception):
    """A webhook whose ``Stripe-Signature`` does not verify (or is stale); ``str`` says why."""


@dataclass(frozen=True)
class SubscriptionState:
    """What we need of a Stripe subscription, as Stripe has it now."""

    id: str
    customer: str
    status: str
    price_ids: tuple[str, ...]
    current_period_end: datetime | None
    cancel_at_period_end: bool
    metadata: dict[str, str]


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base, "meter_events": api_base},
        max_network_retries=2,
    )


def _stripe() -> stripe.StripeClient:
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def _subscription_state(subscription: dict[str, Any]) -> SubscriptionState:
    items = (subscription.get("items") or {}).get("data") or []
    # Since API version 2025-03-31 the period lives on each item, no longer on the subscription.
    period_end = subscription.get("current_period_end") or max(
        (item.get("current_period_end") or 0 for item in items), default=0
    )
    customer = subscription.get("customer") or ""
    return SubscriptionState(
        id=subscription["id"],
        customer=customer if isinstance(customer, str) else customer["id"],
        status=subscription.get("status") or "",
        price_ids=tuple(item["price"]["id"] for item in items if item.get("price")),
        current_period_end=_timestamp(period_end),
        cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
        metadata=dict(subscription.get("metadata") or {}),
    )


def checkout_session_create(
    *,
    organization_public_id: str,
    price_ids: list[str],
    success_url: str,
    cancel_url: str,
    customer_id: str = "",
    customer_email: str = "",
) -> str:
    """Start a subscription-mode Checkout Session; returns the URL to send the owner to.

    A licensed price gets quantity 1; a metered price (usage billing) takes no quantity.
    """
    line_items: list[SessionCreateParamsLineItem] = [{"price": price_ids[0], "quantity": 1}]
    line_items += [{"price": price_id} for price_id in price_ids[1:]]
    params: SessionCreateParams = {
        "mode": "subscription",
        "line_items": line_items,
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": organization_public_id,
        "metadata": {"organization": organization_public_id},
        "subscription_data": {"metadata": {"organization": organization_public_id}},
    }
    if customer_id:
        params["customer"] = customer_id
    elif customer_email:
        params["customer_email"] = customer_email
    try:
        session = _stripe().v1.checkout.sessions.create(params)
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"checkout session: {exc.__class__.__name__}") from exc
    assert session.url is not None  # a hosted session always has one
    return session.url


def portal_session_create(*, customer_id: str, return_url: str) -> str:
    """A customer-portal session for payment methods, invoices, plan changes and cancelling."""
    try:
        session = _stripe().v1.billing_portal.sessions.create(
            {"customer": customer_id, "return_url": return_url}
        )
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"portal session: {exc.__class__.__name__}") from exc
    return session.url


def subscription_retrieve(subscription_id: str) -> SubscriptionState:
    """The subscription as Stripe has it now: the answer to out-of-order webhooks."""
    try:
        subscription = _stripe().v1.subscriptions.retrieve(subscription_id)
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"subscription retrieve: {exc.__class__.__name__}") from exc
    return _subscription_state(subscription.to_dict())


def meter_event_create(
    *, event_name: str, customer_id: str, value: int, identifier: str, timestamp: datetime
) -> None:
    """Report ``value`` units of usage. ``identifier`` doubles as the Idempotency-Key: Stripe
    drops a second meter event with the same identifier, and a retried request with the same
    key returns the first answer, so a retry never bills twice."""
    try:
        _stripe().v1.billing.meter_events.create(
            {
                "event_name": event_name,
                "payload": {"stripe_customer_id": customer_id, "value": str(value)},
                "identifier": identifier,
                "timestamp": int(timestamp.timestamp()),
            },
            {"idempotency_key": identifier},
        )
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"meter event: {exc.__class__.__name__}") from exc


def webhook_event_parse(payload: bytes, signature: str) -> dict[str, Any]:
    """The verified event as a plain dict; ``InvalidSignature`` when the signature does not
    match the body and ``STRIPE_WEBHOOK_SECRET``, or is older than the tolerance (300 s)."""
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature, settings.STRIPE_WEBHOOK_SECRET, WEBHOOK_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(str(exc)) from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidSignature("The signed body is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise InvalidSignature("The signed body is not a Stripe event.")
    return event


def webhook_signature_header(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header as Stripe computes it (for tests and local tooling)."""
    return stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=timestamp if timestamp is not None else int(time.time())
    )

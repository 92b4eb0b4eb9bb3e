"""Web Push: VAPID-signed, aes128gcm-encrypted pushes to a fake push service on 127.0.0.1 that
verifies the JWT with the public key and decrypts the payload with the subscription's keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import call_command

from escalations.models import Escalation
from notifications.management.commands.vapid_keys import vapid_key_pair
from notifications.tasks import messages_update_after_decision
from notifications.transports import TRANSPORTS, TransportError
from tests.conftest import create_escalation
from tests.console.helpers import signed_in

from .conftest import add_point
from .fakes import FakePushService, delivery_sent, push_configured


@pytest.fixture
def push(settings: Any) -> Iterator[FakePushService]:
    with push_configured(settings) as fake:
        yield fake


def _point(acme: Any, push: FakePushService, settings: Any, **kwargs: Any) -> Any:
    subscription = push.subscribe(settings.VAPID_PUBLIC_KEY)
    point = add_point(acme.members["bob"], "push", "Bob's laptop", position=1, **kwargs)
    point.config = subscription.as_json()
    point.save()
    return point, subscription


def test_a_push_is_signed_encrypted_and_carries_answer_actions(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    escalation = create_escalation(acme, priority="urgent")
    point, subscription = _point(acme, push, settings)

    delivery = delivery_sent(escalation["id"], point)

    (received,) = subscription.messages
    payload = received["payload"]
    assert delivery.provider_id.startswith(push.url + "/m/")
    assert payload["type"] == "escalation"
    assert payload["tag"] == escalation["id"]
    assert payload["title"] == "Refund $750 to order #1042"
    assert [a["action"] for a in payload["actions"]] == ["approve", "reject"]
    assert payload["answer_url"] == "http://127.0.0.1:8000/hooks/push/answer"
    assert payload["token"]
    assert received["urgency"] == "high"
    assert 60 <= received["ttl"] <= 24 * 3600


def test_a_resent_push_carries_the_same_topic_so_the_service_replaces_it(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    escalation = create_escalation(acme)
    point, subscription = _point(acme, push, settings)
    delivery = delivery_sent(escalation["id"], point)
    TRANSPORTS["push"]().send(delivery)  # what the sweep does after a worker died
    first, again = subscription.messages
    assert first["topic"] == again["topic"] == delivery.public_id


def test_a_question_has_no_answer_actions(acme: Any, push: FakePushService, settings: Any) -> None:
    escalation = create_escalation(acme, kind="question", title="Which plan?", action=None)
    point, subscription = _point(acme, push, settings)

    delivery_sent(escalation["id"], point)

    payload = subscription.messages[0]["payload"]
    assert "actions" not in payload and "token" not in payload
    assert payload["url"].endswith(f"/escalations/{escalation['id']}/")


def test_the_notification_is_replaced_by_the_outcome(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    escalation = create_escalation(acme)
    point, subscription = _point(acme, push, settings)
    delivery_sent(escalation["id"], point)
    acme.client_for("alice").post(
        f"/api/v1/escalations/{escalation['id']}/responses", {"outcome": "approve"}, format="json"
    )

    messages_update_after_decision(Escalation.objects.get(public_id=escalation["id"]).pk)

    replaced = subscription.messages[-1]
    assert replaced["payload"]["type"] == "decided"
    assert replaced["payload"]["tag"] == escalation["id"]
    assert replaced["payload"]["body"].startswith("Approved by alice@acme.test at ")
    assert replaced["urgency"] == "low"


def test_a_push_signed_with_another_key_is_refused_by_the_service(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    point, _subscription = _point(acme, push, settings)
    settings.VAPID_PUBLIC_KEY, settings.VAPID_PRIVATE_KEY = vapid_key_pair()

    with pytest.raises(TransportError) as failure:
        TRANSPORTS["push"]().send_test(point)

    assert "403" in failure.value.message
    assert not failure.value.permanent  # our keys are wrong, not the person's browser


def test_an_expired_subscription_is_a_permanent_error(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    point, subscription = _point(acme, push, settings)
    subscription.gone = True

    with pytest.raises(TransportError) as failure:
        TRANSPORTS["push"]().send_test(point)

    assert failure.value.permanent
    assert "410" in failure.value.message


def test_an_overloaded_push_service_is_retried(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    point, _subscription = _point(acme, push, settings)
    push.script.append((429, {"Retry-After": "11"}, b""))

    with pytest.raises(TransportError) as failure:
        TRANSPORTS["push"]().send_test(point)

    assert not failure.value.permanent
    assert failure.value.retry_after == 11.0


def test_a_private_push_endpoint_is_refused_in_production_mode(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    point, subscription = _point(acme, push, settings)
    settings.OUTBOUND_ALLOW_PRIVATE = False

    with pytest.raises(TransportError) as failure:
        TRANSPORTS["push"]().send_test(point)

    assert failure.value.permanent
    assert subscription.messages == []
    assert push.requests == []


def test_verification_code_arrives_as_a_push(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    point, subscription = _point(acme, push, settings, verified=False)

    TRANSPORTS["push"]().send_verification(point, "246810")

    assert subscription.messages[0]["payload"]["body"] == "Your code is 246810."


def test_vapid_keys_prints_a_usable_p256_pair() -> None:
    out = StringIO()

    call_command("vapid_keys", stdout=out)

    lines = dict(line.split("=", 1) for line in out.getvalue().splitlines())
    public = base64.urlsafe_b64decode(lines["VAPID_PUBLIC_KEY"] + "==")
    private = base64.urlsafe_b64decode(lines["VAPID_PRIVATE_KEY"] + "=")
    assert len(public) == 65 and public[0] == 4
    key = ec.derive_private_key(int.from_bytes(private, "big"), ec.SECP256R1())
    assert key.public_key().public_numbers().x.to_bytes(32, "big") == public[1:33]


def test_notify_this_browser_adds_the_subscription_and_verifies_it_with_a_pushed_code(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    page = client.get("/contact-points/").content.decode()
    assert f'data-vapid-key="{settings.VAPID_PUBLIC_KEY}"' in page
    assert '<option value="push"' not in page, "push has its own button, not an address field"

    subscription = push.subscribe(settings.VAPID_PUBLIC_KEY)
    page = client.post(
        "/contact-points/add-push",
        {"subscription": json.dumps(subscription.as_json()), "label": "Work laptop"},
        follow=True,
    )
    assert page.status_code == 200
    point = bob.contact_points.get(channel="push")
    assert point.address.startswith("Work laptop · 127.0.0.1 · ")
    assert point.config == subscription.as_json() and point.verified_at is None
    code = subscription.messages[0]["payload"]["body"].removeprefix("Your code is ")[:6]

    page = client.post(f"/contact-points/{point.public_id}/verify", {"code": code}, follow=True)
    assert b"is verified" in page.content
    point.refresh_from_db()
    assert point.is_usable


@pytest.mark.parametrize(
    ("subscription", "message"),
    [
        ("not json", b"PushSubscription JSON"),
        (json.dumps({"endpoint": "ftp://push.example/x", "keys": {}}), b"subscription.endpoint"),
        (json.dumps({"endpoint": "https://push.example/x", "keys": {}}), b"subscription.keys"),
    ],
)
def test_a_broken_subscription_is_refused_and_nothing_is_added(
    acme: Any, push: FakePushService, subscription: str, message: bytes
) -> None:
    bob = acme.members["bob"]
    page = signed_in(bob.user).post(
        "/contact-points/add-push", {"subscription": subscription}, follow=True
    )
    assert page.status_code == 200
    assert message in page.content
    assert not bob.contact_points.filter(channel="push").exists()


def test_the_service_worker_may_control_the_whole_console(client: Any) -> None:
    response = client.get("/static/console/sw.js")
    assert response.status_code == 200
    assert response["Service-Worker-Allowed"] == "/"

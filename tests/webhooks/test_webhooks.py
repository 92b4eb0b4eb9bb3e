"""Organization webhooks: an admin adds an endpoint in the console and gets the events it chose,
Standard Webhooks signed with the endpoint's own secret."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from audit.models import AuditEvent
from escalations.models import Escalation
from tests.conftest import Tenant, create_escalation
from tests.console.helpers import signed_in
from tests.notifications.fake_receiver import Receiver, running_receiver
from webhooks import services
from webhooks.models import WebhookEndpoint, WebhookMessage

SECRET = re.compile(rb'data-testid="new-webhook-secret">(whsec_[A-Za-z0-9+/=]+)<')


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(autouse=True)
def _fast_schedule_and_local_receivers(settings: Any) -> None:
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 0.05, 0.05]
    settings.OUTBOUND_ALLOW_PRIVATE = True


def add_webhook(tenant: Tenant, url: str, events: list[str]) -> tuple[WebhookEndpoint, str]:
    """Alice adds a webhook in the console; returns it and the secret the page showed once."""
    client = signed_in(tenant.members["alice"].user)
    page = client.post("/org/webhooks/", {"url": url, "events": events, "description": "Ops"})
    assert page.status_code == 200, page.content
    found = SECRET.search(page.content)
    assert found, "the new secret is shown"
    endpoint = WebhookEndpoint.objects.get(organization=tenant.organization, url=url)
    return endpoint, found.group(1).decode()


def decide(capture: Any, tenant: Tenant, escalation_id: str) -> None:
    with capture(execute=True):
        response = tenant.client_for("bob").post(
            f"/api/v1/escalations/{escalation_id}/responses", {"outcome": "approve"}, format="json"
        )
    assert response.status_code == 201


def test_an_admin_adds_a_webhook_and_receives_the_chosen_events_signed(
    acme, receiver, django_capture_on_commit_callbacks
):
    endpoint, secret = add_webhook(acme, receiver.url, ["escalation.created", "escalation.decided"])
    assert endpoint.events == ["escalation.created", "escalation.decided"]
    with django_capture_on_commit_callbacks(execute=True):
        escalation_id = create_escalation(acme)["id"]
    decide(django_capture_on_commit_callbacks, acme, escalation_id)

    created, decided = (request.verify(secret) for request in receiver.requests)
    assert (created["type"], created["data"]["status"]) == ("escalation.created", "pending")
    assert (decided["type"], decided["data"]["status"]) == ("escalation.decided", "approved")
    assert created["data"]["id"] == decided["data"]["id"] == escalation_id
    ids = {request.webhook_id for request in receiver.requests}
    assert len(ids) == 2  # one message per event
    assert AuditEvent.objects.filter(action="webhook_endpoint.created").count() == 1


def test_events_not_chosen_are_not_sent(acme, receiver, django_capture_on_commit_callbacks):
    add_webhook(acme, receiver.url, ["escalation.escalated"])
    with django_capture_on_commit_callbacks(execute=True):
        escalation_id = create_escalation(acme)["id"]
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    assert receiver.requests == []


def test_each_escalation_step_is_sent_once(acme, receiver, django_capture_on_commit_callbacks):
    _, secret = add_webhook(acme, receiver.url, ["escalation.escalated"])
    with django_capture_on_commit_callbacks(execute=True):
        escalation_id = create_escalation(acme)["id"]
    pk = Escalation.objects.get(public_id=escalation_id).pk
    for level in (2, 2, 3):  # an event handled twice for level 2 sends it once
        with django_capture_on_commit_callbacks(execute=True):
            services.on_escalation_event(pk, "escalated", {"level": level, "round": 0})
    assert [request.verify(secret)["type"] for request in receiver.requests] == [
        "escalation.escalated",
        "escalation.escalated",
    ]


def test_an_agent_callback_and_a_webhook_are_separate_messages_with_their_own_secrets(
    acme, receiver, django_capture_on_commit_callbacks
):
    _, webhook_secret = add_webhook(acme, receiver.url, ["escalation.decided"])
    agent_secret = services.agent_webhook_secret_rotate(
        agent=acme.organization.agents.get(), actor={"type": "system"}
    )
    with django_capture_on_commit_callbacks(execute=True):
        escalation_id = create_escalation(acme, callback_url=receiver.url + "/agent")["id"]
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    by_path = {request.path: request for request in receiver.requests}
    assert by_path["/hook/agent"].verify(agent_secret)["type"] == "escalation.decided"
    assert by_path["/hook"].verify(webhook_secret)["type"] == "escalation.decided"


def test_a_rotated_secret_is_shown_once_and_both_sign_for_a_day(
    acme, receiver, django_capture_on_commit_callbacks
):
    endpoint, old = add_webhook(acme, receiver.url, ["escalation.created"])
    client = signed_in(acme.members["alice"].user)
    page = client.post(f"/org/webhooks/{endpoint.public_id}/rotate/")
    new = SECRET.search(page.content).group(1).decode()
    assert new != old
    assert new.encode() not in client.get(f"/org/webhooks/{endpoint.public_id}/").content
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)
    [request] = receiver.requests
    assert request.verify(old) == request.verify(new)


def test_410_disables_the_webhook_until_an_admin_enables_it(
    acme, receiver, django_capture_on_commit_callbacks
):
    endpoint, _ = add_webhook(acme, receiver.url, ["escalation.created"])
    receiver.answer(410)
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)
    endpoint.refresh_from_db()
    assert endpoint.disabled_at is not None
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)  # a disabled endpoint is not subscribed to anything
    assert len(receiver.requests) == 1

    client = signed_in(acme.members["alice"].user)
    assert b"disabled" in client.get(f"/org/webhooks/{endpoint.public_id}/").content
    assert client.post(f"/org/webhooks/{endpoint.public_id}/enable/").status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)
    assert len(receiver.requests) == 2


def test_a_failed_message_is_replayed_from_the_console(
    acme, receiver, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_RETRY_SCHEDULE = [0]
    endpoint, secret = add_webhook(acme, receiver.url, ["escalation.created"])
    receiver.answer(500)
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)
    message = WebhookMessage.objects.get(webhook_endpoint=endpoint)
    assert message.status == WebhookMessage.Status.FAILED
    client = signed_in(acme.members["alice"].user)
    assert message.public_id.encode() in client.get(f"/org/webhooks/{endpoint.public_id}/").content
    with django_capture_on_commit_callbacks(execute=True):
        replayed = client.post(
            f"/org/webhooks/{endpoint.public_id}/messages/{message.public_id}/replay/"
        )
    assert replayed.status_code == 302
    message.refresh_from_db()
    assert message.status == WebhookMessage.Status.SUCCEEDED
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id
    second.verify(secret)


def test_a_bad_url_is_refused_by_the_form(acme):
    client = signed_in(acme.members["alice"].user)
    for url in ("not a url", "ftp://example.com/x", "javascript:alert(1)"):
        page = client.post("/org/webhooks/", {"url": url, "events": ["escalation.created"]})
        assert page.status_code == 200
        assert b"Enter an http(s) URL with a host." in page.content
    page = client.post("/org/webhooks/", {"url": "https://example.com/x", "events": []})
    assert b"This field is required." in page.content
    assert not WebhookEndpoint.objects.exists()


def test_an_admin_deletes_a_webhook(acme, receiver, django_capture_on_commit_callbacks):
    endpoint, _ = add_webhook(acme, receiver.url, ["escalation.created"])
    client = signed_in(acme.members["alice"].user)
    assert client.post(f"/org/webhooks/{endpoint.public_id}/delete/").status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)
    assert receiver.requests == []
    assert AuditEvent.objects.filter(action="webhook_endpoint.deleted").count() == 1


@pytest.mark.parametrize("person", ["bob", "vera"])
def test_operators_and_viewers_cannot_manage_webhooks(acme, receiver, person):
    endpoint, _ = add_webhook(acme, receiver.url, ["escalation.created"])
    client = signed_in(acme.members[person].user)
    base = f"/org/webhooks/{endpoint.public_id}/"
    assert client.get("/org/webhooks/").status_code == 403
    assert (
        client.post(
            "/org/webhooks/", {"url": "https://x.example/", "events": ["escalation.created"]}
        ).status_code
        == 403
    )
    for path in ("", "rotate/", "enable/", "delete/"):
        method = client.get if path == "" else client.post
        assert method(base + path).status_code == 403
    assert WebhookEndpoint.objects.count() == 1


def test_another_organization_gets_404_for_every_webhook_page(
    acme, globex, receiver, django_capture_on_commit_callbacks
):
    endpoint, secret = add_webhook(acme, receiver.url, ["escalation.created"])
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)
    message = WebhookMessage.objects.get()
    charlie = signed_in(globex.members["charlie"].user)
    base = f"/org/webhooks/{endpoint.public_id}/"
    assert charlie.get(base).status_code == 404
    for path in ("rotate/", "enable/", "delete/", f"messages/{message.public_id}/replay/"):
        assert charlie.post(base + path).status_code == 404
    assert receiver.url.encode() not in charlie.get("/org/webhooks/").content
    endpoint.refresh_from_db()
    assert endpoint.secret == secret
    # Globex events never go to Acme's webhook.
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(globex)
    assert len(receiver.requests) == 1

"""Agent callbacks: a decided escalation is POSTed to its ``callback_url``, Standard Webhooks
signed, retried on the schedule with the same ``webhook-id``, and every attempt is recorded.

The receiver is a real HTTP server on 127.0.0.1 that checks signatures with the
``standardwebhooks`` package's verifier. The schedule is shortened to fractions of a second; the
sweep (``webhook_messages_due``, beat's job in production) is called by the tests.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import standardwebhooks
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import SYSTEM_ACTOR
from tests.conftest import Tenant, create_escalation
from tests.console.helpers import signed_in
from tests.notifications.fake_receiver import Answer, Receiver, running_receiver
from webhooks import sending, services, tasks
from webhooks.models import AgentWebhookSecret, CallbackEndpoint, WebhookAttempt, WebhookMessage

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(autouse=True)
def _fast_schedule_and_local_receivers(settings: Any) -> None:
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 0.05, 0.05, 0.05]
    settings.OUTBOUND_ALLOW_PRIVATE = True  # the receiver is on 127.0.0.1 (embedded default)


def agent_secret(tenant: Tenant) -> str:
    agent = tenant.organization.agents.get()
    return services.agent_webhook_secret_rotate(agent=agent, actor=SYSTEM_ACTOR)


def escalate(capture: Any, tenant: Tenant, url: str) -> str:
    with capture(execute=True):
        return create_escalation(tenant, callback_url=url)["id"]


def decide(capture: Any, tenant: Tenant, escalation_id: str, outcome: str = "approve") -> None:
    with capture(execute=True):
        response = tenant.client_for("bob").post(
            f"/api/v1/escalations/{escalation_id}/responses",
            {"outcome": outcome, "comment": "Checked."},
            format="json",
        )
    assert response.status_code == 201, response.content


def message_for(escalation_id: str) -> WebhookMessage:
    return WebhookMessage.objects.get(escalation__public_id=escalation_id, kind="callback")


def sweep_until_settled(escalation_id: str, *, seconds: float = 3.0) -> WebhookMessage:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sending.webhook_messages_due()
        message = message_for(escalation_id)
        if message.status in (WebhookMessage.Status.SUCCEEDED, WebhookMessage.Status.FAILED):
            return message
        time.sleep(0.02)
    raise AssertionError(f"still {message.status} after {seconds} s")


# --- Signing ------------------------------------------------------------------------------------


def test_the_standard_webhooks_test_vector_signs_as_published():
    signature = sending.sign(
        secret=SPEC_SECRET, msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY
    )
    assert signature == SPEC_SIGNATURE


def test_the_reference_verifier_accepts_our_signature():
    now = int(time.time())
    body = b'{"type":"escalation.decided","data":{"id":"esc_1"}}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sending.sign(
            secret=SPEC_SECRET, msg_id="msg_1", timestamp=now, body=body
        ),
    }
    assert standardwebhooks.Webhook(SPEC_SECRET).verify(body, headers)["data"]["id"] == "esc_1"


def test_a_new_secret_is_whsec_and_32_random_bytes(acme):
    secret = agent_secret(acme)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert agent_secret(acme) != secret


# --- Delivery -----------------------------------------------------------------------------------


def test_a_decided_escalation_is_posted_signed_with_the_api_representation(
    acme, receiver, django_capture_on_commit_callbacks
):
    secret = agent_secret(acme)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    assert receiver.requests == []  # nothing while pending
    decide(django_capture_on_commit_callbacks, acme, escalation_id)

    [request] = receiver.requests
    payload = request.verify(secret)
    assert request.headers["content-type"] == "application/json"
    assert payload["type"] == "escalation.decided"
    api = acme.agent_client().get(f"/api/v1/escalations/{escalation_id}").json()
    assert payload["data"]["id"] == escalation_id
    assert payload["data"]["status"] == "approved"
    assert payload["data"]["decision"] == api["decision"]
    assert request.webhook_id == message_for(escalation_id).public_id
    message = message_for(escalation_id)
    assert message.status == WebhookMessage.Status.SUCCEEDED
    [attempt] = message.attempts.all()
    assert (attempt.status_code, attempt.response_body, attempt.error) == (200, "ok", "")
    assert AuditEvent.objects.filter(action="callback.delivered", target=message.public_id).exists()


def test_a_cancelled_or_rejected_escalation_is_called_back_too(
    acme, receiver, django_capture_on_commit_callbacks
):
    rejected = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, rejected, outcome="reject")
    cancelled = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        acme.agent_client().post(f"/api/v1/escalations/{cancelled}/cancel")
    statuses = [
        request.verify(agent_secret_of(acme))["data"]["status"] for request in receiver.requests
    ]
    assert statuses == ["rejected", "cancelled"]


def agent_secret_of(tenant: Tenant) -> str:
    return AgentWebhookSecret.objects.get(agent__organization=tenant.organization).secret


def test_an_escalation_without_callback_url_sends_nothing(
    acme, receiver, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        escalation_id = create_escalation(acme)["id"]
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    assert not WebhookMessage.objects.exists()
    assert receiver.connections == 0


def test_a_repeated_hook_queues_the_callback_once(
    acme, receiver, django_capture_on_commit_callbacks
):
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    message = message_for(escalation_id)
    services.on_escalation_event(message.escalation_id, "decided", {"generation": 0})
    assert WebhookMessage.objects.filter(kind="callback").count() == 1
    assert len(receiver.requests) == 1


def test_500_then_200_is_retried_with_the_same_webhook_id(
    acme, receiver, django_capture_on_commit_callbacks
):
    secret = agent_secret(acme)
    receiver.answer(Answer(500, body=b"database down"), 200)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    assert message_for(escalation_id).status == WebhookMessage.Status.PENDING

    message = sweep_until_settled(escalation_id)
    assert message.status == WebhookMessage.Status.SUCCEEDED
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id == message.public_id
    assert first.body == second.body
    assert first.verify(secret) == second.verify(secret)
    attempts = list(message.attempts.values_list("number", "status_code", "response_body"))
    assert attempts == [(1, 500, "database down"), (2, 200, "ok")]
    assert message.attempts.first().error == "The receiver answered 500."


def test_after_the_last_scheduled_attempt_the_delivery_fails(
    acme, receiver, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 0.01, 0.01]
    receiver.answer(500, 502, 503, 200)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    message = sweep_until_settled(escalation_id)
    assert message.status == WebhookMessage.Status.FAILED
    assert message.attempt_count == 3 == len(receiver.requests)
    assert message.last_error == "The receiver answered 503."
    assert AuditEvent.objects.filter(action="callback.failed", target=message.public_id).exists()


def test_the_production_schedule_is_the_designed_one():
    from django.conf import settings as django_settings

    from awaithuman import settings as configured

    assert configured.WEBHOOK_RETRY_SCHEDULE == [
        0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400,
    ]  # fmt: skip
    assert django_settings.WEBHOOK_TIMEOUT_SECONDS == 15


def test_each_retry_waits_its_scheduled_delay_with_jitter(
    acme, receiver, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 300, 1800]
    receiver.answer(500)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    message = message_for(escalation_id)
    wait = (message.next_attempt_at - message.attempts.get().attempted_at).total_seconds()
    assert 270 <= wait <= 331
    assert sending.webhook_messages_due() == 0  # not due yet


def test_410_disables_the_callback_url_and_stops(
    acme, receiver, django_capture_on_commit_callbacks
):
    receiver.answer(410)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    message = message_for(escalation_id)
    assert message.status == WebhookMessage.Status.FAILED
    endpoint = CallbackEndpoint.objects.get(url=receiver.url)
    assert endpoint.disabled_at is not None
    time.sleep(0.1)
    assert sending.webhook_messages_due() == 0

    # Later callbacks to the same URL are not attempted while it is disabled.
    later = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, later)
    assert len(receiver.requests) == 1
    assert message_for(later).status == WebhookMessage.Status.FAILED
    assert "disabled" in message_for(later).last_error
    assert AuditEvent.objects.filter(action="callback.endpoint_disabled").count() == 1


def test_retry_after_is_honoured(acme, receiver, django_capture_on_commit_callbacks):
    receiver.answer(Answer(503, headers={"Retry-After": "1"}), 200)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    message = message_for(escalation_id)
    first = message.attempts.get()
    assert (message.next_attempt_at - first.attempted_at).total_seconds() >= 1
    time.sleep(0.3)  # past the 0.05 s the schedule alone would wait
    assert sending.webhook_messages_due() == 0
    assert len(receiver.requests) == 1
    message = sweep_until_settled(escalation_id)
    assert message.status == WebhookMessage.Status.SUCCEEDED
    first_at, second_at = message.attempts.values_list("attempted_at", flat=True)
    assert second_at - first_at >= timedelta(seconds=1)


def test_a_redirect_is_not_followed(acme, django_capture_on_commit_callbacks):
    with running_receiver() as redirecting, running_receiver() as target:
        redirecting.answer(Answer(302, headers={"Location": target.url}))
        escalation_id = escalate(django_capture_on_commit_callbacks, acme, redirecting.url)
        decide(django_capture_on_commit_callbacks, acme, escalation_id)
        time.sleep(0.1)
        assert target.connections == 0
    attempt = message_for(escalation_id).attempts.get()
    assert attempt.status_code == 302
    assert attempt.error == f"Redirect (302) to {target.url} not followed."
    assert message_for(escalation_id).status == WebhookMessage.Status.PENDING  # retried later


def test_a_slow_receiver_times_out_and_is_retried(
    acme, receiver, django_capture_on_commit_callbacks, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.answer(Answer(200, delay=1.0), 200)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    first = message_for(escalation_id).attempts.get()
    assert first.status_code is None
    assert first.error == "No answer within 0.3 s."
    assert sweep_until_settled(escalation_id).status == WebhookMessage.Status.SUCCEEDED


def test_a_claim_whose_worker_died_is_taken_again_with_the_same_webhook_id(
    acme, receiver, django_capture_on_commit_callbacks, monkeypatch
):
    # The first send is "lost": claimed, queued, and never run (a worker killed mid-task).
    monkeypatch.setattr(tasks.webhook_deliver, "delay", lambda *args: None)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    message = message_for(escalation_id)
    assert message.status == WebhookMessage.Status.SENDING
    assert sending.webhook_messages_due() == 0  # the claim still holds
    monkeypatch.undo()
    WebhookMessage.objects.filter(pk=message.pk).update(claimed_until=timezone.now())
    assert sweep_until_settled(escalation_id).status == WebhookMessage.Status.SUCCEEDED
    assert [request.webhook_id for request in receiver.requests] == [message.public_id]


def test_a_stale_claim_sends_nothing(acme, receiver, django_capture_on_commit_callbacks):
    receiver.answer(500)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    sending.webhook_message_attempt(message_id=message_for(escalation_id).pk, claim="stale")
    assert len(receiver.requests) == 1


# --- Rotation -----------------------------------------------------------------------------------


def test_after_a_rotation_both_secrets_sign_for_24_hours(
    acme, receiver, django_capture_on_commit_callbacks
):
    old = agent_secret(acme)
    new = agent_secret(acme)
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert request.verify(old) == request.verify(new)

    AgentWebhookSecret.objects.update(rotated_at=timezone.now() - timedelta(hours=24))
    later = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, later)
    latest = receiver.requests[-1]
    assert len(latest.headers["webhook-signature"].split(" ")) == 1
    latest.verify(new)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        latest.verify(old)


# --- Replay through the API ---------------------------------------------------------------------


def failed_callback(capture: Any, tenant: Tenant, receiver: Receiver) -> str:
    receiver.answer(410)
    escalation_id = escalate(capture, tenant, receiver.url)
    decide(capture, tenant, escalation_id)
    assert message_for(escalation_id).status == WebhookMessage.Status.FAILED
    return escalation_id


def test_the_api_lists_a_callbacks_attempts(acme, receiver, django_capture_on_commit_callbacks):
    receiver.answer(Answer(500, body=b"boom"))
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    for key in (acme.agent_key, acme.personal_keys["bob"]):
        from tests.conftest import api_client

        response = api_client(key).get(f"/api/v1/escalations/{escalation_id}/callbacks")
        assert response.status_code == 200
        [callback] = response.json()["results"]
        assert callback["id"] == message_for(escalation_id).public_id
        assert callback["type"] == "escalation.decided"
        assert callback["status"] == "pending"
        assert callback["attempts"][0]["status_code"] == 500
        assert callback["attempts"][0]["response_body"] == "boom"


def test_a_failed_callback_is_replayed_through_the_api_with_the_same_webhook_id(
    acme, receiver, django_capture_on_commit_callbacks
):
    secret = agent_secret(acme)
    escalation_id = failed_callback(django_capture_on_commit_callbacks, acme, receiver)
    with django_capture_on_commit_callbacks(execute=True):
        response = acme.agent_client().post(f"/api/v1/escalations/{escalation_id}/callbacks/replay")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "pending"  # sent once the replay is committed
    listed = acme.agent_client().get(f"/api/v1/escalations/{escalation_id}/callbacks").json()
    assert listed["results"][0]["status"] == "succeeded"
    first, replayed = receiver.requests
    assert first.webhook_id == replayed.webhook_id == response.json()["id"]
    replayed.verify(secret)
    assert CallbackEndpoint.objects.get().disabled_at is None  # re-enabled by the replay
    assert AuditEvent.objects.filter(action="callback.replayed").count() == 1


def test_a_replay_that_fails_again_is_not_retried(
    acme, receiver, django_capture_on_commit_callbacks
):
    escalation_id = failed_callback(django_capture_on_commit_callbacks, acme, receiver)
    receiver.answer(500)
    with django_capture_on_commit_callbacks(execute=True):
        acme.agent_client().post(f"/api/v1/escalations/{escalation_id}/callbacks/replay")
    message = message_for(escalation_id)
    assert message.status == WebhookMessage.Status.FAILED
    time.sleep(0.1)
    assert sending.webhook_messages_due() == 0
    assert message.attempts.count() == 2


def test_only_a_failed_callback_can_be_replayed(acme, receiver, django_capture_on_commit_callbacks):
    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    replay = f"/api/v1/escalations/{escalation_id}/callbacks/replay"
    response = acme.agent_client().post(replay)  # pending: no callback yet
    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    assert acme.agent_client().post(replay).status_code == 409  # delivered
    assert len(receiver.requests) == 1


def test_a_personal_key_cannot_replay(acme, receiver, django_capture_on_commit_callbacks):
    escalation_id = failed_callback(django_capture_on_commit_callbacks, acme, receiver)
    response = acme.client_for("alice").post(
        f"/api/v1/escalations/{escalation_id}/callbacks/replay"
    )
    assert response.status_code == 403
    assert message_for(escalation_id).status == WebhookMessage.Status.FAILED


def test_another_agent_of_the_organization_cannot_replay(
    acme, receiver, django_capture_on_commit_callbacks
):
    from tenants.services import agent_create, api_key_create

    escalation_id = failed_callback(django_capture_on_commit_callbacks, acme, receiver)
    other = agent_create(organization=acme.organization, name="other-bot", actor=SYSTEM_ACTOR)
    key = api_key_create(organization=acme.organization, agent=other, actor=SYSTEM_ACTOR)
    from tests.conftest import api_client

    response = api_client(key.plaintext).post(
        f"/api/v1/escalations/{escalation_id}/callbacks/replay"
    )
    assert response.status_code == 403


# --- The console --------------------------------------------------------------------------------


def callbacks_page(tenant: Tenant) -> str:
    return f"/org/agents/{tenant.organization.agents.get().public_id}/callbacks/"


def test_the_agent_page_links_to_its_callbacks(acme):
    client = signed_in(acme.members["vera"].user)
    agent = acme.organization.agents.get()
    page = client.get(f"/org/agents/{agent.public_id}/")
    assert callbacks_page(acme).encode() in page.content


def test_an_admin_creates_the_secret_in_the_console_and_sees_it_once(
    acme, receiver, django_capture_on_commit_callbacks
):
    client = signed_in(acme.members["alice"].user)
    page = client.post(callbacks_page(acme) + "secret/")
    assert page.status_code == 200
    secret = AgentWebhookSecret.objects.get().secret
    assert secret.encode() in page.content
    assert secret.encode() not in client.get(callbacks_page(acme)).content

    escalation_id = escalate(django_capture_on_commit_callbacks, acme, receiver.url)
    decide(django_capture_on_commit_callbacks, acme, escalation_id)
    receiver.requests[0].verify(secret)


def test_the_console_lists_deliveries_and_replays_a_failed_one(
    acme, receiver, django_capture_on_commit_callbacks
):
    escalation_id = failed_callback(django_capture_on_commit_callbacks, acme, receiver)
    message = message_for(escalation_id)
    client = signed_in(acme.members["alice"].user)
    page = client.get(callbacks_page(acme))
    assert message.public_id.encode() in page.content
    assert b">Replay</button>" in page.content
    assert b"Disabled callback URLs" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        replayed = client.post(callbacks_page(acme) + f"{message.public_id}/replay/")
    assert replayed.status_code == 302
    assert message_for(escalation_id).status == WebhookMessage.Status.SUCCEEDED
    assert len(receiver.requests) == 2


def test_a_viewer_sees_the_deliveries_but_cannot_replay_or_rotate(
    acme, receiver, django_capture_on_commit_callbacks
):
    escalation_id = failed_callback(django_capture_on_commit_callbacks, acme, receiver)
    message = message_for(escalation_id)
    client = signed_in(acme.members["vera"].user)
    page = client.get(callbacks_page(acme))
    assert page.status_code == 200
    assert message.public_id.encode() in page.content
    assert b">Replay</button>" not in page.content
    assert client.post(callbacks_page(acme) + f"{message.public_id}/replay/").status_code == 403
    assert client.post(callbacks_page(acme) + "secret/").status_code == 403
    assert message_for(escalation_id).status == WebhookMessage.Status.FAILED
    assert not AgentWebhookSecret.objects.filter(rotated_at__isnull=False).exists()


def test_another_organization_gets_404_for_the_callbacks_page_and_replay(
    acme, globex, receiver, django_capture_on_commit_callbacks
):
    escalation_id = failed_callback(django_capture_on_commit_callbacks, acme, receiver)
    message = message_for(escalation_id)
    charlie = signed_in(globex.members["charlie"].user)
    assert charlie.get(callbacks_page(acme)).status_code == 404
    assert charlie.post(callbacks_page(acme) + "secret/").status_code == 404
    assert charlie.post(callbacks_page(acme) + f"{message.public_id}/replay/").status_code == 404
    # Nor through their own agent's page.
    own = callbacks_page(globex) + f"{message.public_id}/replay/"
    assert charlie.post(own).status_code == 404
    assert message_for(escalation_id).status == WebhookMessage.Status.FAILED
    assert WebhookAttempt.objects.count() == 1

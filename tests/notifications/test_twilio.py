"""SMS and WhatsApp through Twilio's Messages API, against a fake Twilio on 127.0.0.1, and
Twilio's status callbacks: a message lost after Twilio accepted it falls through to the person's
next contact point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core import mail
from django.test import Client
from twilio.request_validator import RequestValidator

from audit.models import AuditEvent
from escalations.models import Escalation
from notifications.contact_points import preference_get
from notifications.models import ChannelAnswerCode, Delivery
from notifications.transports import TRANSPORTS, TransportError
from tests.conftest import create_escalation
from tests.console.helpers import signed_in

from .conftest import add_point, deliveries, new_escalation
from .fakes import FakeTwilio, delivery_sent, twilio_configured

BOB_PHONE = "+15551230001"


@pytest.fixture
def twilio(settings: Any) -> Iterator[FakeTwilio]:
    with twilio_configured(settings) as fake:
        yield fake


def test_an_sms_carries_the_persons_code_and_how_to_answer(acme: Any, twilio: FakeTwilio) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "sms", "+15551230001", position=1)

    delivery = delivery_sent(escalation["id"], point)

    code = ChannelAnswerCode.objects.get(membership=acme.members["bob"]).code
    (message,) = twilio.messages
    assert delivery.provider_id == message["sid"]
    assert message["To"] == "+15551230001"
    assert message["From"] == twilio.from_number
    assert "Refund $750 to order #1042" in message["Body"]
    assert "issue_refund(order=1042, amount=750)" in message["Body"]
    assert f"Reply YES {code} to approve or NO {code} <reason> to reject." in message["Body"]
    assert f"/escalations/{escalation['id']}/" in message["Body"]


def test_every_message_of_one_escalation_to_one_person_has_the_same_code(
    acme: Any, twilio: FakeTwilio
) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "sms", "+15551230001", position=1)

    delivery_sent(escalation["id"], point)
    other = create_escalation(acme, title="Delete customer 7")
    delivery_sent(other["id"], point)
    delivery_sent(escalation["id"], point)  # a reminder

    codes = [message["Body"].split("Reply YES ")[1][:4] for message in twilio.messages]
    assert codes[0] == codes[2]
    assert codes[0] != codes[1]  # two open escalations never share a code


def test_a_question_sends_the_console_link_instead_of_a_code(acme: Any, twilio: FakeTwilio) -> None:
    escalation = create_escalation(acme, kind="question", title="Which plan?", action=None)
    point = add_point(acme.members["bob"], "sms", "+15551230001", position=1)

    delivery_sent(escalation["id"], point)

    body = twilio.messages[0]["Body"]
    assert "YES" not in body
    assert f"Answer in the console: http://127.0.0.1:8000/escalations/{escalation['id']}/" in body


def test_whatsapp_goes_from_the_whatsapp_sender(acme: Any, twilio: FakeTwilio) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "whatsapp", "+15551230002", position=1)

    delivery_sent(escalation["id"], point)

    (message,) = twilio.messages
    assert message["To"] == "whatsapp:+15551230002"
    assert message["From"] == f"whatsapp:{twilio.whatsapp_from}"
    assert "Reply YES" in message["Body"]


def test_whatsapp_quick_reply_template_gets_the_code_as_a_variable(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    settings.TWILIO_WHATSAPP_CONTENT_SID = "HX" + "a" * 32
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "whatsapp", "+15551230002", position=1)

    delivery_sent(escalation["id"], point)

    (message,) = twilio.messages
    assert message["ContentSid"] == settings.TWILIO_WHATSAPP_CONTENT_SID
    assert "Body" not in message
    variables = json.loads(message["ContentVariables"])
    assert variables["2"] == ChannelAnswerCode.objects.get().code
    assert variables["1"].startswith("Refund $750")


def test_an_invalid_number_is_a_permanent_error(acme: Any, twilio: FakeTwilio) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "sms", "+1555", position=1)

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert failure.value.permanent
    assert "21211" in failure.value.message
    assert twilio.messages == []


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(429, {"Retry-After": "7"}, 7.0), (503, {}, None), (500, {"Retry-After": "2"}, 2.0)],
)
def test_rate_limits_and_server_errors_are_retried(
    acme: Any,
    twilio: FakeTwilio,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "sms", "+15551230001", position=1)
    body = json.dumps({"code": 20429, "message": "Too Many Requests", "status": status})
    twilio.script.append((status, {"Content-Type": "application/json", **headers}, body.encode()))

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert not failure.value.permanent
    assert failure.value.retry_after == retry_after


def test_wrong_credentials_are_not_blamed_on_the_number(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    settings.TWILIO_AUTH_TOKEN = "not-the-token"
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "sms", "+15551230001", position=1)

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert not failure.value.permanent
    assert "401" in failure.value.message


def test_an_unreachable_twilio_is_a_transient_error(acme: Any, settings: Any) -> None:
    with twilio_configured(settings):
        pass  # the server is gone: connections are refused
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "sms", "+15551230001", position=1)

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert not failure.value.permanent


def test_verification_code_and_test_message_are_texted(acme: Any, twilio: FakeTwilio) -> None:
    point = add_point(acme.members["bob"], "sms", "+15551230001", position=1, verified=False)
    transport = TRANSPORTS["sms"]()

    assert transport.begin_verification(point) is None  # the code flow
    transport.send_verification(point, "123456")
    sid = transport.send_test(point)

    first, second = twilio.messages
    assert "verification code is 123456" in first["Body"]
    assert "test message" in second["Body"]
    assert sid == second["sid"]


# --- Status callbacks -----------------------------------------------------------------------


def test_every_message_asks_twilio_for_status_callbacks(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    escalation = create_escalation(acme)
    sms = add_point(acme.members["bob"], "sms", BOB_PHONE, position=1)
    whatsapp = add_point(acme.members["bob"], "whatsapp", BOB_PHONE, position=2)

    delivery_sent(escalation["id"], sms)
    delivery_sent(escalation["id"], whatsapp)
    TRANSPORTS["sms"]().send_test(sms)

    callback = f"{settings.AWAITHUMAN_BASE_URL}/hooks/twilio/status"
    assert [message["StatusCallback"] for message in twilio.messages] == [callback] * 3


@pytest.fixture
def bob_texted_first(acme: Any, twilio: FakeTwilio) -> Any:
    """Bob is reached by SMS first, then by his account e-mail; alice has no contact points."""
    add_point(acme.members["bob"], "sms", BOB_PHONE, position=0)
    preference_get(acme.members["alice"]).membership.contact_points.all().delete()
    return acme.members["bob"]


def _status_callback(
    settings: Any, sid: str, status: str, error_code: str = "", *, signature: str | None = None
) -> Any:
    """POST what Twilio posts to a message's StatusCallback, signed as Twilio signs it."""
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": settings.TWILIO_ACCOUNT_SID,
        "From": settings.TWILIO_FROM_NUMBER,
        "To": BOB_PHONE,
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        params["ErrorCode"] = error_code
    path = "/hooks/twilio/status"
    if signature is None:
        signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(
            settings.AWAITHUMAN_BASE_URL + path, params
        )
    return Client().post(
        path,
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


def _sent_sms(capture: Any, acme: Any) -> tuple[dict[str, Any], Delivery]:
    escalation = new_escalation(capture, acme)
    (sms,) = deliveries(escalation["id"])
    assert (sms.channel, sms.status) == ("sms", "sent")
    return escalation, sms


def _audited(escalation: dict[str, Any], action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target=escalation["id"], action=action).order_by("seq"))


def test_an_undelivered_sms_marks_the_number_failing_and_falls_through_to_email(
    acme: Any, bob_texted_first: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation, sms = _sent_sms(django_capture_on_commit_callbacks, acme)

    with django_capture_on_commit_callbacks(execute=True):
        response = _status_callback(settings, sms.provider_id, "undelivered", "30005")

    assert response.status_code == 204
    sms, fallback = deliveries(escalation["id"])
    assert (sms.status, sms.last_error) == ("failed", "Twilio 30005: Unknown destination handset")
    assert (fallback.channel, fallback.status, fallback.fallback_of_id) == ("email", "sent", sms.pk)
    assert [message.to for message in mail.outbox] == [["bob@acme.test"]]
    sms.contact_point.refresh_from_db()
    assert sms.contact_point.failing_since is not None
    assert "30005" in sms.contact_point.last_error
    (failed,) = _audited(escalation, "delivery.failed")
    assert failed.data["delivery"] == sms.public_id
    assert failed.data["error"] == "Twilio 30005: Unknown destination handset"
    assert failed.data["permanent"] is True
    assert failed.data["reported_by"] == "provider"
    queued = _audited(escalation, "delivery.queued")
    assert queued[-1].data["fallback_of"] == sms.public_id


def test_a_repeated_status_callback_changes_nothing(
    acme: Any, bob_texted_first: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation, sms = _sent_sms(django_capture_on_commit_callbacks, acme)
    with django_capture_on_commit_callbacks(execute=True):
        _status_callback(settings, sms.provider_id, "undelivered", "30005")
    events = AuditEvent.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        response = _status_callback(settings, sms.provider_id, "undelivered", "30005")
        late = _status_callback(settings, sms.provider_id, "failed", "30006")

    assert (response.status_code, late.status_code) == (204, 204)
    assert AuditEvent.objects.count() == events
    assert len(deliveries(escalation["id"])) == 2
    assert len(mail.outbox) == 1


def test_outside_the_whatsapp_window_falls_through_but_keeps_the_number(
    acme: Any, twilio: FakeTwilio, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    add_point(acme.members["bob"], "whatsapp", BOB_PHONE, position=0)
    preference_get(acme.members["alice"]).membership.contact_points.all().delete()
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    (whatsapp,) = deliveries(escalation["id"])

    with django_capture_on_commit_callbacks(execute=True):
        response = _status_callback(settings, whatsapp.provider_id, "undelivered", "63016")

    assert response.status_code == 204
    whatsapp, fallback = deliveries(escalation["id"])
    assert whatsapp.status == "failed"
    assert whatsapp.last_error.startswith("Twilio 63016: Outside the allowed window")
    assert (fallback.channel, fallback.status) == ("email", "sent")
    assert [message.to for message in mail.outbox] == [["bob@acme.test"]]
    whatsapp.contact_point.refresh_from_db()
    assert whatsapp.contact_point.is_usable  # the next message may well be inside the window
    (failed,) = _audited(escalation, "delivery.failed")
    assert failed.data["permanent"] is False


def test_a_status_callback_with_a_bad_signature_is_refused(
    acme: Any, bob_texted_first: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation, sms = _sent_sms(django_capture_on_commit_callbacks, acme)
    events = AuditEvent.objects.count()
    forged = RequestValidator("not-the-auth-token").compute_signature(
        settings.AWAITHUMAN_BASE_URL + "/hooks/twilio/status", {"MessageSid": sms.provider_id}
    )

    with django_capture_on_commit_callbacks(execute=True):
        bad = _status_callback(settings, sms.provider_id, "undelivered", "30005", signature=forged)
        missing = _status_callback(settings, sms.provider_id, "failed", "30005", signature="")

    assert (bad.status_code, missing.status_code) == (403, 403)
    (sms,) = deliveries(escalation["id"])
    assert sms.status == "sent"
    assert sms.contact_point.is_usable
    assert AuditEvent.objects.count() == events
    assert mail.outbox == []


def test_a_status_callback_for_a_message_we_do_not_know_is_acknowledged(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    events = AuditEvent.objects.count()

    for status in ("undelivered", "delivered"):
        response = _status_callback(settings, "SM" + "9" * 32, status, "30005")
        assert response.status_code == 204

    assert AuditEvent.objects.count() == events
    assert not Delivery.objects.exists()


def test_queued_and_sent_statuses_change_nothing(
    acme: Any, bob_texted_first: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation, sms = _sent_sms(django_capture_on_commit_callbacks, acme)
    events = AuditEvent.objects.count()

    for status in ("queued", "sending", "sent"):
        assert _status_callback(settings, sms.provider_id, status).status_code == 204

    assert deliveries(escalation["id"])[0].status == "sent"
    assert AuditEvent.objects.count() == events


def test_a_message_lost_after_the_decision_fails_but_notifies_nobody_else(
    acme: Any, bob_texted_first: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation, sms = _sent_sms(django_capture_on_commit_callbacks, acme)
    response = acme.client_for("alice").post(
        f"/api/v1/escalations/{escalation['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert response.status_code == 201, response.content
    sent_before = len(mail.outbox)

    with django_capture_on_commit_callbacks(execute=True):
        response = _status_callback(settings, sms.provider_id, "undelivered", "30005")

    assert response.status_code == 204
    (sms,) = deliveries(escalation["id"])
    assert sms.status == "failed"
    assert len(mail.outbox) == sent_before
    assert _audited(escalation, "delivery.failed")[0].data["reported_by"] == "provider"


def test_a_message_lost_after_its_level_passed_falls_through_nowhere(
    acme: Any, bob_texted_first: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation, sms = _sent_sms(django_capture_on_commit_callbacks, acme)
    # The next level's own fan-out notifies bob there; the lost level-1 message is not redone.
    Escalation.objects.filter(public_id=escalation["id"]).update(current_level=2)

    with django_capture_on_commit_callbacks(execute=True):
        _status_callback(settings, sms.provider_id, "failed", "30006")

    (sms,) = deliveries(escalation["id"])
    assert sms.status == "failed"
    assert mail.outbox == []


def test_delivered_and_read_are_recorded_once_each(
    acme: Any, bob_texted_first: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation, sms = _sent_sms(django_capture_on_commit_callbacks, acme)

    for status in ("sent", "delivered", "delivered", "read", "read"):
        assert _status_callback(settings, sms.provider_id, status).status_code == 204

    (delivered,) = _audited(escalation, "delivery.delivered")
    (read,) = _audited(escalation, "delivery.read")
    assert delivered.data["delivery"] == read.data["delivery"] == sms.public_id
    assert delivered.data["channel"] == "sms"
    assert delivered.data["email"] == "bob@acme.test"
    assert delivered.data["reported_by"] == "provider"
    assert deliveries(escalation["id"])[0].status == "sent"
    page = signed_in(acme.members["alice"].user).get(f"/escalations/{escalation['id']}/")
    timeline = page.content.decode()
    assert "bob@acme.test received it by sms" in timeline
    assert "bob@acme.test read it on sms" in timeline


def test_status_callbacks_are_not_found_while_twilio_is_not_configured(
    settings: Any, db: Any
) -> None:
    settings.TWILIO_AUTH_TOKEN = ""

    assert Client().post("/hooks/twilio/status", {"MessageStatus": "failed"}).status_code == 404

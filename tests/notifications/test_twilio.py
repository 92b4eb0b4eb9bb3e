"""SMS and WhatsApp through Twilio's Messages API, against a fake Twilio on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from notifications.models import ChannelAnswerCode
from notifications.transports import TRANSPORTS, TransportError
from tests.conftest import create_escalation

from .conftest import add_point
from .fakes import FakeTwilio, delivery_sent, twilio_configured


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

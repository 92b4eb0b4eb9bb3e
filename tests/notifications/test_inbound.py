"""Answers from the channel: inbound webhooks authenticated the providers' way (Twilio's
RequestValidator, Telegram's secret token, Slack's v0 HMAC, the push token), deciding through
``response_submit`` — late answers and viewers refused politely in the channel."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from twilio.request_validator import RequestValidator

from escalations.models import Escalation
from notifications.models import ChannelAnswerCode, ContactPoint
from notifications.transports import TRANSPORTS
from tests.conftest import create_escalation

from .conftest import add_point
from .fakes import (
    FakePushService,
    FakeSlack,
    FakeTelegram,
    FakeTwilio,
    delivery_sent,
    push_configured,
    slack_configured,
    telegram_configured,
    twilio_configured,
)

BOB_PHONE = "+15551230001"
VERA_PHONE = "+15551230009"
BOB_CHAT = "700100200"
BOB_SLACK = "U0BOB1234"
VERA_SLACK = "U0VERA999"


@pytest.fixture
def twilio(settings: Any) -> Iterator[FakeTwilio]:
    with twilio_configured(settings) as fake:
        yield fake


@pytest.fixture
def telegram(settings: Any) -> Iterator[FakeTelegram]:
    with telegram_configured(settings) as fake:
        fake.chats.add(BOB_CHAT)
        yield fake


@pytest.fixture
def slack(settings: Any) -> Iterator[FakeSlack]:
    with slack_configured(settings) as fake:
        fake.users.update({BOB_SLACK, VERA_SLACK})
        yield fake


@pytest.fixture
def push(settings: Any) -> Iterator[FakePushService]:
    with push_configured(settings) as fake:
        yield fake


def _status(escalation: dict[str, Any]) -> Escalation:
    return Escalation.objects.get(public_id=escalation["id"])


def _approve_in_console_as_ana(acme: Any, escalation: dict[str, Any]) -> None:
    acme.members["alice"].user.first_name = "Ana"
    acme.members["alice"].user.save()
    response = acme.client_for("alice").post(
        f"/api/v1/escalations/{escalation['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert response.status_code == 201, response.content


# --- Twilio ---------------------------------------------------------------------------------


def _twilio_post(
    settings: Any, path: str, params: dict[str, str], *, signature: str | None = None
) -> Any:
    url = settings.AWAITHUMAN_BASE_URL + path
    if signature is None:
        signature = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(url, params)
    return Client().post(
        path,
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


def _sms(settings: Any, sender: str, body: str, **extra: str) -> Any:
    params = {
        "MessageSid": "SM" + "1" * 32,
        "AccountSid": settings.TWILIO_ACCOUNT_SID,
        "From": sender,
        "To": settings.TWILIO_FROM_NUMBER,
        "Body": body,
        **extra,
    }
    return _twilio_post(settings, "/hooks/twilio/sms", params)


def _texted(acme: Any, person: str, phone: str, escalation: dict[str, Any]) -> str:
    point = add_point(acme.members[person], "sms", phone, position=1)
    delivery_sent(escalation["id"], point)
    return ChannelAnswerCode.objects.get(membership=acme.members[person]).code


def _twiml_message(response: Any) -> str:
    match = re.search(r"<Message>(.*)</Message>", response.content.decode(), re.DOTALL)
    return html.unescape(match[1]) if match else ""


def test_yes_and_the_code_by_sms_approves(
    acme: Any, twilio: FakeTwilio, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = create_escalation(acme)
    code = _texted(acme, "bob", BOB_PHONE, escalation)

    with django_capture_on_commit_callbacks(execute=True):
        response = _sms(settings, BOB_PHONE, f"yes {code}")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert _twiml_message(response).startswith("Done: approved by bob@acme.test at ")
    row = _status(escalation)
    assert row.status == "approved"
    assert row.decision_channel == "sms"
    assert row.responses.get().channel == "sms"


def test_no_with_a_reason_by_sms_rejects_with_that_reason(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    escalation = create_escalation(acme)
    code = _texted(acme, "bob", BOB_PHONE, escalation)

    _sms(settings, BOB_PHONE, f"NO {code} too risky")

    row = _status(escalation)
    assert row.status == "rejected"
    assert row.decision_comment == "too risky"


def test_a_late_sms_answer_is_told_who_decided_first(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    escalation = create_escalation(acme)
    code = _texted(acme, "bob", BOB_PHONE, escalation)
    _approve_in_console_as_ana(acme, escalation)

    response = _sms(settings, BOB_PHONE, f"NO {code}")

    assert re.fullmatch(r"Already approved by Ana at \d\d:\d\d UTC\.", _twiml_message(response)), (
        response.content
    )
    assert _status(escalation).responses.count() == 1


def test_a_viewers_sms_answer_is_refused(acme: Any, twilio: FakeTwilio, settings: Any) -> None:
    escalation = create_escalation(acme)
    code = _texted(acme, "vera", VERA_PHONE, escalation)

    response = _sms(settings, VERA_PHONE, f"YES {code}")

    assert _twiml_message(response) == "Viewers cannot answer escalations."
    assert _status(escalation).status == "pending"


def test_an_sms_with_a_bad_signature_is_refused(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    escalation = create_escalation(acme)
    code = _texted(acme, "bob", BOB_PHONE, escalation)
    params = {"From": BOB_PHONE, "To": settings.TWILIO_FROM_NUMBER, "Body": f"YES {code}"}
    # Signed for another URL, then signed with another token, then not signed at all.
    other_url = RequestValidator(settings.TWILIO_AUTH_TOKEN).compute_signature(
        "https://evil.example.com/hooks/twilio/sms", params
    )
    other_token = RequestValidator("not-the-token").compute_signature(
        settings.AWAITHUMAN_BASE_URL + "/hooks/twilio/sms", params
    )

    for signature in (other_url, other_token, ""):
        response = _twilio_post(settings, "/hooks/twilio/sms", params, signature=signature)
        assert response.status_code == 403

    assert _status(escalation).status == "pending"


def test_an_sms_from_an_unknown_number_gets_no_reply(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    escalation = create_escalation(acme)
    code = _texted(acme, "bob", BOB_PHONE, escalation)

    response = _sms(settings, "+15559999999", f"YES {code}")

    assert response.status_code == 200
    assert _twiml_message(response) == ""
    assert _status(escalation).status == "pending"


def test_an_sms_that_is_not_an_answer_gets_the_instructions(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    create_escalation(acme)
    add_point(acme.members["bob"], "sms", BOB_PHONE, position=1)

    response = _sms(settings, BOB_PHONE, "what is this?")

    assert "reply YES <code>" in _twiml_message(response)


def test_a_whatsapp_quick_reply_button_approves(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "whatsapp", BOB_PHONE, position=1)
    delivery_sent(escalation["id"], point)
    code = ChannelAnswerCode.objects.get().code
    params = {
        "From": f"whatsapp:{BOB_PHONE}",
        "To": f"whatsapp:{settings.TWILIO_WHATSAPP_FROM}",
        "Body": "Approve",
        "ButtonText": "Approve",
        "ButtonPayload": f"YES {code}",
    }

    response = _twilio_post(settings, "/hooks/twilio/whatsapp", params)

    assert response.status_code == 200
    row = _status(escalation)
    assert row.status == "approved"
    assert row.decision_channel == "whatsapp"


# --- Telegram -------------------------------------------------------------------------------


def _telegram_post(settings: Any, update: dict[str, Any], *, secret: str | None = None) -> Any:
    return Client().post(
        "/hooks/telegram",
        json.dumps(update),
        content_type="application/json",
        HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=(
            settings.TELEGRAM_WEBHOOK_SECRET if secret is None else secret
        ),
    )


def _button(message: dict[str, Any], index: int, sender: str) -> dict[str, Any]:
    data = message["reply_markup"]["inline_keyboard"][0][index]["callback_data"]
    return {
        "update_id": 1,
        "callback_query": {
            "id": "4382bfdwdsb323b2d9",
            "from": {"id": int(sender), "is_bot": False, "first_name": "Bob"},
            "message": {"message_id": message["message_id"], "chat": message["chat"]},
            "chat_instance": "-1",
            "data": data,
        },
    }


def _telegram_sent(acme: Any, telegram: FakeTelegram, escalation: dict[str, Any]) -> Any:
    point = add_point(acme.members["bob"], "telegram", BOB_CHAT, position=1)
    delivery_sent(escalation["id"], point)
    (message,) = telegram.messages.values()
    return message


def test_the_approve_button_in_telegram_approves_and_the_message_shows_it(
    acme: Any, telegram: FakeTelegram, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = create_escalation(acme)
    message = _telegram_sent(acme, telegram, escalation)

    with django_capture_on_commit_callbacks(execute=True):
        response = _telegram_post(settings, _button(message, 0, BOB_CHAT))

    assert response.status_code == 200
    reply = response.json()
    assert reply["method"] == "answerCallbackQuery"
    assert reply["callback_query_id"] == "4382bfdwdsb323b2d9"
    assert reply["text"].startswith("Done: approved by bob@acme.test")
    assert _status(escalation).decision_channel == "telegram"
    (edit,) = telegram.edits
    assert "✅ Approved by bob@acme.test at " in edit["text"]
    assert edit["reply_markup"] == {"inline_keyboard": []}


def test_a_decision_made_elsewhere_edits_the_telegram_message(
    acme: Any, telegram: FakeTelegram, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = create_escalation(acme)
    _telegram_sent(acme, telegram, escalation)

    with django_capture_on_commit_callbacks(execute=True):
        _approve_in_console_as_ana(acme, escalation)

    (edit,) = telegram.edits
    assert "✅ Approved by Ana at " in edit["text"]


def test_a_late_telegram_answer_is_told_who_decided_first(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    escalation = create_escalation(acme)
    message = _telegram_sent(acme, telegram, escalation)
    _approve_in_console_as_ana(acme, escalation)

    response = _telegram_post(settings, _button(message, 1, BOB_CHAT))

    assert response.json()["text"].startswith("Already approved by Ana at ")
    assert response.json()["show_alert"] is True
    assert _status(escalation).status == "approved"


def test_a_telegram_update_without_the_secret_token_is_refused(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    escalation = create_escalation(acme)
    message = _telegram_sent(acme, telegram, escalation)

    for secret in ("wrong-secret", ""):
        response = _telegram_post(settings, _button(message, 0, BOB_CHAT), secret=secret)
        assert response.status_code == 403

    assert _status(escalation).status == "pending"


def test_a_button_pressed_by_someone_else_in_telegram_does_nothing(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    escalation = create_escalation(acme)
    message = _telegram_sent(acme, telegram, escalation)

    response = _telegram_post(settings, _button(message, 0, "555000111"))

    assert "not linked" in response.json()["text"]
    assert _status(escalation).status == "pending"


def test_start_with_the_deep_link_code_links_the_chat(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    point = add_point(acme.members["bob"], "telegram", "pending", position=1, verified=False)
    instructions = TRANSPORTS["telegram"]().begin_verification(point)
    assert instructions is not None
    code = re.search(r"start=([\w-]+)", instructions)[1]  # type: ignore[index]
    update = {
        "update_id": 2,
        "message": {
            "message_id": 1,
            "from": {"id": int(BOB_CHAT), "is_bot": False, "first_name": "Bob"},
            "chat": {"id": int(BOB_CHAT), "type": "private"},
            "date": int(time.time()),
            "text": f"/start {code}",
        },
    }

    response = _telegram_post(settings, update)

    assert response.json() == {
        "method": "sendMessage",
        "chat_id": BOB_CHAT,
        "text": "Linked: escalations for you will arrive in this chat.",
    }
    point.refresh_from_db()
    assert point.address == BOB_CHAT
    assert point.verified_at is not None
    # The code is single use.
    again = _telegram_post(settings, update)
    assert "expired or was used" in again.json()["text"]


# --- Slack ----------------------------------------------------------------------------------


def _slack_post(
    settings: Any, payload: dict[str, Any], *, at: int | None = None, secret: str | None = None
) -> Any:
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(at if at is not None else int(time.time()))
    base = f"v0:{timestamp}:{body}".encode()
    key = (secret or settings.SLACK_SIGNING_SECRET).encode()
    signature = "v0=" + hmac.new(key, base, hashlib.sha256).hexdigest()
    return Client().post(
        "/hooks/slack/interactivity",
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_SLACK_REQUEST_TIMESTAMP=timestamp,
        HTTP_X_SLACK_SIGNATURE=signature,
    )


def _slack_sent(acme: Any, slack: FakeSlack, person: str, user: str, escalation: Any) -> Any:
    point = add_point(acme.members[person], "slack", user, position=1)
    delivery = delivery_sent(escalation["id"], point)
    return delivery, slack.messages[tuple(delivery.provider_id.split(":"))]  # type: ignore[index]


def _block_action(message: dict[str, Any], index: int, user: str, channel: str) -> dict[str, Any]:
    button = message["blocks"][-1]["elements"][index]
    return {
        "type": "block_actions",
        "team": {"id": "T0ACME"},
        "user": {"id": user, "username": "bob", "team_id": "T0ACME"},
        "api_app_id": "A0AWAIT",
        "container": {"type": "message", "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "directmessage"},
        "actions": [
            {
                "type": "button",
                "action_id": button["action_id"],
                "block_id": "awaithuman",
                "value": button.get("value", ""),
                "action_ts": str(time.time()),
            }
        ],
    }


def test_the_approve_button_in_slack_approves_and_the_message_is_updated(
    acme: Any, slack: FakeSlack, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = create_escalation(acme)
    delivery, message = _slack_sent(acme, slack, "bob", BOB_SLACK, escalation)
    channel = delivery.provider_id.split(":")[0]

    with django_capture_on_commit_callbacks(execute=True):
        response = _slack_post(settings, _block_action(message, 0, BOB_SLACK, channel))

    assert response.status_code == 200
    row = _status(escalation)
    assert (row.status, row.decision_channel) == ("approved", "slack")
    (update,) = slack.updates
    assert update["blocks"][-1]["elements"][0]["text"].startswith("Approved by bob@acme.test")
    assert slack.ephemeral == []


def test_a_late_slack_answer_gets_a_private_reply(
    acme: Any, slack: FakeSlack, settings: Any
) -> None:
    escalation = create_escalation(acme)
    delivery, message = _slack_sent(acme, slack, "bob", BOB_SLACK, escalation)
    _approve_in_console_as_ana(acme, escalation)

    _slack_post(settings, _block_action(message, 1, BOB_SLACK, delivery.provider_id[:10]))

    (reply,) = slack.ephemeral
    assert reply["user"] == BOB_SLACK
    assert reply["text"].startswith("Already approved by Ana at ")
    assert _status(escalation).status == "approved"


def test_a_viewers_slack_answer_is_refused(acme: Any, slack: FakeSlack, settings: Any) -> None:
    escalation = create_escalation(acme)
    delivery, message = _slack_sent(acme, slack, "vera", VERA_SLACK, escalation)

    _slack_post(settings, _block_action(message, 0, VERA_SLACK, delivery.provider_id[:10]))

    assert [e["text"] for e in slack.ephemeral] == ["Viewers cannot answer escalations."]
    assert _status(escalation).status == "pending"


def test_a_slack_request_with_a_bad_or_stale_signature_is_refused(
    acme: Any, slack: FakeSlack, settings: Any
) -> None:
    escalation = create_escalation(acme)
    delivery, message = _slack_sent(acme, slack, "bob", BOB_SLACK, escalation)
    payload = _block_action(message, 0, BOB_SLACK, delivery.provider_id[:10])

    assert _slack_post(settings, payload, secret="another-signing-secret").status_code == 403
    stale = int(time.time()) - 6 * 60  # correctly signed, but older than 5 minutes
    assert _slack_post(settings, payload, at=stale).status_code == 403
    fresh_enough = int(time.time()) - 4 * 60
    assert _slack_post(settings, payload, at=fresh_enough).status_code == 200
    assert _status(escalation).status == "approved"


def test_a_button_pressed_by_another_slack_user_does_nothing(
    acme: Any, slack: FakeSlack, settings: Any
) -> None:
    escalation = create_escalation(acme)
    delivery, message = _slack_sent(acme, slack, "bob", BOB_SLACK, escalation)

    _slack_post(settings, _block_action(message, 0, VERA_SLACK, delivery.provider_id[:10]))

    assert "not linked" in slack.ephemeral[0]["text"]
    assert _status(escalation).status == "pending"


# --- Web Push -------------------------------------------------------------------------------


def _pushed(acme: Any, push: FakePushService, settings: Any, escalation: Any) -> dict[str, Any]:
    subscription = push.subscribe(settings.VAPID_PUBLIC_KEY)
    point = add_point(acme.members["bob"], "push", "Bob's phone", position=1)
    point.config = subscription.as_json()
    point.save()
    delivery_sent(escalation["id"], point)
    return subscription.messages[0]["payload"]


def _push_answer(payload: dict[str, Any], action: str, token: str | None = None) -> Any:
    return Client().post(
        "/hooks/push/answer",
        json.dumps({"token": token or payload["token"], "action": action}),
        content_type="application/json",
    )


def test_the_approve_action_of_a_push_approves(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    escalation = create_escalation(acme)
    payload = _pushed(acme, push, settings, escalation)

    response = _push_answer(payload, "approve")

    assert response.status_code == 200
    assert response.json()["accepted"] is True
    row = _status(escalation)
    assert (row.status, row.decision_channel) == ("approved", "push")


def test_a_late_push_answer_is_told_who_decided_first(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    escalation = create_escalation(acme)
    payload = _pushed(acme, push, settings, escalation)
    _approve_in_console_as_ana(acme, escalation)

    response = _push_answer(payload, "reject")

    assert response.status_code == 409
    assert response.json()["detail"].startswith("Already approved by Ana at ")


def test_a_forged_or_chat_visible_push_token_is_refused(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    escalation = create_escalation(acme)
    payload = _pushed(acme, push, settings, escalation)
    bare = payload["token"].split(".")[0]  # what Telegram and Slack buttons carry

    for token in (bare, bare + ".0000", "nonsense"):
        assert _push_answer(payload, "approve", token=token).status_code == 404
    assert _push_answer(payload, "delete").status_code == 400
    assert _status(escalation).status == "pending"


def test_unconfigured_providers_have_no_inbound_endpoint(settings: Any, db: Any) -> None:
    settings.TWILIO_AUTH_TOKEN = ""
    settings.TELEGRAM_WEBHOOK_SECRET = ""
    settings.SLACK_SIGNING_SECRET = ""

    for path in ("/hooks/twilio/sms", "/hooks/twilio/whatsapp", "/hooks/telegram"):
        assert Client().post(path, {}).status_code == 404
    assert Client().post("/hooks/slack/interactivity", {}).status_code == 404
    assert not ContactPoint.objects.exists()


# --- One rule for a rejection's reason, on every channel ----------------------------------------


def _require_reason(acme: Any) -> None:
    acme.organization.reject_reason_required = True
    acme.organization.save()


def test_no_without_a_reason_by_sms_rejects_by_default(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    escalation = create_escalation(acme)
    code = _texted(acme, "bob", BOB_PHONE, escalation)
    _sms(settings, BOB_PHONE, f"NO {code}")
    assert _status(escalation).status == "rejected"


def test_no_without_a_reason_by_sms_is_asked_for_one_where_required(
    acme: Any, twilio: FakeTwilio, settings: Any
) -> None:
    _require_reason(acme)
    escalation = create_escalation(acme)
    code = _texted(acme, "bob", BOB_PHONE, escalation)

    reply = _twiml_message(_sms(settings, BOB_PHONE, f"NO {code}"))
    assert reply == f"Acme asks for a reason to reject: reply NO {code} and your reason"
    assert _status(escalation).status == "pending"

    _sms(settings, BOB_PHONE, f"NO {code} too risky")
    row = _status(escalation)
    assert (row.status, row.decision_comment) == ("rejected", "too risky")


def test_the_telegram_reject_button_points_to_the_console_where_a_reason_is_required(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    _require_reason(acme)
    escalation = create_escalation(acme)
    message = _telegram_sent(acme, telegram, escalation)

    reply = _telegram_post(settings, _button(message, 1, BOB_CHAT)).json()

    assert reply["text"].startswith("Acme asks for a reason to reject: reject in the console")
    assert f"/escalations/{escalation['id']}/" in reply["text"]
    assert _status(escalation).status == "pending"


def test_the_telegram_reject_button_rejects_by_default(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    escalation = create_escalation(acme)
    message = _telegram_sent(acme, telegram, escalation)
    _telegram_post(settings, _button(message, 1, BOB_CHAT))
    assert _status(escalation).status == "rejected"


def test_the_slack_reject_button_points_to_the_console_where_a_reason_is_required(
    acme: Any, slack: FakeSlack, settings: Any
) -> None:
    _require_reason(acme)
    escalation = create_escalation(acme)
    delivery, message = _slack_sent(acme, slack, "bob", BOB_SLACK, escalation)
    channel = delivery.provider_id.split(":")[0]

    _slack_post(settings, _block_action(message, 1, BOB_SLACK, channel))

    (reply,) = slack.ephemeral
    assert reply["text"].startswith("Acme asks for a reason to reject: reject in the console")
    assert _status(escalation).status == "pending"


def test_the_push_reject_action_points_to_the_console_where_a_reason_is_required(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    _require_reason(acme)
    escalation = create_escalation(acme)
    payload = _pushed(acme, push, settings, escalation)

    response = _push_answer(payload, "reject")

    assert response.json()["accepted"] is False
    assert "asks for a reason to reject" in response.json()["detail"]
    assert _status(escalation).status == "pending"


def test_the_push_reject_action_rejects_by_default(
    acme: Any, push: FakePushService, settings: Any
) -> None:
    escalation = create_escalation(acme)
    payload = _pushed(acme, push, settings, escalation)
    assert _push_answer(payload, "reject").json()["accepted"] is True
    assert _status(escalation).status == "rejected"

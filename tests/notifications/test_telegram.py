"""Telegram Bot API: inline buttons, edits after the decision, deep-link linking — against a
fake Bot API on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from escalations.models import Escalation
from notifications.models import ChannelAnswerCode
from notifications.tasks import messages_update_after_decision
from notifications.transports import TRANSPORTS, TransportError
from tests.conftest import create_escalation

from .conftest import add_point
from .fakes import FakeTelegram, delivery_sent, telegram_configured

CHAT = "700100200"


@pytest.fixture
def telegram(settings: Any) -> Iterator[FakeTelegram]:
    with telegram_configured(settings) as fake:
        fake.chats.add(CHAT)
        yield fake


def test_a_simple_approval_gets_approve_and_reject_buttons(
    acme: Any, telegram: FakeTelegram
) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "telegram", CHAT, position=1)

    delivery = delivery_sent(escalation["id"], point)

    (message,) = telegram.messages.values()
    assert delivery.provider_id == f"{CHAT}:{message['message_id']}"
    assert message["text"].startswith("Refund $750 to order #1042\nissue_refund(")
    token = ChannelAnswerCode.objects.get().token
    (buttons,) = message["reply_markup"]["inline_keyboard"]  # no URL button for plain http
    assert buttons == [
        {"text": "✅ Approve", "callback_data": f"ah:approve:{token}"},
        {"text": "❌ Reject", "callback_data": f"ah:reject:{token}"},
    ]


def test_an_https_console_adds_an_open_button(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    settings.AWAITHUMAN_BASE_URL = "https://awaithuman.example.com"
    escalation = create_escalation(acme, kind="question", title="Which plan?", action=None)
    point = add_point(acme.members["bob"], "telegram", CHAT, position=1)

    delivery_sent(escalation["id"], point)

    (message,) = telegram.messages.values()
    assert message["reply_markup"]["inline_keyboard"] == [
        [
            {
                "text": "Open in console",
                "url": f"https://awaithuman.example.com/escalations/{escalation['id']}/",
            }
        ]
    ]


def test_the_message_is_edited_to_show_the_outcome(acme: Any, telegram: FakeTelegram) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "telegram", CHAT, position=1)
    delivery_sent(escalation["id"], point)
    acme.members["alice"].user.first_name = "Ana"
    acme.members["alice"].user.save()
    answer = acme.client_for("alice").post(
        f"/api/v1/escalations/{escalation['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert answer.status_code == 201, answer.content

    messages_update_after_decision(Escalation.objects.get(public_id=escalation["id"]).pk)

    (edit,) = telegram.edits
    assert edit["reply_markup"] == {"inline_keyboard": []}
    assert "✅ Approved by Ana at " in edit["text"]
    # A repeated update (a retried task) is harmless: Telegram says "not modified".
    messages_update_after_decision(Escalation.objects.get(public_id=escalation["id"]).pk)
    assert len(telegram.edits) == 1


def test_a_blocked_bot_is_a_permanent_error(acme: Any, telegram: FakeTelegram) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "telegram", "999", position=1)
    body = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
    telegram.script.append((403, {"Content-Type": "application/json"}, json.dumps(body).encode()))

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert failure.value.permanent


def test_an_unknown_chat_is_a_permanent_error(acme: Any, telegram: FakeTelegram) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "telegram", "424242", position=1)

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert failure.value.permanent
    assert "chat not found" in failure.value.message


def test_flood_control_is_retried_after_telegrams_wait(acme: Any, telegram: FakeTelegram) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "telegram", CHAT, position=1)
    body = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 13",
        "parameters": {"retry_after": 13},
    }
    telegram.script.append((429, {"Content-Type": "application/json"}, json.dumps(body).encode()))

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert not failure.value.permanent
    assert failure.value.retry_after == 13.0


def test_a_bad_gateway_is_transient(acme: Any, telegram: FakeTelegram) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "telegram", CHAT, position=1)
    telegram.script.append((502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"))

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert not failure.value.permanent
    assert failure.value.retry_after is None


def test_a_wrong_bot_token_is_refused_by_the_provider(
    acme: Any, telegram: FakeTelegram, settings: Any
) -> None:
    settings.TELEGRAM_BOT_TOKEN = "123:wrong"
    point = add_point(acme.members["bob"], "telegram", CHAT, position=1)

    with pytest.raises(TransportError) as failure:
        TRANSPORTS["telegram"]().send_test(point)

    assert "401" in failure.value.message
    assert not failure.value.permanent


def test_linking_starts_with_a_deep_link(acme: Any, telegram: FakeTelegram) -> None:
    point = add_point(acme.members["bob"], "telegram", "pending", position=1, verified=False)

    instructions = TRANSPORTS["telegram"]().begin_verification(point)

    assert instructions is not None
    assert "https://t.me/AwaitHumanTestBot?start=" in instructions
    point.refresh_from_db()
    assert point.verification_digest and point.verification_expires_at
    assert telegram.requests == []  # nothing can be sent before the chat is linked

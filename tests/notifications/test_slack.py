"""Slack: Block Kit buttons by chat.postMessage, chat.update after the decision — against a fake
Slack Web API on 127.0.0.1."""

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
from .fakes import FakeSlack, delivery_sent, slack_configured

USER = "U0BOB1234"


@pytest.fixture
def slack(settings: Any) -> Iterator[FakeSlack]:
    with slack_configured(settings) as fake:
        fake.users.add(USER)
        yield fake


def test_a_simple_approval_is_posted_with_approve_and_reject_buttons(
    acme: Any, slack: FakeSlack
) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "slack", USER, position=1)

    delivery = delivery_sent(escalation["id"], point)

    ((channel, ts), message), *_ = slack.messages.items()
    assert delivery.provider_id == f"{channel}:{ts}"
    assert message["channel"] == USER
    assert message["text"] == "Refund $750 to order #1042"
    assert message["blocks"][0]["text"] == {
        "type": "mrkdwn",
        "text": "*Refund $750 to order #1042*",
    }
    actions = message["blocks"][-1]
    token = ChannelAnswerCode.objects.get().token
    assert [(e["action_id"], e.get("value")) for e in actions["elements"]] == [
        ("awaithuman_approve", f"approve:{token}"),
        ("awaithuman_reject", f"reject:{token}"),
        ("awaithuman_open", None),
    ]


def test_the_message_is_updated_to_show_the_outcome(acme: Any, slack: FakeSlack) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "slack", USER, position=1)
    delivery = delivery_sent(escalation["id"], point)
    answer = acme.client_for("alice").post(
        f"/api/v1/escalations/{escalation['id']}/responses",
        {"outcome": "reject", "comment": "too risky"},
        format="json",
    )
    assert answer.status_code == 201, answer.content

    messages_update_after_decision(Escalation.objects.get(public_id=escalation["id"]).pk)

    (update,) = slack.updates
    assert f"{update['channel']}:{update['ts']}" == delivery.provider_id
    assert update["blocks"][-1]["type"] == "context"  # the buttons are gone
    assert update["blocks"][-1]["elements"][0]["text"].startswith("Rejected by alice@acme.test at ")


def test_an_unknown_user_is_a_permanent_error(acme: Any, slack: FakeSlack) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "slack", "U0NOBODY", position=1)

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert failure.value.permanent
    assert "channel_not_found" in failure.value.message


def test_rate_limited_is_retried_after_slacks_wait(acme: Any, slack: FakeSlack) -> None:
    escalation = create_escalation(acme)
    point = add_point(acme.members["bob"], "slack", USER, position=1)
    body = json.dumps({"ok": False, "error": "ratelimited"}).encode()
    slack.script.append((429, {"Retry-After": "30", "Content-Type": "application/json"}, body))

    with pytest.raises(TransportError) as failure:
        delivery_sent(escalation["id"], point)

    assert not failure.value.permanent
    assert failure.value.retry_after == 30.0


def test_a_revoked_token_is_not_blamed_on_the_person(
    acme: Any, slack: FakeSlack, settings: Any
) -> None:
    settings.SLACK_BOT_TOKEN = "xoxb-revoked"
    point = add_point(acme.members["bob"], "slack", USER, position=1)

    with pytest.raises(TransportError) as failure:
        TRANSPORTS["slack"]().send_test(point)

    assert "invalid_auth" in failure.value.message
    assert not failure.value.permanent


def test_verification_code_is_sent_as_a_direct_message(acme: Any, slack: FakeSlack) -> None:
    point = add_point(acme.members["bob"], "slack", USER, position=1, verified=False)

    TRANSPORTS["slack"]().send_verification(point, "654321")

    (message,) = slack.messages.values()
    assert "verification code is 654321" in message["text"]

"""Slack: ``chat.postMessage`` with Block Kit Approve/Reject buttons, ``chat.update`` once decided.

The contact point's address is the person's Slack user id (``U…``); posting to a user id lands in
the app's direct-message channel with them, whose id (``D…``) Slack returns with the message's
``ts`` — together they are the provider id, which ``chat.update`` needs. Button presses come
to the interactivity endpoint (``notifications.inbound``) with the value
``<approve|reject>:<token>``.

Slack answers HTTP 200 with ``{"ok": false, "error": …}`` for most failures; rate limits are a 429
with ``Retry-After``. https://api.slack.com/web#evaluating_responses
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from escalations.models import Escalation
from notifications.answer_codes import answer_code_for
from notifications.messages import (
    is_simple_approval,
    outcome_sentence,
    outcome_text,
    summary_text,
)
from notifications.models import ContactPoint, Delivery

from . import http
from .base import Transport, TransportError

# Errors that mean this person cannot be messaged at this address.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "user_not_found",
        "user_disabled",
        "account_inactive",
        "is_archived",
        "cannot_dm_bot",
        "not_in_channel",
        "user_not_visible",
        "restricted_action",
    }
)


def api_call(method: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Call a Web API method with the bot token; returns Slack's body or raises."""
    token = settings.SLACK_BOT_TOKEN
    if not token:
        raise TransportError("Slack is not configured (SLACK_BOT_TOKEN).")
    response = http.post(
        f"{settings.SLACK_API_BASE}/{method}",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
    )
    body = http.json_body(response)
    if response.status_code == 200 and body.get("ok"):
        return body
    error = str(body.get("error") or response.reason_phrase)
    message = f"Slack {method} {response.status_code}: {error}"
    if transient := http.transient(response, message):
        raise transient
    if error in ("ratelimited", "internal_error", "fatal_error", "service_unavailable"):
        raise TransportError(message)
    raise TransportError(message, permanent=error in PERMANENT_ERRORS)


def _blocks(escalation: Escalation, *, token: str | None, footer: str | None) -> list[dict]:
    summary = summary_text(escalation)
    title, _, rest = summary.partition("\n")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(title)}*"}},
    ]
    if rest:
        blocks.append({"type": "section", "text": {"type": "plain_text", "text": rest[:2900]}})
    elements: list[dict[str, Any]] = []
    if token is not None:
        elements += [
            {
                "type": "button",
                "action_id": "awaithuman_approve",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": f"approve:{token}",
            },
            {
                "type": "button",
                "action_id": "awaithuman_reject",
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": f"reject:{token}",
            },
        ]
    elements.append(
        {
            "type": "button",
            "action_id": "awaithuman_open",
            "text": {"type": "plain_text", "text": "Open in console"},
            "url": escalation.console_url,
        }
    )
    if footer is None:
        blocks.append({"type": "actions", "block_id": "awaithuman", "elements": elements})
    else:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return blocks


def _escape(text: str) -> str:
    """Slack's mrkdwn needs only these three escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackTransport(Transport):
    channel = "slack"
    settings_required = ("SLACK_BOT_TOKEN",)

    def send(self, delivery: Delivery) -> str:
        escalation = delivery.escalation
        contact_point = delivery.contact_point
        assert contact_point is not None
        token = None
        if is_simple_approval(escalation):
            token = answer_code_for(
                escalation=escalation, membership=contact_point.membership
            ).token
        body = api_call(
            "chat.postMessage",
            {
                "channel": contact_point.address,
                "text": escalation.title,
                "blocks": _blocks(escalation, token=token, footer=None),
                "unfurl_links": False,
            },
        )
        return f"{body.get('channel', contact_point.address)}:{body.get('ts', '')}"

    def update_after_decision(self, delivery: Delivery) -> None:
        channel, _, ts = delivery.provider_id.partition(":")
        if not channel or not ts:
            return
        escalation = delivery.escalation
        footer = _escape(outcome_sentence(escalation))
        api_call(
            "chat.update",
            {
                "channel": channel,
                "ts": ts,
                "text": f"{escalation.title} — {outcome_text(escalation)}",
                "blocks": _blocks(escalation, token=None, footer=footer),
            },
        )

    def send_test(self, contact_point: ContactPoint) -> str:
        body = api_call(
            "chat.postMessage",
            {
                "channel": contact_point.address,
                "text": "AwaitHuman test message: escalations will reach you here.",
            },
        )
        return f"{body.get('channel', contact_point.address)}:{body.get('ts', '')}"

    def send_verification(self, contact_point: ContactPoint, code: str) -> None:
        api_call(
            "chat.postMessage",
            {
                "channel": contact_point.address,
                "text": f"Your AwaitHuman verification code is {code}. It links this Slack "
                "account to AwaitHuman; ignore it if you did not ask for it.",
            },
        )


def post_ephemeral(*, channel: str, user: str, text: str) -> None:
    """A reply only the person who pressed the button sees (a refused or recorded answer)."""
    api_call("chat.postEphemeral", {"channel": channel, "user": user, "text": text})

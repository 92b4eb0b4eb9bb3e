"""Telegram Bot API: a message with inline Approve/Reject buttons, edited once decided.

A person links their chat by opening the bot's deep link ``t.me/<bot>?start=<code>``: Telegram
then sends us "/start <code>" from that chat (``notifications.inbound``), which verifies the
contact point and records the chat id as its address. Button presses arrive as callback queries
carrying ``ah:<approve|reject>:<token>`` (Telegram allows 64 bytes of callback data).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.crypto import salted_hmac

from notifications.answer_codes import answer_code_for
from notifications.messages import is_simple_approval, outcome_sentence, summary_text
from notifications.models import ContactPoint, Delivery

from . import http
from .base import Transport, TransportError

CALLBACK_PREFIX = "ah"
LINK_LIFETIME = timedelta(hours=1)

# Descriptions of 400/403 answers that mean the chat itself is gone or refuses the bot.
_PERMANENT_HINTS = (
    "chat not found",
    "bot was blocked",
    "user is deactivated",
    "bot was kicked",
    "have no rights to send",
    "chat_write_forbidden",
    "peer_id_invalid",
)


def api_call(method: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Call a Bot API method; returns its ``result`` or raises ``TransportError``."""
    token = settings.TELEGRAM_BOT_TOKEN
    if not token:
        raise TransportError("Telegram is not configured (TELEGRAM_BOT_TOKEN).")
    response = http.post(f"{settings.TELEGRAM_API_BASE}/bot{token}/{method}", json=payload)
    body = http.json_body(response)
    if response.status_code == 200 and body.get("ok"):
        result = body.get("result")
        return result if isinstance(result, dict) else {}
    description = str(body.get("description") or response.reason_phrase)
    message = f"Telegram {method} {response.status_code}: {description}"
    # Telegram puts the flood-control wait in the body as well as the header.
    retry_after = (body.get("parameters") or {}).get("retry_after")
    if response.status_code == 429 or response.status_code >= 500:
        wait = float(retry_after) if retry_after is not None else http.retry_after(response)
        raise TransportError(message, retry_after=wait)
    permanent = response.status_code in (400, 403) and any(
        hint in description.lower() for hint in _PERMANENT_HINTS
    )
    raise TransportError(message, permanent=permanent)


def deep_link(code: str) -> str:
    return f"https://t.me/{settings.TELEGRAM_BOT_USERNAME}?start={code}"


class TelegramTransport(Transport):
    channel = "telegram"
    settings_required = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_BOT_USERNAME")

    def send(self, delivery: Delivery) -> str:
        escalation = delivery.escalation
        contact_point = delivery.contact_point
        assert contact_point is not None
        answer_code = answer_code_for(escalation=escalation, membership=contact_point.membership)
        keyboard: list[list[dict[str, str]]] = []
        if is_simple_approval(escalation):
            keyboard.append(
                [
                    {
                        "text": "✅ Approve",
                        "callback_data": f"{CALLBACK_PREFIX}:approve:{answer_code.token}",
                    },
                    {
                        "text": "❌ Reject",
                        "callback_data": f"{CALLBACK_PREFIX}:reject:{answer_code.token}",
                    },
                ]
            )
        # Telegram refuses URL buttons that point at localhost or plain http.
        if escalation.console_url.startswith("https://"):
            keyboard.append([{"text": "Open in console", "url": escalation.console_url}])
        payload: dict[str, Any] = {
            "chat_id": contact_point.address,
            "text": self._text(delivery),
            "link_preview_options": {"is_disabled": True},
        }
        if keyboard:
            payload["reply_markup"] = {"inline_keyboard": keyboard}
        result = api_call("sendMessage", payload)
        chat = result.get("chat") or {}
        return f"{chat.get('id', contact_point.address)}:{result.get('message_id', '')}"

    def _text(self, delivery: Delivery) -> str:
        escalation = delivery.escalation
        return f"{summary_text(escalation)}\n\n{escalation.console_url}"

    def update_after_decision(self, delivery: Delivery) -> None:
        chat_id, _, message_id = delivery.provider_id.rpartition(":")
        if not chat_id or not message_id:
            return
        escalation = delivery.escalation
        outcome = f"{_mark(escalation.status)} {outcome_sentence(escalation)}"
        try:
            api_call(
                "editMessageText",
                {
                    "chat_id": chat_id,
                    "message_id": int(message_id),
                    "text": f"{self._text(delivery)}\n\n{outcome}",
                    "reply_markup": {"inline_keyboard": []},
                },
            )
        except TransportError as exc:
            # Edited already (a retried task): nothing left to do.
            if "message is not modified" not in exc.message:
                raise

    def send_test(self, contact_point: ContactPoint) -> str:
        result = api_call(
            "sendMessage",
            {
                "chat_id": contact_point.address,
                "text": "AwaitHuman test message: escalations will reach you here.",
            },
        )
        return str(result.get("message_id", ""))

    def begin_verification(self, contact_point: ContactPoint) -> str | None:
        """Telegram proves the chat by a round trip: the person opens the bot's deep link and
        Telegram sends us "/start <code>" from that chat (``notifications.inbound``), which
        records the chat id as the address and verifies the contact point."""
        if not settings.TELEGRAM_BOT_USERNAME:
            raise TransportError("Telegram is not configured (TELEGRAM_BOT_USERNAME).")
        code = secrets.token_urlsafe(16)  # a start parameter allows [A-Za-z0-9_-]{1,64}
        contact_point.verification_digest = link_digest(code)
        contact_point.verification_expires_at = timezone.now() + LINK_LIFETIME
        contact_point.save(update_fields=["verification_digest", "verification_expires_at"])
        return f"Open {deep_link(code)} in Telegram and press Start."

    def send_verification(self, contact_point: ContactPoint, code: str) -> None:
        """Only for a chat already linked (a bot cannot write first to a new chat)."""
        api_call(
            "sendMessage",
            {
                "chat_id": contact_point.address,
                "text": f"Your AwaitHuman verification code is {code}.",
            },
        )


def link_digest(code: str) -> str:
    """Only this HMAC of a deep-link code is stored, like every verification code."""
    return salted_hmac("awaithuman.telegram-link", code, algorithm="sha256").hexdigest()


def _mark(status: str) -> str:
    return {"approved": "✅", "rejected": "❌", "answered": "💬"}.get(status, "⏹")

"""Transports by channel: the one place that lists them. A transport module never imports this
one (it needs only ``base`` and ``http``), so the registry sits above every transport."""

from __future__ import annotations

from .base import Transport, TransportError
from .email import EmailTransport
from .push import PushTransport
from .slack import SlackTransport
from .telegram import TelegramTransport
from .twilio import SmsTransport, WhatsAppTransport

TRANSPORTS: dict[str, type[Transport]] = {
    "email": EmailTransport,
    "sms": SmsTransport,
    "whatsapp": WhatsAppTransport,
    "telegram": TelegramTransport,
    "slack": SlackTransport,
    "push": PushTransport,
}

__all__ = ["TRANSPORTS", "Transport", "TransportError"]

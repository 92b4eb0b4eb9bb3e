"""Transports by channel. Each module registers one ``Transport`` subclass here."""

from __future__ import annotations

from .base import Transport, TransportError
from .email import EmailTransport

TRANSPORTS: dict[str, type[Transport]] = {
    "email": EmailTransport,
}

__all__ = ["TRANSPORTS", "Transport", "TransportError"]

# Provider transports add themselves to TRANSPORTS when imported (they import it from here).
from . import push, slack, telegram, twilio  # noqa: E402, F401

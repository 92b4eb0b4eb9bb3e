"""The ops tests reuse the notification tests' real SMTP server on 127.0.0.1."""

from tests.notifications.conftest import smtp_server

__all__ = ["smtp_server"]

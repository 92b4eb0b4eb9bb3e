"""The interface every transport implements (one module per channel, like healthchecks')."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from notifications.models import ContactPoint, Delivery


class TransportError(Exception):
    """A send failed. ``permanent`` errors (an invalid number, a revoked token) are not retried:
    the contact point is marked failing and the person's next contact point is tried at once.
    Transient ones (timeouts, 5xx, 429) are retried with backoff, after ``retry_after`` seconds
    when the provider said so."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after


class Transport:
    """Sends one delivery; returns the provider's message id (or "").

    Every method either returns or raises ``TransportError``; anything else is treated as a
    transient failure by the caller (``notifications.deliveries.deliveries_send``).
    """

    channel: str = ""
    # The settings this transport needs; without any of them the channel is not offered.
    settings_required: tuple[str, ...] = ()

    @classmethod
    def configured(cls) -> bool:
        """Whether this server can use the channel (its provider credentials are set)."""
        return all(getattr(settings, name, "") for name in cls.settings_required)

    def send(self, delivery: Delivery) -> str:
        raise NotImplementedError

    def send_test(self, contact_point: ContactPoint) -> str:
        """The console's "send a test" button."""
        raise NotImplementedError

    def begin_verification(self, contact_point: ContactPoint) -> str | None:
        """Start verifying a new contact point.

        Return None (the default) to use the code flow: the service makes a 6-digit code,
        stores only its HMAC with an expiry and an attempt counter, and calls
        ``send_verification``; the person types the code into the console.

        Channels that prove the address by a round trip instead (a Telegram ``/start <code>``
        deep link, a Slack app install, a push subscription the browser just created) override
        this, start that round trip, and return the instructions the console shows (plain
        text, may contain a URL). Their inbound handler then calls
        ``notifications.contact_points.contact_point_mark_verified``.
        """
        return None

    def send_verification(self, contact_point: ContactPoint, code: str) -> None:
        """Send ``code`` (6 digits) to the not yet verified ``contact_point``, with a line that
        says what it is for. Must not require ``contact_point.verified_at``."""
        raise NotImplementedError

    def update_after_decision(self, delivery: Delivery) -> None:
        """Edit the message already sent to show the outcome, where the channel allows."""

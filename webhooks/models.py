"""Agent callbacks and organization webhooks (Standard Webhooks): the endpoints, their secrets,
and every message with its attempts. Written by ``webhooks.services`` and ``webhooks.sending``.

These models were born in the notifications app and keep its tables (``Meta.db_table``): the
move to this app changed Django's state only (migration ``0001_initial`` here and
``notifications.0005_webhooks_moved``).
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from escalations.models import Escalation
from tenants.ids import new_public_id
from tenants.models import Agent, Organization


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class RotatingSecret(models.Model):
    """A ``whsec_`` signing secret. After a rotation the previous one keeps signing too (two
    space-separated signatures) for ``WEBHOOK_SECRET_OVERLAP_SECONDS``, so receivers can switch
    without losing a message. Kept in plaintext: HMAC signing needs it."""

    secret = models.CharField(max_length=64, default=new_webhook_secret, editable=False)
    previous_secret = models.CharField(max_length=64, blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        now = now or timezone.now()
        overlap = timedelta(seconds=settings.WEBHOOK_SECRET_OVERLAP_SECONDS)
        found = [self.secret]
        if self.previous_secret and self.rotated_at and now - self.rotated_at < overlap:
            found.append(self.previous_secret)
        return found

    def rotate(self, now: datetime) -> str:
        """Replace the secret (the caller saves); returns the new one, to be shown once."""
        self.previous_secret = self.secret
        self.secret = new_webhook_secret()
        self.rotated_at = now
        return self.secret


class AgentWebhookSecret(RotatingSecret):
    """The secret an agent verifies its escalation callbacks with."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="webhook_secret")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "notifications_agentwebhooksecret"

    def __str__(self) -> str:
        return f"webhook secret of {self.agent}"


class CallbackEndpoint(models.Model):
    """A callback URL an agent has used, recorded at its first callback so that a 410 Gone can
    disable it: later callbacks to it are not attempted until it is re-enabled (a replay or the
    console's button)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="callback_endpoints")
    url = models.URLField(max_length=2000)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "notifications_callbackendpoint"
        constraints = [
            models.UniqueConstraint(fields=["agent", "url"], name="unique_callback_endpoint"),
        ]

    def __str__(self) -> str:
        return self.url


class WebhookEndpoint(RotatingSecret):
    """An organization's generic outbound webhook (PagerDuty Events, Teams, in-house tools)."""

    class Event(models.TextChoices):
        CREATED = "escalation.created", "An escalation was created"
        ESCALATED = "escalation.escalated", "An escalation moved to its next level"
        DECIDED = "escalation.decided", "An escalation reached its decision"
        CHECKPOINT = "audit.checkpoint", "A signed checkpoint of the audit trail"

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "notifications_webhookendpoint"
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("whk")
        super().save(*args, **kwargs)


class WebhookMessage(models.Model):
    """One event for one URL: an agent's callback or an organization webhook's event.

    Delivered at least once, every attempt with the same ``webhook-id`` (``public_id``) and body.
    ``next_attempt_at`` is the truth for retries; a sender claims the row with a conditional
    UPDATE (``claim`` + ``claimed_until``), and a claim whose worker died expires and is taken
    again, so a lost task delays a message but never loses it.
    """

    class Kind(models.TextChoices):
        CALLBACK = "callback", "Agent callback"
        WEBHOOK = "webhook", "Organization webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    # Empty for events about the organization rather than one escalation (audit checkpoints).
    escalation = models.ForeignKey(
        Escalation, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_messages"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    callback_endpoint = models.ForeignKey(
        CallbackEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="messages"
    )
    webhook_endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="messages"
    )
    event_type = models.CharField(max_length=40)
    # Tells one event from a repeat of it ("decided", "escalated:2:0"): hooks may run twice.
    event_key = models.CharField(max_length=64)
    url = models.URLField(max_length=2000)
    # The exact bytes every attempt signs and sends.
    body = models.TextField()
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    # Index into WEBHOOK_RETRY_SCHEDULE of the delay before the next retry.
    next_step = models.PositiveSmallIntegerField(default=1)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "notifications_webhookmessage"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_message_due")]
        constraints = [
            models.UniqueConstraint(
                fields=["escalation", "event_key"],
                condition=models.Q(kind="callback"),
                name="one_callback_per_escalation_event",
            ),
            models.UniqueConstraint(
                fields=["webhook_endpoint", "escalation", "event_key"],
                name="one_webhook_message_per_event",
            ),
            models.UniqueConstraint(
                fields=["webhook_endpoint", "event_key"],
                condition=models.Q(escalation__isnull=True),
                name="one_webhook_message_per_organization_event",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.event_type} {self.status}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("msg")
        super().save(*args, **kwargs)

    @property
    def can_replay(self) -> bool:
        return self.status == self.Status.FAILED


class WebhookAttempt(models.Model):
    """One HTTP attempt of a message, as the receiver answered it (or why it could not)."""

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response_body = models.CharField(max_length=1000, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        db_table = "notifications_webhookattempt"
        ordering = ["attempted_at", "id"]

    def __str__(self) -> str:
        return f"{self.message_id} #{self.number} {self.status_code or self.error}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

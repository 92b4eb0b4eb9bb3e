"""Where operators are reached (contact points) and every notification sent (deliveries)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import models
from django.utils import timezone

from escalations.models import CHANNEL_CHOICES, Escalation
from tenants.ids import new_public_id
from tenants.models import Membership


class ContactPoint(models.Model):
    """One operator's address on one channel, verified before use, ordered by preference."""

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    membership = models.ForeignKey(
        Membership, on_delete=models.CASCADE, related_name="contact_points"
    )
    channel = models.CharField(max_length=16, choices=CHANNEL_CHOICES)
    # E-mail address, E.164 phone number, Telegram chat id, Slack user id, or a label for push.
    address = models.CharField(max_length=320)
    # Channel specifics: a Web Push subscription (endpoint + keys), a Slack team id, …
    config = models.JSONField(default=dict, blank=True)
    position = models.PositiveSmallIntegerField(default=1, help_text="1 is tried first.")
    # Priorities this point is used for; empty means every priority.
    priorities = models.JSONField(default=list, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # A pending verification code: only its HMAC is kept, with an expiry and a count of wrong
    # guesses (a 6-digit code must not be brute-forced); ``verification_sent_at`` throttles
    # resends.
    verification_digest = models.CharField(max_length=64, blank=True)
    verification_expires_at = models.DateTimeField(null=True, blank=True)
    verification_attempts = models.PositiveSmallIntegerField(default=0)
    verification_sent_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["membership", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["membership", "channel", "address"], name="unique_contact_point"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.address}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("cp")
        super().save(*args, **kwargs)

    @property
    def is_usable(self) -> bool:
        return self.verified_at is not None and self.failing_since is None

    def serves(self, priority: str) -> bool:
        """The per-priority rule: a point with a ``priorities`` list only serves those."""
        return not self.priorities or priority in self.priorities


def default_all_points_for() -> list[str]:
    return [Escalation.Priority.URGENT.value]


class NotificationPreference(models.Model):
    """One person's rules that apply across their contact points.

    Quiet hours (``quiet_start``–``quiet_end`` in ``time_zone``, may wrap midnight): outside an
    urgent escalation, only e-mail is used — it waits silently in the inbox — so nobody's phone
    rings at 3 a.m. for a normal-priority refund. ``all_points_for``: priorities that reach the
    person on every usable contact point at once. Created on first use; when it is created, the
    person's account e-mail becomes their first contact point (see ``services``).
    """

    membership = models.OneToOneField(
        Membership, on_delete=models.CASCADE, related_name="notification_preference"
    )
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    # Escalations of these priorities go to every usable contact point at once rather than to
    # the first one only ("urgent: all channels").
    all_points_for = models.JSONField(default=default_all_points_for, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"preferences of {self.membership_id}"

    def is_quiet(self, at: datetime) -> bool:
        if self.quiet_start is None or self.quiet_end is None or self.quiet_start == self.quiet_end:
            return False
        try:
            zone = ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        local = at.astimezone(zone).time()
        if self.quiet_start < self.quiet_end:
            return self.quiet_start <= local < self.quiet_end
        return local >= self.quiet_start or local < self.quiet_end


class Delivery(models.Model):
    """One notification to one contact point for one escalation event.

    Each escalation event that notifies (level entered, reminder, deadline warning) carries its
    own ``generation`` (the escalation's ``timer_generation`` at the time), so two constraints
    make fan-out idempotent: one first delivery per person, event and ``rank`` (several ranks
    when the person's rule says every contact point), and never the same contact point twice for
    one event (a fallthrough after a failure is a new row with ``fallback_of``).

    A worker claims a row with a conditional UPDATE (pending → sending, ``claimed_until`` = now
    + lease) before calling the provider; a worker killed mid-send leaves the row ``sending``
    until the lease runs out, then the sweep may claim it again (at least once, and at most once
    per lease).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (stale)"

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="deliveries")
    contact_point = models.ForeignKey(
        ContactPoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    membership = models.ForeignKey(
        Membership, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel = models.CharField(max_length=16, choices=CHANNEL_CHOICES)
    kind = models.CharField(max_length=24, default="level_entered")
    level = models.PositiveSmallIntegerField(default=1)
    round = models.PositiveSmallIntegerField(default=0)
    generation = models.PositiveIntegerField(default=0)
    # 0 for the person's first-choice contact point; 1, 2, … for the others notified at the same
    # time when their rule says every contact point (``NotificationPreference.all_points_for``).
    rank = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    provider_id = models.CharField(max_length=200, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Sending: the worker's lease ends. Pending: the sweep queued it again and will not before.
    claimed_until = models.DateTimeField(null=True, blank=True)
    # The delivery whose permanent failure this one falls through from.
    fallback_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="fallback"
    )
    # Signed action links in this delivery are single use: set when one is used.
    action_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["escalation", "contact_point", "kind", "generation"],
                name="one_delivery_per_point_and_event",
            ),
            models.UniqueConstraint(
                fields=["escalation", "membership", "kind", "generation", "rank"],
                condition=models.Q(fallback_of__isnull=True),
                name="one_first_delivery_per_person_rank_and_event",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="dlv_due",
                condition=models.Q(status__in=["pending", "sending"]),
            ),
            # Provider status callbacks (Twilio) find the delivery by the provider's message id.
            models.Index(
                fields=["provider_id"], name="dlv_provider_id", condition=~models.Q(provider_id="")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.channel} {self.status}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("dlv")
        super().save(*args, **kwargs)

    @property
    def idempotency_key(self) -> str:
        """Sent to providers that accept one, so a retried send is not a second message."""
        return self.public_id


# --- Answers from a channel (N3: SMS, WhatsApp, Telegram, Slack, Web Push) ----------------------


class ChannelAnswerCode(models.Model):
    """What a person's answer from a channel refers to: one per (escalation, member).

    ``code`` is the short number people type by SMS ("YES 4821"), unique among that member's
    codes for escalations still pending; ``token`` travels inside buttons (Telegram callback data,
    Slack button values, the encrypted push payload) and is never shown. Every delivery of one
    escalation to one person — reminders and later levels included — carries the same pair, so an
    answer to an older message still counts.
    """

    escalation = models.ForeignKey(
        Escalation, on_delete=models.CASCADE, related_name="channel_answer_codes"
    )
    membership = models.ForeignKey(
        Membership, on_delete=models.CASCADE, related_name="channel_answer_codes"
    )
    code = models.CharField(max_length=8)
    token = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["escalation", "membership"], name="one_answer_code_per_member"
            ),
        ]
        indexes = [models.Index(fields=["membership", "code"], name="answer_code_lookup")]

    def __str__(self) -> str:
        return f"{self.code} for {self.escalation_id}"

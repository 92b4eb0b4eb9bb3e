"""Escalations (what an agent asks), Responses (what operators answer) and idempotency records."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from tenants.ids import new_public_id
from tenants.models import Agent, Membership, Organization


class Escalation(models.Model):
    class Kind(models.TextChoices):
        APPROVAL = "approval", "Approval"
        QUESTION = "question", "Question"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        ANSWERED = "answered", "Answered"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        HIGH = "high", "High"
        URGENT = "urgent", "Urgent"

    class OnTimeout(models.TextChoices):
        REJECT = "reject", "Reject"
        APPROVE = "approve", "Approve"
        EXPIRE = "expire", "Expire"

    TERMINAL = frozenset(
        {Status.APPROVED, Status.REJECTED, Status.ANSWERED, Status.EXPIRED, Status.CANCELLED}
    )

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="escalations"
    )
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="escalations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    title = models.CharField(max_length=300)
    action = models.JSONField(null=True, blank=True)
    context = models.JSONField(default=dict, blank=True)
    response_schema = models.JSONField()
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    timeout_seconds = models.PositiveIntegerField()
    on_timeout = models.CharField(max_length=8, choices=OnTimeout.choices)
    callback_url = models.URLField(max_length=2000, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    # Operator side.
    assignee = models.ForeignKey(
        Membership, null=True, blank=True, on_delete=models.SET_NULL, related_name="claimed"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    required_approvals = models.PositiveSmallIntegerField(default=1)
    policy_snapshot = models.JSONField(null=True, blank=True)
    current_level = models.PositiveSmallIntegerField(default=1)
    # The next timer: the database is the source of truth, a periodic tick claims due rows.
    next_action_at = models.DateTimeField(null=True, blank=True)

    # The decision, once terminal.
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.JSONField(null=True, blank=True)
    decision_response = models.JSONField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    edited_arguments = models.JSONField(null=True, blank=True)
    decision_channel = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="esc_org_newest"),
            models.Index(fields=["organization", "external_id"], name="esc_org_external"),
            models.Index(
                fields=["next_action_at"],
                name="esc_due_timers",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.title}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("esc")
        super().save(*args, **kwargs)

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class Response(models.Model):
    """One operator's answer. The same member never answers one escalation twice."""

    class Outcome(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        ANSWER = "answer", "Answer"

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="responses")
    membership = models.ForeignKey(Membership, on_delete=models.PROTECT, related_name="responses")
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    payload = models.JSONField(null=True, blank=True)
    comment = models.TextField(blank=True)
    edited_arguments = models.JSONField(null=True, blank=True)
    channel = models.CharField(max_length=16, default="api")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["escalation", "membership"], name="one_response_per_member"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.outcome} by {self.membership_id} on {self.escalation_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("rsp")
        super().save(*args, **kwargs)


class IdempotencyRecord(models.Model):
    """An ``Idempotency-Key`` seen in the last 24 h, scoped to the organization.

    ``response_status`` is null while the first request is in flight; the record is committed
    before the work starts so a concurrent retry sees it (and gets 409) instead of racing it.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="unique_idempotency_key"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idem_created")]

    def __str__(self) -> str:
        return self.key

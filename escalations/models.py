"""Escalations (what an agent asks), Responses (what operators answer) and idempotency records."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.fields.json import KT
from django.urls import reverse
from django.utils import timezone

from tenants.ids import new_public_id
from tenants.models import Agent, Membership, Organization, Team


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
    # Where the escalation stands in its policy's levels (1-based level, 0-based round of
    # repeats) and the timers that move it on.
    current_level = models.PositiveSmallIntegerField(default=1)
    current_round = models.PositiveSmallIntegerField(default=0)
    level_entered_at = models.DateTimeField(null=True, blank=True)
    last_reminder_at = models.DateTimeField(null=True, blank=True)
    deadline_warned = models.BooleanField(default=False)
    # The next timer: the database is the source of truth, a periodic tick claims due rows.
    next_action_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every timer step; hooks carry it so work queued for an earlier step (a
    # notification for a level already left) can tell it is stale and do nothing.
    timer_generation = models.PositiveIntegerField(default=0)

    # The decision, once terminal.
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.JSONField(null=True, blank=True)
    decision_response = models.JSONField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    edited_arguments = models.JSONField(null=True, blank=True)
    decision_channel = models.CharField(max_length=16, blank=True)
    # Copies of two JSON keys the insights group by (``escalations.insights``), kept by the
    # database itself, so that an index can cover them: PostgreSQL answers a query on an
    # expression of a JSON column from an index only if the whole column is in it.
    decider = models.GeneratedField(
        expression=KT("decided_by__type"), output_field=models.TextField(), db_persist=True
    )
    action_name = models.GeneratedField(
        expression=KT("action__name"), output_field=models.TextField(), db_persist=True
    )
    # An approval's signed receipt (``escalations.receipts``), signed once when it is decided.
    receipt = models.TextField(blank=True, default="", editable=False)
    # The W3C trace context of the request that created it, with tracing on (``{}`` without):
    # its answer continues that trace, so create → notification → decision → callback is one.
    trace_carrier = models.JSONField(default=dict, db_default={}, blank=True, editable=False)
    # Set once its payloads were replaced by their digests (``escalations.redaction``).
    redacted_at = models.DateTimeField(null=True, blank=True)
    redaction_reason = models.CharField(max_length=500, blank=True)

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
            # The insights' queries over a range of decisions, answered from the index alone.
            models.Index(
                fields=["organization", "decided_at"],
                include=[
                    "status",
                    "decider",
                    "created_at",
                    "decision_channel",
                    "agent",
                    "action_name",
                ],
                name="esc_org_decided",
                condition=models.Q(decided_at__isnull=False),
            ),
            # The live pending-by-priority chart.
            models.Index(
                fields=["organization", "priority"],
                name="esc_org_pending",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.title}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("esc")
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        """The escalation's page in the console."""
        return reverse("queue:escalation", args=[self.public_id])

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def console_url(self) -> str:
        """``get_absolute_url`` on this server, for links sent elsewhere (API, messages)."""
        return settings.AWAITHUMAN_BASE_URL + self.get_absolute_url()


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


CHANNEL_CHOICES = [
    ("email", "E-mail"),
    ("sms", "SMS"),
    ("whatsapp", "WhatsApp"),
    ("telegram", "Telegram"),
    ("slack", "Slack"),
    ("push", "Web Push"),
    ("webhook", "Webhook"),
]


class Policy(models.Model):
    """How an organization handles a kind of escalation: decide it, or route it to people.

    Policies are tried in ``priority`` order (lowest first); the first enabled one whose CEL
    ``condition`` is true wins. A matched policy is snapshotted onto the escalation, so editing a
    policy never changes an escalation already in flight.
    """

    class Outcome(models.TextChoices):
        AUTO_APPROVE = "auto_approve", "Approve automatically"
        AUTO_REJECT = "auto_reject", "Reject automatically"
        REQUIRE_HUMAN = "require_human", "Ask a human"

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="policies"
    )
    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(
        default=100, help_text="Lower runs first; the first matching policy wins."
    )
    condition = models.TextField(
        blank=True,
        help_text=(
            "A CEL expression; empty matches everything. Example: "
            'action.name == "issue_refund" && action.arguments.amount > 500'
        ),
    )
    outcome = models.CharField(
        max_length=16, choices=Outcome.choices, default=Outcome.REQUIRE_HUMAN
    )
    agents = models.ManyToManyField(
        Agent, blank=True, related_name="policies", help_text="Empty: applies to every agent."
    )
    timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Default deadline when the agent sets none."
    )
    on_timeout = models.CharField(
        max_length=8,
        choices=Escalation.OnTimeout.choices,
        blank=True,
        help_text="Default action at the deadline when the agent sets none.",
    )
    required_approvals = models.PositiveSmallIntegerField(default=1)
    repeat = models.PositiveSmallIntegerField(
        default=0, help_text="Times to run through the levels again after the last one."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("pol")
        super().save(*args, **kwargs)


class PolicyLevel(models.Model):
    """One step of a policy: whom to notify, on which channels, and how long to wait."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="levels")
    position = models.PositiveSmallIntegerField(default=1)
    all_operators = models.BooleanField(
        default=False, help_text="Notify every member who can answer."
    )
    roles = models.JSONField(default=list, blank=True, help_text='e.g. ["admin", "owner"]')
    members = models.ManyToManyField(Membership, blank=True, related_name="policy_levels")
    teams = models.ManyToManyField(Team, blank=True, related_name="policy_levels")
    channels = models.JSONField(
        default=list, blank=True, help_text="Allowed channels; empty: each person's preferences."
    )
    wait_seconds = models.PositiveIntegerField(
        default=900, help_text="How long nobody may answer before the next level."
    )
    reminder_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Remind this level's targets this often while waiting."
    )

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.policy} level {self.position}"


class ReceiptSigningKey(models.Model):
    """An Ed25519 key that signs decision receipts (``escalations.receipts``).

    At most one key is active (a partial unique index, so two processes that both create the
    first key cannot both win). The private half is a Fernet token under a key derived from
    ``SECRET_KEY`` and is erased when the key is retired; the public half stays published in the
    JWKS through the grace period, so receipts signed before a rotation still verify.
    """

    kid = models.CharField(max_length=32, unique=True, editable=False)
    public_key = models.CharField(max_length=64, help_text="Raw Ed25519 public key, base64url.")
    private_key_encrypted = models.TextField(blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=models.Q(active=True), name="one_active_receipt_key"
            ),
        ]

    def __str__(self) -> str:
        return self.kid


class OutboxEvent(models.Model):
    """One effect still owed to one consumer: "consumer X must handle event E of escalation Y".

    Written by ``escalations.outbox.outbox_write`` in the same transaction as the change and its
    audit event (one row per registered consumer), and deleted by the dispatcher in the same
    transaction as the consumer's own writes, so an effect is neither lost to a crash after
    commit nor applied twice by two dispatchers. A row that keeps failing is parked: it stays,
    with its error, until someone retries it from Django admin.
    """

    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="+")
    consumer = models.CharField(max_length=64)
    event = models.CharField(max_length=32)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    available_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    parked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The dispatcher's scan: due, unparked rows in order.
            models.Index(
                fields=["available_at", "id"],
                name="outbox_due",
                condition=models.Q(parked_at__isnull=True),
            ),
            # "Is an earlier event of this escalation still owed to this consumer?"
            models.Index(fields=["escalation", "consumer", "id"], name="outbox_order"),
        ]

    def __str__(self) -> str:
        return f"{self.event} of escalation {self.escalation_id} for {self.consumer}"


class InsightDay(models.Model):
    """Decisions of one finished UTC day, counted per combination of what the charts group by.

    Written only by ``escalations.rollup`` (one ``INSERT … SELECT … GROUP BY`` per run), read by
    ``escalations.insights`` for the finished days of a range; ``count`` is exact.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    # NULL as in the generated columns they copy (no action, no ``decided_by.type``), so that the
    # rollup groups exactly as the live queries do.
    action_name = models.TextField(null=True)  # noqa: DJ001
    decision_channel = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16)
    decider = models.TextField(null=True)  # noqa: DJ001
    count = models.PositiveIntegerField()
    decided_seconds_sum = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["organization", "day"], name="insight_day_org_day")]

    def __str__(self) -> str:
        return f"{self.count} {self.status} on {self.day}"


class InsightWait(models.Model):
    """A person's decisions of one finished UTC day on one channel whose time to decision falls
    in ``bucket`` of ``escalations.rollup``'s log-scale histogram (one row per non-empty bucket,
    so that a range's histogram is a plain ``SUM … GROUP BY``)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    decision_channel = models.CharField(max_length=16, blank=True)
    bucket = models.PositiveSmallIntegerField()
    count = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["organization", "day"], name="insight_wait_org_day")]

    def __str__(self) -> str:
        return f"{self.count} in bucket {self.bucket} on {self.day}"


class InsightRollupDay(models.Model):
    """A UTC day whose rows of every organization are in ``InsightDay`` and ``InsightWait``
    (written in the same transaction as them): the days the insights read from the rollup."""

    day = models.DateField(primary_key=True)
    rolled_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.day} rolled up at {self.rolled_at:%Y-%m-%d %H:%M}"

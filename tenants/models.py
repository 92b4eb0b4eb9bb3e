"""Organizations (tenants), their members, agents and API keys."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from .ids import new_public_id


class Organization(models.Model):
    class Plan(models.TextChoices):
        FREE = "free", "Free"
        TEAM = "team", "Team"
        BUSINESS = "business", "Business"

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    plan = models.CharField(max_length=16, choices=Plan.choices, default=Plan.FREE)
    stripe_customer_id = models.CharField(max_length=64, blank=True)
    stripe_subscription_id = models.CharField(max_length=64, blank=True)
    subscription_status = models.CharField(max_length=32, blank=True)
    require_2fa = models.BooleanField(default=False)
    # One rule for every answer path (API, console, e-mail, chat, push): off, a rejection's
    # reason is optional everywhere; on, a rejection without one is refused everywhere.
    reject_reason_required = models.BooleanField(default=False)
    # Days a decided escalation keeps its payloads (context, action arguments, edits) before the
    # periodic redaction replaces them by their digests; empty keeps them.
    payload_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36500)],
        help_text="Days a decided escalation keeps its payloads; empty keeps them forever.",
    )
    # A copy of the audit trail's signed checkpoints kept outside our database (audit.checkpoints):
    # once a day, the latest one is e-mailed here if the chain grew (tenants.checkpoint_mail).
    checkpoint_email = models.EmailField(
        blank=True,
        help_text="Receives the latest signed audit checkpoint once a day; empty sends none.",
    )
    checkpoint_emailed_seq = models.PositiveBigIntegerField(default=0, editable=False)
    checkpoint_emailed_at = models.DateTimeField(null=True, blank=True, editable=False)
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    # What an admin edits on the settings page; ``organization_update`` audits their changes.
    SETTINGS_FIELDS = (
        "name",
        "require_2fa",
        "reject_reason_required",
        "payload_retention_days",
        "checkpoint_email",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("org")
        super().save(*args, **kwargs)


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        OPERATOR = "operator", "Operator"
        VIEWER = "viewer", "Viewer"

    # Roles that may answer escalations; viewers only read.
    ANSWERING_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.OPERATOR})
    MANAGING_ROLES = frozenset({Role.OWNER, Role.ADMIN})

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OPERATOR)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="unique_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("mem")
        super().save(*args, **kwargs)

    @property
    def can_answer(self) -> bool:
        return self.role in self.ANSWERING_ROLES

    def as_actor(self) -> dict[str, str]:
        return {"type": "user", "id": self.public_id, "email": self.user.email}


class Team(models.Model):
    """A named set of members, targeted as one by escalation policy levels."""

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(Membership, related_name="teams", blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="unique_team_name"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("team")
        super().save(*args, **kwargs)


class Agent(models.Model):
    """An AI agent identity inside an organization; it authenticates with its own keys."""

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set while the agent is disabled: every one of its keys is refused, whatever its own state.
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="unique_agent_name"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("agt")
        super().save(*args, **kwargs)

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None

    def as_actor(self) -> dict[str, str]:
        return {"type": "agent", "id": self.public_id, "name": self.name}


class Scope(models.TextChoices):
    ESCALATIONS_WRITE = "escalations:write", "Create and cancel escalations"
    ESCALATIONS_READ = "escalations:read", "Read escalations"
    RESPONSES_WRITE = "responses:write", "Claim and answer escalations (personal keys only)"
    POLICIES_READ = "policies:read", "List the organization's escalation policies"


AGENT_SCOPES = frozenset({Scope.ESCALATIONS_WRITE, Scope.ESCALATIONS_READ, Scope.POLICIES_READ})
PERSONAL_SCOPES = frozenset({Scope.RESPONSES_WRITE, Scope.ESCALATIONS_READ})


class ApiKey(models.Model):
    """One API key. The plaintext is shown once; only the key id and a SHA-256 digest are kept.

    Format (GitHub-style, see ``tenants.keys``):
    ``ahk_{live|test}_{12 base62 key id}_{32 base62 secret}{6 base62 CRC32 of the rest}``.
    A key belongs to exactly one agent or, as a personal key, to one member.
    """

    class Mode(models.TextChoices):
        LIVE = "live", "Live"
        TEST = "test", "Test"

    key_id = models.CharField(max_length=12, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    membership = models.ForeignKey(
        Membership, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    mode = models.CharField(max_length=4, choices=Mode.choices, default=Mode.LIVE)
    scopes = models.JSONField(default=list)
    digest = models.CharField(max_length=64, editable=False)
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per window; empty uses the default."
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(agent__isnull=False, membership__isnull=True)
                    | models.Q(agent__isnull=True, membership__isnull=False)
                ),
                name="api_key_has_one_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"ahk_{self.mode}_{self.key_id}_…"

    @property
    def is_personal(self) -> bool:
        return self.membership_id is not None

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def digest_matches(self, digest: str) -> bool:
        return hmac.compare_digest(self.digest, digest)

    def as_actor(self) -> dict[str, str]:
        owner = self.agent or self.membership
        assert owner is not None  # api_key_has_one_owner
        return {**owner.as_actor(), "key": self.key_id}


class Invitation(models.Model):
    """An e-mailed offer to join an organization with a role.

    The token travels only in the link; the row keeps its SHA-256 digest. An invitation is usable
    once, until ``expires_at``, and only by a person signed in with (or signing up with) the
    invited e-mail address.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.Role.choices)
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        Membership, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "email"], name="invitation_org_email")]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization} ({self.role})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.public_id:
            self.public_id = new_public_id("inv")
        super().save(*args, **kwargs)

    def state(self, now: datetime | None = None) -> str:
        if self.accepted_at is not None:
            return self.State.ACCEPTED
        if self.revoked_at is not None:
            return self.State.REVOKED
        if self.expires_at <= (now or timezone.now()):
            return self.State.EXPIRED
        return self.State.PENDING

    @property
    def is_pending(self) -> bool:
        return self.state() == self.State.PENDING

    def email_matches(self, email: str) -> bool:
        return self.email.casefold() == (email or "").casefold()


# --- Billing (see tenants/billing/) --------------------------------------------------------------


class BillingAccount(models.Model):
    """Billing state of one organization that ``Organization`` itself does not hold.

    ``payment_grace_until`` is set when Stripe reports the subscription past due: the paid plan
    stays until then, after which the organization counts as Free (``tenants.billing``).
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="billing_account"
    )
    payment_grace_until = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"billing of {self.organization}"


class UsagePeriod(models.Model):
    """Escalations one organization created in one calendar month (UTC), counted exactly.

    ``escalations`` is raised by a conditional UPDATE in the create transaction (never a COUNT
    over the escalations table). ``reported`` is what Stripe has acknowledged as meter events;
    ``reporting`` is the total of a report in flight, so a retry resends the same event with the
    same idempotency key instead of a new one (see ``tenants.tasks``). ``notified_percent`` is the
    highest quota threshold (80, 100) the owners were told about this period.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="usage_periods"
    )
    period_start = models.DateField()
    escalations = models.PositiveIntegerField(default=0)
    reported = models.PositiveIntegerField(default=0)
    reporting = models.PositiveIntegerField(default=0)
    notified_percent = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start"], name="unique_usage_period"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization} {self.period_start:%Y-%m}: {self.escalations}"


class StripeEvent(models.Model):
    """Every Stripe webhook event we processed, once: the unique ``event_id`` makes a redelivery
    (or a concurrent duplicate) a no-op. Written in the transaction that applies the event, so an
    event whose processing failed is not recorded and Stripe's retry processes it again."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=255, blank=True, db_index=True)
    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="stripe_events",
    )
    created = models.DateTimeField(help_text="When Stripe created the event.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.type})"

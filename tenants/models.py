"""Organizations (tenants), their members, agents and API keys."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from django.conf import settings
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
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

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
        if self.agent_id is not None:
            return {**self.agent.as_actor(), "key": self.key_id}
        return {**self.membership.as_actor(), "key": self.key_id}

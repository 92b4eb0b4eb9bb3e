"""Writes to organizations, members, agents and keys. Every change is audited in its transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.services import audit_record

from . import billing, hooks, keycache, keys
from .models import (
    AGENT_SCOPES,
    PERSONAL_SCOPES,
    Agent,
    ApiKey,
    Membership,
    Organization,
)

logger = logging.getLogger(__name__)

LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyRejected(Exception):
    """The presented key cannot be used; ``str(exc)`` says why, safe to show the caller."""


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "org"
    slug, n = base, 2
    while Organization.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@transaction.atomic
def organization_create(
    *, name: str, owner: User, slug: str | None = None, actor: dict | None = None
) -> Organization:
    organization = Organization.objects.create(name=name, slug=slug or _unique_slug(name))
    membership = Membership.objects.create(
        organization=organization, user=owner, role=Membership.Role.OWNER
    )
    audit_record(
        organization_id=organization.pk,
        action="organization.created",
        actor=actor or membership.as_actor(),
        target=organization.public_id,
        data={"name": name, "slug": organization.slug},
    )
    audit_record(
        organization_id=organization.pk,
        action="membership.created",
        actor=actor or membership.as_actor(),
        target=membership.public_id,
        data={"email": owner.email, "role": membership.role},
    )
    return organization


def user_get_or_create(*, email: str, password: str | None = None) -> User:
    """The user with this e-mail (case-insensitive), created if new; a given password is set."""
    user_model = get_user_model()
    user = user_model.objects.filter(email__iexact=email).first()
    if user is None:
        user = user_model.objects.create_user(username=email.lower(), email=email.lower())
    if password:
        user.set_password(password)
        user.save(update_fields=["password"])
    return user


@transaction.atomic
def membership_add(*, organization: Organization, user: User, role: str, actor: dict) -> Membership:
    membership = Membership.objects.create(organization=organization, user=user, role=role)
    audit_record(
        organization_id=organization.pk,
        action="membership.created",
        actor=actor,
        target=membership.public_id,
        data={"email": user.email, "role": role},
    )
    return membership


@transaction.atomic
def agent_create(
    *, organization: Organization, name: str, description: str = "", actor: dict
) -> Agent:
    billing.agent_limit_check(organization=organization)
    agent = Agent.objects.create(organization=organization, name=name, description=description)
    audit_record(
        organization_id=organization.pk,
        action="agent.created",
        actor=actor,
        target=agent.public_id,
        data={"name": name},
    )
    return agent


@transaction.atomic
def agent_disable(*, agent: Agent, actor: dict) -> Agent:
    """Refuse every key of this agent from the next request on, in every process (the flag is
    read with the key). The keys themselves are left as they are, so enabling the agent again
    restores exactly the keys it had."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.disabled_at is None:
        agent.disabled_at = timezone.now()
        agent.save(update_fields=["disabled_at"])
        audit_record(
            organization_id=agent.organization_id,
            action="agent.disabled",
            actor=actor,
            target=agent.public_id,
            data={"name": agent.name},
        )
    return agent


@transaction.atomic
def agent_enable(*, agent: Agent, actor: dict) -> Agent:
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.disabled_at is not None:
        agent.disabled_at = None
        agent.save(update_fields=["disabled_at"])
        audit_record(
            organization_id=agent.organization_id,
            action="agent.enabled",
            actor=actor,
            target=agent.public_id,
            data={"name": agent.name},
        )
    return agent


@transaction.atomic
def api_key_create(
    *,
    organization: Organization,
    actor: dict,
    agent: Agent | None = None,
    membership: Membership | None = None,
    scopes: list[str] | None = None,
    name: str = "",
    mode: str = ApiKey.Mode.LIVE,
    expires_in_days: int | None = None,
) -> IssuedKey:
    """Issue a key for an agent or (personal key) a member. The plaintext is returned once.

    Agent keys may only hold agent scopes: an agent can never answer its own escalation.
    """
    if agent is not None and membership is None:
        owner_id = agent.public_id
    elif membership is not None and agent is None:
        owner_id = membership.public_id
    else:
        raise ValueError("A key belongs to exactly one agent or one member.")
    allowed = AGENT_SCOPES if agent is not None else PERSONAL_SCOPES
    scopes = sorted(set(scopes if scopes is not None else allowed))
    invalid = [scope for scope in scopes if scope not in allowed]
    if invalid:
        owner = "agent" if agent is not None else "personal"
        raise ValueError(
            f"Scope(s) {', '.join(invalid)} are not allowed on {owner} keys; "
            f"allowed: {', '.join(sorted(allowed))}."
        )
    if expires_in_days is not None and expires_in_days < 1:
        raise ValueError("expires_in_days must be at least 1.")
    key_id, plaintext = keys.generate(mode)
    api_key = ApiKey.objects.create(
        key_id=key_id,
        organization=organization,
        agent=agent,
        membership=membership,
        name=name,
        mode=mode,
        scopes=scopes,
        digest=keys.digest_of(plaintext),
        expires_at=(timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None),
    )
    audit_record(
        organization_id=organization.pk,
        action="api_key.created",
        actor=actor,
        target=key_id,
        data={
            "owner": owner_id,
            "scopes": scopes,
            "mode": mode,
            "expires_at": api_key.expires_at.isoformat() if api_key.expires_at else None,
        },
    )
    return IssuedKey(api_key=api_key, plaintext=plaintext)


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: dict) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(
            organization_id=api_key.organization_id,
            action="api_key.revoked",
            actor=actor,
            target=api_key.key_id,
        )
    return api_key


KEY_ROLL_MAX_GRACE = timedelta(days=30)


class KeyRollRefused(Exception):
    """A key that cannot be rolled; ``str(exc)`` says why, safe to show."""


@transaction.atomic
def api_key_roll(*, api_key: ApiKey, grace: timedelta, actor: dict) -> IssuedKey:
    """Replace a key without downtime: a new key with the same owner, name, mode, scopes, limit
    and expiry, while the old one keeps working for ``grace`` (at most ``KEY_ROLL_MAX_GRACE``)
    and then expires. Both events are audited; the new plaintext is returned once."""
    if not timedelta(0) <= grace <= KEY_ROLL_MAX_GRACE:
        raise KeyRollRefused(f"The grace period must be from 0 to {KEY_ROLL_MAX_GRACE.days} days.")
    old = (
        ApiKey.objects.select_for_update(of=("self",))
        .select_related("agent", "membership")
        .get(pk=api_key.pk)
    )
    now = timezone.now()
    if not old.is_usable(now):
        raise KeyRollRefused("Only a key that still works can be rolled; create a new one.")
    issued = api_key_create(
        organization=old.organization,
        actor=actor,
        agent=old.agent,
        membership=old.membership,
        scopes=list(old.scopes),
        name=old.name,
        mode=old.mode,
    )
    issued.api_key.expires_at = old.expires_at
    issued.api_key.rate_limit = old.rate_limit
    issued.api_key.save(update_fields=["expires_at", "rate_limit"])
    old.expires_at = min(old.expires_at or now + grace, now + grace)
    old.save(update_fields=["expires_at"])
    audit_record(
        organization_id=old.organization_id,
        action="api_key.rolled",
        actor=actor,
        target=old.key_id,
        data={"new_key": issued.api_key.key_id, "old_key_expires_at": old.expires_at.isoformat()},
    )
    return issued


def api_key_authenticate(plaintext: str) -> ApiKey:
    """The usable key for this plaintext, with its organization and owner loaded.

    The checksum is checked before the database is touched; the digest is compared in constant
    time. Rows come from the per-process ``keycache`` when they can (revocation still reaches
    every process within a second). ``last_used_at`` is written at most once a minute per key
    (a conditional UPDATE, so concurrent requests do not all write).
    """
    try:
        parsed = keys.parse(plaintext)
    except keys.MalformedKey as exc:
        raise KeyRejected(str(exc)) from None
    api_key, epoch = keycache.get(parsed.key_id)
    if api_key is None:
        api_key = (
            ApiKey.objects.select_related("organization", "agent", "membership__user")
            .filter(key_id=parsed.key_id)
            .first()
        )
        if api_key is not None:
            keycache.remember(api_key, epoch)
    if api_key is None or not api_key.digest_matches(parsed.digest) or api_key.mode != parsed.mode:
        raise KeyRejected("The API key is not valid.")
    now = timezone.now()
    if api_key.revoked_at is not None:
        raise KeyRejected("The API key has been revoked.")
    if not api_key.is_usable(now):
        raise KeyRejected("The API key has expired.")
    if api_key.agent is not None and api_key.agent.is_disabled:
        raise KeyRejected("The agent this API key belongs to is disabled.")
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        cutoff = now - LAST_USED_RESOLUTION
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff), pk=api_key.pk
        ).update(last_used_at=now)
        api_key.last_used_at = now  # the cached row too: once a minute, not every request
    return api_key


# --- Organizations ------------------------------------------------------------------------------


class Unset:
    """The type of ``UNSET``: an argument left out, where ``None`` is a value of its own."""


UNSET = Unset()


@transaction.atomic
def organization_update(
    *,
    organization: Organization,
    name: str,
    require_2fa: bool,
    actor: dict,
    reject_reason_required: bool | None = None,
    payload_retention_days: int | Unset | None = UNSET,
    checkpoint_email: str | None = None,
) -> Organization:
    if reject_reason_required is None:
        reject_reason_required = organization.reject_reason_required
    if isinstance(payload_retention_days, Unset):
        payload_retention_days = organization.payload_retention_days
    if checkpoint_email is None:
        checkpoint_email = organization.checkpoint_email
    fields = list(Organization.SETTINGS_FIELDS)
    before = {field: getattr(organization, field) for field in fields}
    after = {
        "name": name,
        "require_2fa": require_2fa,
        "reject_reason_required": reject_reason_required,
        "payload_retention_days": payload_retention_days,
        "checkpoint_email": checkpoint_email,
    }
    if before == after:
        return organization
    for field, value in after.items():
        setattr(organization, field, value)
    organization.save(update_fields=fields)
    audit_record(
        organization_id=organization.pk,
        action="organization.updated",
        actor=actor,
        target=organization.public_id,
        data={"before": before, "after": after},
    )
    return organization


@transaction.atomic
def organization_delete(*, organization: Organization, actor: dict) -> None:
    """Delete the organization and everything in it. Its audit chain stays (no foreign key), and
    its last event says who deleted it."""
    audit_record(
        organization_id=organization.pk,
        action="organization.deleted",
        actor=actor,
        target=organization.public_id,
        data={"name": organization.name, "slug": organization.slug},
    )
    # The apps above delete what PROTECTs the organization's agents and members first.
    hooks.organization_deleting(organization)
    organization.delete()


# --- Sign-in failures -----------------------------------------------------------------------------


class SignInStage:
    FIRST_FACTOR = "password"
    # Refused unchecked: too many failures for this address or IP (allauth's limit).
    FIRST_FACTOR_LOCKED = "password_locked"
    SECOND_FACTOR = "second_factor"


@transaction.atomic
def sign_in_failure_record(*, user: User | None, stage: str, ip: str) -> None:
    """A refused sign-in step, in the trail of every organization the person belongs to: which
    step, from which IP, and never what was typed. An address that matches nobody has no trail
    to write to; the log line is all it gets."""
    found = (
        list(Membership.objects.select_related("user").filter(user=user))
        if user is not None
        else []
    )
    if not found:
        logger.warning("sign-in refused at step %s for an unknown account from %s", stage, ip)
    for membership in found:
        audit_record(
            organization_id=membership.organization_id,
            action="member.sign_in_failed",
            actor={"type": "client", "ip": ip},
            target=membership.public_id,
            data={"email": membership.user.email, "stage": stage, "ip": ip},
        )


# --- Two-factor authentication --------------------------------------------------------------------

RECOVERY_CODE_COUNT = 10


def _audit_for_each_membership(user: User, action: str, data: dict) -> None:
    """Second factors belong to the person, not to one organization: every organization they
    work in records the change in its own trail."""
    for membership in Membership.objects.select_related("user").filter(user=user):
        audit_record(
            organization_id=membership.organization_id,
            action=action,
            actor=membership.as_actor(),
            target=membership.public_id,
            data=data,
        )


def _new_recovery_codes(user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="Recovery codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


@transaction.atomic
def two_factor_enable(*, user: User, device: TOTPDevice) -> list[str]:
    """Confirm a TOTP device whose code was just checked, and issue fresh recovery codes
    (returned once; django-otp keeps them as static tokens)."""
    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    codes = _new_recovery_codes(user)
    _audit_for_each_membership(user, "member.two_factor_enabled", {"device": device.name})
    return codes


@transaction.atomic
def two_factor_recovery_codes_regenerate(*, user: User) -> list[str]:
    codes = _new_recovery_codes(user)
    _audit_for_each_membership(user, "member.recovery_codes_regenerated", {})
    return codes


@transaction.atomic
def two_factor_disable(*, user: User) -> None:
    TOTPDevice.objects.filter(user=user).delete()
    StaticDevice.objects.filter(user=user).delete()
    _audit_for_each_membership(user, "member.two_factor_disabled", {})

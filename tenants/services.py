"""Writes to organizations, members, agents and keys. Every change is audited in its transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from audit.services import audit_record

from . import keys
from .models import AGENT_SCOPES, PERSONAL_SCOPES, Agent, ApiKey, Membership, Organization

SYSTEM_ACTOR = {"type": "system"}
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
    *, name: str, owner: AbstractBaseUser, slug: str | None = None, actor: dict | None = None
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


def user_get_or_create(*, email: str, password: str | None = None) -> AbstractBaseUser:
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
def membership_add(
    *, organization: Organization, user: AbstractBaseUser, role: str, actor: dict
) -> Membership:
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
    if (agent is None) == (membership is None):
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
            "owner": agent.public_id if agent is not None else membership.public_id,
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


def api_key_authenticate(plaintext: str) -> ApiKey:
    """The usable key for this plaintext, with its organization and owner loaded.

    The checksum is checked before the database is touched; the digest is compared in constant
    time. ``last_used_at`` is written at most once a minute per key (a conditional UPDATE, so
    concurrent requests do not all write).
    """
    try:
        parsed = keys.parse(plaintext)
    except keys.MalformedKey as exc:
        raise KeyRejected(str(exc)) from None
    api_key = (
        ApiKey.objects.select_related("organization", "agent", "membership__user")
        .filter(key_id=parsed.key_id)
        .first()
    )
    if api_key is None or not api_key.digest_matches(parsed.digest) or api_key.mode != parsed.mode:
        raise KeyRejected("The API key is not valid.")
    now = timezone.now()
    if api_key.revoked_at is not None:
        raise KeyRejected("The API key has been revoked.")
    if not api_key.is_usable(now):
        raise KeyRejected("The API key has expired.")
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        cutoff = now - LAST_USED_RESOLUTION
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff), pk=api_key.pk
        ).update(last_used_at=now)
    return api_key

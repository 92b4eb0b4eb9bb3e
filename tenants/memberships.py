"""Members and invitations: who joins an organization, with which role, and who leaves.

Invitations carry a random token e-mailed once; only its SHA-256 digest is stored. Every change
is checked against the organization's rules (only owners and admins manage members, only an owner
makes an owner, an organization keeps at least one owner, seats that can answer count against
the plan) and audited in the same transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import ProtectedError
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from audit.services import audit_record

from . import billing, hooks
from .models import Invitation, Membership, Organization


class MembershipError(Exception):
    """A member change that the organization's rules refuse; ``str(exc)`` is safe to show."""


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str


class InvitationRefused(Exception):
    """An invitation that cannot be accepted; ``reason`` is a stable code, ``str(exc)`` says why
    in words the invitee can act on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def invitation_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def invitation_for_token(token: str) -> Invitation | None:
    """The invitation this link token belongs to, whatever its state; None if there is none."""
    if not token or len(token) > 128:
        return None
    return (
        Invitation.objects.select_related("organization", "invited_by__user")
        .filter(token_digest=invitation_digest(token))
        .first()
    )


def invitation_url(token: str, *, base_url: str | None = None) -> str:
    return (base_url or settings.AWAITHUMAN_BASE_URL) + reverse("invitation", args=[token])


def _send_invitation(invitation: Invitation, token: str) -> None:
    context = {"invitation": invitation, "url": invitation_url(token)}
    send_mail(
        subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}Join {invitation.organization.name}",
        message=render_to_string("tenants/email/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )


def _check_can_grant(actor: Membership, role: str) -> None:
    if actor.role not in Membership.MANAGING_ROLES:
        raise MembershipError("Only owners and admins manage members.")
    if role == Membership.Role.OWNER and actor.role != Membership.Role.OWNER:
        raise MembershipError("Only an owner can make someone an owner.")


@transaction.atomic
def invitation_create(
    *, organization: Organization, email: str, role: str, invited_by: Membership
) -> IssuedInvitation:
    """Invite ``email`` with ``role``; the link (returned once, and e-mailed after commit)
    carries a random token whose SHA-256 digest is all we keep. An earlier pending invitation
    of the same address is revoked, so only the newest link works."""
    _check_can_grant(invited_by, role)
    if role not in Membership.Role.values:
        raise MembershipError(f"Unknown role {role!r}.")
    email = email.strip().lower()
    if organization.memberships.filter(user__email__iexact=email).exists():
        raise MembershipError(f"{email} is already a member of {organization.name}.")
    billing.operator_limit_check(organization=organization, role=role, email=email)
    now = timezone.now()
    for earlier in organization.invitations.filter(
        email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
    ):
        _invitation_revoke(earlier, actor=invited_by.as_actor(), now=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization,
        email=email,
        role=role,
        token_digest=invitation_digest(token),
        invited_by=invited_by,
        created_at=now,
        expires_at=now + timedelta(days=settings.INVITATION_TTL_DAYS),
    )
    audit_record(
        organization_id=organization.pk,
        action="invitation.created",
        actor=invited_by.as_actor(),
        target=invitation.public_id,
        data={"email": email, "role": role, "expires_at": invitation.expires_at.isoformat()},
    )
    transaction.on_commit(lambda: _send_invitation(invitation, token))
    return IssuedInvitation(invitation=invitation, token=token)


def _invitation_revoke(invitation: Invitation, *, actor: dict, now: Any) -> None:
    invitation.revoked_at = now
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        organization_id=invitation.organization_id,
        action="invitation.revoked",
        actor=actor,
        target=invitation.public_id,
        data={"email": invitation.email},
    )


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: dict) -> Invitation:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.is_pending:
        _invitation_revoke(invitation, actor=actor, now=timezone.now())
    return invitation


def invitation_check(invitation: Invitation, *, email: str | None = None) -> None:
    """Raise ``InvitationRefused`` if ``invitation`` cannot be used now, or (when ``email`` is
    given) not by the person signed in with that address."""
    state = invitation.state()
    if state == Invitation.State.ACCEPTED:
        raise InvitationRefused("used", "This invitation has already been used.")
    if state == Invitation.State.REVOKED:
        raise InvitationRefused("revoked", "This invitation was withdrawn.")
    if state == Invitation.State.EXPIRED:
        raise InvitationRefused(
            "expired",
            f"This invitation expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Ask an admin of the organization for a new one.",
        )
    if email is not None and not invitation.email_matches(email):
        raise InvitationRefused(
            "foreign",
            f"This invitation was sent to {invitation.email}, but you are signed in as "
            f"{email}. Sign out and sign in (or sign up) with the invited address.",
        )


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    """Join the invitation's organization as ``user``. Refused (``InvitationRefused``) when the
    token is unknown, expired, revoked or already used, or when ``user`` signed in with another
    e-mail address than the one invited. The row is locked, so a link used twice at the same
    moment still makes one membership."""
    found = invitation_for_token(token)
    if found is None:
        raise InvitationRefused(
            "invalid", "This invitation link is not valid. Check that you copied all of it."
        )
    invitation = (
        Invitation.objects.select_for_update().select_related("organization").get(pk=found.pk)
    )
    invitation_check(invitation, email=user.email)
    organization = invitation.organization
    if organization.memberships.filter(user=user).exists():
        raise InvitationRefused("member", f"You are already a member of {organization.name}.")
    billing.operator_limit_check(organization=organization, role=invitation.role, invitations=False)
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    membership = Membership.objects.create(
        organization=organization, user=user, role=invitation.role
    )
    audit_record(
        organization_id=organization.pk,
        action="invitation.accepted",
        actor=membership.as_actor(),
        target=invitation.public_id,
        data={"email": invitation.email, "role": invitation.role},
    )
    audit_record(
        organization_id=organization.pk,
        action="membership.created",
        actor=membership.as_actor(),
        target=membership.public_id,
        data={"email": user.email, "role": membership.role, "invitation": invitation.public_id},
    )
    return membership


def _check_can_manage(actor: Membership, membership: Membership) -> None:
    if actor.organization_id != membership.organization_id:
        raise MembershipError("That member belongs to another organization.")
    _check_can_grant(actor, membership.role)


def _check_keeps_an_owner(membership: Membership) -> None:
    if membership.role != Membership.Role.OWNER:
        return
    owners = Membership.objects.select_for_update().filter(
        organization_id=membership.organization_id, role=Membership.Role.OWNER
    )
    if not owners.exclude(pk=membership.pk).exists():
        raise MembershipError("An organization needs at least one owner; make someone else owner.")


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor: Membership) -> Membership:
    if role not in Membership.Role.values:
        raise MembershipError(f"Unknown role {role!r}.")
    _check_can_manage(actor, membership)
    _check_can_grant(actor, role)
    if membership.role == role:
        return membership
    if role != Membership.Role.OWNER:
        _check_keeps_an_owner(membership)
    if membership.role not in Membership.ANSWERING_ROLES:
        billing.operator_limit_check(
            organization=membership.organization, role=role, invitations=False
        )
    before = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        organization_id=membership.organization_id,
        action="membership.role_changed",
        actor=actor.as_actor(),
        target=membership.public_id,
        data={"email": membership.user.email, "before": before, "after": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Membership) -> None:
    """End a member's access at once: the membership and its personal keys go, sessions lose
    the organization on their next request, and the apps above act on ``hooks.membership_removed``
    (the live queue closes the member's websockets after commit)."""
    _check_can_manage(actor, membership)
    _check_keeps_an_owner(membership)
    organization = membership.organization
    public_id, email = membership.public_id, membership.user.email
    keys_deleted = list(membership.api_keys.values_list("key_id", flat=True))
    try:
        with transaction.atomic():
            membership.delete()
    except ProtectedError:
        # Their answers reference the membership (escalations.Response.membership is PROTECT,
        # to keep who decided what); until answers carry their own record of the person,
        # such a member can be demoted to viewer but not removed.
        raise MembershipError(
            f"{email} has answered escalations, and their answers must keep naming them. "
            "Make them a viewer to stop them answering."
        ) from None
    audit_record(
        organization_id=organization.pk,
        action="membership.removed",
        actor=actor.as_actor(),
        target=public_id,
        data={"email": email, "api_keys_deleted": keys_deleted},
    )
    hooks.membership_removed(organization, public_id)

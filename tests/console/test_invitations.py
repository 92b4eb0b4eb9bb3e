"""Invitations: admins invite by e-mail with a role; the single-use, hashed, 7-day link lets the
invitee sign up or sign in and join; expired, reused and foreign links are refused clearly."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from tenants.memberships import InvitationRefused, invitation_accept, invitation_create
from tenants.models import Invitation, Membership, Organization
from tenants.services import user_get_or_create

from .helpers import signed_in

pytestmark = pytest.mark.django_db


def invite(tenant, email="olga@example.test", role="operator", by="alice"):
    return invitation_create(
        organization=tenant.organization, email=email, role=role, invited_by=tenant.members[by]
    )


def link_path(token: str) -> str:
    return f"/invitations/{token}/"


def test_an_admin_invites_by_email_and_the_mail_carries_the_link(
    acme, django_capture_on_commit_callbacks
):
    client = signed_in(acme.members["alice"].user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/org/members/", {"email": "Olga@Example.test", "role": "operator"})
    assert response.status_code == 200
    page = response.content.decode()
    token = re.search(r"/invitations/([\w-]+)/", page).group(1)
    invitation = Invitation.objects.get()
    assert invitation.email == "olga@example.test"
    assert invitation.role == "operator"
    assert invitation.invited_by == acme.members["alice"]
    # Only the digest is stored, never the token.
    assert invitation.token_digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(Invitation.objects.values().get())
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    assert mail.outbox[-1].to == ["olga@example.test"]
    assert f"/invitations/{token}/" in mail.outbox[-1].body
    assert "Acme" in mail.outbox[-1].subject
    event = AuditEvent.objects.get(action="invitation.created")
    assert event.target == invitation.public_id
    assert event.data["role"] == "operator"


def test_a_new_person_signs_up_from_the_link_and_joins_with_the_role(acme):
    issued = invite(acme)
    client = Client()
    page = client.get(link_path(issued.token))
    assert page.status_code == 200
    assert "Create your account" in page.content.decode()
    form = client.get("/account/signup/").content.decode()
    assert "Join Acme" in form
    assert 'name="organization"' not in form
    response = client.post(
        "/account/signup/",
        {
            "email": "olga@example.test",
            "password1": "a-long-passphrase-7",
            "password2": "a-long-passphrase-7",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    user = get_user_model().objects.get(email="olga@example.test")
    membership = Membership.objects.get(user=user)
    assert membership.organization == acme.organization
    assert membership.role == "operator"
    # No organization of her own, and the link proved the address: no verification mail.
    assert Organization.objects.count() == 1
    assert user.emailaddress_set.get().verified
    issued.invitation.refresh_from_db()
    assert issued.invitation.accepted_at is not None
    assert issued.invitation.accepted_by == user
    assert "bob@acme.test" in client.get("/org/members/").content.decode()
    assert AuditEvent.objects.filter(
        action="invitation.accepted", target=issued.invitation.public_id
    ).exists()


def test_signing_up_from_the_link_with_another_address_is_refused(acme):
    issued = invite(acme)
    client = Client()
    client.get(link_path(issued.token))
    response = client.post(
        "/account/signup/",
        {
            "email": "mallory@example.test",
            "password1": "a-long-passphrase-7",
            "password2": "a-long-passphrase-7",
        },
    )
    assert response.status_code == 200
    assert "This invitation is for olga@example.test" in response.content.decode()
    assert not get_user_model().objects.filter(email="mallory@example.test").exists()


def test_an_existing_user_signs_in_and_joins(acme, globex):
    issued = invite(acme, email="dana@globex.test", role="viewer")
    client = Client()
    page = client.get(link_path(issued.token)).content.decode()
    assert "Sign in to accept" in page
    response = client.post(
        f"/account/login/?next={link_path(issued.token)}",
        {"login": "dana@globex.test", "password": "correct-horse-42"},
    )
    assert response["Location"] == link_path(issued.token)
    assert "Join Acme" in client.get(link_path(issued.token)).content.decode()
    joined = client.post(link_path(issued.token))
    assert joined.status_code == 302
    dana = globex.members["dana"].user
    assert Membership.objects.get(organization=acme.organization, user=dana).role == "viewer"
    # She now works in Acme, and still belongs to Globex.
    assert "bob@acme.test" in client.get("/org/members/").content.decode()
    assert Membership.objects.filter(user=dana).count() == 2


def test_an_expired_link_is_refused_with_a_clear_page(acme):
    issued = invite(acme)
    Invitation.objects.filter(pk=issued.invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = Client().get(link_path(issued.token))
    assert response.status_code == 410
    assert "expired" in response.content.decode()
    with pytest.raises(InvitationRefused) as refused:
        invitation_accept(token=issued.token, user=user_get_or_create(email="olga@example.test"))
    assert refused.value.reason == "expired"


def test_a_used_link_is_refused(acme):
    issued = invite(acme)
    olga = user_get_or_create(email="olga@example.test", password="a-long-passphrase-7")
    invitation_accept(token=issued.token, user=olga)
    response = signed_in(olga).post(link_path(issued.token))
    assert response.status_code == 410
    assert "already been used" in response.content.decode()
    assert Membership.objects.filter(user=olga).count() == 1


def test_a_link_opened_by_someone_signed_in_as_another_address_is_refused(acme):
    issued = invite(acme)
    client = signed_in(acme.members["bob"].user)
    for response in (client.get(link_path(issued.token)), client.post(link_path(issued.token))):
        assert response.status_code == 403
        page = response.content.decode()
        assert "sent to olga@example.test" in page
        assert "signed in as bob@acme.test" in page
    issued.invitation.refresh_from_db()
    assert issued.invitation.accepted_at is None


def test_an_unknown_link_is_404():
    response = Client().get("/invitations/not-a-real-token/")
    assert response.status_code == 404
    assert "not valid" in response.content.decode()


def test_a_withdrawn_invitation_no_longer_works(acme):
    issued = invite(acme)
    client = signed_in(acme.members["alice"].user)
    response = client.post(f"/org/invitations/{issued.invitation.public_id}/revoke/")
    assert response.status_code == 302
    assert Client().get(link_path(issued.token)).status_code == 410
    assert AuditEvent.objects.filter(action="invitation.revoked").exists()


def test_inviting_the_same_address_again_replaces_the_first_link(acme):
    first = invite(acme)
    second = invite(acme, role="viewer")
    assert Client().get(link_path(first.token)).status_code == 410
    assert Client().get(link_path(second.token)).status_code == 200


@pytest.mark.parametrize("person", ["bob", "vera"])
def test_operators_and_viewers_cannot_invite(acme, person):
    client = signed_in(acme.members[person].user)
    response = client.post("/org/members/", {"email": "x@example.test", "role": "viewer"})
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_only_an_owner_invites_an_owner(acme):
    bob = acme.members["bob"]
    bob.role = "admin"
    bob.save()
    client = signed_in(bob.user)
    response = client.post("/org/members/", {"email": "x@example.test", "role": "owner"})
    assert "Only an owner can make someone an owner" in response.content.decode()
    assert not Invitation.objects.exists()


def test_inviting_a_member_is_refused(acme):
    client = signed_in(acme.members["alice"].user)
    response = client.post("/org/members/", {"email": "BOB@acme.test", "role": "viewer"})
    assert "already a member" in response.content.decode()

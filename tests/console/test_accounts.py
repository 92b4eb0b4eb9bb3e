"""Accounts through allauth: sign-up makes an organization and its owner; sign-in, sign-out,
e-mail verification, password reset, rate limits; switching between organizations."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from audit.models import AuditEvent
from audit.services import SYSTEM_ACTOR
from tenants.models import Membership, Organization
from tenants.services import membership_add

from .helpers import signed_in

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-42"


def sign_up(client: Client, **overrides: str):
    data = {
        "organization": "Initech",
        "email": "peter@initech.test",
        "password1": "a-long-passphrase-7",
        "password2": "a-long-passphrase-7",
        **overrides,
    }
    return client.post("/account/signup/", data)


def test_sign_up_creates_an_organization_and_makes_the_person_its_owner():
    client = Client()
    response = sign_up(client)
    assert response.status_code == 302, response.content.decode()[:3000]
    user = get_user_model().objects.get(email="peter@initech.test")
    organization = Organization.objects.get(name="Initech")
    membership = Membership.objects.get(user=user)
    assert membership.organization == organization
    assert membership.role == Membership.Role.OWNER
    actions = list(
        AuditEvent.objects.filter(organization_id=organization.pk).values_list("action", flat=True)
    )
    assert actions == ["organization.created", "membership.created"]
    page = client.get("/org/members/")
    assert page.status_code == 200
    assert "Initech" in page.content.decode()


def test_the_greeting_after_sign_up_names_the_person_by_their_address():
    client = Client()
    sign_up(client)
    page = client.get("/").content.decode()
    assert "Signed in as peter@initech.test." in page
    assert "signed in as peter." not in page.lower()


def test_sign_up_sends_a_verification_email_that_verifies_the_address():
    client = Client()
    sign_up(client)
    assert len(mail.outbox) == 1
    link = re.search(r"http://\S+/account/confirm-email/\S+/", mail.outbox[0].body).group(0)
    client.post(link.split("testserver", 1)[-1])
    user = get_user_model().objects.get(email="peter@initech.test")
    assert user.emailaddress_set.get().verified


def test_sign_up_needs_an_organization_name():
    response = sign_up(Client(), organization="")
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not Organization.objects.exists()


def test_sign_up_with_a_taken_email_creates_nothing(acme):
    response = sign_up(Client(), email="alice@acme.test", organization="Second Acme")
    assert not Organization.objects.filter(name="Second Acme").exists()
    assert response.status_code in (200, 302)


def test_sign_in_and_sign_out(acme):
    client = Client()
    page = client.get("/account/login/")
    assert page.status_code == 200
    assert "console/console.css" in page.content.decode()
    response = client.post("/account/login/", {"login": "bob@acme.test", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/org/members/").status_code == 200
    assert client.post("/account/logout/").status_code == 302
    assert client.get("/org/members/").status_code == 302


def test_a_wrong_password_is_refused(acme):
    response = Client().post("/account/login/", {"login": "bob@acme.test", "password": "nope"})
    assert response.status_code == 200
    assert "not correct" in response.content.decode()


def test_failed_sign_ins_are_rate_limited(acme):
    client = Client()
    for _ in range(5):
        client.post("/account/login/", {"login": "bob@acme.test", "password": "wrong"})
    response = client.post("/account/login/", {"login": "bob@acme.test", "password": PASSWORD})
    assert "Too many failed login attempts" in response.content.decode()
    assert client.get("/org/members/").status_code == 302


def test_password_reset_mails_a_link_that_sets_a_new_password(acme):
    client = Client()
    response = client.post("/account/password/reset/", {"email": "bob@acme.test"})
    assert response.status_code == 302
    link = re.search(r"http://testserver(/account/password/reset/key/\S+/)", mail.outbox[-1].body)
    form = client.get(link.group(1), follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0] if form.redirect_chain else link.group(1),
        {"password1": "brand-new-pass-99", "password2": "brand-new-pass-99"},
    )
    assert done.status_code == 302
    assert Client().login(username="bob@acme.test", password="brand-new-pass-99")


def test_a_person_in_two_organizations_switches_between_them(acme, globex):
    alice = acme.members["alice"].user
    membership_add(organization=globex.organization, user=alice, role="viewer", actor=SYSTEM_ACTOR)
    client = signed_in(alice)
    page = client.get("/org/members/").content.decode()
    assert "bob@acme.test" in page
    assert 'class="switcher"' in page
    response = client.post(
        "/org/switch/", {"organization": globex.organization.public_id, "next": "/org/members/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/org/members/"
    page = client.get("/org/members/").content.decode()
    assert "dana@globex.test" in page
    assert "bob@acme.test" not in page
    # A viewer in Globex: management is refused there, though Alice owns Acme.
    assert client.get("/org/settings/").status_code == 403


def test_switching_to_an_organization_i_am_not_in_is_404(acme, globex):
    client = signed_in(acme.members["alice"].user)
    response = client.post("/org/switch/", {"organization": globex.organization.public_id})
    assert response.status_code == 404
    assert "bob@acme.test" in client.get("/org/members/").content.decode()


def test_switching_never_redirects_off_site(acme, globex):
    alice = acme.members["alice"].user
    membership_add(organization=globex.organization, user=alice, role="viewer", actor=SYSTEM_ACTOR)
    response = signed_in(alice).post(
        "/org/switch/",
        {"organization": globex.organization.public_id, "next": "https://evil.test/"},
    )
    assert response["Location"] == "/"


def test_console_pages_need_a_signed_in_member(acme):
    response = Client().get("/org/agents/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/login/?next=/org/agents/")

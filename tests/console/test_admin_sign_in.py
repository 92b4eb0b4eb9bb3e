"""Django admin has no password form of its own: /admin/login/ leads to the console's sign-in,
with allauth's failed-login limit and the second factor; refused steps are audited."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent

from .helpers import code_for, signed_in, verified
from .test_two_factor import PASSWORD, enable_for

pytestmark = pytest.mark.django_db


def test_admin_login_never_signs_anyone_in_with_a_password(acme):
    client = Client()
    for _ in range(30):
        client.post("/admin/login/", {"username": "alice@acme.test", "password": "wrong"})
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "alice@acme.test", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/account/login/?next=%2Fadmin%2F"
    assert "_auth_user_id" not in client.session
    assert client.get("/org/members/").status_code == 302
    assert client.get("/admin/").status_code == 302


def test_admin_login_sends_visitors_to_the_console_sign_in_and_back(acme):
    response = Client().get("/admin/login/?next=/admin/escalations/policy/")
    assert response["Location"] == "/account/login/?next=%2Fadmin%2Fescalations%2Fpolicy%2F"
    foreign = Client().get("/admin/login/?next=https://evil.example/")
    assert foreign["Location"] == "/account/login/?next=%2Fadmin%2F"


def test_a_person_locked_out_of_the_console_cannot_get_in_through_admin(acme):
    client = Client()
    for _ in range(10):
        client.post("/account/login/", {"login": "alice@acme.test", "password": "wrong"})
    locked = client.post("/account/login/", {"login": "alice@acme.test", "password": PASSWORD})
    assert locked.status_code == 200
    assert "_auth_user_id" not in client.session
    client.post("/admin/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(
        action="member.sign_in_failed", data__stage="password_locked"
    ).exists()


def test_signed_in_admins_pass_and_others_are_refused(acme):
    alice = verified(acme.members["alice"].user)
    assert alice.get("/admin/login/?next=/admin/")["Location"] == "/admin/"
    assert verified(acme.members["bob"].user).get("/admin/login/").status_code == 403


def test_a_wrong_password_is_audited_with_the_ip_and_no_secret(acme):
    Client(REMOTE_ADDR="203.0.113.7").post(
        "/account/login/", {"login": "alice@acme.test", "password": "hunter2-guess"}
    )
    event = AuditEvent.objects.get(action="member.sign_in_failed")
    assert event.organization_id == acme.organization.pk
    assert event.target == acme.members["alice"].public_id
    assert event.data == {"email": "alice@acme.test", "stage": "password", "ip": "203.0.113.7"}
    assert event.actor == {"type": "client", "ip": "203.0.113.7"}
    assert "hunter2" not in str(event.data) + str(event.actor)


def test_an_unknown_address_writes_no_audit_event(acme):
    Client().post("/account/login/", {"login": "nobody@acme.test", "password": "x"})
    assert not AuditEvent.objects.filter(action="member.sign_in_failed").exists()


def test_a_wrong_second_factor_code_is_audited(acme):
    bob = acme.members["bob"].user
    device, _ = enable_for(bob)
    client = signed_in(bob)
    wrong = "000000" if code_for(device) != "000000" else "111111"
    client.post("/account/2fa/verify/", {"code": wrong}, REMOTE_ADDR="198.51.100.4")
    event = AuditEvent.objects.get(action="member.sign_in_failed")
    assert event.data == {"email": "bob@acme.test", "stage": "second_factor", "ip": "198.51.100.4"}
    assert wrong not in str(event.data)


def test_the_lockout_counts_per_account_whatever_the_host_name(acme):
    for host in ("127.0.0.1:8000", "localhost:8000", "127.0.0.1:8001", "localhost", "[::1]"):
        Client(HTTP_HOST=host).post(
            "/account/login/", {"login": "alice@acme.test", "password": "wrong"}
        )
    client = Client(HTTP_HOST="127.0.0.1:8002")
    client.post("/account/login/", {"login": "alice@acme.test", "password": PASSWORD})
    assert "_auth_user_id" not in client.session

"""TOTP two-factor (django-otp): setup with a QR code and recovery codes, the code step after
the password, throttled failures, organizations that require it, and Django admin."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuditEvent
from tenants.middleware.two_factor import session_second_factor_pending
from tenants.services import two_factor_enable

from .helpers import code_for, signed_in, verified

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-42"


def enable_for(user) -> tuple[TOTPDevice, list[str]]:
    device = TOTPDevice.objects.create(user=user, name="Phone", confirmed=False)
    return device, two_factor_enable(user=user, device=device)


def password_sign_in(email: str) -> Client:
    client = Client()
    response = client.post("/account/login/", {"login": email, "password": PASSWORD})
    assert response.status_code == 302
    return client


def test_setup_shows_a_local_qr_code_and_key_then_confirms_with_a_code(acme):
    bob = acme.members["bob"].user
    client = signed_in(bob)
    page = client.get("/account/2fa/setup/").content.decode()
    assert "<svg" in page
    assert "otpauth" not in page  # the URI is only inside the QR code's drawing
    secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<', page).group(1)
    device = TOTPDevice.objects.get(user=bob)
    assert not device.confirmed
    assert secret.replace(" ", "") in __import__("base64").b32encode(device.bin_key).decode()

    wrong = client.post("/account/2fa/setup/", {"code": "000000"})
    assert "not right" in wrong.content.decode()
    device.refresh_from_db()
    device.throttling_failure_count = 0
    device.throttling_failure_timestamp = None
    device.save()

    done = client.post("/account/2fa/setup/", {"code": code_for(device)})
    assert done.status_code == 200
    codes = re.findall(r"<li>([a-z2-7]{8})</li>", done.content.decode())
    assert len(codes) == 10
    device.refresh_from_db()
    assert device.confirmed
    assert StaticToken.objects.filter(device__user=bob).count() == 10
    # The session is verified at once; the codes are shown only this once.
    assert client.get("/org/members/").status_code == 200
    assert codes[0] not in client.get("/account/2fa/").content.decode()
    assert AuditEvent.objects.filter(
        action="member.two_factor_enabled", target=acme.members["bob"].public_id
    ).exists()


def test_after_the_password_a_person_with_a_device_must_enter_a_code(acme):
    device, _ = enable_for(acme.members["bob"].user)
    client = password_sign_in("bob@acme.test")
    response = client.get("/org/members/")
    assert response.status_code == 302
    assert response["Location"] == "/account/2fa/verify/?next=%2Forg%2Fmembers%2F"
    assert client.get("/account/2fa/verify/").status_code == 200
    # The API and sign-out stay reachable; everything else waits for the code.
    assert client.get("/org/agents/").status_code == 302
    verified_response = client.post(
        "/account/2fa/verify/", {"code": code_for(device), "next": "/org/members/"}
    )
    assert verified_response["Location"] == "/org/members/"
    assert client.get("/org/members/").status_code == 200


def test_a_recovery_code_works_once(acme):
    _, codes = enable_for(acme.members["bob"].user)
    client = password_sign_in("bob@acme.test")
    assert client.post("/account/2fa/verify/", {"code": codes[0].upper()}).status_code == 302
    assert client.get("/org/members/").status_code == 200
    again = password_sign_in("bob@acme.test")
    refused = again.post("/account/2fa/verify/", {"code": codes[0]})
    assert refused.status_code == 200
    assert again.get("/org/members/").status_code == 302
    assert StaticToken.objects.filter(device__user__email="bob@acme.test").count() == 9


def test_failed_codes_are_throttled(acme):
    device, _ = enable_for(acme.members["bob"].user)
    client = password_sign_in("bob@acme.test")
    wrong = client.post("/account/2fa/verify/", {"code": "000000"})
    assert "not right" in wrong.content.decode()
    # Even the right code is refused while the device is locked (1 s after one failure).
    locked = client.post("/account/2fa/verify/", {"code": code_for(device)})
    assert "Too many wrong codes" in locked.content.decode()
    assert client.get("/org/members/").status_code == 302
    # The lock doubles with every failure in a row: after the 6th, 32 seconds.
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_count=6, throttling_failure_timestamp=timezone.now()
    )
    locked = client.post("/account/2fa/verify/", {"code": code_for(device)})
    assert "Wait 3" in locked.content.decode()
    # Once the lock has run out, the right code works (and resets the count).
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=timezone.now() - timedelta(minutes=5)
    )
    assert client.post("/account/2fa/verify/", {"code": code_for(device)}).status_code == 302
    device.refresh_from_db()
    assert device.throttling_failure_count == 0


def test_a_code_is_never_accepted_twice(acme):
    device, _ = enable_for(acme.members["bob"].user)
    code = code_for(device)
    assert password_sign_in("bob@acme.test").post("/account/2fa/verify/", {"code": code})
    replay = password_sign_in("bob@acme.test")
    assert replay.post("/account/2fa/verify/", {"code": code}).status_code == 200
    assert replay.get("/org/members/").status_code == 302


def test_an_organization_that_requires_2fa_sends_members_without_it_to_setup(acme):
    acme.organization.require_2fa = True
    acme.organization.save()
    client = signed_in(acme.members["vera"].user)
    response = client.get("/org/audit/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/2fa/setup/")
    assert client.get("/account/2fa/setup/").status_code == 200
    # The API works with keys, not sessions, and is not affected.
    assert acme.client_for("vera").get("/api/v1/escalations").status_code == 200
    # A member who set it up and verified gets in.
    assert verified(acme.members["bob"].user).get("/org/audit/").status_code == 200


def test_require_2fa_holds_only_in_that_organization(acme, globex):
    from audit.services import SYSTEM_ACTOR
    from tenants.services import membership_add

    dana = globex.members["dana"].user
    membership_add(organization=acme.organization, user=dana, role="viewer", actor=SYSTEM_ACTOR)
    acme.organization.require_2fa = True
    acme.organization.save()
    client = signed_in(dana)  # lands in Globex, her first organization
    assert client.get("/org/members/").status_code == 200
    client.post("/org/switch/", {"organization": acme.organization.public_id})
    assert client.get("/org/members/").status_code == 302


def test_django_admin_always_requires_a_verified_second_factor(acme):
    alice = acme.members["alice"].user
    without = signed_in(alice)
    response = without.get("/admin/escalations/policy/")
    assert response.status_code == 302
    assert response["Location"].startswith("/account/2fa/setup/")
    request = RequestFactory().get("/admin/")
    request.user = alice
    request.user.is_verified = lambda: False
    assert admin.site.has_permission(request) is False
    request.user.is_verified = lambda: True
    assert admin.site.has_permission(request) is True
    assert verified(alice).get("/admin/escalations/policy/").status_code == 200


def test_django_admin_sends_a_person_with_a_device_to_the_code_step(acme):
    enable_for(acme.members["alice"].user)
    client = password_sign_in("alice@acme.test")
    response = client.get("/admin/")
    assert response["Location"].startswith("/account/2fa/verify/")


def test_new_recovery_codes_replace_the_old_ones(acme):
    bob = acme.members["bob"].user
    _, old = enable_for(bob)
    client = verified(bob)
    page = client.post("/account/2fa/recovery-codes/").content.decode()
    new = re.findall(r"<li>([a-z2-7]{8})</li>", page)
    assert len(new) == 10
    assert not set(old) & set(new)
    assert StaticToken.objects.filter(device__user=bob).count() == 10


def test_turning_2fa_off_needs_a_current_code(acme):
    bob = acme.members["bob"].user
    device, _ = enable_for(bob)
    client = verified(bob)
    client.post("/account/2fa/disable/", {"code": "000000"})
    assert TOTPDevice.objects.filter(user=bob).exists()
    device.throttling_failure_count = 0
    device.throttling_failure_timestamp = None
    device.save()
    client.post("/account/2fa/disable/", {"code": code_for(device)})
    assert not TOTPDevice.objects.filter(user=bob).exists()
    assert AuditEvent.objects.filter(action="member.two_factor_disabled").exists()


def test_the_same_rule_is_available_to_the_websocket_consumer(acme):
    bob, vera = acme.members["bob"].user, acme.members["vera"].user
    device, _ = enable_for(bob)
    organization = acme.organization
    assert session_second_factor_pending(bob, {}, organization) == "verify"
    session = {DEVICE_ID_SESSION_KEY: device.persistent_id}
    assert session_second_factor_pending(bob, session, organization) is None
    assert session_second_factor_pending(vera, session, organization) is None
    organization.require_2fa = True
    assert session_second_factor_pending(vera, session, organization) == "setup"
    assert session_second_factor_pending(vera, {}, organization) == "setup"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/account/2fa/"),
        ("get", "/account/2fa/setup/"),
        ("get", "/account/2fa/verify/?next=/org/agents/"),
        ("post", "/account/2fa/recovery-codes/"),
        ("post", "/account/2fa/disable/"),
    ],
)
def test_signed_out_two_factor_pages_send_to_sign_in_and_come_back(method, path):
    response = getattr(Client(), method)(path)
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert (target.path, parse_qs(target.query)) == ("/account/login/", {"next": [path]})


def test_a_wrong_method_is_refused_before_asking_to_sign_in():
    assert Client().get("/account/2fa/disable/").status_code == 405
    assert Client().put("/account/2fa/").status_code == 405

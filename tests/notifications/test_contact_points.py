"""My contact points in the console: add, verify with a code, test, reorder, remove — mine only."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from audit.models import AuditEvent
from notifications.contact_points import VERIFICATION_MAX_ATTEMPTS, preference_get
from notifications.models import ContactPoint
from tests.console.helpers import signed_in

from .conftest import add_point

PAGE = "/contact-points/"


def _code() -> str:
    match = re.search(r"verification code is (\d{6})", mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match.group(1)


def test_my_account_email_is_my_first_contact_point(acme: Any) -> None:
    client = signed_in(acme.members["bob"].user)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert b"bob@acme.test" in page.content
    assert b"verified" in page.content
    assert b'href="/contact-points/" aria-current="page">Contact points' in page.content
    (point,) = acme.members["bob"].contact_points.all()
    assert (point.channel, point.config) == ("email", {"source": "account"})


def test_adding_an_email_sends_a_code_that_verifies_it(acme: Any) -> None:
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    client.get(PAGE)
    response = client.post(f"{PAGE}add", {"channel": "email", "address": " Bob@Home.Example "})
    assert response.status_code == 302
    point = bob.contact_points.get(address="bob@home.example")
    assert point.verified_at is None
    assert mail.outbox[-1].to == ["bob@home.example"]
    code = _code()
    assert code not in point.verification_digest  # only an HMAC is stored

    wrong = "000000" if code != "000000" else "111111"
    page = client.post(f"{PAGE}{point.public_id}/verify", {"code": wrong}, follow=True)
    assert b"not right (4 tries left)" in page.content
    page = client.post(f"{PAGE}{point.public_id}/verify", {"code": code}, follow=True)
    assert b"is verified" in page.content
    point.refresh_from_db()
    assert point.verified_at is not None and point.verification_digest == ""
    actions = set(
        AuditEvent.objects.filter(target=point.public_id).values_list("action", flat=True)
    )
    assert {"contact_point.added", "contact_point.verification_sent", "contact_point.verified"} <= (
        actions
    )


def test_wrong_codes_burn_the_code_after_five_tries(acme: Any) -> None:
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    client.post(f"{PAGE}add", {"channel": "email", "address": "bob@home.example"})
    point = bob.contact_points.get(address="bob@home.example")
    code = _code()
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(VERIFICATION_MAX_ATTEMPTS):
        client.post(f"{PAGE}{point.public_id}/verify", {"code": wrong})

    page = client.post(f"{PAGE}{point.public_id}/verify", {"code": code}, follow=True)

    assert b"Too many wrong codes" in page.content
    point.refresh_from_db()
    assert point.verified_at is None


def test_resending_a_code_is_throttled(acme: Any) -> None:
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    client.post(f"{PAGE}add", {"channel": "email", "address": "bob@home.example"})
    point = bob.contact_points.get(address="bob@home.example")
    sent = len(mail.outbox)
    page = client.post(f"{PAGE}{point.public_id}/send-code", follow=True)
    assert b"wait a minute" in page.content
    assert len(mail.outbox) == sent


def test_bad_addresses_are_refused_with_a_message(acme: Any) -> None:
    client = signed_in(acme.members["bob"].user)
    for data, message in (
        ({"channel": "email", "address": "not-an-address"}, b"valid e-mail"),
        ({"channel": "carrier-pigeon", "address": "x"}, b"does not exist"),
        ({"channel": "email", "address": "bob@acme.test"}, b"already have"),
    ):
        page = client.post(f"{PAGE}add", data, follow=True)
        assert page.status_code == 200
        assert message in page.content


def test_a_channel_the_server_has_not_set_up_is_neither_offered_nor_added(
    acme: Any, settings: Any
) -> None:
    settings.TELEGRAM_BOT_TOKEN = settings.TELEGRAM_BOT_USERNAME = ""
    settings.TWILIO_ACCOUNT_SID = ""
    settings.VAPID_PUBLIC_KEY = settings.VAPID_PRIVATE_KEY = ""
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    page = client.get(PAGE).content.decode()
    offered = re.findall(r'<option value="(\w+)"', page)
    assert "telegram" not in offered and "sms" not in offered and "email" in offered
    assert "Notify this browser" not in page

    answer = client.post(f"{PAGE}add", {"channel": "telegram", "address": "@bob"}, follow=True)
    assert answer.status_code == 200
    assert b"Telegram is not set up on this server" in answer.content
    assert not bob.contact_points.filter(channel="telegram").exists()


@pytest.mark.parametrize(
    ("channel", "typed", "stored"),
    [
        ("sms", "+1 (415) 555-0123", "+14155550123"),
        ("whatsapp", "0049 30 1234567", "+49301234567"),
        ("slack", "U012AB3CD", "U012AB3CD"),
    ],
)
def test_addresses_are_stored_as_the_provider_reports_them(
    acme: Any, fake_sms: Any, settings: Any, channel: str, typed: str, stored: str
) -> None:
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = "AC123", "token"
    settings.TWILIO_FROM_NUMBER = settings.TWILIO_WHATSAPP_FROM = "+15005550006"
    settings.SLACK_BOT_TOKEN = "xoxb-1"
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    client.post(f"{PAGE}add", {"channel": channel, "address": typed})
    assert bob.contact_points.filter(channel=channel).values_list("address", flat=True).get() == (
        stored
    )


@pytest.mark.parametrize(
    ("channel", "typed", "message"),
    [
        ("sms", "555-0123", b"international format"),
        ("sms", "+0123456789", b"international format"),
        ("whatsapp", "call me", b"international format"),
        ("slack", "@bob", b"Slack member ID"),
    ],
)
def test_addresses_a_provider_cannot_use_are_refused(
    acme: Any, settings: Any, channel: str, typed: str, message: bytes
) -> None:
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = "AC123", "token"
    settings.TWILIO_FROM_NUMBER = settings.TWILIO_WHATSAPP_FROM = "+15005550006"
    settings.SLACK_BOT_TOKEN = "xoxb-1"
    bob = acme.members["bob"]
    page = signed_in(bob.user).post(
        f"{PAGE}add", {"channel": channel, "address": typed}, follow=True
    )
    assert message in page.content
    assert not bob.contact_points.filter(channel=channel).exists()


def test_telegram_without_the_bot_username_is_a_message_not_a_500(acme: Any, settings: Any) -> None:
    settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_BOT_USERNAME = "123:abc", "awaithuman_bot"
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    page = client.post(f"{PAGE}add", {"channel": "telegram", "address": "@bob"}, follow=True)
    assert b"t.me/awaithuman_bot?start=" in page.content
    point = bob.contact_points.get(channel="telegram")
    settings.TELEGRAM_BOT_USERNAME = ""
    point.verification_sent_at = None
    point.save(update_fields=["verification_sent_at"])
    page = client.post(f"{PAGE}{point.public_id}/send-code", follow=True)
    assert page.status_code == 200
    assert b"Verification could not start" in page.content


def test_every_contact_point_at_once_is_my_choice_per_priority(acme: Any) -> None:
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    assert preference_get(bob).all_points_for == ["urgent"]
    page = client.post(f"{PAGE}all-points-for", {"priorities": ["high", "urgent"]}, follow=True)
    assert b"Saved which priorities" in page.content
    assert preference_get(bob).all_points_for == ["high", "urgent"]
    assert AuditEvent.objects.filter(
        target=bob.public_id, action="notification_preference.updated"
    ).exists()


def test_send_a_test_reorder_and_remove(acme: Any, fake_sms: Any) -> None:
    bob = acme.members["bob"]
    sms = add_point(bob, "sms", "+15550000001", position=2)
    email = bob.contact_points.get(channel="email")
    client = signed_in(bob.user)

    page = client.post(f"{PAGE}{sms.public_id}/test", follow=True)
    assert b"Test sent to +15550000001" in page.content
    assert fake_sms.sent == ["test:+15550000001"]

    client.post(f"{PAGE}{sms.public_id}/move", {"direction": "up"})
    assert list(bob.contact_points.order_by("position").values_list("pk", flat=True)) == [
        sms.pk,
        email.pk,
    ]
    client.post(f"{PAGE}{sms.public_id}/priorities", {"priorities": ["urgent", "high"]})
    sms.refresh_from_db()
    assert sms.priorities == ["high", "urgent"]

    client.post(f"{PAGE}{sms.public_id}/remove")
    assert not ContactPoint.objects.filter(pk=sms.pk).exists()
    assert AuditEvent.objects.filter(target=sms.public_id, action="contact_point.removed").exists()
    page = client.get(PAGE)
    assert sms.public_id.encode() not in page.content


def test_removing_every_point_warns_me(acme: Any) -> None:
    bob = acme.members["bob"]
    client = signed_in(bob.user)
    client.get(PAGE)
    client.post(f"{PAGE}{bob.contact_points.get().public_id}/remove")
    page = client.get(PAGE)
    assert b"no usable contact point" in page.content
    preference_get(bob)
    assert not bob.contact_points.exists()  # the account e-mail is seeded once, not again


def test_quiet_hours_are_saved_and_checked(acme: Any) -> None:
    client = signed_in(acme.members["bob"].user)
    page = client.post(
        f"{PAGE}quiet-hours",
        {"quiet_start": "22:00", "quiet_end": "07:00", "time_zone": "Europe/Berlin"},
        follow=True,
    )
    assert b"Quiet hours saved" in page.content
    preference = preference_get(acme.members["bob"])
    assert (str(preference.quiet_start), preference.time_zone) == ("22:00:00", "Europe/Berlin")
    for bad, message in (
        ({"quiet_start": "25:00", "quiet_end": "07:00", "time_zone": "UTC"}, b"not a time"),
        ({"quiet_start": "22:00", "quiet_end": "", "time_zone": "UTC"}, b"both a start"),
        ({"quiet_start": "", "quiet_end": "", "time_zone": "Mars/Olympus"}, b"Unknown time zone"),
    ):
        assert message in client.post(f"{PAGE}quiet-hours", bad, follow=True).content


@pytest.mark.parametrize("action", ["send-code", "verify", "test", "move", "priorities", "remove"])
def test_another_members_contact_point_is_404(acme: Any, globex: Any, action: str) -> None:
    alice_point = add_point(acme.members["alice"], "email", "alice@home.example", position=2)
    for intruder in (acme.members["bob"].user, globex.members["dana"].user):
        response = signed_in(intruder).post(
            f"{PAGE}{alice_point.public_id}/{action}", {"code": "1"}
        )
        assert response.status_code == 404
    assert ContactPoint.objects.filter(pk=alice_point.pk).exists()


def test_the_page_needs_a_signed_in_member(acme: Any) -> None:
    response = Client().get(PAGE)
    assert response.status_code == 302
    assert "/account/login/" in response["Location"]

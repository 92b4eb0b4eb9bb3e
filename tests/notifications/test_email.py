"""E-mail: the message (text + HTML) through a real SMTP server, and its action links: a GET
never decides, the POST does, once; a late answer is told politely what happened first."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.test import Client

from escalations.models import Escalation
from notifications import links
from notifications.models import Delivery
from tests.live import free_port

from .conftest import SmtpServer, deliveries, new_escalation, text_and_html

LINK = re.compile(r"(Approve|Reject):\s+(\S+)")


def _links(server: SmtpServer, address: str) -> dict[str, str]:
    (message,) = server.inbox.to(address)
    text, _ = text_and_html(message)
    return {name.lower(): urlsplit(url).path for name, url in LINK.findall(text)}


def test_the_email_for_a_new_escalation_has_both_parts_and_action_links(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    (message,) = smtp.inbox.to("bob@acme.test")
    assert message["Subject"] == "[AwaitHuman] Refund $750 to order #1042"
    text, html = text_and_html(message)
    assert "issue_refund" in text and "The customer was charged twice." in text
    assert "issue_refund" in html and "Approve…" in html
    found = _links(smtp, "bob@acme.test")
    assert set(found) == {"approve", "reject"}
    assert all(path.startswith("/n/a/") for path in found.values())
    assert found["approve"] in html
    bob_delivery = next(
        d for d in deliveries(escalation["id"]) if d.membership.user.email == "bob@acme.test"
    )
    assert bob_delivery.provider_id == message["Message-ID"].strip()
    assert f"/escalations/{escalation['id']}/" in text


def test_opening_the_link_changes_nothing_and_confirming_approves_once(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    approve = _links(smtp, "bob@acme.test")["approve"]
    browser = Client(enforce_csrf_checks=True)  # no session, no CSRF cookie: the token decides

    for _ in range(3):  # a mail scanner, a link preview, the person
        page = browser.get(approve)
        assert page.status_code == 200
        assert b"Confirm: approve" in page.content
        assert b"issue_refund" in page.content
    assert Escalation.objects.get(public_id=escalation["id"]).status == "pending"

    with django_capture_on_commit_callbacks(execute=True):
        done = browser.post(approve, {"comment": "ok by me"})
    assert done.status_code == 200
    assert b"You approved this request" in done.content
    decided = Escalation.objects.get(public_id=escalation["id"])
    assert (decided.status, decided.decision_channel) == ("approved", "email")
    assert decided.decided_by["email"] == "bob@acme.test"
    assert decided.decision_comment == "ok by me"

    again = browser.post(approve)
    assert again.status_code == 409
    assert b"already approved by bob@acme.test" in again.content


def test_a_used_link_is_refused_even_before_the_decision(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    Escalation.objects.filter(public_id=escalation["id"]).update(required_approvals=2)
    approve = _links(smtp, "bob@acme.test")["approve"]
    reject = _links(smtp, "bob@acme.test")["reject"]

    first = Client().post(approve)
    assert first.status_code == 200
    assert b"still needs more approvals" in first.content
    for link in (approve, reject):
        reused = Client().post(link)
        assert reused.status_code == 409
        assert b"already been used" in reused.content
    assert Escalation.objects.get(public_id=escalation["id"]).responses.count() == 1


def test_a_late_answer_is_told_politely_who_decided_first(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    reject = _links(smtp, "bob@acme.test")["reject"]
    with django_capture_on_commit_callbacks(execute=True):
        answer = acme.client_for("alice").post(
            f"/api/v1/escalations/{escalation['id']}/responses",
            {"outcome": "approve"},
            format="json",
        )
    assert answer.status_code == 201

    page = Client().get(reject)
    late = Client().post(reject)

    assert page.status_code == 200
    assert late.status_code == 409
    for response in (page, late):
        assert b"already approved by alice@acme.test at" in response.content
        assert b"Confirm" not in response.content
    assert Escalation.objects.get(public_id=escalation["id"]).status == "approved"


def test_reject_carries_the_reason(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    reject = _links(smtp, "alice@acme.test")["reject"]
    page = Client().get(reject)
    assert b"Reason for the agent" in page.content
    Client().post(reject, {"comment": "Refunds over $500 need a manager."})
    decided = Escalation.objects.get(public_id=escalation["id"])
    assert (decided.status, decided.decision_comment) == (
        "rejected",
        "Refunds over $500 need a manager.",
    )


def test_an_altered_or_foreign_token_is_not_found(
    acme: Any, globex: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    approve = _links(smtp, "bob@acme.test")["approve"]
    token = approve.rsplit("/", 1)[1]

    assert Client().post(approve[:-2] + "xx").status_code == 404
    delivery = Delivery.objects.get(public_id=links.action_claim(token).delivery)
    # A validly signed claim that names someone else (another tenant's member) finds nothing.
    forged = signing.TimestampSigner(salt=links.SALT).sign_object(
        {
            "d": delivery.public_id,
            "e": escalation["id"],
            "m": globex.members["dana"].public_id,
            "o": "approve",
        }
    )
    assert Client().post(f"/n/a/{forged}").status_code == 404
    other_salt = signing.TimestampSigner(salt="other").sign_object({"o": "approve"})
    assert Client().get(f"/n/a/{other_salt}").status_code == 404
    assert Escalation.objects.get(public_id=escalation["id"]).status == "pending"


def test_a_typed_answer_sends_people_to_the_console(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(
        django_capture_on_commit_callbacks,
        acme,
        kind="question",
        title="Which carrier?",
        action=None,
        response_schema={
            "type": "object",
            "properties": {"carrier": {"enum": ["ups", "dhl"]}},
            "required": ["carrier"],
        },
    )
    (message,) = smtp.inbox.to("bob@acme.test")
    text, html = text_and_html(message)
    assert not LINK.search(text)
    assert "/n/a/" not in html
    assert f"Answer in the console: http://127.0.0.1:8000/escalations/{escalation['id']}/" in text


def test_a_refused_mailbox_is_a_permanent_failure(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    smtp.inbox.refuse.add("bob@acme.test")
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    bob = next(
        d for d in deliveries(escalation["id"]) if d.membership.user.email == "bob@acme.test"
    )
    assert bob.status == "failed"
    assert "550" in bob.last_error
    bob.contact_point.refresh_from_db()
    assert bob.contact_point.failing_since is not None
    assert len(smtp.inbox.to("alice@acme.test")) == 1


def test_a_refused_sender_is_our_settings_not_the_persons_address(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    smtp.inbox.refuse_senders = True
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    rows = deliveries(escalation["id"])
    assert {(d.status, d.attempts) for d in rows} == {("pending", 1)}, "retried later"
    assert all("DEFAULT_FROM_EMAIL" in d.last_error for d in rows)
    for row in rows:
        row.contact_point.refresh_from_db()
        assert row.contact_point.failing_since is None


def test_an_unreachable_mail_server_is_retried(
    acme: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    assert {(d.status, d.attempts) for d in deliveries(escalation["id"])} == {("pending", 1)}
    assert all("unavailable" in d.last_error for d in deliveries(escalation["id"]))


def test_a_resent_email_keeps_its_message_id_and_test_sends_each_get_their_own(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    from notifications.transports.email import EmailTransport

    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    delivery = next(
        d for d in deliveries(escalation["id"]) if d.membership.user.email == "bob@acme.test"
    )
    again = EmailTransport().send(delivery)  # what the sweep does after a worker died
    first, second = smtp.inbox.to("bob@acme.test")
    assert first["Message-ID"] == second["Message-ID"] == again == delivery.provider_id
    host = urlsplit(settings.AWAITHUMAN_BASE_URL).hostname
    assert again == f"<{delivery.public_id}@{host}>"

    point = delivery.contact_point
    assert EmailTransport().send_test(point) != EmailTransport().send_test(point)


def test_a_reject_link_asks_for_the_reason_where_the_organization_requires_one(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    acme.organization.reject_reason_required = True
    acme.organization.save()
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    reject = _links(smtp, "alice@acme.test")["reject"]
    assert b"(required)" in Client().get(reject).content

    refused = Client().post(reject, {"comment": "  "})
    assert refused.status_code == 400
    assert b"asks for a reason" in refused.content
    assert Escalation.objects.get(public_id=escalation["id"]).status == "pending"

    Client().post(reject, {"comment": "Needs a manager."})  # the link was not used up
    decided = Escalation.objects.get(public_id=escalation["id"])
    assert (decided.status, decided.decision_comment) == ("rejected", "Needs a manager.")


def test_a_reject_link_needs_no_reason_by_default(
    acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    reject = _links(smtp, "alice@acme.test")["reject"]
    assert b"(optional)" in Client().get(reject).content
    assert Client().post(reject).status_code == 200
    assert Escalation.objects.get(public_id=escalation["id"]).status == "rejected"

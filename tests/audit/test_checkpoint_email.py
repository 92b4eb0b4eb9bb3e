"""The daily checkpoint e-mail: an organization's latest signed checkpoint, sent over real SMTP to
the address it chose, is a kept copy that ``audit_verify --checkpoint`` accepts."""

from __future__ import annotations

import base64
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.checkpoints import checkpoint_issue
from audit.models import AuditEvent, Checkpoint
from escalations.checkpoints import key_name
from tenants.checkpoint_mail import checkpoint_emails_send
from tenants.models import Organization
from tenants.tasks import checkpoint_emails
from tests.console.helpers import signed_in
from tests.notifications.conftest import SmtpServer, text_and_html

pytestmark = pytest.mark.django_db

COMPLIANCE = "audit-archive@acme.test"


def grow_and_sign(record, organization: Organization, events: int = 1) -> Checkpoint:
    for _ in range(events):
        record(organization.pk)
    checkpoint, _ = checkpoint_issue(organization_id=organization.pk)
    return checkpoint


def set_address(organization: Organization, address: str) -> None:
    Organization.objects.filter(pk=organization.pk).update(checkpoint_email=address)


def attachment(message) -> tuple[str, str]:
    (part,) = list(message.iter_attachments())
    return part.get_filename(), part.get_content().decode("utf-8")


def part_bytes(message) -> bytes:
    (part,) = list(message.iter_attachments())
    return part.get_content()


def verify(path: Path) -> str:
    stdout = StringIO()
    call_command("audit_verify", "--checkpoint", str(path), stdout=stdout)
    return stdout.getvalue()


def test_the_latest_checkpoint_is_mailed_and_verifies_as_a_kept_copy(
    record, acme, smtp: SmtpServer, tmp_path: Path, client
):
    organization = acme.organization
    set_address(organization, COMPLIANCE)
    grow_and_sign(record, organization, events=2)
    latest = grow_and_sign(record, organization)

    assert checkpoint_emails.apply().get() == 1

    (message,) = smtp.inbox.to(COMPLIANCE)
    seq = latest.seq
    assert message["Subject"] == f"[AwaitHuman] Audit checkpoint of Acme: {seq} events"
    filename, note = attachment(message)
    assert filename == f"acme-checkpoint-{seq}.txt"
    assert note == latest.note
    body, _ = text_and_html(message)
    assert latest.note.replace("\n", "\r\n") in body  # SMTP ends text lines with CRLF
    assert f"Events covered: 1 to {seq}" in body
    assert f"audit_verify --checkpoint {filename}" in body
    # The verifier key in the body is one of the keys the public JWKS publishes.
    (vkey_line,) = [line for line in body.splitlines() if line.startswith("Verifier key")]
    name, _, encoded = vkey_line.split(": ", 1)[1].strip().split("+", 2)
    assert name == key_name()
    published = [
        base64.urlsafe_b64decode(key["x"] + "==")
        for key in client.get("/.well-known/jwks.json").json()["keys"]
    ]
    assert base64.b64decode(encoded) in [b"\x01" + key for key in published]

    kept = tmp_path / filename
    kept.write_bytes(part_bytes(message))
    assert f"ok, org {organization.pk} extends seq {seq}" in verify(kept)
    # The note copied from the body, its lines ended with CRLF by the trip through SMTP, too.
    pasted = tmp_path / "pasted.txt"
    start = body.index(latest.note.split("\n", 1)[0])
    pasted.write_bytes(body[start : start + len(note) + note.count("\n")].encode("utf-8"))
    assert b"\r\n" in pasted.read_bytes()
    assert f"ok, org {organization.pk} extends seq {seq}" in verify(pasted)


def test_at_most_one_e_mail_a_day_and_only_when_the_chain_grew(record, acme, smtp: SmtpServer):
    organization = acme.organization
    set_address(organization, COMPLIANCE)
    first = grow_and_sign(record, organization)
    now = timezone.now()

    assert checkpoint_emails_send(now=now) == 1
    second = grow_and_sign(record, organization)
    assert checkpoint_emails_send(now=now + timedelta(hours=23)) == 0  # grown, but not a day yet
    assert checkpoint_emails_send(now=now + timedelta(hours=24)) == 1
    assert checkpoint_emails_send(now=now + timedelta(hours=72)) == 0  # a day on, nothing new

    sent = [attachment(message)[1] for message in smtp.inbox.to(COMPLIANCE)]
    assert sent == [first.note, second.note]
    organization.refresh_from_db()
    assert organization.checkpoint_emailed_seq == second.seq
    page = signed_in(acme.members["alice"].user).get("/org/settings/")
    sent_at = (now + timedelta(hours=24)).strftime("%Y-%m-%d %H:%M")
    assert f"Last sent {sent_at} UTC, covering events 1 to {second.seq}." in page.content.decode()


def test_only_organizations_with_an_address_get_one_and_only_their_own(
    record, acme, globex, smtp: SmtpServer
):
    grow_and_sign(record, acme.organization)
    grow_and_sign(record, globex.organization)
    assert checkpoint_emails_send() == 0  # nobody chose an address

    set_address(globex.organization, "records@globex.test")
    assert checkpoint_emails_send() == 1

    (message,) = smtp.inbox.messages
    assert message["To"] == "records@globex.test"
    note = attachment(message)[1]
    assert note.startswith(f"{key_name()}/audit/{globex.organization.public_id}\n")
    assert acme.organization.public_id not in text_and_html(message)[0]


def test_an_organization_without_a_checkpoint_yet_gets_nothing(acme, smtp: SmtpServer):
    set_address(acme.organization, COMPLIANCE)
    assert checkpoint_emails_send() == 0
    assert smtp.inbox.messages == []


def test_a_refused_e_mail_is_sent_again_on_the_next_run(record, acme, smtp: SmtpServer):
    organization = acme.organization
    set_address(organization, COMPLIANCE)
    checkpoint = grow_and_sign(record, organization)
    smtp.inbox.refuse.add(COMPLIANCE)

    assert checkpoint_emails_send() == 0
    organization.refresh_from_db()
    assert organization.checkpoint_emailed_seq == 0
    assert organization.checkpoint_emailed_at is None

    smtp.inbox.refuse.clear()
    assert checkpoint_emails_send() == 1
    (message,) = smtp.inbox.to(COMPLIANCE)
    assert attachment(message)[1] == checkpoint.note


def test_an_admin_sets_the_address_in_the_settings_and_it_is_audited(acme):
    response = signed_in(acme.members["alice"].user).post(
        "/org/settings/", {"name": "Acme", "checkpoint_email": COMPLIANCE}
    )
    assert response.status_code == 302
    acme.organization.refresh_from_db()
    assert acme.organization.checkpoint_email == COMPLIANCE
    updated = AuditEvent.objects.filter(action="organization.updated").latest("id")
    assert updated.data["before"]["checkpoint_email"] == ""
    assert updated.data["after"]["checkpoint_email"] == COMPLIANCE

    page = signed_in(acme.members["alice"].user).get("/org/settings/")
    assert b"E-mail a daily audit checkpoint to" in page.content
    assert COMPLIANCE.encode() in page.content
    assert b"Last sent" not in page.content  # nothing was sent yet


def test_a_bad_address_is_refused_naming_the_field(acme):
    page = signed_in(acme.members["alice"].user).post(
        "/org/settings/", {"name": "Acme", "checkpoint_email": "not an address"}
    )
    assert page.status_code == 200
    assert b"Enter a valid email address." in page.content
    assert page.context["form"].errors.keys() == {"checkpoint_email"}
    acme.organization.refresh_from_db()
    assert acme.organization.checkpoint_email == ""
    assert not AuditEvent.objects.filter(action="organization.updated").exists()


def test_the_job_runs_every_hour(settings):
    (entry,) = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "tenants.tasks.checkpoint_emails"
    ]
    assert entry["schedule"] == 3600.0
    assert settings.AUDIT_CHECKPOINT_EMAIL_HOURS == 24


def test_a_name_with_a_line_break_still_makes_a_one_line_subject(record, acme, smtp: SmtpServer):
    Organization.objects.filter(pk=acme.organization.pk).update(
        name="Acme\nBcc: everyone@example.test", checkpoint_email=COMPLIANCE
    )
    checkpoint = grow_and_sign(record, acme.organization)

    assert checkpoint_emails_send() == 1
    (message,) = smtp.inbox.to(COMPLIANCE)
    assert message["Subject"] == (
        f"[AwaitHuman] Audit checkpoint of Acme Bcc: everyone@example.test: {checkpoint.seq} events"
    )
    assert message["Bcc"] is None

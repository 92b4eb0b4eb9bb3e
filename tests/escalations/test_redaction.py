"""Retention and redaction: payloads give way to their digests, everywhere we kept them, and the
audit chain and evidence bundles still verify."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import timedelta
from typing import Any

import pytest
from awaithuman_sdk.verify import verify_bundle
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import SYSTEM_ACTOR, audit_seal, audit_verify_chain
from escalations import outbox
from escalations.models import Escalation
from escalations.redaction import escalation_redact
from escalations.tasks import payloads_redact
from tests.conftest import APPROVAL, Tenant
from tests.console.helpers import signed_in
from tests.notifications.fake_receiver import running_receiver
from tests.webhooks.test_webhooks import add_webhook

pytestmark = pytest.mark.django_db

SECRET_CONTEXT = "card ending 4242, born 1970-01-01"
SECRET_ARGUMENT = "IBAN DE89370400440532013000"
SECRET_EDIT = "IBAN DE44500105175407324931"


def sha256_of(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def secret_escalation(tenant: Tenant, key: str = "run-1") -> dict[str, Any]:
    body = {
        **APPROVAL,
        "action": {"name": "pay_out", "arguments": {"to": SECRET_ARGUMENT, "amount": 90}},
        "context": {"messages": [{"role": "user", "content": SECRET_CONTEXT}]},
    }
    response = tenant.agent_client().post(
        "/api/v1/escalations", body, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    assert response.status_code == 201, response.content
    return response.json()


def approve_with_edit(tenant: Tenant, escalation_id: str) -> None:
    response = tenant.client_for("bob").post(
        f"/api/v1/escalations/{escalation_id}/responses",
        {"outcome": "approve", "edited_arguments": {"to": SECRET_EDIT, "amount": 90}},
        format="json",
    )
    assert response.status_code == 201, response.content


def everything_in_the_database() -> str:
    """Every row of every table, as text: what a redacted value must no longer be part of."""
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (our own table names)
            dump.extend(str(row) for row in cursor.fetchall())
    return "\n".join(dump)


def settle() -> None:
    """What the dispatcher does right after each commit: seal, then run the outbox."""
    audit_seal()
    outbox.outbox_drain()


@pytest.fixture
def decided(acme: Tenant, settings: Any, django_capture_on_commit_callbacks: Any) -> Escalation:
    """An approved escalation with personal data in its context, arguments and edits, also sent
    to a webhook (whose stored body holds it) and created with an Idempotency-Key."""
    settings.OUTBOUND_ALLOW_PRIVATE = True
    with running_receiver() as receiver:
        add_webhook(acme, receiver.url, ["escalation.decided"])
        with django_capture_on_commit_callbacks(execute=True):
            created = secret_escalation(acme)
            approve_with_edit(acme, created["id"])
        settle()
    dump = everything_in_the_database()
    assert SECRET_CONTEXT in dump and SECRET_ARGUMENT in dump and SECRET_EDIT in dump
    return Escalation.objects.get(public_id=created["id"])


def redact_in_console(tenant: Tenant, escalation: Escalation, reason: str) -> Any:
    client = signed_in(tenant.members["alice"].user)
    return client.post(f"/escalations/{escalation.public_id}/redact", {"reason": reason})


def test_redact_now_replaces_every_payload_by_its_digest(acme, decided):
    original_context = decided.context
    response = redact_in_console(acme, decided, "GDPR erasure request #118")
    settle()

    assert response.status_code == 302
    decided.refresh_from_db()
    assert decided.context == {"_redacted": sha256_of(original_context)}
    assert decided.action == {
        "name": "pay_out",
        "arguments": {"_redacted": sha256_of({"to": SECRET_ARGUMENT, "amount": 90})},
    }
    assert decided.edited_arguments == {"_redacted": sha256_of({"to": SECRET_EDIT, "amount": 90})}
    assert decided.redaction_reason == "GDPR erasure request #118"
    dump = everything_in_the_database()
    for secret in (SECRET_CONTEXT, SECRET_ARGUMENT, SECRET_EDIT):
        assert secret not in dump


def test_after_redaction_the_chain_verifies_and_the_redaction_is_audited(acme, decided):
    redact_in_console(acme, decided, "erasure request")
    settle()

    assert audit_verify_chain(organization_id=acme.organization.pk).ok
    event = AuditEvent.objects.get(action="escalation.redacted", target=decided.public_id)
    assert event.actor["type"] == "user"
    assert event.data["reason"] == "erasure request"
    assert event.data["events_with_payloads"] == []
    assert set(event.data["digests"]) == {"context", "action.arguments", "edited_arguments"}


def test_anyone_holding_the_original_can_prove_it_was_the_one_recorded(acme, decided):
    original = decided.context
    redact_in_console(acme, decided, "erasure request")
    settle()

    created = AuditEvent.objects.get(action="escalation.created", target=decided.public_id)
    assert created.data["context_digest"] == sha256_of(original)
    assert created.data["action"]["arguments_digest"] == sha256_of(
        {"to": SECRET_ARGUMENT, "amount": 90}
    )


def test_redacted_values_are_gone_from_exports_and_the_bundle_still_verifies(
    acme, decided, tmp_path
):
    redact_in_console(acme, decided, "erasure request")
    settle()

    client = acme.agent_client()
    for export_format in ("chat", "preference", "decisions"):
        text = b"".join(client.get(f"/api/v1/exports/{export_format}").streaming_content)
        for secret in (SECRET_CONTEXT, SECRET_ARGUMENT, SECRET_EDIT):
            assert secret.encode() not in text
    (line,) = b"".join(client.get("/api/v1/exports/decisions").streaming_content).splitlines()
    decision = json.loads(line)
    assert "context" not in decision and "edited_arguments" not in decision
    assert decision["proposed_action"] == {"name": "pay_out"}
    assert decision["redacted_at"]

    path = tmp_path / "bundle.zip"
    call_command(
        "evidence_bundle", "--org", "acme", "--since", "2000-01-01", "--until", "2999-01-01",
        "--output", str(path), stdout=io.StringIO(),
    )  # fmt: skip
    with zipfile.ZipFile(path) as bundle:
        content = b"".join(bundle.read(name) for name in bundle.namelist())
    assert SECRET_CONTEXT.encode() not in content
    report = verify_bundle(str(path))
    assert report.ok, report.problems
    assert f"escalation {decided.public_id}: payloads redacted; no receipt to check" in report.notes


def test_a_reason_is_required_and_a_pending_escalation_cannot_be_redacted(acme, decided):
    client = signed_in(acme.members["alice"].user)
    response = client.post(
        f"/escalations/{decided.public_id}/redact", {"reason": "   "}, follow=True
    )
    assert response.status_code == 200
    assert b"Say why the payloads are redacted" in response.content
    decided.refresh_from_db()
    assert decided.redacted_at is None

    pending = Escalation.objects.get(public_id=secret_escalation(acme, "run-2")["id"])
    redact_in_console(acme, pending, "erasure request")
    pending.refresh_from_db()
    assert pending.redacted_at is None
    assert pending.context["messages"][0]["content"] == SECRET_CONTEXT


def test_redacting_twice_changes_nothing_more(acme, decided):
    escalation_redact(escalation=decided, actor=SYSTEM_ACTOR, reason="first")
    escalation_redact(escalation=decided, actor=SYSTEM_ACTOR, reason="second")

    decided.refresh_from_db()
    assert decided.redaction_reason == "first"
    assert AuditEvent.objects.filter(action="escalation.redacted").count() == 1


def test_events_written_before_digests_are_listed_not_rewritten(acme, decided):
    """A chain from before payload digests: its created event holds the arguments themselves.
    Redaction leaves it (and the chain) as it is, and says so."""
    from django.db import transaction

    from audit.services import audit_record

    with transaction.atomic():
        audit_record(
            organization_id=acme.organization.pk,
            action="escalation.created",
            actor=SYSTEM_ACTOR,
            target=decided.public_id,
            data={"action": {"name": "pay_out", "arguments": {"to": "legacy"}}},
        )
    audit_seal()
    legacy_seq = AuditEvent.objects.filter(target=decided.public_id).order_by("-seq")[0].seq

    escalation_redact(escalation=decided, actor=SYSTEM_ACTOR, reason="erasure request")
    audit_seal()

    event = AuditEvent.objects.get(action="escalation.redacted")
    assert event.data["events_with_payloads"] == [legacy_seq]
    assert audit_verify_chain(organization_id=acme.organization.pk).ok


def test_the_retention_job_redacts_what_is_older_than_the_organizations_setting(acme, decided):
    recent = Escalation.objects.get(public_id=secret_escalation(acme, "run-2")["id"])
    approve_with_edit(acme, recent.public_id)
    Escalation.objects.filter(pk=decided.pk).update(decided_at=timezone.now() - timedelta(days=31))

    assert payloads_redact.apply().get() == 0  # no retention set: payloads are kept
    signed_in(acme.members["alice"].user).post(
        "/org/settings/",
        {"name": "Acme", "payload_retention_days": "30", "reject_reason_required": ""},
    )
    acme.organization.refresh_from_db()
    assert acme.organization.payload_retention_days == 30
    updated = AuditEvent.objects.filter(action="organization.updated").latest("id")
    assert updated.data["after"]["payload_retention_days"] == 30

    assert payloads_redact.apply().get() == 1
    decided.refresh_from_db()
    recent.refresh_from_db()
    assert decided.redacted_at is not None
    assert decided.redaction_reason == "retention: payloads kept 30 days"
    assert recent.redacted_at is None


def test_a_bad_retention_is_refused_by_the_form(acme):
    page = signed_in(acme.members["alice"].user).post(
        "/org/settings/", {"name": "Acme", "payload_retention_days": "0"}
    )
    assert page.status_code == 200
    assert b"Ensure this value is greater than or equal to 1." in page.content
    acme.organization.refresh_from_db()
    assert acme.organization.payload_retention_days is None


def test_operators_cannot_redact(acme, decided):
    client = signed_in(acme.members["bob"].user)
    response = client.post(f"/escalations/{decided.public_id}/redact", {"reason": "because"})
    assert response.status_code in (403, 404)
    decided.refresh_from_db()
    assert decided.redacted_at is None

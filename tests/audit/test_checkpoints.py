"""Signed checkpoints: a C2SP signed note of each chain head, kept outside the database, that a
rewritten history (every hash recomputed) cannot match."""

from __future__ import annotations

import base64
import hashlib
import json
from io import StringIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit.models import AuditEvent, ChainHead, Checkpoint
from audit.services import event_hash
from audit.tasks import checkpoints_sign
from tenants.models import Organization
from tests.conftest import api_client, create_escalation
from tests.notifications.fake_receiver import running_receiver
from tests.webhooks.test_webhooks import add_webhook

pytestmark = pytest.mark.django_db


@pytest.fixture
def initech():
    return Organization.objects.create(name="Initech", slug="initech")


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command(*args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def sign(slug: str) -> str:
    return run("audit_checkpoint", "--org", slug)[0]


def keep(tmp_path: Path, note: str, name: str = "checkpoint.txt") -> str:
    path = tmp_path / name
    path.write_text(note, encoding="utf-8", newline="")
    return str(path)


def jwks_keys(client) -> list[bytes]:
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    return [base64.urlsafe_b64decode(key["x"] + "==") for key in keys]


def test_a_checkpoint_is_a_c2sp_signed_note_over_the_chain_head(record, initech, client):
    for _ in range(3):
        record(initech.pk)
    head = ChainHead.objects.get(organization_id=initech.pk)

    note = sign("initech")

    text, signatures = note.split("\n\n")
    origin, size, root = text.split("\n")
    assert origin == f"127.0.0.1:8000/audit/{initech.public_id}"
    assert size == "3" == str(head.seq)
    assert base64.b64decode(root).hex() == head.hash
    # One signature line: an em dash, the key name, base64(key id || Ed25519 signature).
    assert signatures.endswith("\n") and signatures.count("\n") == 1
    dash, name, blob = signatures.rstrip("\n").split(" ")
    assert (dash, name) == ("\u2014", "127.0.0.1:8000")
    raw = base64.b64decode(blob)
    (public_key,) = jwks_keys(client)  # the receipt keys' JWKS publishes the checkpoint key
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]
    Ed25519PublicKey.from_public_bytes(public_key).verify(raw[4:], (text + "\n").encode())


def test_signing_an_unchanged_head_returns_the_same_checkpoint(record, initech):
    record(initech.pk)
    assert sign("initech") == sign("initech")
    assert Checkpoint.objects.filter(organization_id=initech.pk).count() == 1


def test_an_empty_chain_has_nothing_to_sign(initech):
    with pytest.raises(CommandError, match="nothing to sign"):
        sign("initech")


def test_the_current_chain_extends_a_kept_checkpoint(record, initech, tmp_path):
    record(initech.pk)
    record(initech.pk)
    kept = keep(tmp_path, sign("initech"))
    record(initech.pk)
    record(initech.pk)

    stdout, stderr = run("audit_verify", "--checkpoint", kept)

    assert stdout == f"{kept}: ok, org {initech.pk} extends seq 2\n"
    assert stderr == ""


def test_a_rewritten_chain_with_recomputed_hashes_fails_against_a_kept_checkpoint(
    record, triggers_off, initech, tmp_path
):
    record(initech.pk, action="escalation.created")
    record(initech.pk, action="escalation.approved", data={"amount": 750})
    record(initech.pk, action="escalation.created")
    kept = keep(tmp_path, sign("initech"))
    record(initech.pk, action="escalation.created")

    # Someone with superuser rights rewrites event 2 and recomputes every later link and the
    # head: the chain is perfectly consistent again.
    with triggers_off():
        head_hash = None
        for event in AuditEvent.objects.filter(organization_id=initech.pk).order_by("seq"):
            if event.seq == 2:
                event.data = {"amount": 75000}
            if head_hash is not None:
                event.prev_hash = head_hash
            event.hash = event_hash(event)
            head_hash = event.hash
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE audit_auditevent SET data = %s, prev_hash = %s, hash = %s"
                    " WHERE id = %s",
                    [json.dumps(event.data), event.prev_hash, event.hash, event.pk],
                )
        ChainHead.objects.filter(organization_id=initech.pk).update(hash=head_hash)
    assert run("audit_verify", "--org", "initech")[0] == f"org {initech.pk}: ok, 4 events\n"

    stdout, stderr = StringIO(), StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("audit_verify", "--checkpoint", kept, stdout=stdout, stderr=stderr)

    assert failed.value.returncode == 1
    assert stdout.getvalue() == f"{kept}: FAILED at seq 3\n"
    assert f"org {initech.pk}: event seq 3 hashes to " in stderr.getvalue()
    assert "history up to seq 3 was rewritten" in stderr.getvalue()


def test_a_chain_cut_below_a_kept_checkpoint_fails(record, triggers_off, initech, tmp_path):
    for _ in range(3):
        record(initech.pk)
    kept = keep(tmp_path, sign("initech"))
    with triggers_off():
        AuditEvent.objects.filter(organization_id=initech.pk, seq=3).delete()
        ChainHead.objects.filter(organization_id=initech.pk).update(
            seq=2, hash=AuditEvent.objects.get(organization_id=initech.pk, seq=2).hash
        )

    stderr = StringIO()
    with pytest.raises(CommandError):
        call_command("audit_verify", "--checkpoint", kept, stdout=StringIO(), stderr=stderr)
    assert "fewer than the 3 the checkpoint signed" in stderr.getvalue()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda note: note.replace("\n2\n", "\n3\n", 1), "does not verify"),
        (lambda note: note.replace("127.0.0.1:8000 ", "elsewhere.example ", 1), "no signature"),
        (lambda note: note.replace("\n\n", "\n", 1), "not a signed note"),
    ],
    ids=["size changed", "unknown key", "malformed"],
)
def test_a_forged_or_malformed_checkpoint_is_refused(record, initech, tmp_path, change, reason):
    record(initech.pk)
    record(initech.pk)
    kept = keep(tmp_path, change(sign("initech")))

    stderr = StringIO()
    with pytest.raises(CommandError):
        call_command("audit_verify", "--checkpoint", kept, stdout=StringIO(), stderr=stderr)
    assert reason in stderr.getvalue()


def test_a_checkpoint_signed_before_a_key_rotation_still_verifies(record, initech, tmp_path):
    record(initech.pk)
    kept = keep(tmp_path, sign("initech"))
    run("receipt_keys", "rotate")

    assert "ok" in run("audit_verify", "--checkpoint", kept)[0]


def test_the_periodic_job_signs_only_the_chains_that_grew(record, initech):
    other = Organization.objects.create(name="Other", slug="other")
    record(initech.pk)
    record(other.pk)

    assert checkpoints_sign.apply().get() == 2
    assert checkpoints_sign.apply().get() == 0
    record(initech.pk)
    assert checkpoints_sign.apply().get() == 1
    assert list(
        Checkpoint.objects.filter(organization_id=initech.pk).values_list("seq", flat=True)
    ) == [2, 1]


def test_the_job_is_on_the_beat_schedule_every_minute(settings):
    (entry,) = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "audit.tasks.checkpoints_sign"
    ]
    assert entry["schedule"] == 60.0


# --- API ---------------------------------------------------------------------------------------


def test_an_agent_signs_lists_and_reads_its_checkpoints(acme):
    client = acme.agent_client()
    create_escalation(acme)

    signed = client.post("/api/v1/audit/checkpoints")
    again = client.post("/api/v1/audit/checkpoints")

    assert signed.status_code == 201, signed.content
    assert again.status_code == 200 and again.json() == signed.json()
    body = signed.json()
    head = ChainHead.objects.get(organization_id=acme.organization.pk)
    assert (body["seq"], body["hash"]) == (head.seq, head.hash)
    assert body["note"].startswith(f"127.0.0.1:8000/audit/{acme.organization.public_id}\n")
    assert client.get("/api/v1/audit/checkpoints").json() == {"results": [body]}
    assert client.get(f"/api/v1/audit/checkpoints/{body['id']}").json() == body
    assert client.get("/api/v1/audit/checkpoints/latest").json() == body


def test_another_organizations_checkpoint_is_a_404(acme, globex):
    create_escalation(globex)
    theirs = globex.agent_client().post("/api/v1/audit/checkpoints").json()

    mine = acme.agent_client()
    assert mine.get(f"/api/v1/audit/checkpoints/{theirs['id']}").status_code == 404
    create_escalation(acme)
    mine.post("/api/v1/audit/checkpoints")
    listed = mine.get("/api/v1/audit/checkpoints").json()["results"]
    assert len(listed) == 1 and listed[0]["id"] != theirs["id"]
    assert listed[0]["note"].split("\n")[0].endswith(acme.organization.public_id)
    missing = mine.get("/api/v1/audit/checkpoints/ckp_nothing")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/problem+json"


def test_reading_checkpoints_needs_a_key_with_escalations_read(acme):
    assert acme.agent_client().get("/api/v1/audit/checkpoints").status_code == 200
    assert acme.client_for("alice").get("/api/v1/audit/checkpoints").status_code == 200
    assert api_client(None).get("/api/v1/audit/checkpoints").status_code == 401


# --- Webhooks ----------------------------------------------------------------------------------


def test_new_checkpoints_are_sent_to_the_organizations_webhooks_signed(
    acme, globex, settings, django_capture_on_commit_callbacks
):
    settings.OUTBOUND_ALLOW_PRIVATE = True
    with running_receiver() as receiver:
        _, secret = add_webhook(acme, receiver.url, ["audit.checkpoint"])
        create_escalation(globex)
        with django_capture_on_commit_callbacks(execute=True):
            checkpoints_sign.apply()

        (request,) = receiver.requests
        payload = request.verify(secret)
    checkpoint = Checkpoint.objects.get(organization_id=acme.organization.pk)
    assert payload["type"] == "audit.checkpoint"
    assert payload["data"]["note"] == checkpoint.note
    assert (payload["data"]["seq"], payload["data"]["hash"]) == (checkpoint.seq, checkpoint.hash)
